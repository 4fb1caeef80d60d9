/**
 * The metrics every breaker records, through Effect's `Metric` (so any exporter `effect/observability` offers,
 * Prometheus or OTLP, sees them).
 *
 * | metric | type | attributes | meaning |
 * | --- | --- | --- | --- |
 * | `circuit_breaker_calls_total` | counter | `peer`, `outcome` | guarded calls by outcome: `success` (including typed failures that `isFailure` rejects), `failure`, `ignored` (interrupted, counted as neither), `rejected` (failed fast with `CircuitOpenError`) |
 * | `circuit_breaker_state` | gauge | `peer` | 0 closed, 1 half-open, 2 open; set to 0 on a peer's first call |
 * | `circuit_breaker_transitions_total` | counter | `peer`, `from`, `to` | state changes, with the state tags |
 * | `circuit_breaker_probes_total` | counter | `peer` | probes let through while half-open |
 *
 * The `peer` attribute is chosen by the `metricPeerLabel` option: the peer itself (`"peer"`, the default), none
 * (`"none"`), or a function mapping a peer to a label of bounded cardinality, such as its host.
 *
 * Series are registered in the `MetricRegistry` of the context a breaker or set is built in, as hooks read at export
 * time. With per-peer labels, a peer's series are removed when the set drops its breaker as idle (if the peer comes
 * back its counters restart from 0, a counter reset to Prometheus). Breakers reporting under one label share its
 * series: counters add up and the state gauge shows the last change.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"

/**
 * Guarded calls, by `outcome`: `success`, `failure`, `ignored` or `rejected`.
 *
 * **Example** (Reading the rejected calls of one peer)
 *
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { CircuitBreakerMetrics } from "effect-circuit"
 *
 * const rejected = Metric.value(
 *   Metric.withAttributes(CircuitBreakerMetrics.calls, { peer: "inventory-api", outcome: "rejected" })
 * )
 * ```
 *
 * @category metrics
 * @since 0.1.0
 */
export const calls = Metric.counter("circuit_breaker_calls_total", {
  description: "Calls through a circuit breaker, by outcome: success, failure, ignored (interrupted) or rejected"
})

/**
 * The state of a circuit: 0 closed, 1 half-open, 2 open.
 *
 * **Gotchas**
 *
 * The gauge changes when the breaker acts: an open circuit whose `resetTimeout` has passed reads `HalfOpen` from
 * `state(peer)` at once, but the gauge moves to 1 when the probe is let through.
 *
 * @category metrics
 * @since 0.1.0
 */
export const state = Metric.gauge("circuit_breaker_state", {
  description: "State of a circuit breaker: 0 closed, 1 half-open, 2 open"
})

/**
 * State changes of a circuit, with `from` and `to` attributes (`Closed`, `Open`, `HalfOpen`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const transitions = Metric.counter("circuit_breaker_transitions_total", {
  description: "State changes of a circuit breaker, by from and to state"
})

/**
 * Probes let through while half-open.
 *
 * @category metrics
 * @since 0.1.0
 */
export const probes = Metric.counter("circuit_breaker_probes_total", {
  description: "Probe calls let through by a half-open circuit breaker"
})

/**
 * How the `peer` attribute of the metrics is chosen.
 *
 * @category models
 * @since 0.1.0
 */
export type PeerLabel = "peer" | "none" | ((peer: string) => string)

type StateTag = "Closed" | "Open" | "HalfOpen"

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
 *
 * @internal
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
 *
 * @internal
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
