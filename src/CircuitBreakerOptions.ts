/**
 * The options of a breaker and of a set of breakers, their defaults, and how they are validated.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import type { PeerLabel } from "./CircuitBreakerMetrics.ts"

/**
 * The options every breaker takes. All are optional.
 *
 * **Details**
 *
 * | option | default | meaning |
 * | --- | --- | --- |
 * | `maxFailures` | `3` | counted failures allowed inside the window; one more opens the circuit (a safe integer >= 0) |
 * | `window` | `"60 seconds"` | the sliding window over which failures are counted (a finite duration > 0) |
 * | `resetTimeout` | `"10 seconds"` | how long the circuit stays open before it lets one probe through (a finite duration > 0) |
 * | `isFailure` | every failure counts | which typed failures count against the peer |
 * | `metricPeerLabel` | `"peer"` | the `peer` attribute of the metrics: the peer, `"none"`, or a function of the peer |
 *
 * Durations are `Duration.Input`s: a `Duration`, a number of milliseconds, or a string such as `"30 seconds"`.
 *
 * **Gotchas**
 *
 * - `undefined` means "use the default"; `null` is an error.
 * - `isFailure` sees typed failures only. A defect always counts; an interruption never does, nor does a
 *   `CircuitOpenError` from another breaker nested in the call. If `isFailure` throws, the call counts as a failure
 *   (logged once per breaker). A probe still running at the end of its lease counts as a failure, whatever it does
 *   after.
 *   A non-boolean result is read by truthiness.
 *
 * @category models
 * @since 0.1.0
 */
export interface BreakerOptions {
  readonly maxFailures?: number | undefined
  readonly window?: Duration.Input | undefined
  readonly resetTimeout?: Duration.Input | undefined
  readonly isFailure?: ((error: unknown) => boolean) | undefined
  readonly metricPeerLabel?: PeerLabel | undefined
}

/**
 * The defaults applied to options that are left out: python-circuit's `maxfail=3`, `time_unit=60`,
 * `reset_timeout=10`, and a predicate that counts every typed failure.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaults = {
  maxFailures: 3,
  window: Duration.seconds(60),
  resetTimeout: Duration.seconds(10),
  isFailure: (_error: unknown): boolean => true,
  metricPeerLabel: "peer"
} as const

/**
 * Options after validation, with every default filled in.
 *
 * @category models
 * @since 0.1.0
 */
export interface ResolvedOptions {
  readonly maxFailures: number
  readonly window: Duration.Duration
  readonly resetTimeout: Duration.Duration
  readonly isFailure: (error: unknown) => boolean
  readonly metricPeerLabel: PeerLabel
}
