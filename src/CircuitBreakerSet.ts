/**
 * One circuit breaker per peer, keyed by a string: the seed library's `CircuitBreakerSet`, as an Effect service.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as CircuitBreaker from "./CircuitBreaker.ts"
import type { CircuitBreakerConfigError } from "./CircuitBreakerConfigError.ts"
import * as Options from "./CircuitBreakerOptions.ts"
import type { CircuitOpenError } from "./CircuitOpenError.ts"
import type { CircuitSnapshot, PeerSnapshot } from "./CircuitSnapshot.ts"
import * as CircuitState from "./CircuitState.ts"
import type { CircuitStateChange, Reason } from "./CircuitStateChange.ts"
import * as machine from "./internal/machine.ts"

/**
 * Options of a set: the breaker options every peer's breaker uses, plus how long an idle breaker is kept.
 *
 * **Details**
 *
 * | option | default | meaning |
 * | --- | --- | --- |
 * | `idleTimeToLive` | `"1 minute"` | a breaker that is Closed with no failure in its window, has no call in flight and has started no call for this long is dropped (a finite duration > 0) |
 *
 * Dropping a breaker changes nothing a caller can observe: a closed breaker with an empty window behaves exactly
 * like a fresh one. Open and half-open breakers are kept until they close. A breaker is never dropped before
 * `idleTimeToLive` has passed since its last call; sweeps run as calls arrive (no timer), so an idle one goes within
 * about two `idleTimeToLive` while calls keep coming.
 *
 * @category models
 * @since 0.1.0
 */
export interface SetOptions extends Options.BreakerOptions {
  readonly idleTimeToLive?: Duration.Input | undefined
}

const SetOptionsSchema = Schema.Struct({
  ...Options.breakerFields,
  idleTimeToLive: Schema.optionalKey(Options.PositiveDurationInput)
})

/**
 * What `CircuitBreakerSet.layerConfig` takes as its argument: the options that cannot be read as text.
 *
 * @category models
 * @since 0.1.0
 */
export type ConfigLayerOptions = Pick<SetOptions, "isFailure" | "metricPeerLabel">

const ConfigLayerOptionsSchema = Schema.Struct({
  isFailure: Options.breakerFields.isFailure,
  metricPeerLabel: Options.breakerFields.metricPeerLabel
})

const defaultIdleTimeToLive = "1 minute"

/**
 * The most idle breakers one call drops. Each breaker is dropped at most once after being created once, so this
 * bounds the work a single call does without letting eviction fall behind creation.
 */
const maxEvictionsPerCall = 64

/**
 * The service a `CircuitBreakerSet` layer provides.
 *
 * @category models
 * @since 0.1.0
 */
export interface Service {
  /**
   * Guards an effect with the breaker of `peer`. The breaker is created on the first call to a new peer; concurrent
   * first calls share one breaker.
   */
  readonly withBreaker: (
    peer: string
  ) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpenError, R>
  /** The state of `peer`'s circuit at the current `Clock` time. A peer never seen is `Closed` with no failures. */
  readonly state: (peer: string) => Effect.Effect<CircuitState.CircuitState>
  /**
   * Every state change of every peer, as it happens. The half-open change is emitted when the probe is admitted.
   *
   * Each subscriber has a sliding buffer of 1,024 changes that drops the oldest: a slow or absent consumer never
   * blocks or slows calls. A subscription starts when the stream runs; earlier changes are not replayed.
   */
  readonly changes: Stream.Stream<CircuitStateChange>
  /** Every peer the set currently holds, with its state, as a schema-encodable value. */
  readonly snapshot: Effect.Effect<CircuitSnapshot>
  /**
   * Closes `peer`'s circuit and empties its window; calls in flight decide nothing. It does not end an isolation.
   */
  readonly reset: (peer: string) => Effect.Effect<void>
  /**
   * Holds `peer`'s circuit open, rejecting every call with `CircuitOpenError` (`retryAfter` = `resetTimeout`), until
   * the scope closes, even past `resetTimeout`. Isolations stack: the last release closes the circuit with an empty
   * window.
   */
  readonly isolate: (peer: string) => Effect.Effect<void, never, Scope.Scope>
  /** The validated options every breaker of the set uses. */
  readonly options: Options.ResolvedOptions & { readonly idleTimeToLive: Duration.Duration }
}

/**
 * The set's own peer look-up, on the service it builds, so the top-level `withBreaker` admits a call without building
 * a second guarded effect per call.
 */
const lookupKey = Symbol.for("effect-circuit/CircuitBreakerSet/lookup")

interface ServiceImpl extends Service {
  readonly [lookupKey]: (peer: string, context: Context.Context<never>) => CircuitBreaker.Breaker
}

const invalidPeer = (peer: unknown) =>
  Effect.die(new TypeError(`CircuitBreakerSet: a peer must be a string, got ${peer === null ? "null" : typeof peer}`))

/** The most changes a subscriber of `changes` buffers before the oldest are dropped. */
const changesBuffer = 1024

/**
 * Builds the set's service. Most programs use `CircuitBreakerSet.layer` instead.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options?: SetOptions): Effect.Effect<Service, CircuitBreakerConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const decoded = yield* Options.decodeOptions(SetOptionsSchema, options)
    const resolved = Options.resolve(decoded)
    const idleTimeToLive = Options.positiveDuration(decoded.idleTimeToLive ?? defaultIdleTimeToLive)
    const changes = yield* Effect.acquireRelease(PubSub.sliding<CircuitStateChange>(changesBuffer), PubSub.shutdown)
    const context = yield* Effect.context<never>()
    const origin = CircuitBreaker.monotonicMillis(Context.get(context, Clock.Clock))
    return makeService(CircuitBreaker.makeSettings(resolved, context, changes), changes, idleTimeToLive, origin)
  })

const makeService = (
  settings: CircuitBreaker.Settings,
  changes: PubSub.PubSub<CircuitStateChange>,
  idleTimeToLive: Duration.Duration,
  origin: number
): Service => {
  const ttl = Duration.toMillis(idleTimeToLive)
  // Eviction times are whole milliseconds since `origin`: a move is stamped rounded up and the present rounded
  // down, so rounding can only make a breaker look idle for less time than it was, never more.
  const stamp = (now: number): number => Math.ceil(now - origin)
  const idleFor = (breaker: CircuitBreaker.Breaker, now: number): number => Math.floor(now - origin) - breaker.movedAt
  // Eviction without a clock read per call: a call only sets its breaker's `touched` flag. Sweeps run when the set
  // reads the clock anyway (creating a breaker, snapshots, operator actions), on every 64th call, and on every call
  // while a backlog remains. The map is kept in order of `movedAt`; a sweep walks it from the front, looks at 64
  // breakers at most, and stops at the first breaker moved less than a TTL ago. A breaker it finds touched, busy or
  // not back to a fresh state has its flag cleared and goes to the back; one untouched for a whole TTL since its last
  // move has started no call for a TTL, and is dropped. So a breaker is never dropped early, and an idle one goes
  // within about two TTLs of its last call while calls arrive.
  const breakers = new Map<string, CircuitBreaker.Breaker>()
  let sweepDueAt = Number.POSITIVE_INFINITY
  // A sweep that stopped at its limit leaves a backlog: every call then sweeps, until the backlog is gone.
  let backlog = false
  let calls = 0
  const perPeerSeries = settings.options.metricPeerLabel === "peer"

  const drop = (peer: string, breaker: CircuitBreaker.Breaker): void => {
    breakers.delete(peer)
    breaker.dropped = true
    // Per-peer series go with the breaker, or an unbounded population of peers would grow the metric registry.
    if (perPeerSeries) breaker.series.release()
  }

  const sweep = (now: number): void => {
    backlog = false
    let examined = 0
    for (const [peer, breaker] of breakers) {
      if (idleFor(breaker, now) < ttl) {
        sweepDueAt = origin + breaker.movedAt + ttl
        return
      }
      if (examined++ === maxEvictionsPerCall) {
        sweepDueAt = now
        backlog = true
        return
      }
      if (breaker.touched || breaker.inFlight > 0 || !machine.isIdle(breaker.state, now, settings.policy)) {
        breaker.touched = false
        breakers.delete(peer)
        breakers.set(peer, breaker)
        breaker.movedAt = stamp(now)
      } else {
        drop(peer, breaker)
      }
    }
    sweepDueAt = Number.POSITIVE_INFINITY
  }

  /** Runs a sweep if one is due at monotonic time `now`. */
  const observe = (now: number): void => {
    if (now >= sweepDueAt) sweep(now)
  }

  const create = (peer: string, now: number): CircuitBreaker.Breaker => {
    observe(now)
    const breaker = new CircuitBreaker.Breaker(peer, settings)
    breaker.movedAt = stamp(now)
    breakers.set(peer, breaker)
    if (sweepDueAt === Number.POSITIVE_INFINITY) sweepDueAt = now + ttl
    return breaker
  }

  const lookup = (peer: string, context: Context.Context<never>): CircuitBreaker.Breaker => {
    calls = (calls + 1) & 63
    if (calls === 0 || backlog) observe(CircuitBreaker.monotonicMillis(Context.get(context, Clock.Clock)))
    const breaker = breakers.get(peer)
    if (breaker === undefined) return create(peer, CircuitBreaker.monotonicMillis(Context.get(context, Clock.Clock)))
    breaker.touched = true
    return breaker
  }

  /** Runs an operator's change on `peer`'s breaker, creating it if the set does not hold it. */
  const operate = (
    peer: string,
    change: (state: machine.State, now: number, wall: machine.WallClock) => machine.State,
    reason: Reason
  ): Effect.Effect<void> =>
    typeof peer !== "string" ? invalidPeer(peer) : Effect.withFiber((fiber) => {
      const clock = Context.get(fiber.context, Clock.Clock)
      const now = CircuitBreaker.monotonicMillis(clock)
      observe(now)
      const breaker = breakers.get(peer) ?? create(peer, now)
      breaker.touched = true
      return CircuitBreaker.operateUnsafe(breaker, change, reason, clock)
    })

  const snapshot = Effect.clockWith((clock) =>
    Effect.sync((): CircuitSnapshot => {
      const now = CircuitBreaker.monotonicMillis(clock)
      observe(now)
      const at = clock.currentTimeMillisUnsafe()
      const peers: Array<PeerSnapshot> = []
      for (const [peer, breaker] of breakers) {
        const state = CircuitState.fromMachine(breaker.state, now, at, settings.policy)
        switch (state._tag) {
          case "Closed":
            peers.push({ peer, state: "Closed", failures: state.failures })
            break
          case "Open":
            peers.push({
              peer,
              state: "Open",
              failures: 0,
              openedAt: state.openedAt,
              probeAt: state.probeAt,
              isolated: state.isolated
            })
            break
          case "HalfOpen":
            peers.push({
              peer,
              state: "HalfOpen",
              failures: 0,
              openedAt: state.openedAt,
              probeAt: at + Duration.toMillis(state.retryAfter)
            })
            break
        }
      }
      return { at, peers }
    })
  )

  const service: ServiceImpl = {
    [lookupKey]: lookup,
    withBreaker: (peer) => {
      if (typeof peer !== "string") return () => invalidPeer(peer)
      return (self) => CircuitBreaker.guard((context) => lookup(peer, context), self)
    },
    state: (peer) => {
      if (typeof peer !== "string") return invalidPeer(peer)
      return CircuitBreaker.stateOf(() => breakers.get(peer)?.state ?? machine.initial, settings.policy)
    },
    changes: Stream.fromPubSub(changes),
    snapshot,
    reset: (peer) => operate(peer, machine.reset, "reset"),
    isolate: (peer) =>
      Effect.acquireRelease(
        operate(peer, machine.isolate, "isolated"),
        () => operate(peer, machine.release, "released")
      ),
    options: { ...settings.options, idleTimeToLive }
  }
  return service
}

/**
 * The set of circuit breakers, one per peer, as an Effect service.
 *
 * **When to use**
 *
 * Provide `CircuitBreakerSet.layer(options)` once in your application and guard each call to a remote peer with
 * `withBreaker(peer)`: an HTTP host, a database, a queue, a tenant's endpoint.
 *
 * **Details**
 *
 * - Each peer has its own breaker; failures on one never affect another. A peer never seen is Closed.
 * - Breakers are created on a peer's first call and dropped once idle (see `SetOptions.idleTimeToLive`), so a set
 *   keyed by an unbounded population of peers stays bounded.
 * - Time is read from the `Clock` service of the calling fiber; nothing runs in the background.
 *
 * **Example** (Providing the layer and guarding calls)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreakerSet, withBreaker } from "effect-circuit"
 *
 * declare const getStock: (sku: string) => Effect.Effect<number, Error>
 *
 * const program = getStock("sku-1").pipe(
 *   withBreaker("inventory-api"),
 *   Effect.catchTag("CircuitOpenError", () => Effect.succeed(0))
 * )
 *
 * Effect.runPromise(program.pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 5 }))))
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export class CircuitBreakerSet extends Context.Service<CircuitBreakerSet, Service>()(
  "effect-circuit/CircuitBreakerSet"
) {
  /**
   * A layer providing a set whose breakers all use `options`. Fails with `CircuitBreakerConfigError`, naming each
   * invalid field, if the options are invalid.
   *
   * **Example** (Providing the set)
   *
   * ```ts
   * import { Effect, Predicate } from "effect"
   * import { CircuitBreakerSet } from "effect-circuit"
   *
   * const BreakersLive = CircuitBreakerSet.layer({
   *   maxFailures: 5,
   *   window: "30 seconds",
   *   resetTimeout: "15 seconds",
   *   isFailure: Predicate.isTagged("Timeout")
   * })
   * ```
   */
  static readonly layer = (options?: SetOptions): Layer.Layer<CircuitBreakerSet, CircuitBreakerConfigError> =>
    Layer.effect(CircuitBreakerSet, make(options))

  /**
   * A layer whose options are read through Effect's `Config`, by default from the environment:
   * `CIRCUIT_MAX_FAILURES` (an integer), `CIRCUIT_WINDOW`, `CIRCUIT_RESET_TIMEOUT` and `CIRCUIT_IDLE_TIME_TO_LIVE`
   * (durations such as `30 seconds`). Missing keys take the defaults; unparsable values fail with `ConfigError`, and
   * values out of range with `CircuitBreakerConfigError`.
   *
   * **Details**
   *
   * Options that cannot come from text, `isFailure` and `metricPeerLabel`, are passed as the argument; any other key
   * there is an error naming it.
   *
   * **Example** (Configuring from the environment)
   *
   * ```ts
   * import { Predicate } from "effect"
   * import { CircuitBreakerSet } from "effect-circuit"
   *
   * // CIRCUIT_MAX_FAILURES=5 CIRCUIT_WINDOW="30 seconds" node app.js
   * const BreakersLive = CircuitBreakerSet.layerConfig({ isFailure: Predicate.isTagged("Timeout") })
   * ```
   */
  static readonly layerConfig = (
    options?: ConfigLayerOptions
  ): Layer.Layer<CircuitBreakerSet, CircuitBreakerConfigError | ConfigError.ConfigError> =>
    Layer.effect(
      CircuitBreakerSet,
      Effect.gen(function*() {
        // Validated first, so an option that belongs in the environment is reported rather than overwritten.
        yield* Options.decodeOptions(ConfigLayerOptionsSchema, options)
        const config = yield* Config.all({
          maxFailures: Config.option(Config.Int("CIRCUIT_MAX_FAILURES")),
          window: Config.option(Config.Duration("CIRCUIT_WINDOW")),
          resetTimeout: Config.option(Config.Duration("CIRCUIT_RESET_TIMEOUT")),
          idleTimeToLive: Config.option(Config.Duration("CIRCUIT_IDLE_TIME_TO_LIVE"))
        })
        return yield* make({
          ...options,
          maxFailures: Option.getOrUndefined(config.maxFailures),
          window: Option.getOrUndefined(config.window),
          resetTimeout: Option.getOrUndefined(config.resetTimeout),
          idleTimeToLive: Option.getOrUndefined(config.idleTimeToLive)
        })
      })
    )
}

/**
 * Guards an effect with the breaker of `peer` from the `CircuitBreakerSet` in the context.
 *
 * **Details**
 *
 * The effect runs only if `peer`'s circuit admits it; otherwise the result fails with `CircuitOpenError` and the
 * effect does not run. See `CircuitBreaker.withBreaker` for what counts as a failure and how the circuit moves.
 * Both `effect.pipe(withBreaker("peer"))` and `withBreaker(effect, "peer")` work.
 *
 * **Gotchas**
 *
 * - Put the timeout inside: `effect.pipe(Effect.timeout("2 seconds"), withBreaker("peer"))`.
 * - Any string is a peer, including `""`; a non-string fails with a defect and the effect does not run.
 *
 * **Example** (Guarding a call and serving a fallback)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { withBreaker } from "effect-circuit"
 *
 * declare const getUser: (id: string) => Effect.Effect<{ name: string }, Error>
 *
 * const user = getUser("42").pipe(
 *   withBreaker("users-api"),
 *   Effect.catchTag("CircuitOpenError", () => Effect.succeed({ name: "unknown" }))
 * )
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const withBreaker: {
  (
    peer: string
  ): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpenError, R | CircuitBreakerSet>
  <A, E, R>(self: Effect.Effect<A, E, R>, peer: string): Effect.Effect<A, E | CircuitOpenError, R | CircuitBreakerSet>
} = dual(
  2,
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    peer: string
  ): Effect.Effect<A, E | CircuitOpenError, R | CircuitBreakerSet> =>
    typeof peer !== "string" ? invalidPeer(peer) : CircuitBreaker.guard(
      (context) => {
        const set = Context.get(context as Context.Context<CircuitBreakerSet>, CircuitBreakerSet) as Partial<
          ServiceImpl
        >
        return set[lookupKey]?.(peer, context)
      },
      self,
      // A service built some other way (a test double, say) guards the call itself.
      (context) => Context.get(context as Context.Context<CircuitBreakerSet>, CircuitBreakerSet).withBreaker(peer)(self)
    )
)
