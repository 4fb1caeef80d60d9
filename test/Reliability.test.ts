import { assert, describe, it } from "@effect/vitest"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Layer, Logger, Ref, References, Stream } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import {
  type CapturedLog,
  captureLogs,
  collect,
  count,
  expectRejection,
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
      const opened = { peer: "p", from: "Closed", to: "Open", reason: "window" }
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
        probesInFlight: 0,
        successes: 0,
        retryAfter: Duration.zero,
        opening: 1,
        reason: "window"
      })
    })

  const slotIsFree = (peer: string) =>
    Effect.gen(function*() {
      const current = yield* state(peer)
      assert.isTrue(current._tag === "HalfOpen" && !current.probeInFlight, `expected a free probe slot`)
      assert.strictEqual(yield* Effect.succeed("probe").pipe(withBreaker(peer)), "probe")
      assert.strictEqual((yield* state(peer))._tag, "Closed")
    })

  /** The call outcomes and probes `peer`'s metrics counted. */
  const counted = (peer: string) =>
    Effect.all({
      success: count(CircuitBreakerMetrics.calls, { peer, outcome: "success" }),
      failure: count(CircuitBreakerMetrics.calls, { peer, outcome: "failure" }),
      ignored: count(CircuitBreakerMetrics.calls, { peer, outcome: "ignored" }),
      rejected: count(CircuitBreakerMetrics.calls, { peer, outcome: "rejected" }),
      probes: count(CircuitBreakerMetrics.probes, { peer })
    })

  /** Lets other fibers run until `done` holds; a defect if it still does not after 50 scheduler turns. */
  const eventually = (done: () => boolean, what: string) =>
    Effect.gen(function*() {
      for (let turn = 0; turn < 50; turn++) {
        if (done()) return
        yield* Effect.yieldNow
      }
      if (!done()) return yield* Effect.die(`still waiting for ${what} after 50 scheduler turns`)
    })

  /** The exit of `fiber`, which must end within a few scheduler turns (without the clock moving): "at once". */
  const endsPromptly = <A, E>(fiber: Fiber.Fiber<A, E>, what: string) =>
    Effect.andThen(
      eventually(() => fiber.pollUnsafe() !== undefined, `${what} to end`),
      Effect.sync(() => fiber.pollUnsafe()!)
    )

  /** Waits until the probe of `peer` no longer holds its slot: it has decided, or given the slot back. */
  const decided = (peer: string) =>
    Effect.gen(function*() {
      let holds = true
      for (let turn = 0; turn < 50 && holds; turn++) {
        const current = yield* state(peer)
        holds = current._tag === "HalfOpen" && current.probeInFlight
        if (holds) yield* Effect.yieldNow
      }
      if (holds) return yield* Effect.die(`the probe of ${peer} still holds its slot after 50 scheduler turns`)
    })

  /**
   * Asserts that `peer`'s circuit is open since `openedAt` (ms), for a whole resetTimeout of 10 s from then, as its
   * second opening (its first probe failed, or ran out its lease: `reason`).
   */
  const isOpenSince = (peer: string, openedAt: number, reason: "probe-failed" | "probe-timeout") =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      assert.deepStrictEqual(yield* state(peer), {
        _tag: "Open",
        openedAt,
        probeAt: openedAt + 10_000,
        retryAfter: Duration.millis(openedAt + 10_000 - now),
        isolated: false,
        opening: 2,
        reason
      })
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
    for (const outcome of ["success", "failure"] as const) {
      const decides = outcome === "success" ? "its success closes the circuit" : "its failure reopens it"
      it.effect(
        `a probe whose caller is interrupted after ${yields} yields of the probe's own effect keeps running; ${decides}`,
        () =>
          Effect.gen(function*() {
            yield* halfOpen("p")
            const set = yield* CircuitBreakerSet
            const changes = yield* collect(set.changes, 2)
            const gate = yield* Deferred.make<void>()
            let caller: Fiber.Fiber<unknown, unknown> | undefined
            let runs = 0
            let yielded = 0
            let ended = false
            const probe = Effect.gen(function*() {
              runs++
              for (; yielded < yields; yielded++) yield* Effect.yieldNow
              if (caller === undefined) return yield* Effect.die("the probe ran before its caller was known")
              // Interrupts the caller exactly here, after `yields` yields of the probe's own effect.
              caller.interruptUnsafe()
              yield* Deferred.await(gate)
              ended = true
              return outcome === "success" ? "ok" : yield* failing
            })
            const fiber = yield* Effect.forkChild(probe.pipe(withBreaker("p")))
            caller = fiber
            const exit = yield* endsPromptly(fiber, "the interrupted caller")
            // The caller is released at once and sees its own interruption, while the probe runs on, detached.
            assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), `got ${String(exit)}`)
            assert.strictEqual(runs, 1)
            assert.strictEqual(yielded, yields)
            assert.isFalse(ended)
            const during = yield* state("p")
            assert.isTrue(during._tag === "HalfOpen" && during.probeInFlight, "the probe holds its slot")
            yield* expectRejection(Effect.void.pipe(withBreaker("p")))
            yield* TestClock.adjust("2 seconds")
            yield* Deferred.succeed(gate, undefined)
            const seen = yield* Fiber.join(changes)
            assert.isTrue(ended)
            assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason, c.opening]), [
              ["Open", "HalfOpen", "probe", 1],
              outcome === "success"
                ? ["HalfOpen", "Closed", "probe-succeeded", 0]
                : ["HalfOpen", "Open", "probe-failed", 2]
            ])
            // One probe, counted once, with its own outcome; the caller's interruption counts as nothing.
            assert.deepStrictEqual(yield* counted("p"), {
              success: outcome === "success" ? 1 : 0,
              failure: outcome === "success" ? 1 : 2,
              ignored: 0,
              rejected: 1,
              probes: 1
            })
            if (outcome === "success") {
              assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
              assert.strictEqual(yield* Effect.succeed("next").pipe(withBreaker("p")), "next")
            } else {
              // Reopened when the probe failed, at 12 s, for a whole resetTimeout; then the next call probes.
              yield* isOpenSince("p", 12_000, "probe-failed")
              yield* TestClock.adjust(Duration.millis(9_999))
              yield* expectRejection(Effect.void.pipe(withBreaker("p")))
              yield* TestClock.adjust(Duration.millis(1))
              yield* slotIsFree("p")
            }
          }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" }))
      )
    }

    it.effect(`a probe whose own effect is interrupted after ${yields} yields gives its slot back`, () =>
      Effect.gen(function*() {
        yield* halfOpen("p")
        const set = yield* CircuitBreakerSet
        const changes = yield* collect(set.changes, 2)
        let yielded = 0
        const probe = Effect.gen(function*() {
          for (; yielded < yields; yielded++) yield* Effect.yieldNow
          return yield* Effect.interrupt
        })
        const exit = yield* Effect.exit(probe.pipe(withBreaker("p")))
        assert.strictEqual(yielded, yields)
        // The caller waited and sees the probe's interruption; it decides nothing and frees the slot.
        assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), `got ${String(exit)}`)
        assert.deepStrictEqual(yield* counted("p"), { success: 0, failure: 1, ignored: 1, rejected: 0, probes: 1 })
        yield* slotIsFree("p")
        // Freeing the slot is no change of state: the next change is the second probe's success.
        const seen = yield* Fiber.join(changes)
        assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason, c.opening]), [
          ["Open", "HalfOpen", "probe", 1],
          ["HalfOpen", "Closed", "probe-succeeded", 0]
        ])
        assert.deepStrictEqual(yield* counted("p"), { success: 1, failure: 1, ignored: 1, rejected: 0, probes: 2 })
      }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
  }

  for (const turns of [0, 1, 2, 3, 4, 5]) {
    it.effect(`a caller interrupted after ${turns} turns of its own: no probe, or a probe that runs on and decides`, () =>
      Effect.gen(function*() {
        yield* halfOpen("p")
        const gate = yield* Deferred.make<void>()
        let runs = 0
        const probe = Effect.sync(() => runs++).pipe(Effect.andThen(Deferred.await(gate)), Effect.as("ok"))
        const fiber = yield* Effect.forkChild(probe.pipe(withBreaker("p")))
        for (let i = 0; i < turns; i++) yield* Effect.yieldNow
        yield* Fiber.interrupt(fiber)
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), `got ${String(exit)}`)
        const { probes } = yield* counted("p")
        if (probes === 0) {
          // Interrupted before its admission: it took no slot, and its effect never runs.
          yield* Effect.yieldNow
          assert.strictEqual(runs, 0)
          yield* slotIsFree("p")
        } else {
          // Admitted: its probe holds the slot, runs even if it had not started yet, and its success closes.
          assert.strictEqual(probes, 1)
          const during = yield* state("p")
          assert.isTrue(during._tag === "HalfOpen" && during.probeInFlight, "the probe holds its slot")
          yield* Deferred.succeed(gate, undefined)
          yield* decided("p")
          assert.strictEqual(runs, 1)
          assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
          assert.deepStrictEqual(yield* counted("p"), { success: 1, failure: 1, ignored: 0, rejected: 0, probes: 1 })
        }
      }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
  }

  for (const ending of ["success", "failure", "interruption"] as const) {
    const outcome = ending === "success"
      ? "its success closes the circuit"
      : ending === "failure"
      ? "its failure reopens the circuit"
      : "its own interruption gives its slot back once the finalizer ends"
    it.effect(`a probe whose caller is interrupted while the probe's finalizer runs: the probe completes; ${outcome}`, () =>
      Effect.gen(function*() {
        yield* halfOpen("p")
        const set = yield* CircuitBreakerSet
        const changes = yield* collect(set.changes, 2)
        const cleaning = yield* Deferred.make<void>()
        const cleanup = yield* Deferred.make<void>()
        let cleaned = false
        const body = ending === "success" ? Effect.succeed("ok") : ending === "failure" ? failing : Effect.interrupt
        const probe = body.pipe(
          Effect.ensuring(
            Deferred.succeed(cleaning, undefined).pipe(
              Effect.andThen(Deferred.await(cleanup)),
              Effect.andThen(Effect.sync(() => (cleaned = true)))
            )
          )
        )
        const caller = yield* forkAdmitted(probe, withBreaker("p"))
        yield* Deferred.await(cleaning)
        yield* Effect.forkChild(Fiber.interrupt(caller))
        const exit = yield* endsPromptly(caller, "the caller interrupted during the probe's finalizer")
        assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), `got ${String(exit)}`)
        // Still cleaning up: the probe holds its slot, so a second caller is rejected.
        assert.isFalse(cleaned)
        const during = yield* state("p")
        assert.isTrue(during._tag === "HalfOpen" && during.probeInFlight, "the probe holds its slot")
        yield* expectRejection(Effect.void.pipe(withBreaker("p")))
        yield* TestClock.adjust("3 seconds")
        yield* Deferred.succeed(cleanup, undefined)
        yield* decided("p")
        assert.isTrue(cleaned)
        if (ending === "success") {
          assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
          assert.deepStrictEqual(yield* counted("p"), { success: 1, failure: 1, ignored: 0, rejected: 1, probes: 1 })
        } else if (ending === "failure") {
          yield* isOpenSince("p", 13_000, "probe-failed")
          assert.deepStrictEqual(yield* counted("p"), { success: 0, failure: 2, ignored: 0, rejected: 1, probes: 1 })
          yield* TestClock.adjust("10 seconds")
        } else {
          assert.deepStrictEqual(yield* counted("p"), { success: 0, failure: 1, ignored: 1, rejected: 1, probes: 1 })
        }
        if (ending !== "success") yield* slotIsFree("p")
        const seen = yield* Fiber.join(changes)
        assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason, c.opening]), [
          ["Open", "HalfOpen", "probe", 1],
          ending === "failure" ? ["HalfOpen", "Open", "probe-failed", 2] : ["HalfOpen", "Closed", "probe-succeeded", 0]
        ])
      }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
  }

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

  for (const variant of ["its caller waiting", "its caller interrupted", "uninterruptible"] as const) {
    it.effect(`a probe that never finishes is interrupted at its lease's end and the circuit reopens then (${variant})`, () =>
      Effect.gen(function*() {
        yield* halfOpen("p")
        const set = yield* CircuitBreakerSet
        const changes = yield* collect(set.changes, 2)
        const release = yield* Deferred.make<void>()
        let interruptedAt: number | undefined
        let finishedAt: number | undefined
        const hung = variant === "uninterruptible"
          // Cannot be interrupted: it runs on past its lease, but cannot hold the circuit.
          ? Deferred.await(release).pipe(
            Effect.andThen(Clock.currentTimeMillis),
            Effect.tap((at) => Effect.sync(() => (finishedAt = at))),
            Effect.uninterruptible
          )
          : Effect.never.pipe(
            Effect.onInterrupt(() => Effect.map(Clock.currentTimeMillis, (at) => (interruptedAt = at)))
          )
        const caller = yield* forkAdmitted(hung, withBreaker("p"))
        if (variant === "its caller interrupted") {
          yield* Effect.forkChild(Fiber.interrupt(caller))
          const exit = yield* endsPromptly(caller, "the interrupted caller")
          assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), `got ${String(exit)}`)
        }
        yield* TestClock.adjust(Duration.millis(9_999))
        assert.isUndefined(interruptedAt)
        const during = yield* state("p")
        assert.isTrue(during._tag === "HalfOpen" && during.probeInFlight, "the probe holds its slot")
        const early = yield* expectRejection(Effect.void.pipe(withBreaker("p")))
        assert.strictEqual(Duration.toMillis(early.retryAfter), 1)
        yield* TestClock.adjust(Duration.millis(1))
        // At the lease's end, 20 s: the probe is interrupted and the circuit reopens for a whole resetTimeout.
        if (variant !== "uninterruptible") assert.strictEqual(interruptedAt, 20_000)
        yield* isOpenSince("p", 20_000, "probe-timeout")
        if (variant !== "its caller interrupted") {
          // The caller, still waiting, fails with CircuitOpenError at once, even if the probe cannot stop.
          const exit = yield* endsPromptly(caller, "the waiting caller")
          const error = yield* expectRejection(exit)
          assert.strictEqual(Duration.toMillis(error.retryAfter), 10_000)
        }
        const seen = yield* Fiber.join(changes)
        assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason, c.opening]), [
          ["Open", "HalfOpen", "probe", 1],
          ["HalfOpen", "Open", "probe-timeout", 2]
        ])
        // The expired probe is one more counted failure; the only rejection is the second caller's.
        const { failure, probes, rejected, success } = yield* counted("p")
        assert.deepStrictEqual({ success, failure, rejected, probes }, {
          success: 0,
          failure: 2,
          rejected: 1,
          probes: 1
        })
        if (variant === "uninterruptible") {
          // Its success, once it comes, is too late to decide anything.
          yield* TestClock.adjust("1 second")
          yield* Deferred.succeed(release, undefined)
          yield* eventually(() => finishedAt !== undefined, "the uninterruptible probe to finish")
          assert.strictEqual(finishedAt, 21_000)
          yield* isOpenSince("p", 20_000, "probe-timeout")
          yield* TestClock.adjust(Duration.millis(8_999))
        } else {
          yield* TestClock.adjust(Duration.millis(9_999))
        }
        yield* expectRejection(Effect.void.pipe(withBreaker("p")))
        yield* TestClock.adjust(Duration.millis(1))
        yield* slotIsFree("p")
      }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
  }
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
      fleet: Effect.succeed({
        _tag: "Local" as const,
        since: 0,
        process: "double",
        reason: "test double",
        pendingFailures: 0
      }),
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
        isolated: false,
        opening: 1,
        reason: "window"
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
