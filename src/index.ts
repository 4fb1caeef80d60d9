/**
 * effect-circuit: a time-window circuit breaker for Effect, one breaker per peer.
 *
 * @since 0.1.0
 */

/**
 * A single circuit breaker: `make`, `withBreaker`, `state`.
 *
 * @since 0.1.0
 */
export * as CircuitBreaker from "./CircuitBreaker.ts"

/**
 * @since 0.1.0
 */
export { CircuitBreakerConfigError } from "./CircuitBreakerConfigError.ts"

/**
 * @since 0.1.0
 */
export type { BreakerOptions, HalfOpenOptions, Mode, ResolvedOptions } from "./CircuitBreakerOptions.ts"

/**
 * Trip policies: `Policy.window`, `consecutive`, `rate`, `slowCalls`, `any`.
 *
 * @since 0.2.0
 */
export * as Policy from "./Policy.ts"

/**
 * Open durations as schedules: `OpenDuration.exponential`.
 *
 * @since 0.2.0
 */
export * as OpenDuration from "./OpenDuration.ts"

/**
 * @since 0.1.0
 */
export { CircuitBreakerSet, withBreaker } from "./CircuitBreakerSet.ts"

/**
 * @since 0.1.0
 */
export type {
  ConfigLayerOptions,
  PeerOptions,
  RedisSetOptions,
  Service as CircuitBreakerSetService,
  SetOptions
} from "./CircuitBreakerSet.ts"

/**
 * @since 0.1.0
 */
export { CircuitOpenError, RejectedBy } from "./CircuitOpenError.ts"

/**
 * The state of a circuit: `Closed`, `Open` or `HalfOpen`, with guards (`CircuitState.isOpen`, …).
 *
 * @since 0.1.0
 */
export * as CircuitState from "./CircuitState.ts"

/**
 * The metrics every breaker records.
 *
 * @since 0.1.0
 */
export * as CircuitBreakerMetrics from "./CircuitBreakerMetrics.ts"

/**
 * A snapshot of every circuit a set holds, as a schema.
 *
 * @since 0.1.0
 */
export * as CircuitSnapshot from "./CircuitSnapshot.ts"

/**
 * A change of a circuit's state, as a schema.
 *
 * @since 0.1.0
 */
export * as CircuitStateChange from "./CircuitStateChange.ts"

/**
 * Whether a set shares its breakers with a fleet right now: `Connected`, or `Local` with why and the failures
 * waiting to be replayed (see `CircuitBreakerSet.layerRedis`).
 *
 * @since 0.3.0
 */
export * as FleetStatus from "./FleetStatus.ts"
