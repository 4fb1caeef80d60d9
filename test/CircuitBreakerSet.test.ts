import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Exit, Fiber, Layer, Predicate, Ref, Schema, Stream } from "effect"
import { TestClock } from "effect/testing"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { CircuitBreakerSet, CircuitSnapshot, withBreaker } from "../src/index.ts"
import {
  type CapturedLog,
  captureLogs,
  collect,
  expectRejection,
  failing,
  forkAdmitted,
  isRejection,
  makeCountdown,
  NotFound,
  provideSet,
  repeat,
  state,
  stateTag,
  trip
} from "./utils.ts"

describe("closed, failures in a sliding window", () => {
  it.effect("with maxFailures 2, three quick failures open the circuit", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 2)
      assert.strictEqual(yield* stateTag("p"), "Closed")
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.strictEqual(yield* stateTag("p"), "Open")
    }).pipe(provideSet({ maxFailures: 2 })))

  it.effect("failures every 30 s with a 60 s window never open it", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 50; i++) {
        yield* Effect.exit(failing.pipe(withBreaker("p")))
        yield* TestClock.adjust("30 seconds")
      }
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 1 })
    }).pipe(provideSet({ maxFailures: 2, window: "60 seconds" })))

  it.effect("maxFailures 0 opens on the first failure", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.strictEqual(yield* stateTag("p"), "Open")
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("a failure is inside the window iff now - t < window (exact boundary)", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      yield* TestClock.adjust(Duration.millis(59_999))
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 1 })
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
      // The first failure aged out exactly now, so one more failure does not open the circuit.
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.strictEqual(yield* stateTag("p"), "Closed")
    }).pipe(provideSet({ maxFailures: 1, window: "60 seconds" })))

  it.effect("one millisecond before the boundary the old failure still counts", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      yield* TestClock.adjust(Duration.millis(59_999))
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.strictEqual(yield* stateTag("p"), "Open")
    }).pipe(provideSet({ maxFailures: 1, window: "60 seconds" })))

  it.effect("successes never remove failures from the window", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 2)
      yield* repeat(Effect.succeed(1).pipe(withBreaker("p")), 100)
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 2 })
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.strictEqual(yield* stateTag("p"), "Open")
    }).pipe(provideSet({ maxFailures: 2 })))
})

describe("open", () => {
  it.effect("every call fails at once with CircuitOpenError and the effect does not run", () =>
    Effect.gen(function*() {
      yield* trip("p", 1)
      const runs = yield* Ref.make(0)
      const error = yield* expectRejection(Ref.update(runs, (n) => n + 1).pipe(withBreaker("p")))
      assert.strictEqual(error._tag, "CircuitOpenError")
      assert.strictEqual(error.peer, "p")
      assert.isTrue(Duration.equals(error.retryAfter, Duration.seconds(10)))
      assert.include(error.message, "\"p\"")
      assert.strictEqual(yield* Ref.get(runs), 0)
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("retryAfter is the time left until a probe is allowed", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust("3 seconds")
      const error = yield* expectRejection(Effect.void.pipe(withBreaker("p")))
      assert.isTrue(Duration.equals(error.retryAfter, Duration.seconds(7)))
      assert.deepStrictEqual(yield* state("p"), {
        _tag: "Open",
        openedAt: 0,
        probeAt: 10_000,
        retryAfter: Duration.seconds(7),
        isolated: false,
        opening: 1,
        reason: "window"
      })
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("calls admitted before the trip and failing afterwards do not extend the open period", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const late = yield* forkAdmitted(
        Deferred.await(release).pipe(Effect.andThen(failing)),
        (self) => self.pipe(withBreaker("p"), Effect.exit)
      )
      yield* trip("p", 0)
      yield* TestClock.adjust("9 seconds")
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(late)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* stateTag("p"), "HalfOpen")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
})

describe("half-open", () => {
  it.effect("reads HalfOpen as soon as resetTimeout has passed, before any call", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust(Duration.millis(9_999))
      assert.strictEqual(yield* stateTag("p"), "Open")
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* state("p"), {
        _tag: "HalfOpen",
        openedAt: 0,
        probeInFlight: false,
        probesInFlight: 0,
        successes: 0,
        retryAfter: Duration.zero,
        opening: 1,
        reason: "window"
      })
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("with 10,000 concurrent callers exactly one probe runs; the others are rejected at once", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust("10 seconds")
      const gate = yield* Deferred.make<void>()
      const probes = yield* Ref.make(0)
      // Every caller is decided before the gate opens: admitted (it arrives inside the call) or rejected.
      const decided = yield* makeCountdown(10_000)
      const call = decided.arrive.pipe(
        Effect.andThen(Ref.update(probes, (n) => n + 1)),
        Effect.andThen(Deferred.await(gate)),
        withBreaker("p")
      )
      const fibers = yield* Effect.forEach(
        Array.from({ length: 10_000 }),
        () =>
          Effect.forkChild(Effect.tap(Effect.exit(call), (exit) => isRejection(exit) ? decided.arrive : Effect.void))
      )
      yield* decided.allArrived
      assert.strictEqual(yield* Ref.get(probes), 1)
      const current = yield* state("p")
      assert.isTrue(current._tag === "HalfOpen" && current.probeInFlight && current.probesInFlight === 1)
      yield* Deferred.succeed(gate, undefined)
      const exits = yield* Effect.forEach(fibers, Fiber.join)
      assert.strictEqual(exits.filter(Exit.isSuccess).length, 1)
      assert.strictEqual(exits.filter(isRejection).length, 9_999)
      assert.strictEqual(yield* stateTag("p"), "Closed")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("while a probe is in flight, retryAfter is the time until its slot expires", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust("10 seconds")
      const probe = yield* forkAdmitted(Effect.never, withBreaker("p"))
      yield* TestClock.adjust("4 seconds")
      const error = yield* expectRejection(Effect.void.pipe(withBreaker("p")))
      assert.isTrue(Duration.equals(error.retryAfter, Duration.seconds(6)))
      assert.deepStrictEqual(yield* state("p"), {
        _tag: "HalfOpen",
        openedAt: 0,
        probeInFlight: true,
        probesInFlight: 1,
        successes: 0,
        retryAfter: Duration.seconds(6),
        opening: 1,
        reason: "window"
      })
      yield* Fiber.interrupt(probe)
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
})

describe("the probe decides", () => {
  it.effect("probe success closes the circuit with an empty window", () =>
    Effect.gen(function*() {
      yield* trip("p", 2)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* Effect.succeed("ok").pipe(withBreaker("p")), "ok")
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
      // python-circuit kept the old failures, so one failure right after recovery reopened it. Not here.
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 1 })
    }).pipe(provideSet({ maxFailures: 2, window: "60 seconds", resetTimeout: "10 seconds" })))

  it.effect("probe failure opens the circuit again for a full resetTimeout from now", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust("25 seconds")
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.deepStrictEqual(yield* state("p"), {
        _tag: "Open",
        openedAt: 25_000,
        probeAt: 35_000,
        retryAfter: Duration.seconds(10),
        isolated: false,
        opening: 2,
        reason: "probe-failed"
      })
      yield* TestClock.adjust(Duration.millis(9_999))
      assert.strictEqual(yield* stateTag("p"), "Open")
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* stateTag("p"), "HalfOpen")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
})

describe("what counts", () => {
  const countBoomOnly = { isFailure: Predicate.isTagged("Boom") }

  it.effect("a typed failure that isFailure rejects counts as success: adds nothing when closed", () =>
    Effect.gen(function*() {
      yield* repeat(Effect.fail(new NotFound()).pipe(withBreaker("p")), 20)
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet({ maxFailures: 0, ...countBoomOnly })))

  it.effect("a typed failure that isFailure rejects closes a half-open circuit", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust("10 seconds")
      const error = yield* Effect.flip(Effect.fail(new NotFound()).pipe(withBreaker("p")))
      assert.strictEqual(error._tag, "NotFound")
      assert.strictEqual(yield* stateTag("p"), "Closed")
    }).pipe(provideSet({ maxFailures: 0, ...countBoomOnly })))

  it.effect("a defect counts whatever isFailure says", () =>
    Effect.gen(function*() {
      yield* Effect.exit(Effect.die("kaput").pipe(withBreaker("p")))
      assert.strictEqual(yield* stateTag("p"), "Open")
    }).pipe(provideSet({ maxFailures: 0, isFailure: () => false })))

  it.effect("a cause with a rejected failure and a defect counts as a failure", () =>
    Effect.gen(function*() {
      const mixed = Effect.failCause(Cause.combine(Cause.fail(new NotFound()), Cause.die("kaput")))
      yield* Effect.exit(mixed.pipe(withBreaker("p")))
      assert.strictEqual(yield* stateTag("p"), "Open")
    }).pipe(provideSet({ maxFailures: 0, ...countBoomOnly })))

  it.effect("an interruption never counts while closed", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 5; i++) {
        const fiber = yield* forkAdmitted(Effect.never, withBreaker("p"))
        yield* Fiber.interrupt(fiber)
      }
      yield* Effect.exit(Effect.interrupt.pipe(withBreaker("p")))
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("a probe whose own effect is interrupted gives its slot back: the next call probes", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust("10 seconds")
      const exit = yield* Effect.exit(Effect.interrupt.pipe(withBreaker("p")))
      assert.isTrue(Exit.hasInterrupts(exit))
      assert.deepStrictEqual(yield* state("p"), {
        _tag: "HalfOpen",
        openedAt: 0,
        probeInFlight: false,
        probesInFlight: 0,
        successes: 0,
        retryAfter: Duration.zero,
        opening: 1,
        reason: "window"
      })
      assert.strictEqual(yield* Effect.succeed(1).pipe(withBreaker("p")), 1)
      assert.strictEqual(yield* stateTag("p"), "Closed")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("an isFailure that throws records a failure; the caller gets the effect's own failure", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(failing.pipe(withBreaker("p")))
      assert.strictEqual(error._tag, "Boom")
      assert.strictEqual(yield* stateTag("p"), "Open")
      yield* TestClock.adjust("10 seconds")
      // The breaker is not wedged: a successful probe closes it.
      assert.strictEqual(yield* Effect.succeed(1).pipe(withBreaker("p")), 1)
      assert.strictEqual(yield* stateTag("p"), "Closed")
    }).pipe(provideSet({
      maxFailures: 0,
      isFailure: () => {
        throw new Error("predicate bug")
      }
    })))

  it.effect("a non-boolean isFailure result is read by truthiness", () =>
    Effect.gen(function*() {
      yield* Effect.exit(Effect.fail(0).pipe(withBreaker("zero")))
      yield* Effect.exit(Effect.fail("yes").pipe(withBreaker("yes")))
      assert.strictEqual(yield* stateTag("zero"), "Closed")
      assert.strictEqual(yield* stateTag("yes"), "Open")
    }).pipe(provideSet({ maxFailures: 0, isFailure: ((e: unknown) => e) as unknown as (e: unknown) => boolean })))
})

describe("hung probes and stale results", () => {
  it.effect("a probe still running when its lease ends has failed: its late result decides nothing", () =>
    Effect.gen(function*() {
      yield* trip("p", 0)
      yield* TestClock.adjust("10 seconds")
      const release = yield* Deferred.make<void>()
      // It cannot be interrupted, so it runs past its lease, and its success arrives late.
      const hung = yield* forkAdmitted(Deferred.await(release).pipe(Effect.uninterruptible), withBreaker("p"))
      yield* TestClock.adjust(Duration.millis(9_999))
      yield* expectRejection(Effect.void.pipe(withBreaker("p")))
      yield* TestClock.adjust(Duration.millis(1))
      // Reopened at the lease's end, 20 s, for a whole resetTimeout.
      const reopened = yield* state("p")
      assert.strictEqual(reopened._tag, "Open")
      assert.strictEqual(reopened._tag === "Open" ? reopened.openedAt : undefined, 20_000)
      yield* TestClock.adjust("10 seconds")
      // The next probe succeeds; the first probe's call still runs. Its success, once the circuit is open again,
      // must not close it; its caller got CircuitOpenError at the lease's end.
      assert.strictEqual(yield* Effect.succeed(1).pipe(withBreaker("p")), 1)
      yield* trip("p", 0)
      yield* Deferred.succeed(release, undefined)
      yield* expectRejection(Fiber.join(hung))
      assert.strictEqual(yield* stateTag("p"), "Open")
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it.effect("a call admitted before the last close decides nothing", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      // Admitted while closed, the first time around.
      const old = yield* forkAdmitted(
        Deferred.await(release).pipe(Effect.andThen(failing)),
        (self) => self.pipe(withBreaker("p"), Effect.exit)
      )
      yield* trip("p", 1)
      yield* TestClock.adjust("10 seconds")
      yield* Effect.succeed(1).pipe(withBreaker("p"))
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 1 })
      // Its failure now would be the second in the window and open the circuit, if it were counted.
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(old)
      assert.deepStrictEqual(yield* state("p"), { _tag: "Closed", failures: 1 })
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))
})

describe("one breaker per peer", () => {
  it.effect("failures on one peer never affect another; an unseen peer is Closed", () =>
    Effect.gen(function*() {
      yield* trip("a", 0)
      assert.strictEqual(yield* stateTag("a"), "Open")
      assert.strictEqual(yield* stateTag("b"), "Closed")
      assert.strictEqual(yield* Effect.succeed(2).pipe(withBreaker("b")), 2)
      assert.deepStrictEqual(yield* state("never-seen"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("concurrent first calls to a new peer share one breaker", () =>
    Effect.gen(function*() {
      yield* Effect.forEach(Array.from({ length: 50 }), () => Effect.exit(failing.pipe(withBreaker("new"))), {
        concurrency: "unbounded"
      })
      assert.strictEqual(yield* stateTag("new"), "Open")
    }).pipe(provideSet({ maxFailures: 2 })))

  it.effect("peer keys are plain strings: '', '__proto__' and a 1 MB key are ordinary peers", () =>
    Effect.gen(function*() {
      const big = "x".repeat(1024 * 1024)
      for (const peer of ["", "__proto__", "constructor", big]) {
        yield* Effect.exit(failing.pipe(withBreaker(peer)))
        assert.strictEqual(yield* stateTag(peer), "Open")
      }
      assert.strictEqual(yield* stateTag("x"), "Closed")
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("a non-string peer is a defect and the effect does not run", () =>
    Effect.gen(function*() {
      const runs = yield* Ref.make(0)
      const set = yield* CircuitBreakerSet
      for (const peer of [42, null, undefined, {}, Symbol("s")]) {
        const exit = yield* Effect.exit(Ref.update(runs, (n) => n + 1).pipe(set.withBreaker(peer as never)))
        assert.isTrue(Exit.isFailure(exit) && Cause.hasDies(exit.cause))
        const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        assert.include(String(defect), "a peer must be a string")
        assert.isTrue(Exit.isFailure(yield* Effect.exit(set.state(peer as never))))
      }
      assert.strictEqual(yield* Ref.get(runs), 0)
    }).pipe(provideSet()))
})

describe("the top-level withBreaker finds the set of the caller's context", () => {
  it.effect("calls from two contexts, interleaved, each reach their own set", () =>
    Effect.gen(function*() {
      const outer = yield* CircuitBreakerSet
      const inner = yield* CircuitBreakerSet.make({ maxFailures: 0 })
      for (let i = 0; i < 3; i++) {
        // The inner context's set trips on the first failure; the outer one's allows 3.
        yield* Effect.exit(failing.pipe(withBreaker("p"), Effect.provideService(CircuitBreakerSet, inner)))
        yield* Effect.exit(failing.pipe(withBreaker("p")))
      }
      assert.strictEqual((yield* inner.state("p"))._tag, "Open")
      assert.deepStrictEqual(yield* outer.state("p"), { _tag: "Closed", failures: 3 })
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      assert.strictEqual((yield* outer.state("p"))._tag, "Open")
    }).pipe(provideSet({ maxFailures: 3 })))

  it.effect("a context whose set was found before and one holding another service alternate", () => {
    const guarded: Array<string> = []
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const double = {
        ...set,
        withBreaker: (peer: string) => <A, E, R>(self: Effect.Effect<A, E, R>) => {
          guarded.push(peer)
          return self
        }
      }
      for (let i = 0; i < 2; i++) {
        yield* Effect.exit(failing.pipe(withBreaker("p")))
        yield* Effect.exit(failing.pipe(withBreaker("q"), Effect.provideService(CircuitBreakerSet, double)))
      }
      assert.deepStrictEqual(guarded, ["q", "q"])
      assert.deepStrictEqual(yield* set.state("p"), { _tag: "Closed", failures: 2 })
      assert.deepStrictEqual(yield* set.state("q"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet({ maxFailures: 3 }))
  })

  it("a closed set is not kept by the look-up's one-entry cache", async () => {
    setFlagsFromString("--expose-gc")
    const gc = runInNewContext("gc") as () => void
    let found: WeakRef<object> | undefined
    await Effect.runPromise(
      Effect.gen(function*() {
        found = new WeakRef(yield* CircuitBreakerSet)
        yield* Effect.succeed(1).pipe(withBreaker("p"))
      }).pipe(Effect.provide(CircuitBreakerSet.layer()))
    )
    // A WeakRef's target lives to the end of the job that read it: collect in later turns.
    for (let turn = 0; turn < 5 && found!.deref() !== undefined; turn++) {
      await new Promise((resolve) => setTimeout(resolve, 10))
      gc()
    }
    assert.isUndefined(found!.deref())
  })

  it.effect("a set built again for the same layer is the one found, not the closed one", () =>
    Effect.gen(function*() {
      const layer = CircuitBreakerSet.layer({ maxFailures: 0 })
      const tripIn = Effect.exit(failing.pipe(withBreaker("p"))).pipe(
        Effect.andThen(CircuitBreakerSet.use((set) => set.state("p"))),
        Effect.provide(layer)
      )
      assert.strictEqual((yield* tripIn)._tag, "Open")
      // A fresh build: its own, closed circuit, whatever the last context found.
      const fresh = yield* Effect.succeed(1).pipe(withBreaker("p"), Effect.provide(layer))
      assert.strictEqual(fresh, 1)
    }))
})

describe("time only through Clock", () => {
  it.effect("TestClock.adjust alone moves a breaker through Open, HalfOpen and back", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      yield* trip("p", 0)
      for (let i = 0; i < 3; i++) {
        seen.push(yield* stateTag("p"))
        yield* TestClock.adjust("5 seconds")
      }
      assert.deepStrictEqual(seen, ["Open", "Open", "HalfOpen"])
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))
})

describe("transitions are logged", () => {
  it.effect("open at Warning, half-open at Debug, closed at Info, annotated with the peer", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      yield* trip("payments", 0)
      yield* TestClock.adjust("10 seconds")
      yield* Effect.succeed(1).pipe(withBreaker("payments"))
      const transitions = logs.filter((log) => log.message.startsWith("Circuit"))
      assert.deepStrictEqual(transitions.map((log) => [log.level, log.annotations.peer]), [
        ["Warn", "payments"],
        ["Debug", "payments"],
        ["Info", "payments"]
      ])
      assert.include(transitions[0]!.message, "opened")
      assert.include(transitions[1]!.message, "half-open")
      assert.include(transitions[2]!.message, "closed")
    }).pipe(provideSet({ maxFailures: 0 }), Effect.provide(captureLogs(logs)))
  })
})

describe("changes", () => {
  it.effect("publishes every change with peer, from, to, at and reason", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const collected = yield* collect(set.changes, 5)
      yield* TestClock.adjust("1 second")
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      yield* TestClock.adjust("10 seconds")
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      yield* TestClock.adjust("10 seconds")
      yield* Effect.succeed(1).pipe(withBreaker("p"))
      const changes = yield* Fiber.join(collected)
      assert.deepStrictEqual(changes, [
        { peer: "p", from: "Closed", to: "Open", at: 1_000, reason: "window", opening: 1 },
        { peer: "p", from: "Open", to: "HalfOpen", at: 11_000, reason: "probe", opening: 1 },
        { peer: "p", from: "HalfOpen", to: "Open", at: 11_000, reason: "probe-failed", opening: 2 },
        { peer: "p", from: "Open", to: "HalfOpen", at: 21_000, reason: "probe", opening: 2 },
        { peer: "p", from: "HalfOpen", to: "Closed", at: 21_000, reason: "probe-succeeded", opening: 0 }
      ])
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("a stalled subscriber neither blocks calls nor buffers more than 1,024 changes", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const gate = yield* Deferred.make<void>()
      const drained = yield* Deferred.make<void>()
      const received = yield* Ref.make<Array<string>>([])
      // The subscriber takes the first change, then stalls on the gate while 2,999 more are published. It starts at
      // once, so it has subscribed before the first change.
      const stalled = yield* Effect.forkChild(
        Stream.runForEach(set.changes, (change) =>
          Deferred.await(gate).pipe(
            Effect.andThen(Ref.update(received, (peers) => [...peers, change.peer])),
            Effect.andThen(change.peer === "peer-2999" ? Deferred.succeed(drained, undefined) : Effect.void)
          )),
        { startImmediately: true }
      )
      for (let i = 0; i < 3_000; i++) yield* Effect.exit(failing.pipe(withBreaker(`peer-${i}`)))
      assert.strictEqual((yield* set.snapshot).peers.filter((p) => p.state === "Open").length, 3_000)
      yield* Deferred.succeed(gate, undefined)
      // Nothing is published after the last change, so once the subscriber has handled it, it has handled everything.
      yield* Deferred.await(drained)
      const peers = yield* Ref.get(received)
      // The first change, then the newest 1,024: the oldest were dropped.
      assert.strictEqual(peers.length, 1 + 1_024)
      assert.strictEqual(peers[0], "peer-0")
      assert.strictEqual(peers[1], `peer-${3_000 - 1_024}`)
      assert.strictEqual(peers.at(-1), "peer-2999")
      yield* Fiber.interrupt(stalled)
    }).pipe(provideSet({ maxFailures: 0 })))
})

describe("snapshot", () => {
  it.effect("lists every peer the set holds and encodes to JSON", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* TestClock.adjust("5 seconds")
      yield* Effect.exit(failing.pipe(withBreaker("open")))
      yield* Effect.exit(failing.pipe(withBreaker("open")))
      yield* Effect.exit(failing.pipe(withBreaker("closed")))
      yield* Effect.succeed(1).pipe(withBreaker("healthy"))
      yield* TestClock.adjust("2 seconds")
      const snapshot = yield* set.snapshot
      const json = JSON.parse(JSON.stringify(Schema.encodeSync(CircuitSnapshot.CircuitSnapshot)(snapshot)))
      assert.deepStrictEqual(json, {
        at: 7_000,
        peers: [
          {
            peer: "open",
            state: "Open",
            failures: 0,
            openedAt: 5_000,
            probeAt: 15_000,
            isolated: false,
            opening: 1,
            reason: "window"
          },
          { peer: "closed", state: "Closed", failures: 1 },
          { peer: "healthy", state: "Closed", failures: 0 }
        ]
      })
      assert.deepStrictEqual(Schema.decodeUnknownSync(CircuitSnapshot.CircuitSnapshot)(json), snapshot)
    }).pipe(provideSet({ maxFailures: 1 })))
})

describe("options", () => {
  // CircuitBreakerOptions.test.ts checks each option and its message; this checks that the layer reports them.
  it.effect("a layer built with bad options fails with CircuitBreakerConfigError", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Layer.build(CircuitBreakerSet.layer({ maxFailures: -1 })))
      assert.strictEqual(error._tag, "CircuitBreakerConfigError")
      assert.deepStrictEqual(error.fields, ["maxFailures"])
    }))
})
