import {
  Cause,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  Metric,
  Option,
  References,
  Schedule,
  Stream
} from "effect"
import type { LogLevel } from "effect"
import {
  CircuitBreakerMetrics,
  CircuitBreakerSet,
  CircuitOpenError,
  type ResolvedOptions,
  type SetOptions,
  withBreaker
} from "../src/index.ts"

// ---- errors ----

/** A typed failure the tests count (or not) with `isFailure`. */
export class Boom extends Data.TaggedError("Boom")<{}> {}

/** A typed failure that means "the peer answered", like an HTTP 404. */
export class NotFound extends Data.TaggedError("NotFound")<{}> {}

// ---- the set under test ----

/** A metric registry of its own, so that tests running concurrently never add to each other's counts. */
export const freshMetricRegistry = Layer.sync(Metric.MetricRegistry, () => new Map())

/** Provides a `CircuitBreakerSet` built with `options`, reporting to a fresh metric registry the test can read. */
export const provideSet = (options?: SetOptions) =>
  Effect.provide(CircuitBreakerSet.layer(options).pipe(Layer.provideMerge(freshMetricRegistry)))

/** The state of `peer`'s circuit in the set in the context. */
export const state = (peer: string) => CircuitBreakerSet.use((set) => set.state(peer))

/** The tag of `peer`'s circuit state: `"Closed"`, `"Open"` or `"HalfOpen"`. */
export const stateTag = (peer: string) => Effect.map(state(peer), (s) => s._tag)

/** A call that fails with a counted failure. */
export const failing = Effect.fail(new Boom())

/** Opens `peer`'s circuit with `maxFailures + 1` quick failures. */
export const trip = (peer: string, maxFailures: number) => repeat(failing.pipe(withBreaker(peer)), maxFailures + 1)

// ---- resolved options ----

/**
 * The parameters of resolved options whose policy is a `Policy.window` (the default, or the `maxFailures` / `window`
 * shorthand), durations in milliseconds. Any other policy is a defect.
 */
export const windowOf = (options: ResolvedOptions): { readonly maxFailures: number; readonly windowMillis: number } => {
  const policy = options.policy
  if (policy._tag !== "Window") throw new Error(`expected a window policy, got ${policy._tag}`)
  return { maxFailures: policy.maxFailures, windowMillis: Duration.toMillis(Duration.fromInputUnsafe(policy.window)) }
}

/** The fixed open duration of resolved options, in milliseconds; a schedule is a defect. */
export const openMillisOf = (options: ResolvedOptions): number => {
  const openDuration = options.openDuration
  if (Schedule.isSchedule(openDuration)) throw new Error("expected a fixed open duration, got a Schedule")
  return Duration.toMillis(openDuration)
}

// ---- metrics ----

/** The count of `metric`'s series with exactly `attributes`, in the metric registry in the context. */
export const count = (metric: Metric.Counter<number>, attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, attributes)), (state) => state.count)

/** The value of the state gauge's series with exactly `attributes`: 0 closed, 1 half-open, 2 open. */
export const gauge = (attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(CircuitBreakerMetrics.state, attributes)), (state) => state.value)

/** The value of the opening gauge's series with exactly `attributes`: the opening number, 0 once closed. */
export const openingGauge = (attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(CircuitBreakerMetrics.opening, attributes)), (state) => state.value)

// ---- rejections ----

/** The `CircuitOpenError` that `exit` failed with, if it is a rejection by an open circuit. */
const rejectionOf = (exit: Exit.Exit<unknown, unknown>): CircuitOpenError | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = Cause.findErrorOption(exit.cause)
  return Option.isSome(error) && error.value instanceof CircuitOpenError ? error.value : undefined
}

/** Whether `exit` is a rejection: a failure whose error is a `CircuitOpenError`. */
export const isRejection = (exit: Exit.Exit<unknown, unknown>): boolean => rejectionOf(exit) !== undefined

/** Runs `self`, which must be rejected, and returns its `CircuitOpenError`; any other ending is a defect. */
export const expectRejection = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<CircuitOpenError, never, R> =>
  Effect.flatMap(Effect.exit(self), (exit) => {
    const error = rejectionOf(exit)
    return error === undefined ? Effect.die(`expected a CircuitOpenError, got ${String(exit)}`) : Effect.succeed(error)
  })

// ---- waiting for forked fibers ----

/**
 * Forks `self` guarded by `guard` and returns once the breaker has admitted it: the wrapped effect signals a latch as
 * its first step. A call that ends without being admitted makes this a defect instead of a hang.
 */
export const forkAdmitted = <A, E, R, A2, E2, R2>(
  self: Effect.Effect<A, E, R>,
  guard: (self: Effect.Effect<A, E, R>) => Effect.Effect<A2, E2, R2>
): Effect.Effect<Fiber.Fiber<A2, E2>, never, R2> =>
  Effect.gen(function*() {
    const admitted = yield* Deferred.make<void>()
    const fiber = yield* Effect.forkChild(
      guard(Effect.andThen(Deferred.succeed(admitted, undefined), self)).pipe(
        Effect.ensuring(Deferred.die(admitted, "the call ended without being admitted"))
      )
    )
    yield* Deferred.await(admitted)
    return fiber
  })

/** A latch that opens once `arrive` has run `count` times: "every one of `count` fibers got this far". */
export const makeCountdown = (count: number) =>
  Effect.map(Deferred.make<void>(), (done) => {
    let left = count
    return {
      arrive: Effect.suspend(() => --left === 0 ? Deferred.succeed(done, undefined) : Effect.void),
      allArrived: Deferred.await(done)
    }
  })

/**
 * Collects the next `count` items of `changes` in a child fiber. The fiber starts at once and runs until it waits for
 * the first item, so it has subscribed when this returns (a subscription never sees what was published before it).
 */
export const collect = <A>(changes: Stream.Stream<A>, count: number) =>
  Effect.forkChild(Stream.runCollect(Stream.take(changes, count)), { startImmediately: true })

// ---- randomness ----

/** A small seeded PRNG (mulberry32) returning numbers in [0, 1), so a randomized test replays exactly. */
export const random = (seed: number) => () => {
  seed = (seed + 0x6D2B79F5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

// ---- logs and repetition ----

export interface CapturedLog {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger layer that records every log line (every level) into `logs`. */
export const captureLogs = (logs: Array<CapturedLog>) =>
  Layer.mergeAll(
    Logger.layer([
      Logger.make((options) => {
        logs.push({
          level: options.logLevel,
          message: String(Array.isArray(options.message) ? options.message.join(" ") : options.message),
          annotations: options.fiber.getRef(References.CurrentLogAnnotations)
        })
      })
    ]),
    Layer.succeed(References.MinimumLogLevel, "All")
  )

/** Runs `self` n times in sequence, discarding the exits. */
export const repeat = <A, E, R>(self: Effect.Effect<A, E, R>, n: number) =>
  Effect.forEach(Array.from({ length: n }), () => Effect.exit(self), { discard: true })
