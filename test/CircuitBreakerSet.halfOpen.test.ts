/**
 * Half-open with several probes: rows H1–H5, H7, H8 of the policies note (§4.7) and the replacement of H6 (a
 * probe still running at its lease's end is a failed probe). Probes run detached from their callers
 * (`runProbe` / `forkProbe` in src/internal/guard.ts): a probe's result is recorded before its caller's fiber ends.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreaker, CircuitBreakerMetrics, CircuitBreakerSet, Policy, withBreaker } from "../src/index.ts"
import {
  Boom,
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

/** The row set-up: `consecutive(1)`, openings of 10 s, two probe slots, three successes to close. */
const rowOptions = {
  policy: Policy.consecutive(1),
  openDuration: "10 seconds",
  halfOpen: { probes: 2, successThreshold: 3 }
} as const

/** Counts the calls whose effect ran: a rejected call never runs its effect. */
const counter = () => {
  let ran = 0
  return {
    call: Effect.sync(() => ++ran).pipe(withBreaker("api")),
    ran: () => ran
  }
}

/**
 * Starts a call that the breaker must admit (a defect otherwise) and that ends when the test says so. Each ending
 * waits for the caller, whose result comes after the probe's result has been recorded.
 */
const admitted = Effect.gen(function*() {
  const gate = yield* Deferred.make<string, Boom>()
  const caller = yield* forkAdmitted(Deferred.await(gate), withBreaker("api"))
  return {
    caller,
    succeed: Deferred.succeed(gate, "ok").pipe(Effect.andThen(Fiber.await(caller))),
    fail: Deferred.fail(gate, new Boom()).pipe(Effect.andThen(Fiber.await(caller))),
    interrupt: Deferred.interrupt(gate).pipe(Effect.andThen(Fiber.await(caller)))
  }
})

/** Lets detached fibers run to their next wait. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

const halfOpenState = Effect.map(state("api"), (s) => {
  assert.strictEqual(s._tag, "HalfOpen", `expected HalfOpen, got ${JSON.stringify(s)}`)
  return s as Extract<typeof s, { _tag: "HalfOpen" }>
})

const openState = Effect.map(state("api"), (s) => {
  assert.strictEqual(s._tag, "Open", `expected Open, got ${JSON.stringify(s)}`)
  return s as Extract<typeof s, { _tag: "Open" }>
})

/** F@0, then at 10 s probes A and B: rows H1's end state. */
const h1 = Effect.gen(function*() {
  yield* Effect.exit(failing.pipe(withBreaker("api")))
  yield* TestClock.adjust("10 seconds")
  const a = yield* admitted
  const b = yield* admitted
  return { a, b }
})

/** H1 then H2: A succeeds at 10.5 s and D is admitted as a probe. */
const h2 = Effect.gen(function*() {
  const { a, b } = yield* h1
  yield* TestClock.adjust("500 millis")
  const aExit = yield* a.succeed
  assert.deepStrictEqual(aExit, Exit.succeed("ok"))
  const d = yield* admitted
  return { b, d }
})

describe("H1: the open period, then two probe slots", () => {
  it.effect("a call 1 ms early is rejected with retryAfter 1 ms; at 10 s A and B are probes, C is rejected until A's lease ends", () =>
    Effect.gen(function*() {
      const peer = counter()
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("9999 millis")
      const early = yield* expectRejection(peer.call)
      assert.strictEqual(early.state, "Open")
      assert.strictEqual(Duration.toMillis(early.retryAfter), 1)
      assert.strictEqual(peer.ran(), 0)

      yield* TestClock.adjust("1 millis")
      yield* admitted // A
      yield* admitted // B
      const c = yield* expectRejection(peer.call)
      assert.strictEqual(peer.ran(), 0)
      assert.strictEqual(c.state, "HalfOpen")
      // A's lease: probeTimeout defaults to the opening that preceded, 10 s from A's start.
      assert.strictEqual(Duration.toMillis(c.retryAfter), 10_000)
      const s = yield* halfOpenState
      assert.deepStrictEqual(
        { probesInFlight: s.probesInFlight, successes: s.successes, opening: s.opening, reason: s.reason },
        { probesInFlight: 2, successes: 0, opening: 1, reason: "consecutive" }
      )
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "api" }), 2)
    }).pipe(provideSet(rowOptions)))
})

describe("H2: a success frees a slot while successes + in flight stay below successThreshold", () => {
  it.effect("A succeeds at 10.5 s: successes 1; D is admitted (1 + 1 < 3); E is rejected (1 + 2 = 3)", () =>
    Effect.gen(function*() {
      yield* h2
      const s = yield* halfOpenState
      assert.deepStrictEqual({ probesInFlight: s.probesInFlight, successes: s.successes }, {
        probesInFlight: 2,
        successes: 1
      })
      const peer = counter()
      const e = yield* expectRejection(peer.call)
      assert.strictEqual(peer.ran(), 0)
      assert.strictEqual(e.state, "HalfOpen")
      // The oldest probe in flight is B, whose lease ends at 20 s.
      assert.strictEqual(Duration.toMillis(e.retryAfter), 9_500)
    }).pipe(provideSet(rowOptions)))
})

describe("H3: successThreshold successes close the circuit", () => {
  it.effect("B and D succeed: Closed with empty policy state, reported once as probe-succeeded", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 3)
      const { b, d } = yield* h2
      yield* TestClock.adjust("500 millis")
      assert.deepStrictEqual(yield* b.succeed, Exit.succeed("ok"))
      const between = yield* halfOpenState
      assert.deepStrictEqual({ probesInFlight: between.probesInFlight, successes: between.successes }, {
        probesInFlight: 1,
        successes: 2
      })
      assert.deepStrictEqual(yield* d.succeed, Exit.succeed("ok"))
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
      const seen = yield* Fiber.join(changes)
      assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason, c.opening]), [
        ["Closed", "Open", "consecutive", 1],
        ["Open", "HalfOpen", "probe", 1],
        ["HalfOpen", "Closed", "probe-succeeded", 0]
      ])
      // Closed for good: calls run again.
      const peer = counter()
      assert.strictEqual(yield* peer.call, 1)
    }).pipe(provideSet(rowOptions)))
})

describe("H4: any probe failure reopens at once", () => {
  it.effect("B fails at 10.6 s: Open as opening 2 (probe-failed); D's later success decides nothing", () =>
    Effect.gen(function*() {
      const { b, d } = yield* h2
      yield* TestClock.adjust("100 millis")
      const bExit = yield* b.fail
      assert.isTrue(Exit.isFailure(bExit) && !isRejection(bExit), "B's caller gets B's own failure")
      const reopened = yield* openState
      assert.deepStrictEqual(
        {
          opening: reopened.opening,
          reason: reopened.reason,
          openedAt: reopened.openedAt,
          retryAfter: Duration.toMillis(reopened.retryAfter)
        },
        { opening: 2, reason: "probe-failed", openedAt: 10_600, retryAfter: 10_000 }
      )
      yield* TestClock.adjust("400 millis")
      // D still runs to its end and its caller gets its result, but it no longer holds a slot.
      assert.deepStrictEqual(yield* d.succeed, Exit.succeed("ok"))
      const after = yield* openState
      assert.deepStrictEqual(
        { opening: after.opening, openedAt: after.openedAt, retryAfter: Duration.toMillis(after.retryAfter) },
        { opening: 2, openedAt: 10_600, retryAfter: 9_600 }
      )
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, {
          peer: "api",
          from: "HalfOpen",
          to: "Closed",
          reason: "probe-succeeded"
        }),
        0
      )
    }).pipe(provideSet(rowOptions)))
})

describe("H5: a probe whose own effect is interrupted frees its slot and decides nothing", () => {
  it.effect("D interrupted: successes stay 1, one probe in flight, and the next call is a probe", () =>
    Effect.gen(function*() {
      const { d } = yield* h2
      const peer = counter()
      yield* expectRejection(peer.call) // 1 success + 2 in flight: no slot
      const dExit = yield* d.interrupt
      assert.isTrue(Exit.hasInterrupts(dExit))
      const s = yield* halfOpenState
      assert.deepStrictEqual({ probesInFlight: s.probesInFlight, successes: s.successes }, {
        probesInFlight: 1,
        successes: 1
      })
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "ignored" }), 1)
      yield* admitted // the freed slot: a defect if this call were rejected
      const again = yield* halfOpenState
      assert.strictEqual(again.probesInFlight, 2)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "api" }), 4)
    }).pipe(provideSet(rowOptions)))

  it.effect("by contrast, a probe whose caller is interrupted keeps its slot, runs on detached and its success counts", () =>
    Effect.gen(function*() {
      const { a } = yield* h1
      const interrupted = yield* Fiber.interrupt(a.caller).pipe(Effect.andThen(Fiber.await(a.caller)))
      assert.isTrue(Exit.hasInterrupts(interrupted))
      const peer = counter()
      yield* expectRejection(peer.call) // A still holds its slot
      assert.strictEqual((yield* halfOpenState).probesInFlight, 2)
      yield* TestClock.adjust("500 millis")
      yield* a.succeed
      yield* settle
      const s = yield* halfOpenState
      assert.deepStrictEqual({ probesInFlight: s.probesInFlight, successes: s.successes }, {
        probesInFlight: 1,
        successes: 1
      })
    }).pipe(provideSet(rowOptions)))
})

describe("H6 (replaced by the issue): a probe still running at its lease's end is a failed probe", () => {
  it.effect("probes 1: a call at 19.999 s is rejected (retryAfter 1 ms); at 20 s the circuit reopens as opening 2 (probe-timeout) and the probe is interrupted", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 3)
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      let interruptedAt: number | undefined
      const hung = Effect.never.pipe(
        Effect.onInterrupt(() =>
          Effect.clockWith((clock) => Effect.sync(() => (interruptedAt = clock.currentTimeMillisUnsafe())))
        )
      )
      const caller = yield* forkAdmitted(hung, withBreaker("api"))
      yield* TestClock.adjust("9999 millis")
      const peer = counter()
      const early = yield* expectRejection(peer.call)
      assert.strictEqual(early.state, "HalfOpen")
      assert.strictEqual(Duration.toMillis(early.retryAfter), 1)
      assert.isUndefined(interruptedAt)

      yield* TestClock.adjust("1 millis")
      assert.strictEqual(interruptedAt, 20_000)
      const error = yield* expectRejection(Fiber.join(caller))
      assert.strictEqual(error.state, "Open")
      assert.strictEqual(Duration.toMillis(error.retryAfter), 10_000)
      const reopened = yield* openState
      assert.deepStrictEqual(
        { opening: reopened.opening, reason: reopened.reason, openedAt: reopened.openedAt },
        { opening: 2, reason: "probe-timeout", openedAt: 20_000 }
      )
      // At 20 s the call is not a new probe: the circuit is open again for a full opening.
      const at20 = yield* expectRejection(peer.call)
      assert.strictEqual(at20.state, "Open")
      assert.strictEqual(peer.ran(), 0)
      const seen = yield* Fiber.join(changes)
      assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason, c.opening]), [
        ["Closed", "Open", "consecutive", 1],
        ["Open", "HalfOpen", "probe", 1],
        ["HalfOpen", "Open", "probe-timeout", 2]
      ])
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "failure" }), 2)
    }).pipe(provideSet({ policy: Policy.consecutive(1), openDuration: "10 seconds" })))

  it.effect("an uninterruptible hung probe's late success is ignored: the circuit stays open from the lease's end", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      const caller = yield* forkAdmitted(Effect.uninterruptible(Effect.sleep("15 seconds")), withBreaker("api"))
      yield* TestClock.adjust("10 seconds")
      yield* expectRejection(Fiber.join(caller))
      yield* TestClock.adjust("5 seconds") // the probe's effect ends at 25 s
      yield* settle
      const s = yield* openState
      assert.deepStrictEqual({ opening: s.opening, reason: s.reason, openedAt: s.openedAt }, {
        opening: 2,
        reason: "probe-timeout",
        openedAt: 20_000
      })
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "success" }), 0)
    }).pipe(provideSet({ policy: Policy.consecutive(1), openDuration: "10 seconds" })))

  it.effect("probes 2: the oldest probe's lease ends while another runs: opening 2 (probe-timeout); the other's success decides nothing", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      const a = yield* forkAdmitted(Effect.never, withBreaker("api"))
      yield* TestClock.adjust("500 millis")
      const b = yield* admitted
      yield* TestClock.adjust("9500 millis") // A's lease ends at 20 s
      yield* expectRejection(Fiber.join(a))
      const reopened = yield* openState
      assert.deepStrictEqual({ opening: reopened.opening, reason: reopened.reason, openedAt: reopened.openedAt }, {
        opening: 2,
        reason: "probe-timeout",
        openedAt: 20_000
      })
      yield* TestClock.adjust("100 millis")
      yield* b.succeed
      const after = yield* openState
      assert.deepStrictEqual({ opening: after.opening, openedAt: after.openedAt }, { opening: 2, openedAt: 20_000 })
    }).pipe(provideSet(rowOptions)))
})

describe("H7: probe slots that could never be needed are a config error", () => {
  const cases = [
    { halfOpen: { probes: 3, successThreshold: 2 }, field: "halfOpen.probes" },
    { halfOpen: { probes: 0 }, field: "halfOpen.probes" }
  ] as const
  for (const { field, halfOpen } of cases) {
    it.effect(`${JSON.stringify(halfOpen)}: ${field}`, () =>
      Effect.gen(function*() {
        const fromLayer = yield* Effect.flip(Layer.build(CircuitBreakerSet.layer({ ...rowOptions, halfOpen })))
        assert.strictEqual(fromLayer._tag, "CircuitBreakerConfigError")
        assert.deepStrictEqual(fromLayer.fields, [field])
        assert.include(fromLayer.message, `${field}:`)
        const fromMake = yield* Effect.flip(CircuitBreaker.make({ ...rowOptions, halfOpen }))
        assert.deepStrictEqual(fromMake.fields, [field])
      }))
  }
})

describe("H8: one slot, three successes", () => {
  it.effect("three sequential successful probes close the circuit; a call while one is in flight is rejected", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 3)
      const peer = counter()
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      for (let i = 1; i <= 3; i++) {
        const probe = yield* admitted
        const rejected = yield* expectRejection(peer.call)
        assert.strictEqual(rejected.state, "HalfOpen")
        yield* TestClock.adjust("100 millis")
        assert.deepStrictEqual(yield* probe.succeed, Exit.succeed("ok"))
        const s = yield* state("api")
        if (i < 3) {
          assert.deepStrictEqual(
            s._tag === "HalfOpen" ? { successes: s.successes, probesInFlight: s.probesInFlight } : s,
            { successes: i, probesInFlight: 0 }
          )
        } else {
          assert.deepStrictEqual(s, { _tag: "Closed", failures: 0 })
        }
      }
      assert.strictEqual(peer.ran(), 0)
      const seen = yield* Fiber.join(changes)
      assert.deepStrictEqual(Array.from(seen, (c) => c.reason), ["consecutive", "probe", "probe-succeeded"])
    }).pipe(provideSet({
      policy: Policy.consecutive(1),
      openDuration: "10 seconds",
      halfOpen: { probes: 1, successThreshold: 3 }
    })))
})

describe("10,000 concurrent callers at half-open", () => {
  for (const k of [1, 5]) {
    it.effect(`probes: ${k} admits exactly ${k}; their successes close the circuit`, () =>
      Effect.gen(function*() {
        yield* Effect.exit(failing.pipe(withBreaker("api")))
        yield* TestClock.adjust("10 seconds")
        const callers = 10_000
        const gate = yield* Deferred.make<void>()
        // Every caller reports once it is decided: an admitted one when its effect starts, a rejected one on its exit.
        const decided = yield* makeCountdown(callers)
        let ran = 0
        const call = Effect.suspend(() => {
          ran++
          return Effect.andThen(decided.arrive, Deferred.await(gate))
        }).pipe(withBreaker("api"))
        const all = yield* Effect.forkChild(
          Effect.forEach(
            Array.from({ length: callers }),
            () => Effect.exit(call).pipe(Effect.tap((exit) => isRejection(exit) ? decided.arrive : Effect.void)),
            { concurrency: "unbounded" }
          )
        )
        yield* decided.allArrived
        assert.strictEqual(ran, k)
        const s = yield* halfOpenState
        assert.strictEqual(s.probesInFlight, k)
        assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "api" }), k)
        assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "rejected" }), callers - k)
        yield* Deferred.succeed(gate, undefined)
        const exits = yield* Fiber.join(all)
        assert.strictEqual(exits.filter(Exit.isSuccess).length, k)
        assert.strictEqual(exits.filter(isRejection).length, callers - k)
        assert.strictEqual(ran, k)
        assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
      }).pipe(provideSet({
        policy: Policy.consecutive(1),
        openDuration: "10 seconds",
        halfOpen: { probes: k, successThreshold: k }
      })))
  }
})
