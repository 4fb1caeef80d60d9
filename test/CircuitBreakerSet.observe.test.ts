/**
 * Observe mode (`mode: "observe"`): a dry run. Every call runs; the state, `changes`, logs and metrics behave exactly
 * as if enforcing; a call that would have been rejected is counted once as `outcome="would_reject"` (never as a
 * success or a failure) and its result is ignored by the state machine; a probe still decides.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreaker, CircuitBreakerMetrics, CircuitBreakerSet, Policy, withBreaker } from "../src/index.ts"
import {
  Boom,
  type CapturedLog,
  captureLogs,
  collect,
  count,
  failing,
  forkAdmitted,
  gauge,
  isRejection,
  provideSet,
  state
} from "./utils.ts"

const observe = { mode: "observe", policy: Policy.consecutive(2), openDuration: "10 seconds" } as const

/** A peer whose calls count how often their effect ran. */
const peer = () => {
  let ran = 0
  return {
    succeed: Effect.sync(() => ++ran).pipe(Effect.as("ok"), withBreaker("api")),
    fail: Effect.sync(() => ++ran).pipe(Effect.andThen(failing), withBreaker("api")),
    ran: () => ran
  }
}

const outcomes = Effect.all({
  success: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "success" }),
  failure: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "failure" }),
  ignored: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "ignored" }),
  rejected: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "rejected" }),
  would_reject: count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "would_reject" })
})

const openState = Effect.map(state("api"), (s) => {
  assert.strictEqual(s._tag, "Open", `expected Open, got ${JSON.stringify(s)}`)
  const open = s as Extract<typeof s, { _tag: "Open" }>
  return {
    opening: open.opening,
    reason: open.reason,
    openedAt: open.openedAt,
    millis: Duration.toMillis(open.retryAfter)
  }
})

describe("observe mode: every call runs", () => {
  it.effect("while open, calls run and return their own results; they count as would_reject, never as success or failure", () =>
    Effect.gen(function*() {
      const api = peer()
      yield* Effect.exit(api.fail)
      yield* Effect.exit(api.fail)
      assert.deepStrictEqual(yield* openState, { opening: 1, reason: "consecutive", openedAt: 0, millis: 10_000 })
      assert.deepStrictEqual(yield* outcomes, { success: 0, failure: 2, ignored: 0, rejected: 0, would_reject: 0 })

      yield* TestClock.adjust("1 second")
      // Would-be rejections: a success that would close nothing, failures that would count nothing.
      assert.strictEqual(yield* api.succeed, "ok")
      const failed = yield* Effect.exit(api.fail)
      assert.isTrue(Exit.isFailure(failed) && !isRejection(failed), "the caller gets the call's own failure")
      yield* Effect.exit(api.fail)
      assert.strictEqual(api.ran(), 5)
      assert.deepStrictEqual(yield* outcomes, { success: 0, failure: 2, ignored: 0, rejected: 0, would_reject: 3 })
      // Their results did not touch the state: the same opening, the same deadline.
      assert.deepStrictEqual(yield* openState, { opening: 1, reason: "consecutive", openedAt: 0, millis: 9_000 })
      assert.strictEqual(yield* gauge({ peer: "api" }), 2)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "api" }), 0)
    }).pipe(provideSet(observe)))

  it.effect("the same calls under enforce: rejected, not run (the control for the row above)", () =>
    Effect.gen(function*() {
      const api = peer()
      yield* Effect.exit(api.fail)
      yield* Effect.exit(api.fail)
      yield* TestClock.adjust("1 second")
      assert.isTrue(isRejection(yield* Effect.exit(api.succeed)))
      assert.isTrue(isRejection(yield* Effect.exit(api.fail)))
      assert.strictEqual(api.ran(), 2)
      assert.deepStrictEqual(yield* outcomes, { success: 0, failure: 2, ignored: 0, rejected: 2, would_reject: 0 })
    }).pipe(provideSet({ ...observe, mode: "enforce" })))

  it.effect("while a probe runs, other calls run too, as would_reject, and decide nothing; the probe decides", () =>
    Effect.gen(function*() {
      const api = peer()
      yield* Effect.exit(api.fail)
      yield* Effect.exit(api.fail)
      yield* TestClock.adjust("10 seconds")
      const gate = yield* Deferred.make<string>()
      const probe = yield* forkAdmitted(Deferred.await(gate), withBreaker("api"))
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "api" }), 1)
      // A would-be rejection that fails: it would have reopened the circuit if it had been a probe.
      yield* Effect.exit(api.fail)
      assert.strictEqual(yield* api.succeed, "ok")
      const during = yield* state("api")
      assert.deepStrictEqual(
        during._tag === "HalfOpen" ? { probesInFlight: during.probesInFlight, successes: during.successes } : during,
        { probesInFlight: 1, successes: 0 }
      )
      assert.strictEqual((yield* outcomes).would_reject, 2)
      yield* Deferred.succeed(gate, "probed")
      assert.deepStrictEqual(yield* Fiber.await(probe), Exit.succeed("probed"))
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
      assert.deepStrictEqual(yield* outcomes, { success: 1, failure: 2, ignored: 0, rejected: 0, would_reject: 2 })
    }).pipe(provideSet(observe)))
})

describe("observe mode reports as if enforcing, every time", () => {
  it.effect("every would-be opening (trips and failed probes, again and again) is a change, a transition and a Warning log; closings log at Info", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 8)
      const api = peer()
      // Trip 1 at 0 s.
      yield* Effect.exit(api.fail)
      yield* Effect.exit(api.fail)
      // Every probe fails twice over: openings 2 and 3.
      for (let i = 0; i < 2; i++) {
        yield* TestClock.adjust("10 seconds")
        yield* Effect.exit(api.fail)
        yield* Effect.exit(api.fail) // a would-be rejection, right after the probe reopened the circuit
      }
      // The probe at 30 s succeeds: closed.
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* api.succeed, "ok")
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
      // Trip 2 at 30 s, a relapse within the last opening: opening 4.
      yield* Effect.exit(api.fail)
      yield* Effect.exit(api.fail)
      assert.deepStrictEqual(yield* openState, { opening: 4, reason: "consecutive", openedAt: 30_000, millis: 10_000 })
      yield* Effect.exit(api.fail)
      assert.strictEqual(api.ran(), 10)

      const seen = yield* Fiber.join(changes)
      assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason, c.opening]), [
        ["Closed", "Open", "consecutive", 1],
        ["Open", "HalfOpen", "probe", 1],
        ["HalfOpen", "Open", "probe-failed", 2],
        ["Open", "HalfOpen", "probe", 2],
        ["HalfOpen", "Open", "probe-failed", 3],
        ["Open", "HalfOpen", "probe", 3],
        ["HalfOpen", "Closed", "probe-succeeded", 0],
        ["Closed", "Open", "consecutive", 4]
      ])
      const transitions = (from: string, to: string, reason: string) =>
        count(CircuitBreakerMetrics.transitions, { peer: "api", from, to, reason })
      assert.strictEqual(yield* transitions("Closed", "Open", "consecutive"), 2)
      assert.strictEqual(yield* transitions("HalfOpen", "Open", "probe-failed"), 2)
      assert.strictEqual(yield* transitions("HalfOpen", "Closed", "probe-succeeded"), 1)
      assert.deepStrictEqual(yield* outcomes, { success: 1, failure: 6, ignored: 0, rejected: 0, would_reject: 3 })

      const openings = logs.filter((log) => /^Circuit (re-)?opened/.test(log.message))
      assert.strictEqual(openings.length, 4)
      for (const log of openings) {
        assert.strictEqual(log.level, "Warn")
        assert.include(log.message, "observe mode")
        assert.strictEqual(log.annotations.peer, "api")
      }
      const closings = logs.filter((log) => log.message.startsWith("Circuit closed"))
      assert.strictEqual(closings.length, 1)
      assert.strictEqual(closings[0]!.level, "Info")
    }).pipe(provideSet(observe), Effect.provide(captureLogs(logs)))
  })

  it.effect("a trip in observe mode resets the policy's counts: the next opening needs as many failures again", () =>
    Effect.gen(function*() {
      const api = peer()
      yield* Effect.exit(api.fail)
      yield* Effect.exit(api.fail)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* api.succeed, "ok") // the probe closes the circuit
      yield* TestClock.adjust("1 minute")
      yield* Effect.exit(api.fail)
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 1 })
      yield* Effect.exit(api.fail)
      assert.deepStrictEqual(yield* openState, { opening: 1, reason: "consecutive", openedAt: 70_000, millis: 10_000 })
    }).pipe(provideSet(observe)))
})

describe("observe mode: a probe still decides", () => {
  it.effect("a failing probe reopens the circuit as opening 2; its caller gets the call's own failure", () =>
    Effect.gen(function*() {
      const api = peer()
      yield* Effect.exit(api.fail)
      yield* Effect.exit(api.fail)
      yield* TestClock.adjust("10 seconds")
      const probed = yield* Effect.exit(api.fail)
      assert.isTrue(Exit.isFailure(probed) && !isRejection(probed))
      assert.deepStrictEqual(yield* openState, { opening: 2, reason: "probe-failed", openedAt: 10_000, millis: 10_000 })
      assert.deepStrictEqual(yield* outcomes, { success: 0, failure: 3, ignored: 0, rejected: 0, would_reject: 0 })
    }).pipe(provideSet(observe)))

  it.effect("a probe still running at its lease's end reopens the circuit (probe-timeout) but is not interrupted; its caller gets its result, which decides nothing", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      let interrupted = false
      const slow = Effect.sleep("15 seconds").pipe(
        Effect.as("late"),
        Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
      )
      const caller = yield* forkAdmitted(slow, withBreaker("api"))
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(yield* openState, {
        opening: 2,
        reason: "probe-timeout",
        openedAt: 20_000,
        millis: 10_000
      })
      assert.isFalse(interrupted)
      yield* TestClock.adjust("5 seconds")
      assert.deepStrictEqual(yield* Fiber.await(caller), Exit.succeed("late"))
      assert.isFalse(interrupted)
      assert.deepStrictEqual(yield* openState, { opening: 2, reason: "probe-timeout", openedAt: 20_000, millis: 5_000 })
      assert.deepStrictEqual(yield* outcomes, { success: 0, failure: 3, ignored: 0, rejected: 0, would_reject: 0 })
    }).pipe(provideSet(observe)))
})

describe("observe mode is an option of every breaker", () => {
  it.effect("a single CircuitBreaker in observe mode runs every call and reports its state as if enforcing", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ ...observe, name: "api" })
      assert.strictEqual(breaker.options.mode, "observe")
      let ran = 0
      const call = Effect.sync(() => ++ran).pipe(
        Effect.andThen(Effect.fail(new Boom())),
        CircuitBreaker.withBreaker(breaker)
      )
      for (let i = 0; i < 5; i++) yield* Effect.exit(call)
      assert.strictEqual(ran, 5)
      const s = yield* CircuitBreaker.state(breaker)
      assert.deepStrictEqual(s._tag === "Open" ? [s.opening, s.reason] : s, [1, "consecutive"])
    }))

  it.effect("the default is enforce", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.strictEqual(set.options.mode, "enforce")
    }).pipe(Effect.provide(CircuitBreakerSet.layer().pipe(Layer.orDie))))
})
