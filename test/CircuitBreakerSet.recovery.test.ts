import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Scope } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreaker, CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import {
  collect,
  count,
  expectRejection,
  forkAdmitted,
  freshMetricRegistry,
  provideSet,
  state,
  stateTag,
  trip
} from "./utils.ts"

/** A peer that has recovered: every call reaches it and succeeds; `received` counts the calls it got. */
const recoveredPeer = () => {
  let received = 0
  const call = Effect.suspend(() => {
    received++
    return Effect.succeed("ok")
  }).pipe(Effect.delay("10 millis"), withBreaker("api"))
  return { call, received: () => received }
}

/**
 * A call that never ends on its own and sets `interrupted` when it is interrupted; `running` completes once its
 * interruption handler is in place.
 */
const hangingCall = Effect.gen(function*() {
  const running = yield* Deferred.make<void>()
  const flag = { interrupted: false }
  const call = Deferred.succeed(running, undefined).pipe(
    Effect.andThen(Effect.never),
    Effect.onInterrupt(() => Effect.sync(() => (flag.interrupted = true)))
  )
  return { call, running: Deferred.await(running), flag }
})

/** Runs `batch` until it succeeds or `attempts` run out, moving the clock so that each call can end. */
const untilSuccess = <A, E, R>(batch: Effect.Effect<A, E, R>, attempts: number) =>
  Effect.gen(function*() {
    let succeeded = 0
    for (let i = 0; i < attempts; i++) {
      const fiber = yield* Effect.forkChild(batch)
      yield* TestClock.adjust("10 millis")
      const exit = yield* Fiber.await(fiber)
      if (Exit.isSuccess(exit)) succeeded++
    }
    return succeeded
  })

describe("recovery under fail-fast concurrency", () => {
  const combinators = {
    "Effect.forEach with concurrency 3": (call: Effect.Effect<string, unknown, CircuitBreakerSet>) =>
      Effect.asVoid(Effect.forEach([1, 2, 3], () => call, { concurrency: 3 })),
    "Effect.all, unbounded": (call: Effect.Effect<string, unknown, CircuitBreakerSet>) =>
      Effect.asVoid(Effect.all([call, call, call, call], { concurrency: "unbounded" })),
    "Effect.raceFirst": (call: Effect.Effect<string, unknown, CircuitBreakerSet>) =>
      Effect.asVoid(Effect.raceFirst(call, call))
  }
  for (const [name, batchOf] of Object.entries(combinators)) {
    it.effect(`${name}: the first batch after resetTimeout closes the circuit, and every batch after succeeds`, () =>
      Effect.gen(function*() {
        yield* trip("api", 1)
        yield* TestClock.adjust("10 seconds")
        const peer = recoveredPeer()
        // The first batch fails fast: its probe's siblings are rejected, and the batch interrupts the probe's caller.
        yield* Effect.exit(Effect.forkChild(batchOf(peer.call)).pipe(Effect.flatMap(Fiber.await)))
        yield* TestClock.adjust("10 millis")
        assert.strictEqual(yield* stateTag("api"), "Closed")
        assert.strictEqual(peer.received(), 1)
        // Recovered: the next 10 batches all succeed.
        assert.strictEqual(yield* untilSuccess(batchOf(peer.call), 10), 10)
      }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))
  }
})

describe("the probe runs to its end", () => {
  it.effect("an interrupted caller is released at once; its probe runs on and its success closes the circuit", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      yield* TestClock.adjust("10 seconds")
      const gate = yield* Deferred.make<void>()
      let finished = false
      const caller = yield* forkAdmitted(
        Deferred.await(gate).pipe(Effect.andThen(Effect.sync(() => (finished = true)))),
        withBreaker("api")
      )
      const interrupted = yield* Fiber.interrupt(caller).pipe(Effect.andThen(Fiber.await(caller)))
      assert.isTrue(Exit.hasInterrupts(interrupted))
      // The probe still holds its slot: other calls are rejected while it runs.
      const during = yield* state("api")
      assert.isTrue(during._tag === "HalfOpen" && during.probeInFlight)
      yield* expectRejection(Effect.succeed(1).pipe(withBreaker("api")))
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.yieldNow
      yield* Effect.yieldNow
      assert.isTrue(finished)
      assert.strictEqual(yield* stateTag("api"), "Closed")
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("an interrupted caller's probe that fails reopens the circuit for a full resetTimeout", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      yield* TestClock.adjust("10 seconds")
      const gate = yield* Deferred.make<void>()
      const caller = yield* forkAdmitted(
        Deferred.await(gate).pipe(Effect.andThen(Effect.fail("down"))),
        withBreaker("api")
      )
      yield* Fiber.interrupt(caller)
      yield* TestClock.adjust("2 seconds")
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.yieldNow
      yield* Effect.yieldNow
      const reopened = yield* state("api")
      assert.strictEqual(reopened._tag, "Open")
      // Reopened at 12 s, when the probe failed.
      assert.strictEqual(reopened._tag === "Open" ? reopened.openedAt : undefined, 12_000)
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("a closed call whose caller is interrupted is interrupted too, and counts as nothing", () =>
    Effect.gen(function*() {
      const hanging = yield* hangingCall
      const caller = yield* Effect.forkChild(hanging.call.pipe(withBreaker("api")))
      yield* hanging.running
      yield* Fiber.interrupt(caller)
      assert.isTrue(hanging.flag.interrupted)
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet({ maxFailures: 0 })))
})

describe("the probe's lease", () => {
  it.effect("a probe still running when its lease ends is interrupted then, and the circuit reopens at that instant", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      yield* TestClock.adjust("10 seconds")
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 2)
      let interruptedAt: number | undefined
      const hung = Effect.never.pipe(
        Effect.onInterrupt(() =>
          Effect.clockWith((clock) => Effect.sync(() => (interruptedAt = clock.currentTimeMillisUnsafe())))
        )
      )
      const caller = yield* forkAdmitted(hung, withBreaker("api"))
      yield* TestClock.adjust("9999 millis")
      assert.isUndefined(interruptedAt)
      assert.strictEqual(yield* stateTag("api"), "HalfOpen")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(interruptedAt, 20_000)
      const reopened = yield* state("api")
      assert.strictEqual(reopened._tag, "Open")
      assert.strictEqual(reopened._tag === "Open" ? reopened.openedAt : undefined, 20_000)
      // The caller, still waiting, fails with CircuitOpenError: the circuit is open again for a full resetTimeout.
      const error = yield* expectRejection(Fiber.join(caller))
      assert.strictEqual(Duration.toMillis(error.retryAfter), 10_000)
      const seen = yield* Fiber.join(changes)
      assert.deepStrictEqual(
        Array.from(seen, (c) => [c.from, c.to, c.reason]),
        [["Open", "HalfOpen", "probe"], ["HalfOpen", "Open", "probe-timeout"]]
      )
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("an inner Effect.timeout longer than resetTimeout no longer hides a hung peer: every expired probe reopens", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 6)
      const call = Effect.never.pipe(Effect.timeout("1 minute"), withBreaker("api"))
      for (let round = 0; round < 3; round++) {
        yield* TestClock.adjust("10 seconds")
        yield* Effect.forkChild(Effect.exit(call))
        yield* Effect.yieldNow
        yield* TestClock.adjust("10 seconds")
      }
      const seen = yield* Fiber.join(changes)
      assert.deepStrictEqual(Array.from(seen, (c) => c.reason), [
        "probe",
        "probe-timeout",
        "probe",
        "probe-timeout",
        "probe",
        "probe-timeout"
      ])
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("reading the state after the lease ended shows the reopened circuit before the probe's fiber runs", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      yield* TestClock.adjust("10 seconds")
      yield* forkAdmitted(Effect.never, withBreaker("api"))
      const set = yield* CircuitBreakerSet
      // Moves the clock without letting any fiber run: the state is computed from the clock.
      yield* TestClock.setTime(25_000).pipe(Effect.uninterruptible)
      const read = yield* set.state("api")
      assert.strictEqual(read._tag, "Open")
      assert.strictEqual(read._tag === "Open" ? read.openedAt : undefined, 20_000)
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))
})

describe("a probe still running at its lease's end is counted once, as a failure", () => {
  const outcomes = Effect.all({
    failure: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "failure" }),
    success: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "success" }),
    ignored: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "ignored" })
  })
  const lateProbes = {
    "an uninterruptible probe that succeeds later": Effect.uninterruptible(Effect.sleep("15 seconds")),
    "an uninterruptible probe that fails later": Effect.uninterruptible(
      Effect.sleep("15 seconds").pipe(Effect.andThen(Effect.fail("boom")))
    ),
    "a probe whose interruption dies in a finalizer": Effect.never.pipe(
      Effect.onInterrupt(() => Effect.die("finalizer broke"))
    )
  }
  for (const [name, probe] of Object.entries(lateProbes)) {
    it.effect(name, () =>
      Effect.gen(function*() {
        yield* trip("api", 1) // two counted failures
        yield* TestClock.adjust("10 seconds")
        const caller = yield* forkAdmitted(probe, withBreaker("api"))
        yield* TestClock.adjust("10 seconds")
        yield* expectRejection(Fiber.join(caller))
        yield* TestClock.adjust("5 seconds")
        assert.strictEqual(yield* stateTag("api"), "Open")
        assert.deepStrictEqual(yield* outcomes, { failure: 3, success: 0, ignored: 0 })
      }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))
  }

  it.effect("on TestClock, a probe's effect starts even when the clock is moved past its lease at once", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      yield* TestClock.adjust("10 seconds")
      let started = 0
      const caller = yield* Effect.forkChild(
        Effect.sync(() => started++).pipe(Effect.andThen(Effect.never), withBreaker("api"))
      )
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.await(caller)
      assert.deepStrictEqual({ probes: yield* count(CircuitBreakerMetrics.probes, { peer: "api" }), started }, {
        probes: 1,
        started: 1
      })
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))
})

describe("detached probes belong to the set", () => {
  it.effect("closing the set's scope interrupts its running probe", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const set = yield* CircuitBreakerSet.make({ maxFailures: 0, resetTimeout: "10 seconds" }).pipe(
        Effect.provideService(Scope.Scope, scope)
      )
      yield* Effect.exit(Effect.fail("down").pipe(set.withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      const hanging = yield* hangingCall
      const caller = yield* Effect.forkChild(hanging.call.pipe(set.withBreaker("api")))
      yield* hanging.running
      yield* Fiber.interrupt(caller)
      assert.isFalse(hanging.flag.interrupted)
      yield* Scope.close(scope, Exit.void)
      assert.isTrue(hanging.flag.interrupted)
    }).pipe(Effect.provide(freshMetricRegistry)))

  it.effect("a single CircuitBreaker's detached probe ends with its lease", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ maxFailures: 0, resetTimeout: "10 seconds" })
      yield* Effect.exit(Effect.fail("down").pipe(CircuitBreaker.withBreaker(breaker)))
      yield* TestClock.adjust("10 seconds")
      const hanging = yield* hangingCall
      const caller = yield* Effect.forkChild(hanging.call.pipe(CircuitBreaker.withBreaker(breaker)))
      yield* hanging.running
      yield* Fiber.interrupt(caller)
      assert.isFalse(hanging.flag.interrupted)
      yield* TestClock.adjust("10 seconds")
      assert.isTrue(hanging.flag.interrupted)
      assert.strictEqual((yield* CircuitBreaker.state(breaker))._tag, "Open")
    }).pipe(Effect.provide(freshMetricRegistry)))
})
