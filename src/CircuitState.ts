/**
 * What a breaker reports about its circuit: `Closed`, `Open` or `HalfOpen`, with what helps a caller decide.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"

/**
 * The circuit lets calls through and counts failures in its sliding window.
 *
 * @category models
 * @since 0.1.0
 */
export interface Closed {
  readonly _tag: "Closed"
  /** Counted failures inside the window right now. One more than `maxFailures` opens the circuit. */
  readonly failures: number
}

/**
 * The circuit rejects every call with `CircuitOpenError` until `probeAt`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Open {
  readonly _tag: "Open"
  /** When the circuit opened, in wall-clock epoch milliseconds. */
  readonly openedAt: number
  /** When the next call will be let through as a probe, in wall-clock epoch milliseconds. */
  readonly probeAt: number
  /** How long until the next call will be let through as a probe. */
  readonly retryAfter: Duration.Duration
  /**
   * Whether an operator holds the circuit open with `isolate`. While isolated, no probe is let through however long
   * it stays open, and `probeAt` / `retryAfter` are one `resetTimeout` from now.
   */
  readonly isolated: boolean
}

/**
 * The open period is over. If no probe is in flight, the next call is the probe; while one is, every other call is
 * rejected.
 *
 * @category models
 * @since 0.1.0
 */
export interface HalfOpen {
  readonly _tag: "HalfOpen"
  /** When the circuit opened, in wall-clock epoch milliseconds. */
  readonly openedAt: number
  /** Whether a probe is running now. */
  readonly probeInFlight: boolean
  /**
   * How long until a call may be admitted: zero when no probe is in flight, otherwise the time until the running
   * probe's lease ends (a probe still running then has failed, and the circuit reopens).
   */
  readonly retryAfter: Duration.Duration
}

/**
 * The state of a circuit, as read at one instant.
 *
 * **Details**
 *
 * The state is computed from the clock when it is read: a circuit whose open period has passed reads `HalfOpen`
 * before any call arrives, so code that gates on the state never waits for a call that never comes.
 *
 * **Example** (Reading the state of a peer)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreakerSet } from "effect-circuit"
 *
 * const report = Effect.gen(function*() {
 *   const breakers = yield* CircuitBreakerSet
 *   const state = yield* breakers.state("inventory-api")
 *   switch (state._tag) {
 *     case "Closed":
 *       return `healthy, ${state.failures} recent failures`
 *     case "Open":
 *       return `open until ${new Date(state.probeAt).toISOString()}`
 *     case "HalfOpen":
 *       return state.probeInFlight ? "probing" : "ready to probe"
 *   }
 * })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type CircuitState = Closed | Open | HalfOpen

/**
 * Whether the circuit lets calls through.
 *
 * **Example** (Gating a health check on the state)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreakerSet, CircuitState } from "effect-circuit"
 *
 * const healthy = Effect.map(CircuitBreakerSet.use((set) => set.state("payments")), CircuitState.isClosed)
 * ```
 *
 * @category guards
 * @since 0.1.0
 */
export const isClosed = (state: CircuitState): state is Closed => state._tag === "Closed"

/**
 * Whether the circuit rejects every call (it is open, or isolated by an operator).
 *
 * @category guards
 * @since 0.1.0
 */
export const isOpen = (state: CircuitState): state is Open => state._tag === "Open"

/**
 * Whether the open period is over and the circuit is probing the peer (or ready to).
 *
 * @category guards
 * @since 0.1.0
 */
export const isHalfOpen = (state: CircuitState): state is HalfOpen => state._tag === "HalfOpen"
