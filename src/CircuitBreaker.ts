/**
 * A single circuit breaker guarding the calls to one peer: python-circuit's `CircuitBreaker`.
 *
 * Most services want `CircuitBreakerSet`, which keeps one of these per peer. Use a single breaker when one peer is
 * all there is, or when you manage the breakers yourself.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import type * as Pipeable from "effect/Pipeable"
import * as Schema from "effect/Schema"
import type { CircuitBreakerConfigError } from "./CircuitBreakerConfigError.ts"
import type { BreakerOptions, ResolvedOptions } from "./CircuitBreakerOptions.ts"
import type { CircuitOpenError } from "./CircuitOpenError.ts"
import type { CircuitState } from "./CircuitState.ts"
import { Breaker, makeShared, TypeId } from "./internal/breaker.ts"
import { guard } from "./internal/guard.ts"
import { breakerFields, checkBreaker, decodeOptions, resolve } from "./internal/options.ts"
import { readState } from "./internal/view.ts"

/**
 * A circuit breaker for one peer.
 *
 * **Details**
 *
 * Its state lives in one `Ref`, changed atomically on admission and when a call ends; time comes from the `Clock`
 * service of the fiber that runs the call, so `TestClock` drives it in tests. It starts no fiber and no timer, except
 * while a probe runs: the probe runs detached from its caller, with a sleep for its lease.
 *
 * @see {@link make} to build one
 * @see {@link withBreaker} to guard an effect with it
 * @category models
 * @since 0.1.0
 */
export interface CircuitBreaker extends Pipeable.Pipeable {
  readonly [TypeId]: typeof TypeId
  /** The peer this breaker guards, used in errors and logs. */
  readonly name: string
  /** The validated options, with defaults filled in. */
  readonly options: ResolvedOptions
}

/**
 * Options of `make`: the breaker options, plus the `name` of the peer.
 *
 * @category models
 * @since 0.1.0
 */
export interface MakeOptions extends BreakerOptions {
  /** The peer this breaker guards, used as `peer` in `CircuitOpenError` and in log annotations. Default `"default"`. */
  readonly name?: string | undefined
}

/**
 * Whether a value is a `CircuitBreaker`.
 *
 * **Example** (Checking a value)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker } from "effect-circuit"
 *
 * const program = Effect.map(CircuitBreaker.make(), (breaker) => [
 *   CircuitBreaker.isCircuitBreaker(breaker),
 *   CircuitBreaker.isCircuitBreaker({ name: "payments" })
 * ])
 * // Effect.runSync(program) => [true, false]
 * ```
 *
 * @category guards
 * @since 0.1.0
 */
export const isCircuitBreaker = (u: unknown): u is CircuitBreaker => u instanceof Breaker

const MakeOptionsSchema = Schema.Struct({ ...breakerFields, name: Schema.optionalKey(Schema.String) })

/**
 * Builds a circuit breaker for one peer.
 *
 * **Details**
 *
 * Options are validated first: bad values fail with `CircuitBreakerConfigError` naming each bad field; nothing is
 * clamped. The breaker starts `Closed`. See `BreakerOptions` for the options and their defaults.
 *
 * **Gotchas**
 *
 * Build the breaker once and share it: a breaker built per request sees one call and never trips.
 *
 * **Example** (Guarding calls to one peer)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker } from "effect-circuit"
 *
 * declare const callPayments: Effect.Effect<string, Error>
 *
 * const program = Effect.gen(function*() {
 *   const breaker = yield* CircuitBreaker.make({ name: "payments", maxFailures: 5, window: "30 seconds" })
 *   return yield* callPayments.pipe(CircuitBreaker.withBreaker(breaker))
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: (options?: MakeOptions) => Effect.Effect<CircuitBreaker, CircuitBreakerConfigError> = Effect
  .fnUntraced(function*(options?: MakeOptions) {
    const decoded = yield* decodeOptions(MakeOptionsSchema, options, checkBreaker)
    const context = yield* Effect.context<never>()
    const settings = yield* resolve(decoded, context)
    // A single breaker is never dropped, so it keeps its series: no retention.
    return new Breaker(decoded.name ?? "default", makeShared(settings, new Map(), context, undefined, undefined, 0), 0)
  })

/**
 * Guards an effect with a breaker: the effect runs only if the circuit admits it, and its outcome is recorded.
 *
 * **Details**
 *
 * - Closed: the effect runs. Its outcome feeds the trip policy (see `Policy`; by default a counted failure or a
 *   defect is recorded in the sliding window, and the circuit opens when the failures inside it exceed
 *   `maxFailures`).
 * - Open: the effect does not run; the result fails with `CircuitOpenError`, whose `retryAfter` is the time until a
 *   probe is allowed. Each opening lasts `openDuration` (fixed, or a schedule of the opening number).
 * - Half-open: up to `halfOpen.probes` calls run as probes (one by default); every other call is rejected while they
 *   run. `halfOpen.successThreshold` successes (a typed failure that `isFailure` rejects is a success) close the
 *   circuit with empty counts; a counted failure opens it again as the next opening. A probe runs in a fiber of its
 *   own: if its caller is interrupted, the caller is released at once and the probe runs on and decides. Its lease
 *   is `halfOpen.probeTimeout` (by default the length of the opening before): a probe still running then is
 *   interrupted, counts as failed, and the circuit reopens at that instant.
 * - An interruption of a closed call never counts. A `CircuitOpenError` from another breaker nested inside the effect
 *   never counts either: that peer was not asked. The same breaker guarding a call twice counts it once.
 *
 * Data-first `withBreaker(effect, breaker)` and data-last `effect.pipe(withBreaker(breaker))` both work.
 *
 * **Gotchas**
 *
 * Put timeouts inside the guarded effect (`effect.pipe(Effect.timeout("2 seconds"), withBreaker(breaker))`) so that
 * a slow peer counts as failing, shorter than the probe's lease so that a slow probe fails by itself. In
 * `mode: "observe"` nothing is rejected: calls the circuit would reject run, counted as `would_reject`.
 *
 * **Example** (Both call styles)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker } from "effect-circuit"
 *
 * const program = Effect.gen(function*() {
 *   const breaker = yield* CircuitBreaker.make({ name: "search" })
 *   const a = yield* Effect.succeed(1).pipe(CircuitBreaker.withBreaker(breaker))
 *   const b = yield* CircuitBreaker.withBreaker(Effect.succeed(2), breaker)
 *   return a + b
 * })
 * // Effect.runSync(program) => 3
 * ```
 *
 * @see {@link CircuitBreakerSet.withBreaker} for one breaker per peer
 *
 * @category combinators
 * @since 0.1.0
 */
export const withBreaker: {
  (breaker: CircuitBreaker): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpenError, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, breaker: CircuitBreaker): Effect.Effect<A, E | CircuitOpenError, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, breaker: CircuitBreaker): Effect.Effect<A, E | CircuitOpenError, R> =>
    breaker instanceof Breaker ? guard(breaker, self) : notABreaker(breaker)
)

const notABreaker = (value: unknown) =>
  Effect.die(new TypeError(`CircuitBreaker: expected a CircuitBreaker, got ${value === null ? "null" : typeof value}`))

/**
 * Reads the state of a breaker.
 *
 * **Details**
 *
 * The state is computed at the current `Clock` time: once `resetTimeout` has passed since the circuit opened, it
 * reads `HalfOpen` even before any call arrives.
 *
 * **Example** (Reading the state)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker } from "effect-circuit"
 *
 * const program = Effect.gen(function*() {
 *   const breaker = yield* CircuitBreaker.make()
 *   const state = yield* CircuitBreaker.state(breaker)
 *   return state._tag
 * })
 * // Effect.runSync(program) => "Closed"
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const state = (breaker: CircuitBreaker): Effect.Effect<CircuitState> =>
  breaker instanceof Breaker ? readState(breaker.state, breaker.settings.limits) : notABreaker(breaker)
