/**
 * How long a circuit stays open, as a schedule of openings: the `openDuration` option takes a fixed duration or a
 * `Schedule` whose input is the opening number (1 for the first opening after a healthy period, 2 after a failed
 * probe, …).
 *
 * @since 0.2.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"

/**
 * An exponential backoff of openings: `base`, `base × factor`, `base × factor²`, … capped at `max`, then jittered.
 *
 * **Details**
 *
 * The cap is applied first and the jitter after it (each delay multiplied by a uniform factor in [0.8, 1.2], drawn
 * from Effect's `Random`), so openings at the cap stay spread instead of re-synchronising a fleet of replicas on
 * exactly `max`. `factor` defaults to 2 and `jitter` to `true`.
 *
 * The n-th opening counts up while a peer keeps failing its probes, and also when it fails again within as long as
 * its last opening lasted after a close; a circuit that stays closed that long starts again from `base`.
 *
 * **Gotchas**
 *
 * - With jitter, an opening may last up to `1.2 × max`; keep the breaker's `maxOpenDuration` (1 hour by default)
 *   above it, or it is cut there.
 * - `base` and `max` must be durations longer than zero, and `factor` a finite number ≥ 1;
 *   otherwise building the breaker fails with a `CircuitBreakerConfigError` naming `openDuration`.
 *
 * **Example** (1 s, 2 s, 4 s … up to 30 s)
 *
 * ```ts
 * import { CircuitBreakerSet, OpenDuration } from "effect-circuit"
 *
 * const layer = CircuitBreakerSet.layer({
 *   openDuration: OpenDuration.exponential({ base: "1 second", max: "30 seconds" })
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const exponential = (options: {
  readonly base: Duration.Input
  readonly max: Duration.Input
  readonly factor?: number | undefined
  readonly jitter?: boolean | undefined
}): Schedule.Schedule<Duration.Duration, unknown> => {
  const problem = invalidOption(options)
  if (problem !== undefined) {
    // Reported when the breaker is built, which steps the schedule once: a `CircuitBreakerConfigError` naming
    // `openDuration`, with this message.
    return Schedule.modifyDelay(
      Schedule.spaced(1) as unknown as Schedule.Schedule<Duration.Duration>,
      () => Effect.die(new Error(`OpenDuration.exponential: ${problem}`))
    )
  }
  const capped = Schedule.min([Schedule.exponential(options.base, options.factor ?? 2), Schedule.spaced(options.max)])
  return options.jitter === false ? capped : Schedule.jittered(capped)
}

const positiveMillis = (input: unknown): number | undefined => {
  try {
    const millis = Duration.toMillis(Duration.fromInputUnsafe(input as Duration.Input))
    return Number.isFinite(millis) && millis > 0 ? millis : undefined
  } catch {
    return undefined
  }
}

/** What is wrong with the options of `exponential`, if anything. */
const invalidOption = (options: {
  readonly base: unknown
  readonly max: unknown
  readonly factor?: unknown
  readonly jitter?: unknown
}): string | undefined => {
  const base = positiveMillis(options.base)
  const max = positiveMillis(options.max)
  if (base === undefined) return `base: expected a finite duration longer than zero, got ${String(options.base)}`
  if (max === undefined) return `max: expected a finite duration longer than zero, got ${String(options.max)}`
  const factor = options.factor
  if (factor !== undefined && (typeof factor !== "number" || !Number.isFinite(factor) || factor < 1)) {
    return `factor: expected a finite number of at least 1, got ${String(factor)}`
  }
  if (options.jitter !== undefined && typeof options.jitter !== "boolean") {
    return `jitter: expected a boolean, got ${String(options.jitter)}`
  }
  return undefined
}
