/**
 * Trip policies: the rule that decides when a closed circuit opens.
 *
 * | policy | opens when | good for |
 * | --- | --- | --- |
 * | `Policy.window({ maxFailures, window })` | more than `maxFailures` counted failures within `window` (the default: 3 in 60 seconds) | low and steady traffic |
 * | `Policy.consecutive(n)` | `n` counted failures in a row, however far apart | low traffic, outages that fail every call |
 * | `Policy.rate({ threshold, minimumCalls, window, buckets })` | failures / calls ≥ `threshold` over a time window, once it holds `minimumCalls` calls | high traffic |
 * | `Policy.rate({ threshold, minimumCalls, calls })` | the same over the last `calls` calls | high traffic with bursts |
 * | `Policy.slowCalls({ duration, threshold, minimumCalls, … })` | calls taking `duration` or longer / calls ≥ `threshold` | peers that slow down before they fail |
 * | `Policy.any(first, ...rest)` | any member would open (every member sees every call) | combining rules |
 *
 * @since 0.2.0
 */
import type * as Duration from "effect/Duration"
import * as Predicate from "effect/Predicate"

const TypeId = "~effect-circuit/Policy" as const

/**
 * Today's rule and the default: more than `maxFailures` counted failures within a sliding time `window` opens the
 * circuit.
 *
 * @category models
 * @since 0.2.0
 */
export interface Window {
  readonly [TypeId]: typeof TypeId
  readonly _tag: "Window"
  readonly maxFailures: number
  readonly window: Duration.Input
}

/**
 * `failures` counted failures in a row open the circuit; a success (or a typed failure that `isFailure` rejects)
 * starts the count again. The count never decays with time.
 *
 * @category models
 * @since 0.2.0
 */
export interface Consecutive {
  readonly [TypeId]: typeof TypeId
  readonly _tag: "Consecutive"
  readonly failures: number
}

/**
 * The window a rate is measured over: a time window cut into `buckets`, or the last `calls` calls.
 *
 * @category models
 * @since 0.2.0
 */
export type RateWindow =
  | { readonly window: Duration.Input; readonly buckets: number; readonly calls?: undefined }
  | { readonly calls: number; readonly window?: undefined; readonly buckets?: undefined }

/**
 * The circuit opens when, after a counted failure, the window holds at least `minimumCalls` calls and
 * failures / calls ≥ `threshold`.
 *
 * @category models
 * @since 0.2.0
 */
export type Rate = {
  readonly [TypeId]: typeof TypeId
  readonly _tag: "Rate"
  readonly threshold: number
  readonly minimumCalls: number
} & RateWindow

/**
 * The circuit opens when, after a slow call (one that took `duration` or longer, success or failure), the window
 * holds at least `minimumCalls` calls and slow calls / calls ≥ `threshold`.
 *
 * @category models
 * @since 0.2.0
 */
export type SlowCalls = {
  readonly [TypeId]: typeof TypeId
  readonly _tag: "SlowCalls"
  readonly duration: Duration.Input
  readonly threshold: number
  readonly minimumCalls: number
} & RateWindow

/**
 * Opens when any member would. Every member records every call; the reason reported is the first member, in
 * declaration order, that tripped.
 *
 * @category models
 * @since 0.2.0
 */
export interface Any {
  readonly [TypeId]: typeof TypeId
  readonly _tag: "Any"
  readonly members: ReadonlyArray<Policy>
}

/**
 * A trip policy: immutable tagged data, validated when a breaker or a set is built.
 *
 * @category models
 * @since 0.2.0
 */
export type Policy = Window | Consecutive | Rate | SlowCalls | Any

/**
 * The options of a rate over a time window or over a count of calls.
 *
 * **Details**
 *
 * | option | default | meaning |
 * | --- | --- | --- |
 * | `threshold` | `0.5` | the ratio in (0, 1] at or above which the circuit opens |
 * | `minimumCalls` | `10` | calls the window must hold before the ratio is judged (an integer ≥ 1) |
 * | `window` | `"60 seconds"` | a time window; excludes `calls` |
 * | `buckets` | `10` | how many buckets the time window is cut into (1 to 1,000, each at least 1 ms wide) |
 * | `calls` | none | a count window of the last `calls` calls (`minimumCalls` ≤ `calls`); excludes `window` and `buckets` |
 *
 * @category models
 * @since 0.2.0
 */
export interface RateOptions {
  readonly threshold?: number | undefined
  readonly minimumCalls?: number | undefined
  readonly window?: Duration.Input | undefined
  readonly buckets?: number | undefined
  readonly calls?: number | undefined
}

/**
 * The options of `slowCalls`: a rate's options, where the ratio counted is of slow calls.
 *
 * @category models
 * @since 0.2.0
 */
export interface SlowCallsOptions extends RateOptions {
  /** A call that takes at least this long, from its admission to its end, is slow. */
  readonly duration: Duration.Input
}

/**
 * The default rate options.
 *
 * @category constructors
 * @since 0.2.0
 */
export const rateDefaults = { threshold: 0.5, minimumCalls: 10, window: "60 seconds", buckets: 10 } as const

/** `value`, or `fallback` when it is `undefined` (only): a `null` from JavaScript is kept, for validation to report. */
const orDefault = <A>(value: A | undefined, fallback: A): A => value === undefined ? fallback : value

const make = <P extends Policy>(fields: Omit<P, typeof TypeId>): P =>
  Object.freeze({ [TypeId]: TypeId, ...fields }) as unknown as P

/**
 * More than `maxFailures` counted failures within `window` open the circuit: python-circuit's rule, and the
 * default (`maxFailures: 3`, `window: "60 seconds"`).
 *
 * **Gotchas**
 *
 * An absolute count does not scale with load: 4 failures in a minute open a peer that served 100,000 calls in
 * that minute. For busy peers prefer `rate`.
 *
 * **Example** (Five failures in ten seconds)
 *
 * ```ts
 * import { CircuitBreakerSet, Policy } from "effect-circuit"
 *
 * const layer = CircuitBreakerSet.layer({ policy: Policy.window({ maxFailures: 4, window: "10 seconds" }) })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const window = (options: {
  readonly maxFailures?: number | undefined
  readonly window?: Duration.Input | undefined
} = {}): Window =>
  make<Window>({
    _tag: "Window",
    maxFailures: orDefault(options.maxFailures, 3),
    window: orDefault(options.window, "60 seconds")
  })

/**
 * `failures` counted failures in a row open the circuit.
 *
 * **Details**
 *
 * A success, or a typed failure that `isFailure` rejects, starts the count again; an interrupted call neither
 * counts nor resets. The count never decays: a peer that fails one call an hour opens after `failures` hours.
 *
 * **Example** (Five in a row)
 *
 * ```ts
 * import { CircuitBreakerSet, Policy } from "effect-circuit"
 *
 * const layer = CircuitBreakerSet.layer({ policy: Policy.consecutive(5) })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const consecutive = (failures: number): Consecutive => make<Consecutive>({ _tag: "Consecutive", failures })

const rateWindow = (options: RateOptions): RateWindow => {
  if (options.calls === undefined) {
    return {
      window: orDefault(options.window, rateDefaults.window),
      buckets: orDefault(options.buckets, rateDefaults.buckets)
    }
  }
  // Both kinds of window given: kept as written (no default filled in), for validation to name what conflicts.
  return {
    calls: options.calls,
    ...(options.window === undefined ? {} : { window: options.window }),
    ...(options.buckets === undefined ? {} : { buckets: options.buckets })
  } as unknown as RateWindow
}

/**
 * Opens on a failure rate: after a counted failure, if the window holds at least `minimumCalls` calls and
 * failures / calls ≥ `threshold`.
 *
 * **Details**
 *
 * A time window (`window`, cut into `buckets` on the monotonic clock) forgets a call between
 * `window - window / buckets` and `window` after it ended; a count window (`calls`) keeps the last `calls` calls
 * however old they are. Only a failure can open the circuit; interrupted calls are not counted.
 *
 * **Gotchas**
 *
 * - A peer that gets fewer than `minimumCalls` calls in a window never opens: pair it with `consecutive`
 *   (`Policy.any(Policy.rate(...), Policy.consecutive(5))`).
 * - A set drops an idle breaker (no failure in its window) and with it a count window's successes.
 *
 * **Example** (Half the calls of the last minute, once there were 20)
 *
 * ```ts
 * import { CircuitBreakerSet, Policy } from "effect-circuit"
 *
 * const layer = CircuitBreakerSet.layer({
 *   policy: Policy.rate({ threshold: 0.5, minimumCalls: 20, window: "1 minute", buckets: 12 })
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const rate = (options: RateOptions = {}): Rate =>
  make<Rate>({
    _tag: "Rate",
    threshold: orDefault(options.threshold, rateDefaults.threshold),
    minimumCalls: orDefault(options.minimumCalls, rateDefaults.minimumCalls),
    ...rateWindow(options)
  })

/**
 * Opens on a rate of slow calls: after a call that took `duration` or longer, if the window holds at least
 * `minimumCalls` calls and slow calls / calls ≥ `threshold`.
 *
 * **Details**
 *
 * A call's duration runs from its admission to its end. Slow successes and slow failures both count; a slow probe
 * is a failed probe. The window options are `rate`'s.
 *
 * **Gotchas**
 *
 * An interrupted call is not counted however long it ran: put the timeout inside the breaker
 * (`withBreaker(peer)(Effect.timeout(call, "3 seconds"))`) so that a hung call ends as a counted, slow failure.
 *
 * **Example** (Half the calls taking two seconds or more)
 *
 * ```ts
 * import { CircuitBreakerSet, Policy } from "effect-circuit"
 *
 * const layer = CircuitBreakerSet.layer({
 *   policy: Policy.slowCalls({ duration: "2 seconds", threshold: 0.5, minimumCalls: 10 })
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const slowCalls = (options: SlowCallsOptions): SlowCalls =>
  make<SlowCalls>({
    _tag: "SlowCalls",
    duration: options.duration,
    threshold: orDefault(options.threshold, rateDefaults.threshold),
    minimumCalls: orDefault(options.minimumCalls, rateDefaults.minimumCalls),
    ...rateWindow(options)
  })

/**
 * Opens when any member would. Nested `any`s are flattened; `any(p)` is `p`.
 *
 * **Details**
 *
 * Every member records every call, and all are emptied when the circuit opens. The reason reported is the first
 * member, in declaration order, whose condition holds.
 *
 * **Example** (A rate for busy hours, a streak for quiet ones)
 *
 * ```ts
 * import { CircuitBreakerSet, Policy } from "effect-circuit"
 *
 * const layer = CircuitBreakerSet.layer({
 *   policy: Policy.any(Policy.rate({ threshold: 0.5, minimumCalls: 20 }), Policy.consecutive(5))
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const any = (first: Policy, ...rest: ReadonlyArray<Policy>): Policy => {
  // Called from JavaScript with no member: kept empty, for validation to report.
  const given = first === undefined && rest.length === 0 ? [] : [first, ...rest]
  const members = given.flatMap((member) => isPolicy(member) && member._tag === "Any" ? member.members : [member])
  return members.length === 1 && isPolicy(members[0]) ? members[0] : make<Any>({ _tag: "Any", members })
}

/**
 * Whether `u` was built by one of this module's constructors.
 *
 * @category guards
 * @since 0.2.0
 */
export const isPolicy = (u: unknown): u is Policy => Predicate.hasProperty(u, TypeId)
