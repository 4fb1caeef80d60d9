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
import type * as Fiber from "effect/Fiber"
import { dual } from "effect/Function"
import * as Pipeable from "effect/Pipeable"
import * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import type { CircuitBreakerConfigError } from "./CircuitBreakerConfigError.ts"
import * as Metrics from "./CircuitBreakerMetrics.ts"
import * as Options from "./CircuitBreakerOptions.ts"
import { CircuitOpenError, makeCircuitOpenError } from "./CircuitOpenError.ts"
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
  /** The last rejection built, reused while its breaker and its `retryAfter` (in whole milliseconds) are the same. */
  lastRejection: Rejection | undefined
}

interface Rejection {
  readonly breaker: Breaker
  readonly retryAfterMillis: number
  readonly exit: Exit.Exit<never, CircuitOpenError>
}

/**
 * Builds the settings of a breaker or a set from validated options, registering metrics in `context`'s registry.
 *
 * @internal
 */
export const makeSettings = (
  options: Options.ResolvedOptions,
  context: Context.Context<never>,
  changes: PubSub.PubSub<CircuitStateChange> | undefined
): Settings => ({
  options,
  policy: Options.toPolicy(options),
  seriesFor: Metrics.makeSeriesFor(options.metricPeerLabel, context),
  changes,
  lastRejection: undefined
})

/**
 * The failure of a rejected call. Under load an open circuit rejects many calls within one millisecond; they share
 * one error, which is immutable and carries the same peer and `retryAfter` (rounded up to whole milliseconds, so a
 * caller that waits that long finds the circuit ready).
 */
const rejection = (breaker: Breaker, retryAfterMillis: number): Exit.Exit<never, CircuitOpenError> => {
  const millis = Math.ceil(retryAfterMillis)
  const settings = breaker.settings
  const last = settings.lastRejection
  if (last !== undefined && last.breaker === breaker && last.retryAfterMillis === millis) return last.exit
  const exit = Exit.fail(makeCircuitOpenError(breaker.name, millis))
  settings.lastRejection = { breaker, retryAfterMillis: millis, exit }
  return exit
}

/**
 * The breaker's implementation. The circuit lives only in `ref`, which is made when the breaker first leaves the
 * initial state: until then the state is `machine.initial`, shared by every fresh breaker, and a peer that only ever
 * succeeds costs no `Ref` (112 bytes in V8). `inFlight`, `touched`, `dropped` and `movedAt` are the set's
 * bookkeeping for eviction.
 *
 * @internal
 */
export class Breaker implements CircuitBreaker {
  declare readonly [TypeId]: typeof TypeId
  readonly name: string
  readonly settings: Settings
  ref: Ref.Ref<machine.State> | undefined = undefined
  readonly series: Metrics.Series
  /** Calls admitted and not yet settled. */
  inFlight = 0
  /**
   * Whether a call started since the set last moved this breaker. The call that creates a breaker starts at its
   * first move, so a new breaker starts untouched.
   */
  touched = false
  /** Whether the set has dropped this breaker; a call that found it before the drop looks its peer up again. */
  dropped = false
  /**
   * When the set last moved this breaker to the back of its eviction order, in whole milliseconds since the set was
   * made, rounded up: a small integer, which V8 stores unboxed (for the first 12 days of a set with pointer
   * compression, 24 days without; a boxed number after that costs a few more bytes, nothing else).
   */
  movedAt = 0

  constructor(name: string, settings: Settings) {
    this.name = name
    this.settings = settings
    this.series = settings.seriesFor(name)
  }

  /** The current state, read in the same synchronous step as any decision made from it. */
  get state(): machine.State {
    return this.ref === undefined ? machine.initial : this.ref.ref.current
  }

  /** Replaces the state: `Ref.modify`'s write, made synchronously inside the primitive that made the decision. */
  set state(next: machine.State) {
    if (this.ref === undefined) this.ref = Ref.makeUnsafe(next)
    else this.ref.ref.current = next
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
      // Another breaker rejected a call inside this one: this peer was not asked, so it says nothing about it.
      if (reason.error instanceof CircuitOpenError) continue
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
  clock: Clock.Clock
): Effect.Effect<void> => {
  const fromTag = tagOf(from)
  const toTag = tagOf(to)
  breaker.series.transition(fromTag, toTag)
  // Reporting must never fail the call it runs in: a logger that breaks is its own problem, not the peer's.
  const log = Effect.ignoreCause(Effect.annotateLogs(transitionLog(breaker, reason), "peer", breaker.name))
  const changes = breaker.settings.changes
  if (changes === undefined) return log
  const change = { peer: breaker.name, from: fromTag, to: toTag, at: clock.currentTimeMillisUnsafe(), reason }
  // The synchronous path fails only when a subscriber's buffer is full; `publish` then drops that subscriber's
  // oldest change (the pubsub slides) without ever waiting.
  return PubSub.publishUnsafe(changes, change) ? log : Effect.andThen(PubSub.publish(changes, change), log)
}

const annotateSpan = (fiber: Fiber.Fiber<unknown, unknown>, peer: string, state: StateTag): void => {
  // The fiber caches its current span, so this costs two property reads when there is none.
  const span = fiber.cache.span
  if (span !== undefined && span._tag === "Span") {
    span.attribute("circuit_breaker.peer", peer)
    span.attribute("circuit_breaker.state", state)
  }
}

const reject = (
  breaker: Breaker,
  state: machine.State,
  retryAfterMillis: number,
  fiber: Fiber.Fiber<unknown, unknown>
): Exit.Exit<never, CircuitOpenError> => {
  breaker.series.count("rejected")
  annotateSpan(fiber, breaker.name, state._tag === "HalfOpen" ? "HalfOpen" : "Open")
  return rejection(breaker, retryAfterMillis)
}

/**
 * Guards `self` with the breaker that `resolve` returns when the call starts (or, if it returns none, runs
 * `otherwise`).
 *
 * Layout of the primitives, and why:
 * - The outer `withFiber` finds the breaker. A call the circuit rejects is rejected right there: a rejection records
 *   nothing, so it needs no exit handler.
 * - Otherwise `onExitPrimitive` is put in place before admission, so whatever happens after admission (including an
 *   interruption that lands before `self` starts, at a scheduler yield) reaches `settle`, which runs
 *   uninterruptibly. The inner `withFiber` admits the call in one synchronous step, so no other fiber sees a
 *   half-made decision; it decides again, as the state may have changed at that yield. A call interrupted before
 *   admission leaves `admitted` unset and records nothing.
 *
 * @internal
 */
export const guard = <A, E, R>(
  resolve: (context: Context.Context<never>) => Breaker | undefined,
  self: Effect.Effect<A, E, R>,
  otherwise?: (context: Context.Context<never>) => Effect.Effect<A, E | CircuitOpenError, R>
): Effect.Effect<A, E | CircuitOpenError, R> =>
  Effect.withFiber((fiber) => {
    const found = resolve(fiber.context)
    if (found === undefined) return otherwise!(fiber.context)
    const current = found.state
    if (current._tag !== "Closed") {
      const [admission] = machine.admit(
        current,
        monotonicMillis(Context.get(fiber.context, Clock.Clock)),
        found.settings.policy
      )
      if (typeof admission !== "number") return reject(found, current, admission.retryAfterMillis, fiber)
    }
    let admitted: Breaker | undefined
    let ticket = 0
    return Effect.onExitPrimitive(
      Effect.withFiber((): Effect.Effect<A, E | CircuitOpenError, R> => {
        const context = fiber.context
        // The set may have dropped the breaker at a yield since it was found.
        const breaker = found.dropped ? resolve(context)! : found
        const before = breaker.state
        if (before._tag === "Closed") {
          // machine.admit admits every call to a closed circuit with its generation, and needs no clock for it:
          // inlined, because this is the path nearly every call takes.
          admitted = breaker
          ticket = before.generation
          breaker.inFlight++
          annotateSpan(fiber, breaker.name, "Closed")
          return self
        }
        const clock = Context.get(context, Clock.Clock)
        const [admission, after] = machine.admit(before, monotonicMillis(clock), breaker.settings.policy)
        if (typeof admission !== "number") return reject(breaker, before, admission.retryAfterMillis, fiber)
        breaker.state = after
        admitted = breaker
        ticket = admission
        breaker.inFlight++
        breaker.series.probe()
        annotateSpan(fiber, breaker.name, "HalfOpen")
        if (before._tag === "HalfOpen") return self
        return Effect.andThen(reportChange(breaker, before, after, "probe", clock), self)
      }),
      (exit) => admitted === undefined ? undefined : settle(admitted, ticket, exit, fiber)
    )
  })

const settle = (
  breaker: Breaker,
  ticket: number,
  exit: Exit.Exit<unknown, unknown>,
  fiber: Fiber.Fiber<unknown, unknown>
): Effect.Effect<void> | undefined => {
  breaker.inFlight--
  const before = breaker.state
  // The common case, a call that succeeded on a closed circuit, changes nothing but a counter: no classifying, no
  // clock.
  if (exit._tag === "Success" && before._tag === "Closed") {
    breaker.series.success()
    return undefined
  }
  const outcome = exit._tag === "Success" ? "success" : classify(exit, breaker.settings.options.isFailure)
  if (outcome === "success") breaker.series.success()
  else breaker.series.count(outcome)
  if (before._tag === "Closed" && outcome !== "failure") return undefined
  const clock = Context.get(fiber.context, Clock.Clock)
  const now = monotonicMillis(clock)
  const after = machine.record(before, ticket, outcome, now, clock, breaker.settings.policy)
  if (after === before) return undefined
  breaker.state = after
  if (before._tag === after._tag) return undefined
  const reason: Reason = before._tag === "Closed"
    ? "failures"
    : outcome === "success"
    ? "probe-succeeded"
    : "probe-failed"
  return reportChange(breaker, before, after, reason, clock)
}

/**
 * Applies an operator's change (reset, isolate, release) to a breaker, in the same synchronous step as the look-up
 * that found it, and returns the report to run. A reset is reported unless the circuit is isolated (a reset does not
 * end an isolation); isolating and releasing are reported when an isolation begins or ends (stacked isolations
 * change only a count).
 *
 * @internal
 */
export const operateUnsafe = (
  breaker: Breaker,
  change: (state: machine.State, now: number, wall: machine.WallClock) => machine.State,
  reason: Reason,
  clock: Clock.Clock
): Effect.Effect<void> => {
  const before = breaker.state
  const after = change(before, monotonicMillis(clock), clock)
  breaker.state = after
  const reported = (reason === "reset" && after !== before) ||
    (before._tag === "Isolated") !== (after._tag === "Isolated")
  return reported ? reportChange(breaker, before, after, reason, clock) : Effect.void
}

/**
 * The public view of the machine state that `read` returns, at the clock's current time.
 *
 * @internal
 */
export const stateOf = (read: () => machine.State, policy: machine.Policy): Effect.Effect<CircuitState.CircuitState> =>
  Effect.clockWith((clock) =>
    Effect.sync(() => CircuitState.fromMachine(read(), monotonicMillis(clock), clock.currentTimeMillisUnsafe(), policy))
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
  Effect.flatMap(
    Effect.suspend(() => Options.decodeOptions(MakeOptionsSchema, options)),
    (decoded) =>
      Effect.withFiber((fiber) =>
        Effect.succeed(
          new Breaker(decoded.name ?? "default", makeSettings(Options.resolve(decoded), fiber.context, undefined))
        )
      )
  )

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
 * - An interruption never counts, and an interrupted probe gives its slot back. A `CircuitOpenError` from another
 *   breaker nested inside the effect never counts either: that peer was not asked.
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
  breaker instanceof Breaker ? stateOf(() => breaker.state, breaker.settings.policy) : notABreaker(breaker)
