/**
 * One circuit breaker per peer, keyed by a string: python-circuit's `CircuitBreakerSet`, as an Effect service.
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
import type * as Redis from "effect/persistence/Redis"
import * as Predicate from "effect/Predicate"
import * as PubSub from "effect/PubSub"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type { CircuitBreakerConfigError } from "./CircuitBreakerConfigError.ts"
import type { BreakerOptions, ResolvedOptions } from "./CircuitBreakerOptions.ts"
import type { CircuitOpenError } from "./CircuitOpenError.ts"
import type { CircuitSnapshot } from "./CircuitSnapshot.ts"
import type { CircuitState } from "./CircuitState.ts"
import type { CircuitStateChange } from "./CircuitStateChange.ts"
import type { FleetStatus } from "./FleetStatus.ts"
import { makeShared } from "./internal/breaker.ts"
import { Fleet, isShared } from "./internal/fleet.ts"
import { runPeer } from "./internal/guard.ts"
import {
  breakerFields,
  checkBreaker,
  configError,
  type DecodedBreaker,
  decodeIssues,
  decodeOptions,
  type EnvironmentOptions,
  environmentVariables,
  type Issue,
  parseEnvironment,
  positiveDuration,
  PositiveDurationInput,
  resolve,
  type Settings,
  toPositiveDuration
} from "./internal/options.ts"
import { invalidPeer, SetService } from "./internal/set.ts"
import { monotonicMillis } from "./internal/time.ts"

/**
 * Options of a set: the breaker options every peer's breaker uses (see `BreakerOptions`), how long an idle breaker
 * is kept, and the options of peers that need their own.
 *
 * **Details**
 *
 * | option | default | meaning |
 * | --- | --- | --- |
 * | `idleTimeToLive` | `"1 minute"` | a breaker that is Closed with nothing in its policy's counts (no failure in its window) and has started no call for this long is dropped; a call still running then records in the breaker the set holds by its end (a finite duration > 0) |
 * | `metricRetention` | `"15 minutes"` | with per-peer metric labels, how long a dropped breaker's series are kept, so that a peer called less often than `idleTimeToLive` keeps counting (a finite duration > 0); at most 10,000 peers' series are kept, the oldest go first |
 * | `peers` | none | options of their own for some peers, merged over the set's (see `PeerOptions`); validated when the layer is built, errors naming the path (`peers.payments.policy.threshold`) |
 *
 * Dropping a breaker changes nothing a caller can observe: a closed breaker with an empty window behaves exactly
 * like a fresh one. Open and half-open breakers are kept until they close. A breaker is never dropped before
 * `idleTimeToLive` has passed since its last call; sweeps run as calls arrive (no timer), so an idle one goes within
 * about two `idleTimeToLive` while calls keep coming.
 *
 * @category models
 * @since 0.1.0
 */
export interface SetOptions extends BreakerOptions {
  readonly idleTimeToLive?: Duration.Input | undefined
  readonly metricRetention?: Duration.Input | undefined
  readonly peers?: { readonly [peer: string]: PeerOptions } | undefined
}

/**
 * A peer's own options in a set's `peers`: any breaker option but `metricPeerLabel` (the set's labels its metrics).
 *
 * **Details**
 *
 * A peer's entry replaces the set's options field by field: its `policy` (or its `maxFailures` / `window`) replaces
 * the set's policy and shorthands, its `openDuration` or `resetTimeout` replaces both of the set's, and its
 * `halfOpen` replaces the set's `halfOpen` whole. A peer without an entry uses the set's options.
 *
 * @category models
 * @since 0.2.0
 */
export type PeerOptions = Omit<BreakerOptions, "metricPeerLabel">

const { metricPeerLabel: _metricPeerLabel, ...peerFields } = breakerFields

const PeerOptionsSchema = Schema.Struct(peerFields)

const SetOptionsSchema = Schema.Struct({
  ...breakerFields,
  idleTimeToLive: Schema.optionalKey(PositiveDurationInput),
  metricRetention: Schema.optionalKey(PositiveDurationInput),
  peers: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown))
})

/** The set's options checked in full, with every peer's entry, each under its path (`peers.payments.policy`). */
const checkSet = (present: Record<string, unknown>): Array<Issue> => {
  const issues = checkBreaker(present)
  const peers = present.peers
  if (peers === undefined || !Predicate.isObject(peers) || Array.isArray(peers)) return issues
  let entries: Array<[string, unknown]>
  try {
    entries = Object.entries(peers)
  } catch (error) {
    issues.push({ path: "peers", message: `could not be read (${String(error)})`, value: peers })
    return issues
  }
  for (const [peer, entry] of entries) {
    const prefix = `peers.${peer}.`
    const [decoded, own] = decodeIssues(PeerOptionsSchema, entry, prefix, checkBreaker)
    issues.push(...own)
    if (decoded !== undefined) {
      issues.push(
        ...checkBreaker(mergePeer(present, decoded)).map((issue) => ({ ...issue, path: prefix + issue.path }))
      )
    }
  }
  return issues
}

/** The options of a peer with an entry: the set's, with the entry's replacing them field by field. */
const mergePeer = (set: Record<string, unknown>, peer: Record<string, unknown>): Record<string, unknown> => {
  const { idleTimeToLive: _ttl, metricRetention: _retention, peers: _peers, ...merged } = set
  if (peer.policy !== undefined) {
    delete merged.maxFailures
    delete merged.window
  }
  if (peer.policy !== undefined || peer.maxFailures !== undefined || peer.window !== undefined) delete merged.policy
  if (peer.openDuration !== undefined || peer.resetTimeout !== undefined) {
    delete merged.openDuration
    delete merged.resetTimeout
  }
  for (const [key, value] of Object.entries(peer)) if (value !== undefined) merged[key] = value
  return merged
}

/**
 * What `CircuitBreakerSet.layerConfig` takes as its argument: the options that cannot be read as text.
 *
 * @category models
 * @since 0.1.0
 */
export type ConfigLayerOptions = Pick<
  SetOptions,
  "policy" | "openDuration" | "maxOpenDuration" | "halfOpen" | "mode" | "isFailure" | "metricPeerLabel" | "peers"
>

const ConfigLayerOptionsSchema = Schema.Struct({
  policy: breakerFields.policy,
  openDuration: breakerFields.openDuration,
  maxOpenDuration: breakerFields.maxOpenDuration,
  halfOpen: breakerFields.halfOpen,
  mode: breakerFields.mode,
  isFailure: breakerFields.isFailure,
  metricPeerLabel: breakerFields.metricPeerLabel,
  peers: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown))
})

/** The environment variables that `layerConfig`'s argument replaces, by the argument's option. */
const replacedBy = {
  policy: ["maxFailures", "window"],
  openDuration: ["resetTimeout"]
} as const

/** An argument of `layerConfig` that a variable in the environment also sets: neither may silently win. */
const conflicts = (options: ConfigLayerOptions | undefined, environment: EnvironmentOptions): Array<Issue> => {
  const issues: Array<Issue> = []
  for (const option of ["policy", "openDuration"] as const) {
    if (options?.[option] === undefined) continue
    for (const key of replacedBy[option]) {
      if (environment[key] === undefined) continue
      issues.push({
        path: environmentVariables[key],
        message:
          `Cannot be combined with the ${option} option given to layerConfig: unset the variable or drop the option`,
        value: environment[key]
      })
    }
  }
  return issues
}

const defaultIdleTimeToLive = "1 minute"

const defaultMetricRetention = "15 minutes"

/**
 * `""` when the process environment holds `name` set to an empty value, which Effect's environment provider reads as
 * unset: an operator who set it meant something, so it is reported rather than replaced by the default.
 */
const emptyInProcess = (name: string): string | undefined =>
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name] === ""
    ? ""
    : undefined

/** The most changes a subscriber of `changes` buffers before the oldest are dropped. */
const changesBuffer = 1024

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
  readonly state: (peer: string) => Effect.Effect<CircuitState>
  /**
   * Every state change of every peer, as it happens. The half-open change is emitted when the probe is admitted.
   *
   * Each subscriber has a sliding buffer of 1,024 changes that drops the oldest: a slow or absent consumer never
   * blocks or slows calls. A subscription starts when the stream runs; earlier changes are not replayed.
   */
  readonly changes: Stream.Stream<CircuitStateChange>
  /**
   * Every peer the set currently holds, with its state, as a schema-encodable value (see `CircuitSnapshot`).
   *
   * **Example** (The peers whose circuit is not closed)
   *
   * ```ts
   * import { Effect } from "effect"
   * import { CircuitBreakerSet } from "effect-circuit"
   *
   * const unhealthy = Effect.gen(function*() {
   *   const breakers = yield* CircuitBreakerSet
   *   const snapshot = yield* breakers.snapshot
   *   return snapshot.peers.filter((peer) => peer.state !== "Closed").map((peer) => peer.peer)
   * })
   * ```
   */
  readonly snapshot: Effect.Effect<CircuitSnapshot>
  /**
   * Closes `peer`'s circuit and empties its window; calls in flight decide nothing. It does not end an isolation.
   * On a peer that is closed with an empty window, or that the set does not hold, it does nothing: no breaker is
   * created, and no change is published, logged or counted.
   *
   * **Example** (An operator endpoint that closes a circuit)
   *
   * ```ts
   * import { CircuitBreakerSet } from "effect-circuit"
   *
   * const resetPeer = (peer: string) => CircuitBreakerSet.use((breakers) => breakers.reset(peer))
   * ```
   */
  readonly reset: (peer: string) => Effect.Effect<void>
  /**
   * Holds `peer`'s circuit open, rejecting every call with `CircuitOpenError` (`state: "Isolated"`, `retryAfter`
   * infinite), until the scope closes, even past `resetTimeout`. Isolations stack: the last release closes the circuit
   * with an empty window. A `reset` does not end an isolation.
   *
   * **Example** (Keeping calls off a peer during its maintenance window)
   *
   * ```ts
   * import { Effect } from "effect"
   * import { CircuitBreakerSet } from "effect-circuit"
   *
   * declare const migrateDatabase: Effect.Effect<void>
   *
   * const maintenance = Effect.scoped(
   *   Effect.gen(function*() {
   *     const breakers = yield* CircuitBreakerSet
   *     yield* breakers.isolate("orders-db") // released when the scope closes
   *     yield* migrateDatabase
   *   })
   * )
   * ```
   */
  readonly isolate: (peer: string) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Whether the set shares its breakers with a fleet right now (see `layerRedis` and `FleetStatus`). An in-memory set
   * is always `Local`, with the reason `"in-memory set"`.
   */
  readonly fleet: Effect.Effect<FleetStatus>
  /** The validated options every breaker of the set uses. */
  readonly options: ResolvedOptions & {
    readonly idleTimeToLive: Duration.Duration
    readonly metricRetention: Duration.Duration
    /** The options of each peer that has an entry of its own, merged over the set's. */
    readonly peers: { readonly [peer: string]: ResolvedOptions }
  }
}

/**
 * Builds the set's service. Most programs use `CircuitBreakerSet.layer` instead; `make` is for building a set
 * inside your own layer or scope.
 *
 * **Details**
 *
 * Options are validated first: bad values fail with `CircuitBreakerConfigError`. The set's `changes` stream ends
 * when the scope closes.
 *
 * **Example** (A set built in a scope)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreakerSet } from "effect-circuit"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function*() {
 *     const breakers = yield* CircuitBreakerSet.make({ maxFailures: 5 })
 *     return yield* Effect.succeed("pong").pipe(breakers.withBreaker("payments"))
 *   })
 * )
 * // Effect.runSync(program) => "pong"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options?: SetOptions): Effect.Effect<Service, CircuitBreakerConfigError, Scope.Scope> =>
  makeWith(options, undefined)

const makeWith: (
  options: SetOptions | undefined,
  fleet: FleetOptions | undefined
) => Effect.Effect<SetService, CircuitBreakerConfigError, Scope.Scope> = Effect
  .fnUntraced(function*(options: SetOptions | undefined, fleetOptions: FleetOptions | undefined) {
    const decoded = yield* decodeOptions(SetOptionsSchema, options, checkSet)
    const context = yield* Effect.context<never>()
    const settings = yield* resolve(decoded, context)
    const peers = new Map<string, Settings>()
    for (const [peer, entry] of Object.entries(decoded.peers ?? {})) {
      const merged = mergePeer(decoded, entry as Record<string, unknown>) as DecodedBreaker
      peers.set(peer, yield* resolve(merged, context, `peers.${peer}.`))
    }
    const changes = yield* Effect.acquireRelease(PubSub.sliding<CircuitStateChange>(changesBuffer), PubSub.shutdown)
    const scope = yield* Effect.scope
    const metricRetention = positiveDuration(decoded.metricRetention ?? defaultMetricRetention)
    const shared = makeShared(settings, peers, context, changes, scope, Duration.toMillis(metricRetention))
    // Every series the set registered goes with it: a set built again starts from fresh series.
    yield* Effect.addFinalizer(() => Effect.sync(() => shared.series.releaseAll()))
    const idleTimeToLive = positiveDuration(decoded.idleTimeToLive ?? defaultIdleTimeToLive)
    const clock = Context.get(context, Clock.Clock)
    const fleet = fleetOptions === undefined ? undefined : new Fleet(
      {
        redis: fleetOptions.redis,
        prefix: fleetOptions.prefix,
        timeout: fleetOptions.timeout,
        minProcesses: fleetOptions.minProcesses,
        idleMillis: Duration.toMillis(idleTimeToLive)
      },
      shared,
      context,
      clock.currentTimeMillisUnsafe()
    )
    const service = new SetService(
      shared,
      changes,
      idleTimeToLive,
      metricRetention,
      monotonicMillis(clock),
      clock.currentTimeMillisUnsafe(),
      fleet
    )
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (lastFound.entry?.set === service) lastFound.entry = undefined
      })
    )
    if (fleet !== undefined) {
      fleet.attach(service.registry, service.resetLocal)
      shared.fleet = fleet
      yield* logPerProcessPolicies(settings, peers)
      yield* Effect.forkScoped(fleet.link)
    }
    return service
  })

/** The fleet's own options, validated (`layerRedis`). */
interface FleetOptions {
  readonly redis: Layer.Layer<Redis.Redis, Redis.RedisError>
  readonly prefix: string
  readonly timeout: Duration.Duration
  readonly minProcesses: number
}

/** Says once, when a fleet set is built, which peers keep their policy per process (it depends on call order). */
const logPerProcessPolicies = (settings: Settings, peers: ReadonlyMap<string, Settings>): Effect.Effect<void> => {
  const local: Array<string> = []
  if (!isShared(settings)) local.push(`the set's ${describePolicy(settings)}`)
  for (const [peer, peerSettings] of peers) {
    if (!isShared(peerSettings)) local.push(`peer ${JSON.stringify(peer)}'s ${describePolicy(peerSettings)}`)
  }
  if (local.length === 0) return Effect.void
  return Effect.logInfo(
    `Fleet mode shares window policies and time-window rate and slowCalls policies; ${local.join(", ")} ` +
      "decide per process (they depend on call order, which a fleet does not have)."
  )
}

const describePolicy = (settings: Settings): string => {
  const policy = settings.options.policy
  return policy._tag === "Rate" || policy._tag === "SlowCalls"
    ? `${policy._tag} policy over a count window`
    : `${policy._tag} policy`
}

/**
 * The options of `CircuitBreakerSet.layerRedis`: a set's options, and how to reach the fleet's Redis.
 *
 * @category models
 * @since 0.3.0
 */
export interface RedisSetOptions extends SetOptions {
  /**
   * The Redis connection, as a layer the set builds itself, in the background, and builds again after an outage: an
   * application starts (in local mode) while Redis is down. For example `NodeRedis.layer({ url })` from
   * `@effect/platform-node`; give it `disableOfflineQueue: true`, so that a dead Redis fails commands at once.
   */
  readonly redis: Layer.Layer<Redis.Redis, Redis.RedisError>
  /** Prefix of every key and of the channel (default `"effect-circuit:"`); fleets sharing one Redis need their own. */
  readonly prefix?: string | undefined
  /** The longest any Redis call may take before the set goes local (default 100 milliseconds). */
  readonly timeout?: Duration.Input | undefined
  /**
   * How many distinct processes the failures in a window must come from for the fleet to open (default 1): a guard
   * against one replica with a broken network opening the circuit for all. It adds a condition and caps nothing.
   */
  readonly minProcesses?: number | undefined
}

const fleetDefaults = { prefix: "effect-circuit:", timeout: "100 millis", minProcesses: 1 } as const

/** Checks the fleet's own options, each issue named by its field. */
const checkFleet = (options: RedisSetOptions): { readonly issues: Array<Issue>; readonly fleet: FleetOptions } => {
  const issues: Array<Issue> = []
  if (!Layer.isLayer(options.redis)) {
    issues.push({
      path: "redis",
      message: "must be a Layer providing Redis (e.g. NodeRedis.layer)",
      value: options.redis
    })
  }
  const prefix = options.prefix ?? fleetDefaults.prefix
  if (typeof prefix !== "string" || prefix.length === 0 || /[{}\s]/.test(prefix)) {
    issues.push({
      path: "prefix",
      message: "must be a non-empty string without braces or spaces (braces would break the keys' hash tag)",
      value: prefix
    })
  }
  const timeout = toPositiveDuration(options.timeout ?? fleetDefaults.timeout)
  if (timeout === undefined || !Duration.isFinite(timeout)) {
    issues.push({ path: "timeout", message: "must be a positive, finite duration", value: options.timeout })
  }
  const minProcesses = options.minProcesses ?? fleetDefaults.minProcesses
  if (typeof minProcesses !== "number" || !Number.isSafeInteger(minProcesses) || minProcesses < 1) {
    issues.push({ path: "minProcesses", message: "must be a whole number of at least 1", value: minProcesses })
  }
  return {
    issues,
    fleet: { redis: options.redis, prefix, timeout: timeout ?? Duration.zero, minProcesses }
  }
}

/**
 * Builds a set whose breakers the fleet shares through Redis, in the current scope; most programs use
 * `CircuitBreakerSet.layerRedis` instead, which says how the fleet behaves.
 *
 * **Details**
 *
 * The options are validated first: a bad one fails with `CircuitBreakerConfigError`. Redis being down does not: the
 * set starts local, and its link (a fiber of the scope) joins the fleet when Redis answers. Closing the scope stops
 * the link and closes its connections without waiting for a hung Redis.
 *
 * **Example** (A fleet set in a scope, and its status)
 *
 * ```ts
 * import { NodeRedis } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { CircuitBreakerSet } from "effect-circuit"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function*() {
 *     const breakers = yield* CircuitBreakerSet.makeRedis({ redis: NodeRedis.layer({ url: "redis://127.0.0.1:6379" }) })
 *     return yield* breakers.fleet // "Local" with reason "connecting" until Redis answers
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.3.0
 */
export const makeRedis = (options: RedisSetOptions): Effect.Effect<Service, CircuitBreakerConfigError, Scope.Scope> =>
  Effect.suspend(() => {
    if (typeof options !== "object" || options === null) {
      return Effect.fail(
        configError([{ path: "redis", message: "options with a redis layer are required", value: options }])
      )
    }
    const { minProcesses: _m, prefix: _p, redis: _r, timeout: _t, ...setOptions } = options
    const { fleet, issues } = checkFleet(options)
    if (issues.length > 0) return Effect.fail(configError(issues))
    return makeWith(setOptions, fleet)
  })

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
 * - Time is read from the `Clock` service of the calling fiber. Nothing runs in the background but a running probe,
 *   which runs in fibers of the set's scope, with a sleep for its lease (and, in fleet mode, the link to Redis).
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
 * @see {@link withBreaker} to guard a call with the set in the context
 * @category services
 * @since 0.1.0
 */
export class CircuitBreakerSet extends Context.Service<CircuitBreakerSet, Service>()(
  "effect-circuit/CircuitBreakerSet"
) {
  /**
   * Builds the set's service in the current scope; see the module's `make`.
   *
   * @category constructors
   * @since 0.1.0
   */
  static readonly make = make

  /**
   * Builds a fleet set's service in the current scope; see `layerRedis`.
   *
   * @category constructors
   * @since 0.3.0
   */
  static readonly makeRedis = makeRedis

  /**
   * A layer providing a set whose breakers all use `options`. Fails with `CircuitBreakerConfigError`, naming each
   * invalid field, if the options are invalid.
   *
   * **Example** (Providing the set)
   *
   * ```ts
   * import { Predicate } from "effect"
   * import { CircuitBreakerSet } from "effect-circuit"
   *
   * const BreakersLive = CircuitBreakerSet.layer({
   *   maxFailures: 5,
   *   window: "30 seconds",
   *   resetTimeout: "15 seconds",
   *   isFailure: Predicate.isTagged("Timeout")
   * })
   * ```
   *
   * @category layers
   * @since 0.1.0
   */
  static readonly layer = (options?: SetOptions): Layer.Layer<CircuitBreakerSet, CircuitBreakerConfigError> =>
    Layer.effect(CircuitBreakerSet, make(options))

  /**
   * A layer providing a set whose breakers every replica of a service shares through Redis: a peer that fails for
   * the fleet opens for the fleet, and exactly one call in the fleet probes it.
   *
   * **Details**
   *
   * - A call to a closed circuit sends nothing to Redis and waits for nothing. A counted failure is sent by one
   *   script after the caller has its result; openings reach every process by pub/sub, inside the same step.
   * - The `window` policy is shared, with Redis `TIME` as the only clock; other policies stay per process (logged
   *   once when the layer is built).
   * - Each process keeps its local breakers; a call meets the stricter of the fleet's circuit and its own.
   * - When Redis is unreachable, refused or hung, the set goes local within `2 × timeout + 1 s`: calls proceed as with
   *   `layer`, and never wait on Redis longer than `timeout`. It logs one Warning when it goes local, one Info when it
   *   comes back, replays the failures it saw meanwhile, and re-reads the peers it holds open.
   * - `reset` and `isolate` act on the fleet. An isolation is a lease of 10 seconds that its holder renews every
   *   second: a process that dies while holding one releases it within 10 seconds.
   *
   * **Gotchas**
   *
   * - The layer builds `redis` itself, in the background, and builds it again after an outage: do not provide the
   *   Redis layer to it. A bad option fails the layer with `CircuitBreakerConfigError`; Redis being down does not.
   * - Fleets that share one Redis need their own `prefix`.
   *
   * **Example** (Sharing breakers across replicas)
   *
   * ```ts
   * import { NodeRedis } from "@effect/platform-node"
   * import { CircuitBreakerSet } from "effect-circuit"
   *
   * const BreakersLive = CircuitBreakerSet.layerRedis({
   *   redis: NodeRedis.layer({ url: "redis://127.0.0.1:6379", disableOfflineQueue: true }),
   *   maxFailures: 5,
   *   minProcesses: 2
   * })
   * ```
   *
   * @category layers
   * @since 0.3.0
   */
  static readonly layerRedis = (options: RedisSetOptions): Layer.Layer<CircuitBreakerSet, CircuitBreakerConfigError> =>
    Layer.effect(CircuitBreakerSet, makeRedis(options))

  /**
   * A layer whose options are read through Effect's `Config`, by default from the environment:
   * `CIRCUIT_MAX_FAILURES` (a whole number), `CIRCUIT_WINDOW`, `CIRCUIT_RESET_TIMEOUT`, `CIRCUIT_IDLE_TIME_TO_LIVE`
   * and `CIRCUIT_METRIC_RETENTION` (durations with a unit, such as `30 seconds`). Missing keys take the defaults. A
   * bad value, an empty one or a duration without a unit fails with `CircuitBreakerConfigError`, which names every
   * bad variable and its value at once.
   *
   * **Details**
   *
   * Options that cannot come from text (`policy`, `openDuration`, `maxOpenDuration`, `halfOpen`, `mode`, `isFailure`,
   * `metricPeerLabel`, `peers`) are passed as the argument; any other key there is an error naming it. An argument
   * and a variable that set the same thing (`policy` with `CIRCUIT_MAX_FAILURES` or `CIRCUIT_WINDOW`, `openDuration`
   * with `CIRCUIT_RESET_TIMEOUT`) are an error naming the variable. `fields` of the error names the variables. Effect's environment provider reads a
   * variable set to an empty value as unset, so the process environment is also checked for empty ones, whatever
   * `ConfigProvider` is in use.
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
   *
   * @category layers
   * @since 0.1.0
   */
  static readonly layerConfig = (
    options?: ConfigLayerOptions
  ): Layer.Layer<CircuitBreakerSet, CircuitBreakerConfigError | ConfigError.ConfigError> =>
    Layer.effect(
      CircuitBreakerSet,
      Effect.gen(function*() {
        // Validated first, so an option that belongs in the environment is reported rather than overwritten.
        yield* decodeOptions(ConfigLayerOptionsSchema, options, checkSet)
        const text = yield* Config.all({
          maxFailures: Config.option(Config.String(environmentVariables.maxFailures)),
          window: Config.option(Config.String(environmentVariables.window)),
          resetTimeout: Config.option(Config.String(environmentVariables.resetTimeout)),
          idleTimeToLive: Config.option(Config.String(environmentVariables.idleTimeToLive)),
          metricRetention: Config.option(Config.String(environmentVariables.metricRetention))
        })
        const fromEnvironment = yield* parseEnvironment({
          maxFailures: Option.getOrElse(text.maxFailures, () => emptyInProcess(environmentVariables.maxFailures)),
          window: Option.getOrElse(text.window, () => emptyInProcess(environmentVariables.window)),
          resetTimeout: Option.getOrElse(text.resetTimeout, () => emptyInProcess(environmentVariables.resetTimeout)),
          idleTimeToLive: Option.getOrElse(
            text.idleTimeToLive,
            () => emptyInProcess(environmentVariables.idleTimeToLive)
          ),
          metricRetention: Option.getOrElse(
            text.metricRetention,
            () => emptyInProcess(environmentVariables.metricRetention)
          )
        })
        const conflicting = conflicts(options, fromEnvironment)
        if (conflicting.length > 0) return yield* Effect.fail(configError(conflicting))
        return yield* make({ ...options, ...fromEnvironment })
      })
    )
}

/**
 * The context in which the top-level `withBreaker` last found a set of this module's, and that set. A context is an
 * immutable value, so it always holds the same set: calls from one context (a loop, one request's calls, those of a
 * `ManagedRuntime`) skip the look-up, about a tenth of a closed call's cost. One entry, replaced by the next context
 * that finds a set; forgotten when its set closes, so that a closed set is not kept by it.
 */
const lastFound: { entry: { readonly context: Context.Context<never>; readonly set: SetService } | undefined } = {
  entry: undefined
}

const findSet = (context: Context.Context<never>): Service => {
  const set = Context.getUnsafe(context, CircuitBreakerSet)
  if (set instanceof SetService) lastFound.entry = { context, set }
  return set
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
 * @see {@link CircuitBreakerSet} for the layer to provide
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
    typeof peer !== "string" ? invalidPeer(peer) : Effect.withFiber((fiber) => {
      const context = fiber.context
      const found = lastFound.entry
      const set = found !== undefined && found.context === context ? found.set : findSet(context)
      // A service built some other way (a test double, say) guards the call itself.
      if (!(set instanceof SetService)) return set.withBreaker(peer)(self)
      return set.fleetMode === undefined
        ? runPeer(fiber, set.registry, peer, self)
        : set.fleetMode.run(fiber, peer, self)
    })
)
