/**
 * Whether a set shares its breakers with the fleet right now: see `CircuitBreakerSet.layerRedis`.
 *
 * @since 0.3.0
 */

/**
 * The set reaches Redis: counted failures, openings and probes are shared with every replica.
 *
 * @category models
 * @since 0.3.0
 */
export interface Connected {
  readonly _tag: "Connected"
  /** When the set (re)joined the fleet, in wall-clock epoch milliseconds. */
  readonly since: number
  /** This set's id in the fleet, as changes caused by it name it (`CircuitStateChange.process`). */
  readonly process: string
}

/**
 * The set decides alone with its local breakers: it is an in-memory set, or its Redis has not answered since `since`.
 *
 * @category models
 * @since 0.3.0
 */
export interface Local {
  readonly _tag: "Local"
  /** Since when, in wall-clock epoch milliseconds. */
  readonly since: number
  /** This set's id in the fleet (an in-memory set says `"in-memory"`). */
  readonly process: string
  /** Why, in a few words: `"in-memory set"`, `"connecting"`, `"timed out"`, the client's error message. */
  readonly reason: string
  /** Counted failures kept to be replayed, with their ages, when the set rejoins the fleet. */
  readonly pendingFailures: number
}

/**
 * A set's link to its fleet, as `CircuitBreakerSet`'s `fleet` reports it.
 *
 * **Details**
 *
 * An in-memory set is always `Local` with the reason `"in-memory set"`. A fleet set starts `Local` (`"connecting"`)
 * and turns `Connected` once Redis answers; it turns `Local` again within `2 × timeout + 1 s` of Redis becoming
 * unreachable, refused or hung, and rejoins within about 2 s of Redis answering again.
 *
 * **Example** (A readiness probe that reports the fleet link)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreakerSet, FleetStatus } from "effect-circuit"
 *
 * const fleetReport = Effect.gen(function*() {
 *   const breakers = yield* CircuitBreakerSet
 *   const status = yield* breakers.fleet
 *   return FleetStatus.isConnected(status) ? "shared" : `local: ${status.reason}`
 * })
 * ```
 *
 * @category models
 * @since 0.3.0
 */
export type FleetStatus = Connected | Local

/**
 * Whether the set shares its breakers with the fleet.
 *
 * @category guards
 * @since 0.3.0
 */
export const isConnected = (status: FleetStatus): status is Connected => status._tag === "Connected"

/**
 * Whether the set decides alone.
 *
 * @category guards
 * @since 0.3.0
 */
export const isLocal = (status: FleetStatus): status is Local => status._tag === "Local"
