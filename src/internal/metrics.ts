/**
 * The metric series of the breakers: one cell per series, registered in the `MetricRegistry` of the context a
 * breaker or set is built in, and shared by every breaker that reports under the same series.
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"
import { calls, type PeerLabel, probes, state, transitions } from "../CircuitBreakerMetrics.ts"
import type { StateTag } from "../CircuitStateChange.ts"

const stateValue: Record<StateTag, number> = { Closed: 0, HalfOpen: 1, Open: 2 }

/** A counted outcome of a guarded call. */
export type Outcome = "success" | "failure" | "ignored" | "rejected"

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
    rejected: undefined
  }
  readonly #transitions = new Map<string, Cell>()
  readonly #state: Cell
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

  transition(from: StateTag, to: StateTag): void {
    const key = `${from}>${to}`
    let cell = this.#transitions.get(key)
    if (cell === undefined) {
      cell = acquire(transitions, "counter", { ...this.#peer, from, to }, this.#context)
      this.#transitions.set(key, cell)
    }
    cell.value++
    this.#state.value = stateValue[to]
  }

  /** Gives up this series' share of its registry entries; each goes when no other breaker uses it. */
  release(): void {
    this.#state.release()
    this.#probes?.release()
    this.#success?.release()
    for (const cell of Object.values(this.#outcomes)) cell?.release()
    for (const cell of this.#transitions.values()) cell.release()
  }
}

/**
 * Returns the series for a peer under a labelling choice, registered in the registry of `context`. Series of a
 * shared label are built once; per-peer series are built with the peer's breaker and released when it is dropped.
 */
export const makeSeriesFor = (label: PeerLabel, context: Context.Context<never>): (peer: string) => Series => {
  if (label === "peer") return (peer) => new Series(peer, context)
  if (label === "none") {
    const shared = new Series(undefined, context)
    return () => shared
  }
  const byLabel = new Map<string, Series>()
  return (peer) => {
    let value: string
    try {
      value = String(label(peer))
    } catch {
      // A labelling bug must not fail the call it labels.
      value = "unlabelled"
    }
    let series = byLabel.get(value)
    if (series === undefined) {
      series = new Series(value, context)
      byLabel.set(value, series)
    }
    return series
  }
}
