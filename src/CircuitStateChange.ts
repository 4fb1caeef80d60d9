/**
 * A change of a circuit's state, as published on `CircuitBreakerSet`'s `changes` stream.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * Why a circuit changed state.
 *
 * - `window`, `consecutive`, `rate`, `slow-calls`: the trip policy that opened it (Closed → Open); for
 *   `Policy.any`, the first member that tripped, in declaration order.
 * - `probe`: the open period passed and a probe was let through (Open → HalfOpen).
 * - `probe-succeeded`: enough probes succeeded (HalfOpen → Closed).
 * - `probe-failed`: a probe failed, or was slow under a `slowCalls` policy (HalfOpen → Open).
 * - `probe-timeout`: a probe was still running when its lease (`halfOpen.probeTimeout`) ended: it failed, and the
 *   circuit reopened at the lease's end (HalfOpen → Open).
 * - `reset`: an operator called `reset(peer)`.
 * - `isolated` / `released`: an operator's `isolate(peer)` began, or its last release ended it.
 *
 * @category models
 * @since 0.1.0
 */
export const Reason = Schema.Literals([
  "window",
  "consecutive",
  "rate",
  "slow-calls",
  "probe",
  "probe-succeeded",
  "probe-failed",
  "probe-timeout",
  "reset",
  "isolated",
  "released"
])

/**
 * @category models
 * @since 0.1.0
 */
export type Reason = typeof Reason.Type

/**
 * The tag of a circuit's state.
 *
 * @category models
 * @since 0.1.0
 */
export const StateTag = Schema.Literals(["Closed", "Open", "HalfOpen"])

/**
 * @category models
 * @since 0.1.0
 */
export type StateTag = typeof StateTag.Type

/**
 * One change of one peer's circuit: `from` and `to` are state tags, `at` is wall-clock epoch milliseconds, and
 * `opening` is the opening number the circuit is in after the change (1 for a first opening, n + 1 after opening n
 * failed; 0 once closed or while isolated).
 *
 * **Example** (Logging every change)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { CircuitBreakerSet } from "effect-circuit"
 *
 * const logChanges = Effect.gen(function*() {
 *   const breakers = yield* CircuitBreakerSet
 *   yield* breakers.changes.pipe(
 *     Stream.runForEach((change) => Effect.log(`${change.peer}: ${change.from} -> ${change.to} (${change.reason})`))
 *   )
 * })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export const CircuitStateChange = Schema.Struct({
  peer: Schema.String,
  from: StateTag,
  to: StateTag,
  at: Schema.Number,
  reason: Reason,
  opening: Schema.Number,
  /**
   * In fleet mode, a change of the fleet's circuit carries the id of the process whose call caused it; a change of
   * this process's local breaker carries none.
   */
  process: Schema.optionalKey(Schema.String)
})

/**
 * @category models
 * @since 0.1.0
 */
export type CircuitStateChange = typeof CircuitStateChange.Type
