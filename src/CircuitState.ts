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
  /**
   * Counted failures the policy holds right now: inside the window (`window`, `rate`), or in the current streak
   * (`consecutive`). 0 for a `slowCalls` policy alone.
   */
  readonly failures: number
  /** Calls inside the window, for `rate` and `slowCalls` policies. */
  readonly calls?: number
  /** Slow calls inside the window, for `slowCalls` policies. */
  readonly slowCalls?: number
}

/**
 * Why a circuit is open or half-open: the trip policy that opened it (`window`, `consecutive`, `rate`,
 * `slow-calls`; for `Policy.any` the first member that tripped), a probe that failed (`probe-failed`) or ran out its
 * lease (`probe-timeout`), or an operator's isolation (`isolated`).
 *
 * @category models
 * @since 0.2.0
 */
export type OpenReason =
  | "window"
  | "consecutive"
  | "rate"
  | "slow-calls"
  | "probe-failed"
  | "probe-timeout"
  | "isolated"

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
   * it stays open, and `probeAt` / `retryAfter` are only a polling hint, one first opening from now.
   */
  readonly isolated: boolean
  /** 1 for a first opening, n + 1 after opening n failed (its probe failed, or it relapsed soon after closing); 0 while isolated. */
  readonly opening: number
  readonly reason: OpenReason
}

/**
 * The open period is over. While a probe slot is free the next call is a probe; otherwise calls are rejected until
 * the probes decide (or the oldest one's lease ends).
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
  /** How many probes are running now. */
  readonly probesInFlight: number
  /** Probes that succeeded in this half-open period; `halfOpen.successThreshold` of them close the circuit. */
  readonly successes: number
  /**
   * How long until a call may be admitted: zero while a probe slot is free, otherwise the time until the oldest
   * running probe's lease ends (a probe still running then has failed, and the circuit reopens).
   */
  readonly retryAfter: Duration.Duration
  /** The opening this half-open period follows. */
  readonly opening: number
  /** Why the circuit opened. */
  readonly reason: OpenReason
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
