import { assert, describe, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Fiber, Layer, Logger, Ref, References, Stream } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import {
  type CapturedLog,
  captureLogs,
  count,
  failing,
  forkAdmitted,
  isRejection,
  makeCountdown,
  provideSet,
  state
} from "./utils.ts"

const failuresCounted = count(CircuitBreakerMetrics.calls, { peer: "p", outcome: "failure" })

/** Starts `callers` calls on peer "p" that are all admitted while closed, then lets them all fail at once. */
const failTogether = (callers: number) =>
  Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    const admitted = yield* makeCountdown(callers)
    const call = admitted.arrive.pipe(
      Effect.andThen(Deferred.await(gate)),
      Effect.andThen(failing),
      withBreaker("p")
    )
    const fibers = yield* Effect.forEach(Array.from({ length: callers }), () => Effect.forkChild(Effect.exit(call)))
    yield* admitted.allArrived
    yield* Deferred.succeed(gate, undefined)
    yield* Effect.forEach(fibers, Fiber.join, { discard: true })
  })

describe("concurrency", () => {
  it.effect("10,000 concurrent failing calls on a closed circuit: every failure is recorded, none lost", () =>
    Effect.gen(function*() {
      yield* failTogether(10_000)
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 10_000 })
      assert.strictEqual(yield* failuresCounted, 10_000)
    }).pipe(provideSet({ maxFailures: 10_000 })))

  it.effect("10,000 concurrent failing calls open the circuit exactly once, with exactly one log line", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      yield* failTogether(10_000)
      assert.strictEqual((yield* state("p"))._tag, "Open")
      const opened = { peer: "p", from: "Closed", to: "Open" }
      assert.strictEqual(yield* count(CircuitBreakerMetrics.transitions, opened), 1)
      assert.strictEqual(logs.filter((log) => log.message.startsWith("Circuit opened")).length, 1)
      // All 10,000 ran (they were admitted while closed) and all were counted as failures by the metrics.
      assert.strictEqual(yield* failuresCounted, 10_000)
    }).pipe(provideSet({ maxFailures: 4_999 }), Effect.provide(captureLogs(logs)))
  })
})

describe("interruption anywhere", () => {
  const halfOpen = (peer: string) =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker(peer)))
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(yield* state(peer), {
        _tag: "HalfOpen",
        openedAt: 0,
        probeInFlight: false,
        retryAfter: Duration.zero
      })
    })

  const slotIsFree = (peer: string) =>
    Effect.gen(function*() {
      const current = yield* state(peer)
      assert.isTrue(current._tag === "HalfOpen" && !current.probeInFlight, `expected a free probe slot`)
      assert.strictEqual(yield* Effect.succeed("probe").pipe(withBreaker(peer)), "probe")
      assert.strictEqual((yield* state(peer))._tag, "Closed")
    })

  it.effect("a probe interrupted before admission takes no slot", () =>
    Effect.gen(function*() {
      yield* halfOpen("p")
      const ran = yield* Ref.make(false)
      const fiber = yield* Effect.forkChild(Ref.set(ran, true).pipe(withBreaker("p")), { startImmediately: false })
      yield* Fiber.interrupt(fiber)
      assert.isFalse(yield* Ref.get(ran))
      yield* slotIsFree("p")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  for (const yields of [0, 1, 2, 3, 5, 8]) {
    it.effect(`a probe interrupted after ${yields} yields of its own gives its slot back`, () =>
      Effect.gen(function*() {
        yield* halfOpen("p")
        const probe = Effect.gen(function*() {
          for (let i = 0; i < yields; i++) yield* Effect.yieldNow
          return yield* Effect.never
        })
        const fiber = yield* Effect.forkChild(probe.pipe(withBreaker("p")))
        for (let i = 0; i <= yields; i++) yield* Effect.yieldNow
        yield* Fiber.interrupt(fiber)
        yield* slotIsFree("p")
      }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
  }

  it.effect("a probe interrupted while its own finalizer runs gives its slot back once the finalizer ends", () =>
    Effect.gen(function*() {
      yield* halfOpen("p")
      const cleaning = yield* Deferred.make<void>()
      const cleanup = yield* Deferred.make<void>()
      const probe = Effect.never.pipe(
        Effect.onInterrupt(() => Effect.andThen(Deferred.succeed(cleaning, undefined), Deferred.await(cleanup)))
      )
      const fiber = yield* forkAdmitted(probe, withBreaker("p"))
      const interrupting = yield* Effect.forkChild(Fiber.interrupt(fiber))
      yield* Deferred.await(cleaning)
      // Still cleaning up: the probe holds its slot, so a second caller is rejected.
      assert.isTrue(isRejection(yield* Effect.exit(Effect.void.pipe(withBreaker("p")))))
      yield* Deferred.succeed(cleanup, undefined)
      yield* Fiber.join(interrupting)
      yield* slotIsFree("p")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("interrupting calls while closed or open never counts and never wedges", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 20; i++) {
        // Every other call is interrupted once admitted, the others before they start.
        const fiber = i % 2 === 0
          ? yield* forkAdmitted(Effect.never, withBreaker("p"))
          : yield* Effect.forkChild(Effect.never.pipe(withBreaker("p")))
        yield* Fiber.interrupt(fiber)
      }
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      for (let i = 0; i < 20; i++) {
        const fiber = yield* Effect.forkChild(Effect.never.pipe(withBreaker("p")))
        yield* Fiber.interrupt(fiber)
      }
      assert.strictEqual((yield* state("p"))._tag, "Open")
      yield* TestClock.adjust("10 seconds")
      yield* slotIsFree("p")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("a probe that never finishes loses its slot after resetTimeout", () =>
    Effect.gen(function*() {
      yield* halfOpen("p")
      yield* forkAdmitted(Effect.never, withBreaker("p"))
      yield* TestClock.adjust(Duration.millis(9_999))
      assert.isTrue(isRejection(yield* Effect.exit(Effect.void.pipe(withBreaker("p")))))
      yield* TestClock.adjust(Duration.millis(1))
      yield* slotIsFree("p")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
})

/** A clock whose wall time is shifted by `shift` ms while its monotonic time is the test clock's own. */
const steppedWallClock = (clock: Clock.Clock, shift: number): Clock.Clock => ({
  ...clock,
  currentTimeMillisUnsafe: () => clock.currentTimeMillisUnsafe() + shift,
  currentTimeMillis: Effect.sync(() => clock.currentTimeMillisUnsafe() + shift),
  currentTimeNanosUnsafe: () => clock.currentTimeNanosUnsafe() + BigInt(shift) * 1_000_000n,
  currentTimeNanos: Effect.sync(() => clock.currentTimeNanosUnsafe() + BigInt(shift) * 1_000_000n)
})

const hour = 3_600_000

describe("composition", () => {
  it.effect("a call rejected by a nested breaker does not count against the outer peer", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("db")))
      for (let i = 0; i < 5; i++) yield* Effect.exit(Effect.void.pipe(withBreaker("db"), withBreaker("gateway")))
      assert.deepStrictEqual(yield* state("gateway"), { _tag: "Closed", failures: 0 })
      assert.strictEqual((yield* state("db"))._tag, "Open")
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("a logger that fails never fails the calls whose transitions it reports", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip(failing.pipe(withBreaker("p")))
      assert.strictEqual(failed._tag, "Boom")
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* Effect.succeed("probe").pipe(withBreaker("p")), "probe")
      assert.strictEqual((yield* state("p"))._tag, "Closed")
    }).pipe(
      provideSet({ maxFailures: 0 }),
      Effect.provide(Logger.layer([Logger.make(() => {
        throw new Error("logger broke")
      })])),
      Effect.provideService(References.MinimumLogLevel, "All")
    ))

  it.effect("the top-level withBreaker also works with a CircuitBreakerSet built some other way", () => {
    const guarded: Array<string> = []
    return Effect.gen(function*() {
      assert.strictEqual(yield* Effect.succeed(1).pipe(withBreaker("p")), 1)
      // The call went through the double's own withBreaker, not around it.
      assert.deepStrictEqual(guarded, ["p"])
    }).pipe(Effect.provide(Layer.succeed(CircuitBreakerSet, {
      withBreaker: (peer) => (self) => Effect.andThen(Effect.sync(() => guarded.push(peer)), self),
      state: () => Effect.succeed({ _tag: "Closed", failures: 0 }),
      changes: Stream.empty,
      snapshot: Effect.succeed({ at: 0, peers: [] }),
      reset: () => Effect.void,
      isolate: () => Effect.void,
      options: undefined as never
    })))
  })
})

describe("clock steps: durations use monotonic time, wall time only labels", () => {
  it.effect("a wall clock stepped back an hour neither extends nor shortens the open period", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust("2 hours")
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      yield* TestClock.adjust("4 seconds")
      yield* TestClock.setTime(2 * hour + 4_000 - hour)
      const open = yield* state("p")
      assert.deepStrictEqual(open, {
        _tag: "Open",
        openedAt: 2 * hour,
        probeAt: hour + 10_000,
        retryAfter: Duration.seconds(6),
        isolated: false
      })
      yield* TestClock.adjust("6 seconds")
      assert.strictEqual((yield* state("p"))._tag, "HalfOpen")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("a wall clock stepped forward an hour neither ends the open period nor ages the window", () =>
    Effect.gen(function*() {
      const testClock = yield* Clock.Clock
      const jumped = <A, E, R>(self: Effect.Effect<A, E, R>) =>
        Effect.provideService(self, Clock.Clock, steppedWallClock(testClock, hour))
      yield* Effect.exit(failing.pipe(withBreaker("window")))
      yield* Effect.exit(failing.pipe(withBreaker("open")))
      yield* Effect.exit(failing.pipe(withBreaker("open")))
      const afterJump = yield* jumped(Effect.all([state("window"), state("open")]))
      assert.deepStrictEqual(afterJump[0], { _tag: "Closed", failures: 1 })
      assert.strictEqual(afterJump[1]._tag, "Open")
      assert.isTrue(afterJump[1]._tag === "Open" && Duration.equals(afterJump[1].retryAfter, Duration.seconds(10)))
      // The jump shows in the labels only: probeAt is wall time, one hour later.
      assert.isTrue(afterJump[1]._tag === "Open" && afterJump[1].probeAt === hour + 10_000)
      const rejected = yield* jumped(Effect.exit(Effect.void.pipe(withBreaker("open"))))
      assert.isTrue(isRejection(rejected))
      yield* jumped(Effect.exit(failing.pipe(withBreaker("window"))))
      assert.strictEqual((yield* state("window"))._tag, "Open")
    }).pipe(provideSet({ maxFailures: 1, window: "60 seconds", resetTimeout: "10 seconds" })))
})
