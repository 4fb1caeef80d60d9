/**
 * The metric series of the breakers: one cell per series, registered in the `MetricRegistry` of the context a
 * breaker or set is built in, and shared by every breaker that reports under the same series.
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"
import { calls, opening, type PeerLabel, probes, state, transitions } from "../CircuitBreakerMetrics.ts"
import type { Reason, StateTag } from "../CircuitStateChange.ts"

const stateValue: Record<StateTag, number> = { Closed: 0, HalfOpen: 1, Open: 2 }

/** A counted outcome of a guarded call. */
export type Outcome = "success" | "failure" | "ignored" | "rejected" | "would_reject"

/**
 * One series' value, read by the registry when metrics are exported (`Metric.registerUnsafe`). A call then costs a
 * field increment instead of a registry look-up. Breakers that report under the same series in the same registry
 * share one cell, so their counts add up; the series is removed when its last user releases it.
 */
class Cell {
  value = 0
  users = 0
  readonly #registration: Metric.Registration
  readonly #siblings: Map<string, Cell>
  readonly #key: string

  constructor(
    metric: Metric.Metric<number, unknown>,
    kind: "counter" | "gauge",
    context: Context.Context<never>,
    siblings: Map<string, Cell>,
    key: string
  ) {
    this.#siblings = siblings
    this.#key = key
    this.#registration = Metric.registerUnsafe(metric, context, {
      get: kind === "counter" ? () => ({ count: this.value, incremental: false }) : () => ({ value: this.value }),
      update: () => {},
      modify: () => {}
    })
  }

  release(): void {
    if (--this.users > 0) return
    this.#registration.remove()
    this.#siblings.delete(this.#key)
  }
}

/** The cells of each registry, by series. */
const cellsByRegistry = new WeakMap<object, Map<string, Cell>>()

const acquire = (
  base: Metric.Metric<number, unknown>,
  kind: "counter" | "gauge",
  attributes: Readonly<Record<string, string>>,
  context: Context.Context<never>
): Cell => {
  const registry = Context.get(context, Metric.MetricRegistry)
  let cells = cellsByRegistry.get(registry)
  if (cells === undefined) {
    cells = new Map()
    cellsByRegistry.set(registry, cells)
  }
  // The registry's own key also holds the attributes the context adds, so breakers built under different ones
  // report different series.
  const key = JSON.stringify([base.id, attributes, Context.get(context, Metric.CurrentMetricAttributes)])
  let cell = cells.get(key)
  if (cell === undefined) {
    const options = { description: base.description, attributes }
    const metric = kind === "counter" ? Metric.counter(base.id, options) : Metric.gauge(base.id, options)
    cell = new Cell(metric, kind, context, cells, key)
    cells.set(key, cell)
  }
  cell.users++
  return cell
}

/**
 * The series of one label value in one registry. Counter cells are registered on first use, so a peer that only
 * ever succeeds costs two series (its calls and its state).
 */
export class Series {
  readonly #context: Context.Context<never>
  readonly #peer: Readonly<Record<string, string>>
  #success: Cell | undefined
  readonly #outcomes: Record<Exclude<Outcome, "success">, Cell | undefined> = {
    failure: undefined,
    ignored: undefined,
    rejected: undefined,
    would_reject: undefined
  }
  readonly #transitions = new Map<string, Cell>()
  readonly #state: Cell
  #opening: Cell | undefined
  #probes: Cell | undefined

  constructor(label: string | undefined, context: Context.Context<never>) {
    this.#context = context
    this.#peer = label === undefined ? {} : { peer: label }
    // Reads closed from the series' first call, not only after its first transition.
    this.#state = acquire(state, "gauge", this.#peer, context)
  }

  /** Counts a success: the path nearly every call takes, so it has a field of its own. */
  success(): void {
    ;(this.#success ??= acquire(calls, "counter", { ...this.#peer, outcome: "success" }, this.#context)).value++
  }

  count(outcome: Exclude<Outcome, "success">): void {
    const cell = this.#outcomes[outcome] ??= acquire(calls, "counter", { ...this.#peer, outcome }, this.#context)
    cell.value++
  }

  probe(): void {
    ;(this.#probes ??= acquire(probes, "counter", this.#peer, this.#context)).value++
  }

  /** Counts a change of state, and sets the state gauge and the opening gauge (the opening number, 0 when closed). */
  transition(from: StateTag, to: StateTag, reason: Reason, openingNumber: number): void {
    const key = `${from}>${to}>${reason}`
    let cell = this.#transitions.get(key)
    if (cell === undefined) {
      cell = acquire(transitions, "counter", { ...this.#peer, from, to, reason }, this.#context)
      this.#transitions.set(key, cell)
    }
    cell.value++
    this.#state.value = stateValue[to]
    ;(this.#opening ??= acquire(opening, "gauge", this.#peer, this.#context)).value = openingNumber
  }

  /** Gives up this series' share of its registry entries; each goes when no other breaker uses it. */
  release(): void {
    this.#state.release()
    this.#probes?.release()
    this.#opening?.release()
    this.#success?.release()
    for (const cell of Object.values(this.#outcomes)) cell?.release()
    for (const cell of this.#transitions.values()) cell.release()
  }
}

/** The most per-peer series a set keeps for peers whose breakers it dropped; the oldest go first beyond it. */
export const maxRetainedSeries = 10_000

/**
 * Per-peer series kept after their breaker was dropped as idle, for `retentionMillis` (and `maxRetainedSeries` at
 * most), so that a low-traffic peer's counters keep counting across evictions instead of restarting. Expired ones
 * are released when the set next drops or creates a breaker: no timer.
 */
class RetainedSeries {
  /** By peer, in the order they were dropped, with the monotonic time until which each is kept. */
  readonly #byPeer = new Map<string, { readonly series: Series; readonly until: number }>()
  readonly #retentionMillis: number

  constructor(retentionMillis: number) {
    this.#retentionMillis = retentionMillis
  }

  keep(peer: string, series: Series, now: number): void {
    this.release(now)
    this.#byPeer.set(peer, { series, until: now + this.#retentionMillis })
    if (this.#byPeer.size > maxRetainedSeries) {
      const [oldest, kept] = this.#byPeer.entries().next().value!
      this.#byPeer.delete(oldest)
      kept.series.release()
    }
  }

  take(peer: string, now: number): Series | undefined {
    this.release(now)
    const kept = this.#byPeer.get(peer)
    if (kept === undefined) return undefined
    this.#byPeer.delete(peer)
    return kept.series
  }

  /** Releases the series kept until `now` or earlier; all of them with no argument. */
  release(now = Number.POSITIVE_INFINITY): void {
    for (const [peer, kept] of this.#byPeer) {
      if (kept.until > now) return
      this.#byPeer.delete(peer)
      kept.series.release()
    }
  }
}

/** How the breakers of a set (or one single breaker) get their series, and give them back. */
export interface SeriesSource {
  /** The series of a new breaker for `peer`, at monotonic time `now`. */
  readonly acquire: (peer: string, now: number) => Series
  /** A dropped breaker's series, at monotonic time `now`: kept for a while if per peer. */
  readonly drop: (peer: string, series: Series, now: number) => void
  /** Releases every series this source registered (the set's scope is closing). */
  readonly releaseAll: () => void
}

/**
 * The series for peers under a labelling choice, registered in the registry of `context`. Series of a shared label
 * are built once; per-peer series are built with the peer's breaker, kept for `retentionMillis` after it is dropped,
 * and taken back if the peer returns. A label function that throws reports through `onLabelError`.
 */
export const makeSeriesSource = (
  label: PeerLabel,
  context: Context.Context<never>,
  retentionMillis: number,
  onLabelError: (peer: string, error: unknown) => void
): SeriesSource => {
  if (label === "peer") {
    const retained = new RetainedSeries(retentionMillis)
    const live = new Set<Series>()
    return {
      acquire: (peer, now) => {
        const series = retained.take(peer, now) ?? new Series(peer, context)
        live.add(series)
        return series
      },
      drop: (peer, series, now) => {
        live.delete(series)
        retained.keep(peer, series, now)
      },
      releaseAll: () => {
        for (const series of live) series.release()
        live.clear()
        retained.release()
      }
    }
  }
  const byLabel = new Map<string | undefined, Series>()
  const seriesOf = (value: string | undefined): Series => {
    let series = byLabel.get(value)
    if (series === undefined) {
      series = new Series(value, context)
      byLabel.set(value, series)
    }
    return series
  }
  const labelOf = label === "none"
    ? () => undefined
    : (peer: string) => {
      try {
        return String(label(peer))
      } catch (error) {
        // A labelling bug must not fail the call it labels.
        onLabelError(peer, error)
        return "unlabelled"
      }
    }
  return {
    acquire: (peer) => seriesOf(labelOf(peer)),
    drop: () => {},
    releaseAll: () => {
      for (const series of byLabel.values()) series.release()
      byLabel.clear()
    }
  }
}
