/**
 * Fleet mode: a set's breakers share each peer's state with every replica through Redis (see `fleetScripts.ts`).
 *
 * Layout, and why:
 * - Each process keeps its local breakers exactly as the in-memory set does, and beside them a view of the fleet's
 *   circuit for the peers the fleet holds open, half-open or isolated. A call to a peer with no such view (nearly
 *   every call) is the in-memory set's call: no Redis, no wait.
 * - A counted failure on a closed fleet circuit is sent by one script after the caller has its result; the reply, and
 *   the message every change publishes, update the views. A call finds a view that is not Closed and rejects on its
 *   deadline; past it, one call per process asks Redis for the probe slot, which exactly one call in the fleet gets.
 * - The stricter of the fleet's view and the local breaker decides: a call the fleet admits still passes the local
 *   breaker's guard.
 * - One background fiber holds the link: it builds the user's Redis layer (so that an application starts while Redis
 *   is down), subscribes, checks health once a second, and on trouble goes local: every call then proceeds as with
 *   the in-memory set, failures are kept for replay, and the link is rebuilt until Redis answers.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Redis from "effect/persistence/Redis"
import * as Queue from "effect/Queue"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as CircuitBreakerMetrics from "../CircuitBreakerMetrics.ts"
import type { CircuitOpenError } from "../CircuitOpenError.ts"
import type { CircuitState } from "../CircuitState.ts"
import type { Reason } from "../CircuitStateChange.ts"
import type { FleetStatus } from "../FleetStatus.ts"
import type { Breaker, Shared } from "./breaker.ts"
import * as scripts from "./fleetScripts.ts"
import { FleetViews, stateTagOf, tagOfReply, type View, type ViewTag } from "./fleetViews.ts"
import { classify, type PeerRegistry, runPeer } from "./guard.ts"
import type { Settings } from "./options.ts"
import { annotateSpan } from "./report.ts"
import { clockOf, monotonicMillis } from "./time.ts"

/** What `layerRedis` adds to a set's options, resolved. */
export interface FleetConfig {
  readonly redis: Layer.Layer<Redis.Redis, Redis.RedisError>
  readonly prefix: string
  readonly timeout: Duration.Duration
  readonly minProcesses: number
  readonly idleMillis: number
}

/** How often a connected process checks that Redis answers, and how soon a local one tries again. */
const healthInterval = Duration.seconds(1)
/** How long an isolation lasts in Redis unless its holder renews it (every health check): a dead holder's lapses. */
export const isolationLeaseMillis = 10_000
/** Openings whose durations travel with each script call; later openings last as long as the last of them. */
const openingsSent = 32
/** Failures kept for replay while local, per peer at most the policy's `maxFailures` + 1, over at most this many peers. */
const maxPendingPeers = 10_000

/** How the fleet shares a peer's policy: its window rule, its rate rule, or not at all (it stays per process). */
type Sharing =
  | { readonly kind: "window"; readonly rule: scripts.WindowRule }
  | { readonly kind: "rate"; readonly rule: scripts.RateRule }
  | undefined

const sharingOf = (settings: Settings, minProcesses: number): Sharing => {
  const policy = settings.options.policy
  const millis = (input: Duration.Input) => Duration.toMillis(Duration.fromInputUnsafe(input))
  switch (policy._tag) {
    case "Window":
      return {
        kind: "window",
        rule: { maxFailures: policy.maxFailures, windowMillis: millis(policy.window), minProcesses }
      }
    case "Rate":
    case "SlowCalls": {
      // A count window depends on call order, which a fleet does not have.
      if (policy.window === undefined || policy.buckets === undefined) return undefined
      return {
        kind: "rate",
        rule: {
          reason: policy._tag === "Rate" ? "rate" : "slow-calls",
          threshold: policy.threshold,
          minimumCalls: policy.minimumCalls,
          windowMillis: millis(policy.window),
          buckets: policy.buckets,
          slowMillis: policy._tag === "SlowCalls" ? millis(policy.duration) : Infinity,
          minProcesses
        }
      }
    }
    default:
      return undefined
  }
}

/** Whether the fleet shares `settings`' policy: `window`, and `rate` or `slowCalls` over a time window. */
export const isShared = (settings: Settings): boolean => sharingOf(settings, 1) !== undefined

/** A probe's record never reaches a closed circuit's counts (its ticket is not `*`): any rule will do. */
const probeRule: scripts.WindowRule = { maxFailures: 0, windowMillis: 1, minProcesses: 1 }

/** How long successes of a rate policy wait before they are sent, at most (a bad outcome is sent at once). */
const tallyInterval = Duration.millis(250)

/** Calls of a rate policy counted since `at`, not yet sent. */
interface Chunk {
  readonly at: number
  calls: number
  bad: number
}

/** The fleet half of a set in fleet mode. */
export class Fleet {
  /** This process's id in the fleet: it names the process in changes and counts distinct reporters. */
  readonly process = Math.random().toString(36).slice(2, 10)
  readonly channel: string
  readonly config: FleetConfig
  readonly #views: FleetViews
  readonly #pending = new Map<string, Array<number>>()
  /** Calls of rate policies not yet sent, by peer: sent every 250 ms while connected, kept for replay while local. */
  readonly #tallies = new Map<string, Array<Chunk>>()
  readonly #sharing = new WeakMap<Settings, Sharing | null>()
  /** Peers with a failure script in flight, and the failures waiting for it to answer. */
  readonly #sending = new Map<string, Array<number>>()
  /** Isolations this process holds, by peer: renewed in Redis while held. */
  readonly #isolations = new Map<string, number>()
  #redis: Redis.Redis["Service"] | undefined = undefined
  #lost: Deferred.Deferred<string> | undefined = undefined
  #status: { readonly connected: boolean; readonly since: number; readonly reason: string }
  #registry: PeerRegistry | undefined = undefined
  readonly #shared: Shared
  readonly #context: Context.Context<never>
  readonly #storeUp: Metric.Gauge<number>
  readonly #storeErrors: Metric.Counter<number>

  constructor(config: FleetConfig, shared: Shared, context: Context.Context<never>, wallNow: number) {
    this.config = config
    this.channel = `${config.prefix}changes`
    this.#shared = shared
    this.#context = context
    this.#status = { connected: false, since: wallNow, reason: "connecting" }
    this.#views = new FleetViews(this.process, shared.changes, context)
    this.#storeUp = Metric.withAttributes(CircuitBreakerMetrics.storeUp, { prefix: config.prefix })
    this.#storeErrors = Metric.withAttributes(CircuitBreakerMetrics.storeErrors, { prefix: config.prefix })
  }

  /** Resets this process's own breaker of a peer: a fleet-wide reset by another process resets every replica's. */
  #resetLocal: (peer: string) => Effect.Effect<void> = () => Effect.void

  attach(registry: PeerRegistry, resetLocal: (peer: string) => Effect.Effect<void>): void {
    this.#registry = registry
    this.#resetLocal = resetLocal
  }

  get #peers(): PeerRegistry {
    return this.#registry!
  }

  /** The fleet's status, as `CircuitBreakerSet.fleet` reports it. */
  status(): FleetStatus {
    const status = this.#status
    if (status.connected) return { _tag: "Connected", since: status.since, process: this.process }
    let pendingFailures = 0
    for (const times of this.#pending.values()) pendingFailures += times.length
    for (const chunks of this.#tallies.values()) for (const chunk of chunks) pendingFailures += chunk.bad
    return { _tag: "Local", since: status.since, process: this.process, reason: status.reason, pendingFailures }
  }

  // --- calls ---------------------------------------------------------------------------------------------------

  /** Guards `self` with `peer`'s breakers: the fleet's view first, when it has one, then the local breaker. */
  run<A, E, R>(
    fiber: Fiber.Fiber<unknown, unknown>,
    peer: string,
    self: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | CircuitOpenError, R> {
    if (this.#views.size === 0) return runPeer(fiber, this.#peers, peer, self)
    const view = this.#views.get(peer)
    if (view === undefined) return runPeer(fiber, this.#peers, peer, self)
    return this.#runNotClosed(fiber, peer, view, self)
  }

  #runNotClosed<A, E, R>(
    fiber: Fiber.Fiber<unknown, unknown>,
    peer: string,
    view: View,
    self: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | CircuitOpenError, R> {
    const breaker = this.#peers.lookup(peer, fiber.context)
    const now = monotonicMillis(clockOf(fiber))
    if (now < view.deadline) return this.#reject(fiber, breaker, view.tag, view.deadline - now, self)
    if (this.#redis !== undefined) return runPeer(fiber, this.#peers, peer, this.#askForProbe(peer, self))
    return this.#probeAlone(fiber, breaker, view, self)
  }

  #reject<A, E, R>(
    fiber: Fiber.Fiber<unknown, unknown>,
    breaker: Breaker,
    tag: ViewTag,
    retryAfterMillis: number,
    self: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | CircuitOpenError, R> {
    annotateSpan(fiber, breaker.name, stateTagOf(tag))
    if (breaker.settings.observe) {
      breaker.series.count("would_reject")
      return runPeer(fiber, this.#peers, breaker.name, self)
    }
    breaker.series.count("rejected")
    // An isolation promises no end, as in memory: its lease is only how long until this process looks again.
    return breaker.shared.rejections.get(breaker, breaker.name, tag, tag === "Isolated" ? Infinity : retryAfterMillis)
  }

  /**
   * A call past its view's deadline, while connected: asks Redis for a probe slot. Uninterruptibly up to the wait
   * for the probe's result (bounded by `timeout`), so that a slot taken is always followed by its probe.
   */
  #askForProbe<A, E, R>(peer: string, self: Effect.Effect<A, E, R>): Effect.Effect<A, E | CircuitOpenError, R> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.withFiber((fiber) => {
        const breaker = this.#peers.lookup(peer, fiber.context)
        const redis = this.#redis
        // Gone local meanwhile, or a peer whose policy the fleet does not share (it has no view then).
        if (redis === undefined || this.#sharingOf(breaker) === undefined) return restore(this.guard(peer, self))
        // Decided again, in this step: the view may have changed since the call was admitted by the local guard.
        const view = this.#views.get(peer)
        if (view === undefined) return restore(self)
        const asked = monotonicMillis(clockOf(fiber))
        if (asked < view.deadline) return restore(this.#reject(fiber, breaker, view.tag, view.deadline - asked, self))
        // One call per process asks; the others wait for its answer (or the change it brings).
        if (view.asking) {
          return restore(this.#reject(fiber, breaker, view.tag, Duration.toMillis(this.config.timeout), self))
        }
        const context = this.#scriptContext(breaker, fiber.context)
        view.asking = true
        const answered = Effect.ensuring(
          this.#send(redis.eval(scripts.admit)(context)),
          Effect.sync(() => {
            view.asking = false
          })
        )
        return Effect.matchCauseEffect(answered, {
          onFailure: (cause) => Effect.andThen(this.#fail(redis, cause), restore(this.guard(peer, self))),
          onSuccess: (reply): Effect.Effect<A, E | CircuitOpenError, R> => {
            const clock = clockOf(fiber)
            const now = monotonicMillis(clock)
            if (reply[0] === "P") {
              const ticket = reply[1]
              const leaseMillis = Number(reply[2])
              this.#views.observe(
                peer,
                ["H", ticket, ...reply.slice(2)] as unknown as scripts.Reply,
                now,
                clock,
                "probe"
              )
              const view = this.#views.get(peer)
              if (view !== undefined && breaker.settings.limits.probes > 1) view.deadline = now
              breaker.series.probe()
              const probe = this.#probe(breaker, context, ticket, leaseMillis, self)
              const scope = this.#shared.probes!
              return Effect.flatMap(Effect.forkIn(probe, scope), (running) => restore(Fiber.join(running)))
            }
            this.#views.observe(peer, reply, now, clock, undefined)
            if (reply[0] === "C") return restore(self)
            return restore(this.#reject(fiber, breaker, tagOfReply(reply[0]), Number(reply[2]), self))
          }
        })
      })
    )
  }

  /**
   * The fleet's probe, in a fiber of the set's scope: its caller may stop waiting, and it runs on. A probe still
   * running when its lease ends is interrupted and counted as timed out (in observe mode it runs on).
   */
  #probe<A, E, R>(
    breaker: Breaker,
    context: scripts.ScriptContext,
    ticket: string,
    leaseMillis: number,
    self: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | CircuitOpenError, R> {
    const bounded: Effect.Effect<Option.Option<A>, E, R> = breaker.settings.observe
      ? Effect.asSome(self)
      : Effect.timeoutOption(self, Duration.millis(leaseMillis))
    return Effect.flatMap(
      Effect.exit(bounded),
      (ended) =>
        Effect.withFiber((fiber): Effect.Effect<A, E | CircuitOpenError> => {
          const result: Exit.Exit<A, E> | undefined = Exit.isFailure(ended)
            ? Exit.failCause(ended.cause)
            : Option.isSome(ended.value)
            ? Exit.succeed(ended.value.value)
            : undefined
          const outcome: scripts.FleetOutcome = result === undefined
            ? "timeout"
            : classify(result, breaker.settings.options.isFailure, () => {})
          const redis = this.#redis
          // Redis gone meanwhile: the result decides this process's view, as a probe alone would.
          const alone = Effect.sync(() => this.#probedAlone(breaker, outcome, clockOf(fiber)))
          const recorded = redis === undefined
            ? alone
            : Effect.matchCauseEffect(this.#send(redis.eval(scripts.record)(context, ticket, outcome, 0, probeRule)), {
              onFailure: (cause) => Effect.andThen(this.#fail(redis, cause), alone),
              onSuccess: (reply) => {
                const clock = clockOf(fiber)
                return Effect.sync(() =>
                  this.#views.observe(breaker.name, reply, monotonicMillis(clock), clock, undefined)
                )
              }
            })
          // A probe whose lease ended has failed: its caller is told the circuit is open again, for how long.
          if (result !== undefined) return Effect.andThen(recorded, result)
          return Effect.andThen(
            recorded,
            Effect.suspend(() => {
              const view = this.#views.get(breaker.name)
              const left = view === undefined ? 0 : Math.max(0, view.deadline - monotonicMillis(clockOf(fiber)))
              return this.#shared.rejections.get(breaker, breaker.name, "Open", left)
            })
          )
        })
    )
  }

  /**
   * A call past its view's deadline while Redis does not answer: the process decides alone, with at most
   * `halfOpen.probes` probes at once, and the view's opening duration after a failed one.
   */
  #probeAlone<A, E, R>(
    fiber: Fiber.Fiber<unknown, unknown>,
    breaker: Breaker,
    view: View,
    self: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | CircuitOpenError, R> {
    const limits = breaker.settings.limits
    if (view.localProbes >= limits.probes) {
      return this.#reject(fiber, breaker, "HalfOpen", limits.probeTimeoutMillis ?? view.openMillis, self)
    }
    return Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        view.localProbes++
        return Effect.onExit(restore(runPeer(fiber, this.#peers, breaker.name, self)), (exit) =>
          Effect.clockWith((clock) =>
            Effect.sync(() => {
              view.localProbes--
              if (this.#views.get(breaker.name) !== view) {
                return
              }
              this.#probedAlone(breaker, classify(exit, breaker.settings.options.isFailure, () => {}), clock)
            })
          ))
      })
    )
  }

  /** A probe's result decided by this process alone: a failure starts the view's opening again, successes close it. */
  #probedAlone(breaker: Breaker, outcome: scripts.FleetOutcome, clock: Clock.Clock): void {
    const view = this.#views.get(breaker.name)
    if (view === undefined) return
    if (outcome === "failure" || outcome === "timeout") {
      view.deadline = monotonicMillis(clock) + view.openMillis
      view.localSuccesses = 0
    } else if (outcome === "success" && ++view.localSuccesses >= breaker.settings.limits.successThreshold) {
      this.#views.close(breaker.name, view.generation, "probe-succeeded", this.process, clock)
    }
  }

  /** Guards `self` with `peer`'s breakers, deciding when the effect runs. */
  guard<A, E, R>(peer: string, self: Effect.Effect<A, E, R>): Effect.Effect<A, E | CircuitOpenError, R> {
    return Effect.withFiber((fiber) => this.run(fiber, peer, self))
  }

  /**
   * An outcome the local breaker recorded, once the call's result is settled: for a `window` policy a counted
   * failure is sent to Redis in a fiber of its own; for a rate policy the call is counted, and sent in a batch (at
   * once when bad). While local, both are kept for replay. Nothing is sent while the fleet's circuit is not closed.
   */
  outcome(breaker: Breaker, fiber: Fiber.Fiber<unknown, unknown>, failure: boolean, durationMillis: number): void {
    const sharing = this.#sharingOf(breaker)
    if (sharing === undefined || this.#views.has(breaker.name)) return
    const at = monotonicMillis(clockOf(fiber))
    const redis = this.#redis
    if (sharing.kind === "window") {
      if (!failure) return
      if (redis === undefined) return this.#keep(breaker.name, at, sharing.rule)
      const waiting = this.#sending.get(breaker.name)
      if (waiting !== undefined) {
        waiting.push(at)
        if (waiting.length > sharing.rule.maxFailures + 1) waiting.shift()
        return
      }
      this.#sending.set(breaker.name, [])
      const context = this.#scriptContext(breaker, fiber.context)
      this.#fork(this.#sendFailures(redis, breaker, context, sharing.rule, at))
      return
    }
    const bad = sharing.rule.reason === "rate" ? failure : durationMillis >= sharing.rule.slowMillis
    this.#count(breaker.name, at, bad, sharing.rule.windowMillis)
    if (bad && redis !== undefined) this.#fork(this.#flush(redis, breaker.name))
  }

  #count(peer: string, at: number, bad: boolean, windowMillis: number): void {
    const chunks = listOf(this.#tallies, peer)
    const last = chunks[chunks.length - 1]
    if (last !== undefined && at - last.at < Duration.toMillis(tallyInterval)) {
      last.calls++
      if (bad) last.bad++
    } else {
      chunks.push({ at, calls: 1, bad: bad ? 1 : 0 })
      // While local, only the window's worth is kept.
      while (chunks.length > 0 && at - chunks[0]!.at >= windowMillis) chunks.shift()
    }
  }

  /** Sends `peer`'s counted calls, each batch with its age; a batch that could not be sent is kept. */
  #flush(redis: Redis.Redis["Service"], peer: string): Effect.Effect<void> {
    return Effect.withFiber((fiber) => {
      const chunks = this.#tallies.get(peer)
      if (chunks === undefined) return Effect.void
      this.#tallies.delete(peer)
      const breaker = this.#peers.lookup(peer, fiber.context)
      const sharing = this.#sharingOf(breaker)
      if (sharing?.kind !== "rate") return Effect.void
      const context = this.#scriptContext(breaker, fiber.context)
      const clock = clockOf(fiber)
      return Effect.forEach(chunks, (chunk, index) =>
        Effect.matchCauseEffect(
          Effect.suspend(() =>
            this.#send(
              redis.eval(scripts.tally)(
                context,
                chunk.calls,
                chunk.bad,
                monotonicMillis(clock) - chunk.at,
                sharing.rule
              )
            )
          ),
          {
            onFailure: (cause) =>
              Effect.andThen(
                Effect.sync(() => {
                  // A batch whose call timed out may still run in Redis: only those not sent are kept.
                  const unsent = chunks.slice(Cause.isTimeoutError(Cause.squash(cause)) ? index + 1 : index)
                  const newer = this.#tallies.get(peer) ?? []
                  this.#tallies.set(peer, [...unsent, ...newer])
                }),
                Effect.andThen(this.#fail(redis, cause), Effect.interrupt)
              ),
            onSuccess: (reply) =>
              Effect.sync(() => this.#views.observe(peer, reply, monotonicMillis(clock), clock, undefined))
          }
        ), { discard: true }).pipe(Effect.catchCause(() => Effect.void))
    })
  }

  /** Sends every peer's counted calls: every 250 ms while connected, and on rejoining. */
  #flushAll(redis: Redis.Redis["Service"]): Effect.Effect<void> {
    return Effect.suspend(() =>
      // Stops once the link is lost: each call left would wait its whole timeout.
      Effect.forEach(
        [...this.#tallies.keys()],
        (peer) => Effect.suspend(() => this.#redis === redis ? this.#flush(redis, peer) : Effect.void),
        { discard: true }
      )
    )
  }

  /** Runs `effect` in a fiber of its own, from the next step on: nothing of it runs before the caller goes on. */
  #fork(effect: Effect.Effect<void>): void {
    Effect.runForkWith(this.#context)(Effect.andThen(Effect.yieldNow, effect))
  }

  /**
   * Sends a peer's failures one at a time: the first, then those that came meanwhile (at most the rule needs), until
   * the fleet's circuit is not closed any more (they would decide nothing). One script in flight per peer, so that a
   * burst of failures is not a burst of scripts.
   */
  #sendFailures(
    redis: Redis.Redis["Service"],
    breaker: Breaker,
    context: scripts.ScriptContext,
    rule: scripts.WindowRule,
    first: number
  ): Effect.Effect<void> {
    const peer = breaker.name
    let unsent = false
    const next = (at: number): Effect.Effect<void> =>
      Effect.flatMap(this.#sendFailure(redis, breaker, context, rule, at), (sent) => {
        unsent = !sent
        const waiting = this.#sending.get(peer)
        if (!sent || waiting === undefined || this.#views.has(peer) || waiting.length === 0) return Effect.void
        return next(waiting.shift()!)
      })
    return Effect.ensuring(
      next(first),
      Effect.sync(() => {
        // The link was lost meanwhile: what still waits is kept for replay.
        const waiting = this.#sending.get(peer)
        this.#sending.delete(peer)
        if (waiting !== undefined && (unsent || this.#redis !== redis)) {
          for (const at of waiting) this.#keep(peer, at, rule)
        }
      })
    )
  }

  /**
   * Sends one failure; whether it was. A failure whose call failed is kept for replay, but not one whose call timed
   * out: it was written to Redis, which may still run it, and a replay would count it twice.
   */
  #sendFailure(
    redis: Redis.Redis["Service"],
    breaker: Breaker,
    context: scripts.ScriptContext,
    rule: scripts.WindowRule,
    at: number
  ): Effect.Effect<boolean> {
    return Effect.clockWith((clock) =>
      Effect.matchCauseEffect(
        this.#send(redis.eval(scripts.record)(context, "*", "failure", monotonicMillis(clock) - at, rule)),
        {
          onFailure: (cause) =>
            Effect.as(
              Effect.andThen(
                Effect.sync(() => {
                  if (!Cause.isTimeoutError(Cause.squash(cause))) this.#keep(breaker.name, at, rule)
                }),
                this.#fail(redis, cause)
              ),
              false
            ),
          onSuccess: (reply) =>
            Effect.sync(() => {
              this.#views.observe(breaker.name, reply, monotonicMillis(clock), clock, undefined)
              return true
            })
        }
      )
    )
  }

  #keep(peer: string, at: number, rule: scripts.WindowRule): void {
    const times = listOf(this.#pending, peer)
    times.push(at)
    // A window never needs more than `maxFailures` + 1 failures to decide.
    if (times.length > rule.maxFailures + 1) times.shift()
  }

  #sharingOf(breaker: Breaker): Sharing {
    const settings = breaker.settings
    let sharing = this.#sharing.get(settings)
    if (sharing === undefined) {
      sharing = sharingOf(settings, this.config.minProcesses) ?? null
      this.#sharing.set(settings, sharing)
    }
    return sharing ?? undefined
  }

  #scriptContext(breaker: Breaker, context: Context.Context<never>): scripts.ScriptContext {
    const openings = breaker.openings(context)
    const delays: Array<number> = []
    for (let opening = 1; opening <= openingsSent; opening++) delays.push(Math.round(openings.delay(opening)))
    const limits = breaker.settings.limits
    return {
      key: `${this.config.prefix}{${encodeURIComponent(breaker.name)}}`,
      peer: encodeURIComponent(breaker.name),
      channel: this.channel,
      process: this.process,
      idleMillis: this.config.idleMillis,
      probes: limits.probes,
      probeTimeoutMillis: limits.probeTimeoutMillis,
      delays,
      successThreshold: limits.successThreshold,
      now: undefined
    }
  }

  /**
   * A Redis call under the fleet's timeout; a failure or a timeout is counted as a store error. A timer that fires
   * late means the event loop was blocked, and a reply that came in time may be waiting unread (Node runs expired
   * timers before it reads sockets): the call then gets one more `timeout`.
   */
  #send<A>(call: Effect.Effect<A, Redis.RedisError>): Effect.Effect<A, Redis.RedisError | Cause.TimeoutError> {
    const timeoutMillis = Duration.toMillis(this.config.timeout)
    const expired = Effect.clockWith((clock) => {
      const started = monotonicMillis(clock)
      return Effect.andThen(
        Effect.sleep(this.config.timeout),
        Effect.suspend(() => {
          const late = monotonicMillis(clock) - started - timeoutMillis
          const given = late > timeoutMillis / 2 ? Effect.sleep(this.config.timeout) : Effect.sleep(Duration.millis(1))
          return Effect.andThen(given, Effect.fail(new Cause.TimeoutError("Redis did not answer in time")))
        })
      )
    })
    return Effect.tapCause(Effect.raceFirst(call, expired), () => Metric.update(this.#storeErrors, 1))
  }

  /** A Redis call failed: the link is lost, and the set goes local until it is rebuilt. */
  #fail(redis: Redis.Redis["Service"], cause: Cause.Cause<unknown>): Effect.Effect<void> {
    return Effect.sync(() => {
      // A late failure of a link already replaced says nothing of the current one.
      if (this.#redis !== redis) return
      this.#redis = undefined
      if (this.#lost !== undefined) Deferred.doneUnsafe(this.#lost, Exit.succeed(describe(cause)))
    })
  }

  /** The fleet's view of `peer` as a `CircuitState`, if it is not closed. */
  stateOf(peer: string, now: number, wallNow: number): CircuitState | undefined {
    return this.#views.stateOf(peer, now, wallNow)
  }

  /** The peers the fleet holds not closed, as this process knows them. */
  peersNotClosed(): ReadonlyArray<string> {
    return this.#views.peers()
  }

  /** Drops the views of peers not called for `idleTimeToLive` past their deadline (see `FleetViews.prune`). */
  readonly #prune: Effect.Effect<void> = Effect.clockWith((clock) =>
    Effect.sync(() => this.#views.prune(monotonicMillis(clock), this.config.idleMillis))
  )

  // --- operations ----------------------------------------------------------------------------------------------

  /** Closes `peer`'s circuit for the fleet (a no-op while local: the local breaker is reset by the caller). */
  reset(breaker: Breaker): Effect.Effect<void> {
    return this.#operate(breaker, (redis, context) => redis.eval(scripts.reset)(context), "reset")
  }

  /** Adds (or, with `hold` false, removes) this process's isolation of `peer` in the fleet. */
  isolate(breaker: Breaker, hold: boolean): Effect.Effect<void> {
    const count = (this.#isolations.get(breaker.name) ?? 0) + (hold ? 1 : -1)
    if (count > 0) this.#isolations.set(breaker.name, count)
    else this.#isolations.delete(breaker.name)
    // Only the first isolation and the last release change anything in Redis.
    if (hold ? count !== 1 : count !== 0) return Effect.void
    return this.#operate(
      breaker,
      (redis, context) => redis.eval(scripts.isolate)(context, hold ? "add" : "remove", isolationLeaseMillis),
      hold ? "isolated" : "released"
    )
  }

  #operate(
    breaker: Breaker,
    call: (
      redis: Redis.Redis["Service"],
      context: scripts.ScriptContext
    ) => Effect.Effect<scripts.Reply, Redis.RedisError>,
    reason: Reason
  ): Effect.Effect<void> {
    return Effect.withFiber((fiber) => {
      const redis = this.#redis
      if (redis === undefined) return Effect.void
      return Effect.matchCauseEffect(this.#send(call(redis, this.#scriptContext(breaker, fiber.context))), {
        onFailure: (cause) => this.#fail(redis, cause),
        onSuccess: (reply) => {
          const clock = clockOf(fiber)
          return Effect.sync(() =>
            this.#views.observe(breaker.name, reply, monotonicMillis(clock), clock, reason, this.process)
          )
        }
      })
    })
  }

  // --- the link ------------------------------------------------------------------------------------------------

  /** The link's fiber: connects, stays connected while Redis answers, goes local, and tries again, forever. */
  readonly link: Effect.Effect<never> = Effect.suspend(() => {
    let wasConnected = false
    let warned = false
    // Each attempt's connections live in a scope of their own, closed when it ends, however it ends.
    const attempt = (scope: Scope.Scope): Effect.Effect<void> =>
      Effect.gen({ self: this }, function*() {
        const lost = yield* Deferred.make<string>()
        const connected = yield* Effect.exit(Effect.timeout(this.#connect(scope, lost), this.#connectTimeout()))
        if (Exit.isFailure(connected)) {
          yield* Metric.update(this.#storeErrors, 1)
          this.#goLocal(describe(connected.cause), yield* Clock.currentTimeMillis)
          if (!warned) {
            warned = true
            yield* this.#log("Warning", `Fleet store unreachable (${this.#status.reason}): using local breakers`)
          }
          return
        }
        const redis = connected.value
        this.#redis = redis
        this.#lost = lost
        this.#status = { connected: true, since: yield* Clock.currentTimeMillis, reason: "" }
        yield* Metric.update(this.#storeUp, 1)
        yield* this.#log(
          "Info",
          wasConnected || warned ? "Fleet store reachable again: sharing breakers" : "Fleet store connected"
        )
        wasConnected = true
        warned = false
        yield* this.#replay(redis)
        yield* this.#resync(redis)
        yield* this.#flushAll(redis)
        const flusher = Effect.forever(Effect.andThen(Effect.sleep(tallyInterval), this.#flushAll(redis)))
        const reason = yield* Effect.raceFirst(Deferred.await(lost), Effect.raceFirst(this.#health(redis), flusher))
        this.#redis = undefined
        this.#lost = undefined
        this.#goLocal(reason, yield* Clock.currentTimeMillis)
        yield* Metric.update(this.#storeUp, 0)
        yield* this.#log("Warning", `Fleet store lost (${reason}): using local breakers`)
        warned = true
      })
    const scoped = Effect.acquireUseRelease(Scope.make(), attempt, (scope) => {
      this.#redis = undefined
      return closeInBackground(scope)
    })
    return Effect.andThen(
      Metric.update(this.#storeUp, 0),
      Effect.forever(Effect.andThen(scoped, Effect.andThen(this.#prune, Effect.sleep(healthInterval))))
    )
  })

  #connectTimeout(): Duration.Duration {
    return Duration.max(Duration.seconds(1), Duration.times(this.config.timeout, 2))
  }

  #goLocal(reason: string, wallNow: number): void {
    this.#redis = undefined
    this.#status = { connected: false, since: this.#status.connected ? wallNow : this.#status.since, reason }
  }

  /** Builds the Redis layer in `scope` (its client's own logs silenced: the set logs once per change), subscribes. */
  #connect(scope: Scope.Scope, lost: Deferred.Deferred<string>): Effect.Effect<Redis.Redis["Service"], unknown> {
    return Effect.gen({ self: this }, function*() {
      const context = yield* Layer.buildWithScope(this.config.redis, scope).pipe(
        Effect.provideService(References.MinimumLogLevel, "Error")
      )
      const redis = context.mapUnsafe.get("effect/persistence/Redis") as Redis.Redis["Service"]
      const messages = yield* Scope.provide(redis.subscribe(this.channel), scope)
      yield* redis.send("PING")
      yield* Effect.forkIn(
        Effect.forever(
          Effect.flatMap(
            Queue.take(messages),
            (message) => Effect.clockWith((clock) => this.#onMessage(message.message, clock))
          )
        ).pipe(
          Effect.catchCause((cause) =>
            Effect.sync(() => {
              Deferred.doneUnsafe(lost, Exit.succeed(`subscription ended: ${describe(cause)}`))
            })
          )
        ),
        scope
      )
      return redis
    })
  }

  /** Applies a message of the fleet's channel; a reset by another process also resets the local breaker. */
  #onMessage(text: string, clock: Clock.Clock): Effect.Effect<void> {
    const fields = text.split(" ")
    if (fields.length !== 10) return Effect.void
    const [peerText, state, generation, remaining, opening, transition, reason, by, openMillis, openedAgo] = fields
    let peer: string
    try {
      peer = decodeURIComponent(peerText!)
    } catch {
      return Effect.void
    }
    // A peer whose policy the fleet does not share here decides alone.
    if (!isShared(this.#shared.peers.get(peer) ?? this.#shared.settings)) return Effect.void
    const reply = [state, generation, remaining, opening, reason, by, openMillis, openedAgo] as unknown as scripts.Reply
    this.#views.observe(peer, reply, monotonicMillis(clock), clock, transition as Reason, by)
    return transition === "reset" && by !== this.process ? this.#resetLocal(peer) : Effect.void
  }

  /** Checks once a second that Redis answers (and renews the isolations held); ends with why it stopped. */
  #health(redis: Redis.Redis["Service"]): Effect.Effect<string> {
    const check = Effect.andThen(
      Effect.andThen(this.#prune, this.#renewIsolations(redis)),
      this.#send(redis.send("PING"))
    )
    return Effect.flatMap(
      Effect.exit(Effect.forever(Effect.andThen(Effect.sleep(healthInterval), check))),
      (exit) => Effect.succeed(Exit.isFailure(exit) ? describe(exit.cause) : "stopped")
    )
  }

  #renewIsolations(redis: Redis.Redis["Service"]): Effect.Effect<void, Redis.RedisError | Cause.TimeoutError> {
    return Effect.suspend(() =>
      Effect.forEach([...this.#isolations.keys()], (peer) =>
        Effect.withFiber((fiber) => {
          const breaker = this.#peers.lookup(peer, fiber.context)
          const context = this.#scriptContext(breaker, fiber.context)
          return this.#send(redis.eval(scripts.isolate)(context, "add", isolationLeaseMillis))
        }), { discard: true })
    )
  }

  /** Sends the failures kept while local, with their ages; those older than their window are dropped by Redis. */
  #replay(redis: Redis.Redis["Service"]): Effect.Effect<void> {
    return Effect.withFiber((fiber) => {
      const pending = [...this.#pending]
      this.#pending.clear()
      // In order, one at a time; once a send fails the link is lost, and what was not sent is kept again.
      const failures = pending.flatMap(([peer, times]) => times.map((at) => [peer, at] as const))
      const send = (index: number): Effect.Effect<void> => {
        if (index >= failures.length) return Effect.void
        const [peer, at] = failures[index]!
        const breaker = this.#peers.lookup(peer, fiber.context)
        const sharing = this.#sharingOf(breaker)
        if (sharing?.kind !== "window") return send(index + 1)
        const context = this.#scriptContext(breaker, fiber.context)
        return Effect.flatMap(this.#sendFailure(redis, breaker, context, sharing.rule, at), (sent) => {
          if (sent) return send(index + 1)
          for (const [rest, restAt] of failures.slice(index + 1)) {
            const restSharing = this.#sharingOf(this.#peers.lookup(rest, fiber.context))
            if (restSharing?.kind === "window") this.#keep(rest, restAt, restSharing.rule)
          }
          return Effect.void
        })
      }
      return send(0)
    })
  }

  /** Reads again every peer this process holds a view of: messages published while it was away never arrive. */
  #resync(redis: Redis.Redis["Service"]): Effect.Effect<void> {
    return Effect.withFiber((fiber) =>
      Effect.forEach([...this.#views.peers()], (peer) => {
        // Stops once the link is lost: each read left would wait its whole timeout.
        if (this.#redis !== redis) return Effect.void
        const breaker = this.#peers.lookup(peer, fiber.context)
        return Effect.matchCauseEffect(
          this.#send(redis.eval(scripts.read)(this.#scriptContext(breaker, fiber.context))),
          {
            onFailure: (cause) => this.#fail(redis, cause),
            onSuccess: (reply) =>
              Effect.clockWith((clock) =>
                Effect.sync(() => this.#views.observe(peer, reply, monotonicMillis(clock), clock, undefined))
              )
          }
        )
      }, { discard: true })
    )
  }

  #log(level: "Info" | "Warning", message: string): Effect.Effect<void> {
    const log = level === "Info" ? Effect.logInfo(message) : Effect.logWarning(message)
    return Effect.ignoreCause(Effect.annotateLogs(log, { process: this.process, prefix: this.config.prefix }))
  }
}

/** `peer`'s list in `lists`, made if missing; over `maxPendingPeers` peers, the oldest peer's list goes first. */
const listOf = <A>(lists: Map<string, Array<A>>, peer: string): Array<A> => {
  let list = lists.get(peer)
  if (list !== undefined) return list
  if (lists.size >= maxPendingPeers) {
    for (const oldest of lists.keys()) {
      lists.delete(oldest)
      break
    }
  }
  list = []
  lists.set(peer, list)
  return list
}

const describe = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Cause.isTimeoutError(error)) return "timed out"
  const inner = typeof error === "object" && error !== null && "cause" in error
    ? (error as { cause: unknown }).cause
    : error
  return inner instanceof Error ? inner.message || inner.name : String(inner)
}

/** Closes a link's scope without waiting: the client's close waits for replies a hung Redis never sends. */
const closeInBackground = (scope: Scope.Closeable): Effect.Effect<void> =>
  Effect.asVoid(Effect.forkDetach(Scope.close(scope, Exit.void)))
