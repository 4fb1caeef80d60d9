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
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
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

/**
 * The series of one label value, built once and updated synchronously with the calling fiber's context (so the
 * `MetricRegistry` in that context receives them).
 *
 * Each series is its own metric value with its attributes built in, rather than `Metric.withAttributes` on every
 * update: its registry key is then computed once instead of on every call.
 *
 * @internal
 */
export class Series {
  readonly success: Metric.Counter<number>
  readonly failure: Metric.Counter<number>
  readonly ignored: Metric.Counter<number>
  readonly rejected: Metric.Counter<number>
  readonly probes: Metric.Counter<number>
  readonly state: Metric.Gauge<number>
  readonly #peer: Readonly<Record<string, string>>
  readonly #transitions = new Map<string, Metric.Counter<number>>()
  #started = false

  constructor(label: string | undefined) {
    this.#peer = label === undefined ? {} : { peer: label }
    const outcome = (outcome: string) =>
      Metric.counter(calls.id, { description: calls.description, attributes: { ...this.#peer, outcome } })
    this.success = outcome("success")
    this.failure = outcome("failure")
    this.ignored = outcome("ignored")
    this.rejected = outcome("rejected")
    this.probes = Metric.counter(probes.id, { description: probes.description, attributes: this.#peer })
    this.state = Metric.gauge(state.id, { description: state.description, attributes: this.#peer })
  }

  /** Reads closed from a series' first call, not only after its first transition. */
  start(context: Context.Context<never>): void {
    if (this.#started) return
    this.#started = true
    this.state.updateUnsafe(stateValue.Closed, context)
  }

  transition(from: StateTag, to: StateTag, context: Context.Context<never>): void {
    const key = `${from}>${to}`
    let counter = this.#transitions.get(key)
    if (counter === undefined) {
      counter = Metric.counter(transitions.id, {
        description: transitions.description,
        attributes: { ...this.#peer, from, to }
      })
      this.#transitions.set(key, counter)
    }
    counter.updateUnsafe(1, context)
    this.state.updateUnsafe(stateValue[to], context)
  }
}

/**
 * Returns the series for a peer under a labelling choice. Series of a shared label are built once; per-peer series
 * are built with the peer's breaker (their values live in the `MetricRegistry`, not in the series object).
 *
 * @internal
 */
export const makeSeriesFor = (label: PeerLabel): (peer: string) => Series => {
  if (label === "peer") return (peer) => new Series(peer)
  if (label === "none") {
    const shared = new Series(undefined)
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
      series = new Series(value)
      byLabel.set(value, series)
    }
    return series
  }
}
