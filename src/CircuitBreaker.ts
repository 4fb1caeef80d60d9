/**
 * A single circuit breaker guarding the calls to one peer: the seed library's `CircuitBreaker`.
 *
 * Most services want `CircuitBreakerSet`, which keeps one of these per peer. Use a single breaker when one peer is
 * all there is, or when you manage the breakers yourself.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { dual } from "effect/Function"
import * as Pipeable from "effect/Pipeable"
import * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import type { CircuitBreakerConfigError } from "./CircuitBreakerConfigError.ts"
import * as Metrics from "./CircuitBreakerMetrics.ts"
import * as Options from "./CircuitBreakerOptions.ts"
import { makeCircuitOpenError } from "./CircuitOpenError.ts"
import type { CircuitOpenError } from "./CircuitOpenError.ts"
import * as CircuitState from "./CircuitState.ts"
import type { CircuitStateChange, Reason, StateTag } from "./CircuitStateChange.ts"
import * as machine from "./internal/machine.ts"

const TypeId = "~effect-circuit/CircuitBreaker" as const

/**
 * A circuit breaker for one peer.
 *
 * **Details**
 *
 * Its state lives in one `Ref`, changed atomically on admission and when a call ends; time comes from the `Clock`
 * service of the fiber that runs the call, so `TestClock` drives it in tests. It starts no fiber and no timer.
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
  readonly options: Options.ResolvedOptions
}

/**
 * Options of `make`: the breaker options, plus the `name` of the peer.
 *
 * @category models
 * @since 0.1.0
 */
export interface MakeOptions extends Options.BreakerOptions {
  /** The peer this breaker guards, used as `peer` in `CircuitOpenError` and in log annotations. Default `"default"`. */
  readonly name?: string | undefined
}

/**
 * Settings shared by every breaker of a set (or owned by a single breaker).
 *
 * @internal
 */
export interface Settings {
  readonly options: Options.ResolvedOptions
  readonly policy: machine.Policy
  readonly seriesFor: (peer: string) => Metrics.Series
  /** Where state changes are published; only a set has one. */
  readonly changes: PubSub.PubSub<CircuitStateChange> | undefined
}

/**
 * The breaker's implementation. `inFlight`, `lastStartedAt` and `movedAt` are the set's bookkeeping for eviction;
 * the circuit itself lives only in `ref`.
 *
 * @internal
 */
export class Breaker implements CircuitBreaker {
  declare readonly [TypeId]: typeof TypeId
  readonly name: string
  readonly settings: Settings
  readonly ref: Ref.Ref<machine.State>
  readonly series: Metrics.Series
  inFlight = 0
  lastStartedAt = Number.NEGATIVE_INFINITY
  movedAt = Number.NEGATIVE_INFINITY

  constructor(name: string, settings: Settings) {
    this.name = name
    this.settings = settings
    this.ref = Ref.makeUnsafe<machine.State>(machine.initial)
    this.series = settings.seriesFor(name)
  }

  get options(): Options.ResolvedOptions {
    return this.settings.options
  }

  pipe() {
    return Pipeable.pipeArguments(this, arguments)
  }
}
Object.defineProperty(Breaker.prototype, TypeId, { value: TypeId })

/**
 * Whether a value is a `CircuitBreaker`.
 *
 * @category guards
 * @since 0.1.0
 */
export const isCircuitBreaker = (u: unknown): u is CircuitBreaker => u instanceof Breaker

/**
 * Monotonic milliseconds: every duration the breaker measures uses this, never wall time.
 *
 * @internal
 */
export const monotonicMillis = (clock: Clock.Clock): number => Number(clock.monotonicTimeNanosUnsafe()) / 1e6

const classify = (exit: Exit.Exit<unknown, unknown>, isFailure: (error: unknown) => boolean): machine.Outcome => {
  if (Exit.isSuccess(exit)) return "success"
  let answered = false
  for (const reason of exit.cause.reasons) {
    if (Cause.isDieReason(reason)) return "failure"
    if (Cause.isFailReason(reason)) {
      let counts: unknown
      try {
        counts = isFailure(reason.error)
      } catch {
        // A predicate that throws cannot tell us the peer is fine: count the call.
        counts = true
      }
      if (counts) return "failure"
      answered = true
    }
  }
  // A typed failure that isFailure rejects means the peer answered; a cause of interruptions alone says nothing.
  return answered ? "success" : "ignored"
}

/** The state tag a machine state is reported under. */
const tagOf = (state: machine.State): StateTag => state._tag === "Isolated" ? "Open" : state._tag

const transitionLog = (breaker: Breaker, reason: Reason): Effect.Effect<void> => {
  const { policy } = breaker.settings
  switch (reason) {
    case "failures":
      return Effect.logWarning(
        `Circuit opened: more than ${policy.maxFailures} failures within ${policy.windowMillis} ms; ` +
          `rejecting calls for ${policy.resetTimeoutMillis} ms`
      )
    case "probe":
      return Effect.logDebug("Circuit half-open: letting one probe through")
    case "probe-succeeded":
      return Effect.logInfo("Circuit closed: the probe succeeded")
    case "probe-failed":
      return Effect.logWarning(
        `Circuit re-opened: the probe failed; rejecting calls for ${policy.resetTimeoutMillis} ms`
      )
    case "reset":
      return Effect.logInfo("Circuit reset by an operator")
    case "isolated":
      return Effect.logWarning("Circuit isolated by an operator: rejecting every call until released")
    case "released":
      return Effect.logInfo("Circuit released by an operator: closed")
  }
}

/**
 * Reports a change of state: the state gauge and transition counter, the `changes` stream, and a log line (returned,
 * to run in the caller's fiber with its logger).
 *
 * @internal
 */
export const reportChange = (
  breaker: Breaker,
  from: machine.State,
  to: machine.State,
  reason: Reason,
  clock: Clock.Clock,
  context: Context.Context<never>
): Effect.Effect<void> => {
  const fromTag = tagOf(from)
  const toTag = tagOf(to)
  breaker.series.transition(fromTag, toTag, context)
  const log = Effect.annotateLogs(transitionLog(breaker, reason), "peer", breaker.name)
  const changes = breaker.settings.changes
  if (changes === undefined) return log
  const change = { peer: breaker.name, from: fromTag, to: toTag, at: clock.currentTimeMillisUnsafe(), reason }
  // The synchronous path fails only when a subscriber's buffer is full; `publish` then drops that subscriber's
  // oldest change (the pubsub slides) without ever waiting.
  return PubSub.publishUnsafe(changes, change) ? log : Effect.andThen(PubSub.publish(changes, change), log)
}

const annotateSpan = (context: Context.Context<never>, peer: string, state: StateTag): void => {
  const span = Context.getOrUndefined(context, Tracer.ParentSpan)
  if (span !== undefined && span._tag === "Span") {
    span.attribute("circuit_breaker.peer", peer)
    span.attribute("circuit_breaker.state", state)
  }
}

/**
 * Guards `self` with the breaker that `resolve` returns when the call starts (at monotonic time `now`).
 *
 * Layout of the primitives, and why: the outer `withFiber` allocates the per-call slots; `onExitPrimitive` is in
 * place before admission, so whatever happens after admission (including an interruption that lands before `self`
 * starts) reaches `settle`, which runs uninterruptibly; the inner `withFiber` admits the call in one synchronous
 * step, so no other fiber sees a half-made decision. A call interrupted before admission leaves `admitted` unset
 * and records nothing.
 *
 * @internal
 */
export const guard = <A, E, R>(
  resolve: (now: number, context: Context.Context<never>) => Breaker,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | CircuitOpenError, R> =>
  Effect.withFiber((fiber) => {
    let admitted: Breaker | undefined
    let ticket = 0
    return Effect.onExitPrimitive(
      Effect.withFiber((): Effect.Effect<A, E | CircuitOpenError, R> => {
        const context = fiber.context
        const clock = Context.get(context, Clock.Clock)
        const now = monotonicMillis(clock)
        const breaker = resolve(now, context)
        const before = breaker.ref.ref.current
        const [admission, after] = machine.admit(before, now, breaker.settings.policy)
        if (typeof admission !== "number") {
          breaker.series.rejected.updateUnsafe(1, context)
          annotateSpan(context, breaker.name, before._tag === "HalfOpen" ? "HalfOpen" : "Open")
          return Effect.fail(makeCircuitOpenError(breaker.name, admission.retryAfterMillis))
        }
        breaker.ref.ref.current = after
        admitted = breaker
        ticket = admission
        breaker.inFlight++
        breaker.lastStartedAt = now
        annotateSpan(context, breaker.name, after._tag === "HalfOpen" ? "HalfOpen" : "Closed")
        if (after === before) return self
        breaker.series.probes.updateUnsafe(1, context)
        if (before._tag === "HalfOpen") return self
        return Effect.andThen(reportChange(breaker, before, after, "probe", clock, context), self)
      }),
      (exit) => admitted === undefined ? undefined : settle(admitted, ticket, exit, fiber.context)
    )
  })

const settle = (
  breaker: Breaker,
  ticket: number,
  exit: Exit.Exit<unknown, unknown>,
  context: Context.Context<never>
): Effect.Effect<void> | undefined => {
  breaker.inFlight--
  const outcome = classify(exit, breaker.settings.options.isFailure)
  breaker.series[outcome].updateUnsafe(1, context)
  const before = breaker.ref.ref.current
  // The common case, a closed circuit and a call that did not fail, changes nothing: skip the clock.
  if (before._tag === "Closed" && outcome !== "failure") return undefined
  const clock = Context.get(context, Clock.Clock)
  const now = monotonicMillis(clock)
  const after = machine.record(before, ticket, outcome, now, clock.currentTimeMillisUnsafe(), breaker.settings.policy)
  if (after === before) return undefined
  breaker.ref.ref.current = after
  if (before._tag === after._tag) return undefined
  const reason: Reason = before._tag === "Closed"
    ? "failures"
    : outcome === "success"
    ? "probe-succeeded"
    : "probe-failed"
  return reportChange(breaker, before, after, reason, clock, context)
}

/**
 * Applies an operator's change (reset, isolate, release) to a breaker atomically, and reports it if the state changed.
 *
 * @internal
 */
export const operate = (
  breaker: Breaker,
  change: (state: machine.State, now: number, wallNow: number) => machine.State,
  reason: Reason
): Effect.Effect<void> =>
  Effect.withFiber((fiber) => {
    const context = fiber.context
    const clock = Context.get(context, Clock.Clock)
    const before = breaker.ref.ref.current
    const after = change(before, monotonicMillis(clock), clock.currentTimeMillisUnsafe())
    if (after === before) return Effect.void
    breaker.ref.ref.current = after
    if (tagOf(before) === tagOf(after) && reason !== "reset") return Effect.void
    return reportChange(breaker, before, after, reason, clock, context)
  })

/**
 * Reads the breaker's state at the clock's current time.
 *
 * @internal
 */
export const stateOf = (breaker: Breaker): Effect.Effect<CircuitState.CircuitState> =>
  Effect.clockWith((clock) =>
    Effect.sync(() =>
      CircuitState.fromMachine(
        breaker.ref.ref.current,
        monotonicMillis(clock),
        clock.currentTimeMillisUnsafe(),
        breaker.settings.policy
      )
    )
  )

const MakeOptionsSchema = Schema.Struct({ ...Options.breakerFields, name: Schema.optionalKey(Schema.String) })

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
export const make = (options?: MakeOptions): Effect.Effect<CircuitBreaker, CircuitBreakerConfigError> =>
  Effect.flatMap(Options.decodeOptions(MakeOptionsSchema, options), (decoded) =>
    Effect.withFiber((fiber) => {
      const resolved = Options.resolve(decoded)
      const breaker = new Breaker(decoded.name ?? "default", {
        options: resolved,
        policy: Options.toPolicy(resolved),
        seriesFor: Metrics.makeSeriesFor(resolved.metricPeerLabel),
        changes: undefined
      })
      breaker.series.start(fiber.context)
      return Effect.succeed(breaker)
    }))

/**
 * Guards an effect with a breaker: the effect runs only if the circuit admits it, and its outcome is recorded.
 *
 * **Details**
 *
 * - Closed: the effect runs. A counted failure (see `isFailure`) or a defect is recorded in the sliding window; when
 *   the failures inside the window exceed `maxFailures` the circuit opens.
 * - Open: the effect does not run; the result fails with `CircuitOpenError`, whose `retryAfter` is the time until a
 *   probe is allowed.
 * - Half-open: the first call is the probe; every other call is rejected while it runs. Its success (or a typed
 *   failure that `isFailure` rejects) closes the circuit with an empty window; a counted failure opens it again for
 *   a full `resetTimeout`.
 * - An interruption never counts; an interrupted probe gives its slot back.
 *
 * Data-first `withBreaker(effect, breaker)` and data-last `effect.pipe(withBreaker(breaker))` both work.
 *
 * **Gotchas**
 *
 * Put timeouts inside the guarded effect (`effect.pipe(Effect.timeout("2 seconds"), withBreaker(breaker))`) so that
 * a slow peer counts as failing. A probe that runs for a whole `resetTimeout` loses its slot anyway.
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
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const withBreaker: {
  (breaker: CircuitBreaker): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpenError, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, breaker: CircuitBreaker): Effect.Effect<A, E | CircuitOpenError, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, breaker: CircuitBreaker): Effect.Effect<A, E | CircuitOpenError, R> => {
    if (!(breaker instanceof Breaker)) return notABreaker(breaker)
    return guard(() => breaker, self)
  }
)

const notABreaker = (value: unknown) =>
  Effect.die(new TypeError(`CircuitBreaker.withBreaker: expected a CircuitBreaker, got ${typeof value}`))

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
 *   return state._tag // "Closed"
 * })
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const state = (breaker: CircuitBreaker): Effect.Effect<CircuitState.CircuitState> =>
  breaker instanceof Breaker ? stateOf(breaker) : notABreaker(breaker)
