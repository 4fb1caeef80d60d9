/**
 * The metrics every breaker records, through Effect's `Metric` (so any exporter `effect/observability` offers,
 * Prometheus or OTLP, sees them).
 *
 * | metric | type | attributes | meaning |
 * | --- | --- | --- | --- |
 * | `circuit_breaker_calls_total` | counter | `peer`, `outcome` | guarded calls by outcome: `success` (including typed failures that `isFailure` rejects), `failure`, `ignored` (counted as neither: an interrupted closed call, a probe whose own effect was interrupted, or a call rejected by another breaker nested in it), `rejected` (failed fast with `CircuitOpenError`), `would_reject` (in observe mode, a call that would have been rejected and ran) |
 * | `circuit_breaker_state` | gauge | `peer` | 0 closed, 1 half-open, 2 open; set to 0 on a peer's first call |
 * | `circuit_breaker_transitions_total` | counter | `peer`, `from`, `to`, `reason` | state changes, with the state tags and why |
 * | `circuit_breaker_opening` | gauge | `peer` | the opening number while open or half-open, 0 once closed |
 * | `circuit_breaker_probes_total` | counter | `peer` | probes let through while half-open |
 *
 * The `peer` attribute is chosen by the `metricPeerLabel` option: the peer itself (`"peer"`, the default), none
 * (`"none"`), or a function mapping a peer to a label of bounded cardinality, such as its host.
 *
 * Series are registered in the `MetricRegistry` of the context a breaker or set is built in, as hooks read at export
 * time, and removed when the set's scope closes. With per-peer labels, a peer's series outlive its breaker, dropped
 * as idle, for the set's `metricRetention` (15 minutes by default; at most 10,000 peers' series are kept, the oldest
 * go first): a peer that comes back within it keeps counting. Breakers reporting under one label share its series:
 * counters add up and the state gauge shows the last change.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

/**
 * Guarded calls, by `outcome`: `success`, `failure`, `ignored`, `rejected` or `would_reject`.
 *
 * **Example** (Reading the rejected calls of one peer)
 *
 * ```ts
 * import { Metric } from "effect"
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
 * State changes of a circuit, with `from` and `to` attributes (`Closed`, `Open`, `HalfOpen`) and the `reason` of the
 * change (see `CircuitStateChange.Reason`: `window`, `consecutive`, `rate` or `slow-calls` for a trip, `probe`,
 * `probe-succeeded`, `probe-failed`, `probe-timeout`, `reset`, `isolated`, `released`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const transitions = Metric.counter("circuit_breaker_transitions_total", {
  description: "State changes of a circuit breaker, by from and to state and reason"
})

/**
 * The opening number of a circuit: 1 for its first opening after a healthy period, n + 1 when opening n failed
 * (its probe failed, or it relapsed soon after closing); 0 once closed. Set at each change of state.
 *
 * @category metrics
 * @since 0.2.0
 */
export const opening = Metric.gauge("circuit_breaker_opening", {
  description: "Opening number of a circuit breaker: n while open or half-open for the n-th time in a row, 0 closed"
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
 * Fleet mode: 1 while the set's Redis answers, 0 while the set decides with its local breakers alone. Its attribute
 * `prefix` is the set's key prefix.
 *
 * @category metrics
 * @since 0.3.0
 */
export const storeUp = Metric.gauge("circuit_breaker_store_up", {
  description: "1 while a fleet set's Redis answers, 0 while it runs on local breakers"
})

/**
 * Fleet mode: Redis calls that failed or timed out (each turns the set local until Redis answers again). Its
 * attribute `prefix` is the set's key prefix.
 *
 * @category metrics
 * @since 0.3.0
 */
export const storeErrors = Metric.counter("circuit_breaker_store_errors_total", {
  description: "Redis calls of a fleet set that failed or timed out"
})

/**
 * How the `peer` attribute of the metrics is chosen.
 *
 * @category models
 * @since 0.1.0
 */
export type PeerLabel = "peer" | "none" | ((peer: string) => string)
