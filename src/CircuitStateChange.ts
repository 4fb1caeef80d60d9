/**
 * A change of a circuit's state, as published on `CircuitBreakerSet`'s `changes` stream.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * Why a circuit changed state.
 *
 * - `failures`: more than `maxFailures` counted failures inside the window (Closed → Open).
 * - `probe`: the open period passed and a probe was let through (Open → HalfOpen).
 * - `probe-succeeded` / `probe-failed`: the probe's outcome (HalfOpen → Closed / Open).
 * - `probe-timeout`: the probe was still running when its lease (`resetTimeout` from its start) ended: it failed, and
 *   the circuit reopened at the lease's end (HalfOpen → Open).
 * - `reset`: an operator called `reset(peer)`.
 * - `isolated` / `released`: an operator's `isolate(peer)` began, or its last release ended it.
 *
 * @category models
 * @since 0.1.0
 */
export const Reason = Schema.Literals([
  "failures",
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
 * One change of one peer's circuit: `from` and `to` are state tags, `at` is wall-clock epoch milliseconds.
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
  reason: Reason
})

/**
 * @category models
 * @since 0.1.0
 */
export type CircuitStateChange = typeof CircuitStateChange.Type
