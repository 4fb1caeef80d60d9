/**
 * The options of a breaker and of a set of breakers, their defaults, and how they are validated.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import type * as Schedule from "effect/Schedule"
import type { PeerLabel } from "./CircuitBreakerMetrics.ts"
import * as Policy from "./Policy.ts"

/**
 * How a half-open circuit probes its peer.
 *
 * **Details**
 *
 * | option | default | meaning |
 * | --- | --- | --- |
 * | `probes` | `1` | probes that may run at once (an integer from 1 to 1,000) |
 * | `successThreshold` | `probes` | probe successes that close the circuit (an integer ≥ `probes`) |
 * | `probeTimeout` | the opening that preceded | a probe's lease: a probe still running when it ends has failed |
 *
 * Any counted failure of a probe (or, under a `slowCalls` policy, a slow probe) reopens the circuit at once. A call
 * that finds every slot taken, or as many probes running as successes still needed, is rejected at once.
 *
 * @category models
 * @since 0.2.0
 */
export interface HalfOpenOptions {
  readonly probes?: number | undefined
  readonly successThreshold?: number | undefined
  readonly probeTimeout?: Duration.Input | undefined
}

/**
 * `"enforce"` rejects calls while the circuit is open; `"observe"` runs every call, as a dry run: the breaker keeps
 * its state, metrics, logs and `changes` exactly as if enforcing, and counts the calls it would have rejected with
 * `outcome="would_reject"`.
 *
 * @category models
 * @since 0.2.0
 */
export type Mode = "enforce" | "observe"

/**
 * The options every breaker takes. All are optional.
 *
 * **Details**
 *
 * | option | default | meaning |
 * | --- | --- | --- |
 * | `policy` | `Policy.window({ maxFailures: 3, window: "60 seconds" })` | the rule that opens the circuit (see `Policy`) |
 * | `maxFailures`, `window` | `3`, `"60 seconds"` | shorthand for `Policy.window({ maxFailures, window })`; not with `policy` |
 * | `openDuration` | `"10 seconds"` | how long each opening lasts: a duration, or a `Schedule` whose input is the opening number (see `OpenDuration`) |
 * | `resetTimeout` | | the former name of a fixed `openDuration`; not with `openDuration` |
 * | `maxOpenDuration` | `"1 hour"` (or a longer fixed `openDuration`) | the cap of every opening |
 * | `halfOpen` | one probe | `{ probes, successThreshold, probeTimeout }` (see `HalfOpenOptions`) |
 * | `mode` | `"enforce"` | `"observe"` runs every call and only reports what it would have done |
 * | `isFailure` | every failure counts | which typed failures count against the peer |
 * | `metricPeerLabel` | `"peer"` | the `peer` attribute of the metrics: the peer, `"none"`, or a function of the peer |
 *
 * Durations are `Duration.Input`s: a `Duration`, a number of milliseconds, or a string such as `"30 seconds"`.
 *
 * **Gotchas**
 *
 * - `undefined` means "use the default"; `null` is an error. Nothing is clamped: a bad value is a
 *   `CircuitBreakerConfigError` naming its path, such as `policy.threshold` or `halfOpen.probes`.
 * - `isFailure` sees typed failures only. A defect always counts; an interruption never does, nor does a
 *   `CircuitOpenError` from another breaker nested in the call. If `isFailure` throws, the call counts as a failure
 *   (logged once per breaker). A probe still running at the end of its lease counts as a failure, whatever it does
 *   after. A non-boolean result is read by truthiness.
 * - A `Schedule` for `openDuration` is stepped once when the breaker is built: one that yields no delay, runs
 *   asynchronously or fails is an error then. Schedules that read the date (`cron`, `fixed`, `windowed`) are not
 *   supported. If a schedule fails later, that opening lasts `maxOpenDuration`.
 *
 * @category models
 * @since 0.1.0
 */
export interface BreakerOptions {
  readonly policy?: Policy.Policy | undefined
  readonly maxFailures?: number | undefined
  readonly window?: Duration.Input | undefined
  readonly openDuration?: Duration.Input | Schedule.Schedule<unknown, number> | undefined
  readonly resetTimeout?: Duration.Input | undefined
  readonly maxOpenDuration?: Duration.Input | undefined
  readonly halfOpen?: HalfOpenOptions | undefined
  readonly mode?: Mode | undefined
  readonly isFailure?: ((error: unknown) => boolean) | undefined
  readonly metricPeerLabel?: PeerLabel | undefined
}

/**
 * The defaults applied to options that are left out: python-circuit's `maxfail=3`, `time_unit=60`,
 * `reset_timeout=10`, one probe, and a predicate that counts every typed failure.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaults = {
  policy: Policy.window({ maxFailures: 3, window: "60 seconds" }),
  openDuration: Duration.seconds(10),
  maxOpenDuration: Duration.hours(1),
  halfOpen: { probes: 1 },
  mode: "enforce",
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
  readonly policy: Policy.Policy
  readonly openDuration: Duration.Duration | Schedule.Schedule<unknown, number>
  readonly maxOpenDuration: Duration.Duration
  readonly halfOpen: {
    readonly probes: number
    readonly successThreshold: number
    /** `undefined`: the duration of the opening that preceded the half-open period. */
    readonly probeTimeout: Duration.Duration | undefined
  }
  readonly mode: Mode
  readonly isFailure: (error: unknown) => boolean
  readonly metricPeerLabel: PeerLabel
}
