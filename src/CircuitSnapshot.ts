/**
 * A point-in-time view of every circuit a `CircuitBreakerSet` holds, for health endpoints and dashboards.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { StateTag } from "./CircuitStateChange.ts"

/**
 * Why a circuit is open or half-open (see `CircuitState.OpenReason`).
 *
 * @category models
 * @since 0.2.0
 */
export const OpenReason = Schema.Literals([
  "window",
  "consecutive",
  "rate",
  "slow-calls",
  "probe-failed",
  "probe-timeout",
  "isolated"
])

/**
 * One peer in a snapshot, with the fields of its `CircuitState`. Times are wall-clock epoch milliseconds: `openedAt`
 * while Open or HalfOpen, `probeAt` (when a call may next be admitted) while Open or HalfOpen. `calls` and
 * `slowCalls` appear for the policies that count them; `opening` and `reason` while Open or HalfOpen;
 * `probesInFlight` and `successes` while HalfOpen. `isolated` is true while an operator holds the circuit open;
 * `probeAt` is then only a polling hint: no call is admitted until the isolation is released.
 *
 * @category models
 * @since 0.1.0
 */
export const PeerSnapshot = Schema.Struct({
  peer: Schema.String,
  state: StateTag,
  failures: Schema.Number,
  calls: Schema.optionalKey(Schema.Number),
  slowCalls: Schema.optionalKey(Schema.Number),
  openedAt: Schema.optionalKey(Schema.Number),
  probeAt: Schema.optionalKey(Schema.Number),
  isolated: Schema.optionalKey(Schema.Boolean),
  opening: Schema.optionalKey(Schema.Number),
  reason: Schema.optionalKey(OpenReason),
  probesInFlight: Schema.optionalKey(Schema.Number),
  successes: Schema.optionalKey(Schema.Number)
})

/**
 * @category models
 * @since 0.1.0
 */
export type PeerSnapshot = typeof PeerSnapshot.Type

/**
 * Every peer the set currently holds, read at `at` (wall-clock epoch milliseconds). A schema, so it encodes to JSON
 * with `Schema.encodeSync(CircuitSnapshot)`.
 *
 * **Gotchas**
 *
 * Peers whose breakers were dropped as idle (closed, with no failure in the window) are not listed: they are
 * Closed with no failures.
 *
 * **Example** (A health endpoint body)
 *
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { CircuitBreakerSet, CircuitSnapshot } from "effect-circuit"
 *
 * const health = Effect.gen(function*() {
 *   const breakers = yield* CircuitBreakerSet
 *   const snapshot = yield* breakers.snapshot
 *   return JSON.stringify(Schema.encodeSync(CircuitSnapshot.CircuitSnapshot)(snapshot))
 * })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export const CircuitSnapshot = Schema.Struct({
  at: Schema.Number,
  peers: Schema.Array(PeerSnapshot)
})

/**
 * @category models
 * @since 0.1.0
 */
export type CircuitSnapshot = typeof CircuitSnapshot.Type
