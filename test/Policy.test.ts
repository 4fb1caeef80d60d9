/**
 * Trip policies (issue 10; the rows of policies.md §4.1–§4.6), each through the public API on `TestClock`, plus, for
 * every policy: 10,000 concurrent failures open the circuit exactly once, and a wall clock stepped by an hour changes
 * no bucket, window or opening.
 *
 * Time: `TestClock` starts at 0 on both clocks. `TestClock.adjust` moves the wall and the monotonic clock together.
 * `TestClock.setTime` moves the wall clock to the given time; the monotonic clock follows it only forward (a step back
 * leaves it where it was, a step forward advances it by the step, as `adjust` does). So a backward step is taken with
 * `setTime`, and a forward step of the wall clock alone (what an NTP step does to a real machine) with a `Clock`
 * whose wall time is shifted and whose monotonic time is the test clock's.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Fiber, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import {
  CircuitBreakerConfigError,
  CircuitBreakerMetrics,
  CircuitBreakerSet,
  CircuitOpenError,
  type CircuitState,
  type CircuitStateChange,
  Policy,
  type SetOptions,
  withBreaker
} from "../src/index.ts"
import {
  type CapturedLog,
  captureLogs,
  count,
  failing,
  forkAdmitted,
  makeCountdown,
  NotFound,
  provideSet,
  repeat,
  state
} from "./utils.ts"

const hour = 3_600_000

// ---- the set under test ----

/**
 * A set with `options`, keeping idle breakers for a day so that a row about a quiet period exercises the policy's own
 * forgetting, not the set dropping an idle breaker.
 */
const withSet = (options: SetOptions) => provideSet({ idleTimeToLive: "1 day", ...options })

/** The `CircuitBreakerConfigError` that building a set with `options` fails with. */
const buildError = (options: unknown) => Effect.flip(Layer.build(CircuitBreakerSet.layer(options as SetOptions)))

/** Asserts that building a set with `options` fails with a config error naming exactly `fields`. */
const assertConfigError = (options: unknown, fields: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const error = yield* buildError(options)
    assert.instanceOf(error, CircuitBreakerConfigError)
    assert.strictEqual(error._tag, "CircuitBreakerConfigError")
    assert.deepStrictEqual(error.fields, fields, `fields of ${error.message}`)
    for (const field of fields) assert.include(error.message, `${field}:`)
  })

// ---- calls ----

/** F: a call failing at once with a counted typed error. */
const F = (peer = "p") => Effect.exit(failing.pipe(withBreaker(peer)))
/** S: a call succeeding at once. */
const S = (peer = "p") => Effect.exit(Effect.succeed("ok").pipe(withBreaker(peer)))
/** N: a typed failure that `isFailure` rejects (with `countBoomOnly`). */
const N = (peer = "p") => Effect.exit(Effect.fail(new NotFound()).pipe(withBreaker(peer)))
/** I: a call whose own effect ends in interruption alone. */
const I = (peer = "p") => Effect.exit(Effect.interrupt.pipe(withBreaker(peer)))

const countBoomOnly = { isFailure: (error: unknown) => !(error instanceof NotFound) }

/**
 * A call that runs for `millis` inside the breaker (an `Effect.sleep`), then ends with `end`: forked, the clock
 * adjusted by `millis`, joined.
 */
const timed = <A, E>(peer: string, millis: number, end: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const fiber = yield* forkAdmitted(
      Effect.andThen(Effect.sleep(Duration.millis(millis)), end),
      (self) => Effect.exit(self.pipe(withBreaker(peer)))
    )
    yield* TestClock.adjust(Duration.millis(millis))
    return yield* Fiber.join(fiber)
  })

/** A successful call of `millis` milliseconds. */
const slowS = (millis: number, peer = "p") => timed(peer, millis, Effect.succeed("ok"))

// ---- time ----

/** The monotonic clock, in milliseconds: the time base of every duration the breakers measure. */
const monotonicNow = Effect.clockWith((clock) => Effect.succeed(Number(clock.monotonicTimeNanosUnsafe()) / 1e6))

/** Advances the test clock to monotonic time `millis` (nothing if it is already there or past it). */
const advanceTo = (millis: number) =>
  Effect.flatMap(monotonicNow, (now) => millis > now ? TestClock.adjust(Duration.millis(millis - now)) : Effect.void)

// ---- states ----

/** Asserts that `peer`'s circuit is open, opened by `reason` as opening `opening`, for `retryAfterMillis` more. */
const assertOpen = (peer: string, reason: string, opening: number, retryAfterMillis?: number) =>
  Effect.gen(function*() {
    const current = yield* state(peer)
    assert.strictEqual(current._tag, "Open", `${peer}: expected Open, got ${JSON.stringify(current)}`)
    if (current._tag !== "Open") return
    assert.strictEqual(current.reason, reason)
    assert.strictEqual(current.opening, opening)
    assert.isFalse(current.isolated)
    if (retryAfterMillis !== undefined) assert.strictEqual(Duration.toMillis(current.retryAfter), retryAfterMillis)
  })

const assertState = (peer: string, expected: CircuitState.CircuitState) =>
  Effect.map(state(peer), (current) => assert.deepStrictEqual(current, expected))

const closed = (failures: number, calls?: number, slowCalls?: number): CircuitState.CircuitState => ({
  _tag: "Closed",
  failures,
  ...(calls === undefined ? {} : { calls }),
  ...(slowCalls === undefined ? {} : { slowCalls })
})

// ---- the policies of the rows ----

const window3 = Policy.window({ maxFailures: 3, window: "60 seconds" })
/** §4.3: w = 6 s. */
const rateTime = Policy.rate({ threshold: 0.5, minimumCalls: 10, window: "60 seconds", buckets: 10 })
/** §4.4. */
const rateCount = Policy.rate({ threshold: 0.5, minimumCalls: 4, calls: 10 })
/** §4.5. */
const slow = Policy.slowCalls({ duration: "2 seconds", threshold: 0.5, minimumCalls: 4, window: "60 seconds" })

// =====================================================================================================================

describe("§4.1 window (the default)", () => {
  it.effect("W1: window(3, 60 s): F@0, F@1s, F@2s stay Closed; F@3s opens it, reason window", () =>
    Effect.gen(function*() {
      yield* F()
      yield* advanceTo(1_000)
      yield* F()
      yield* advanceTo(2_000)
      yield* F()
      yield* assertState("p", closed(3))
      yield* advanceTo(3_000)
      yield* F()
      yield* assertState("p", {
        _tag: "Open",
        openedAt: 3_000,
        probeAt: 13_000,
        retryAfter: Duration.seconds(10),
        isolated: false,
        opening: 1,
        reason: "window"
      })
    }).pipe(withSet({ policy: window3 })))

  it.effect("W2: F@0, F@20s, F@40s, F@60s stay Closed (the failure at 0 is out); with the last F@59.999s → Open", () =>
    Effect.gen(function*() {
      for (const t of [0, 20_000, 40_000]) {
        yield* advanceTo(t)
        yield* F("p")
        yield* F("q")
      }
      yield* advanceTo(59_999)
      yield* F("q")
      yield* assertOpen("q", "window", 1)
      yield* advanceTo(60_000)
      yield* F("p")
      yield* assertState("p", closed(3))
    }).pipe(withSet({ policy: window3 })))

  it.effect("W3: window(0, 60 s): the first failure opens the circuit", () =>
    Effect.gen(function*() {
      yield* S()
      yield* assertState("p", closed(0))
      yield* F()
      yield* assertOpen("p", "window", 1, 10_000)
    }).pipe(withSet({ policy: Policy.window({ maxFailures: 0, window: "60 seconds" }) })))

  it.effect("W4: F, S, S, F, S, F, F within 10 s: Open at the 4th F (successes never remove failures)", () =>
    Effect.gen(function*() {
      const steps = [F, S, S, F, S, F]
      for (const step of steps) {
        yield* step()
        yield* TestClock.adjust("1 second")
      }
      yield* assertState("p", closed(3))
      yield* F()
      yield* assertOpen("p", "window", 1, 10_000)
    }).pipe(withSet({ policy: window3 })))

  it.effect("W5: 4 F → Open; probe S@10s → Closed; F@10.001s leaves it Closed with 1 failure (window empty)", () =>
    Effect.gen(function*() {
      // A call admitted before the trip and failing after the close belongs to the old closed period: not counted.
      const gate = yield* Deferred.make<void>()
      const late = yield* forkAdmitted(
        Effect.andThen(Deferred.await(gate), failing),
        (self) => Effect.exit(self.pipe(withBreaker("p")))
      )
      yield* repeat(failing.pipe(withBreaker("p")), 4)
      yield* assertOpen("p", "window", 1, 10_000)
      yield* advanceTo(10_000)
      assert.isTrue((yield* S())._tag === "Success")
      yield* assertState("p", closed(0))
      yield* Deferred.succeed(gate, undefined)
      assert.isTrue((yield* Fiber.join(late))._tag === "Failure")
      yield* assertState("p", closed(0))
      yield* advanceTo(10_001)
      yield* F()
      yield* assertState("p", closed(1))
    }).pipe(withSet({ policy: window3 })))
})

describe("§4.2 consecutive", () => {
  it.effect("C1: consecutive(3): F, F, S, F, F stay Closed; one more F → Open, reason consecutive", () =>
    Effect.gen(function*() {
      yield* F()
      yield* F()
      yield* S()
      yield* assertState("p", closed(0))
      yield* F()
      yield* F()
      yield* assertState("p", closed(2))
      yield* F()
      yield* assertOpen("p", "consecutive", 1, 10_000)
    }).pipe(withSet({ policy: Policy.consecutive(3) })))

  it.effect("C2: F, F, I, F: Open at the 3rd F (an interruption neither counts nor resets)", () =>
    Effect.gen(function*() {
      yield* F()
      yield* F()
      const interrupted = yield* I()
      assert.isTrue(interrupted._tag === "Failure")
      yield* assertState("p", closed(2))
      yield* F()
      yield* assertOpen("p", "consecutive", 1, 10_000)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "p", outcome: "ignored" }), 1)
    }).pipe(withSet({ policy: Policy.consecutive(3) })))

  it.effect("C3: F, F, N, F stay Closed (a failure isFailure rejects is an answer: it resets the streak)", () =>
    Effect.gen(function*() {
      yield* F()
      yield* F()
      yield* N()
      yield* assertState("p", closed(0))
      yield* F()
      yield* assertState("p", closed(1))
    }).pipe(withSet({ policy: Policy.consecutive(3), ...countBoomOnly })))

  it.effect("C4: F@0, F@1h, F@2h and no other call: Open at 2 h (no decay)", () =>
    Effect.gen(function*() {
      yield* F()
      yield* advanceTo(hour)
      yield* F()
      yield* assertState("p", closed(2))
      yield* advanceTo(2 * hour)
      yield* assertState("p", closed(2))
      yield* F()
      yield* assertOpen("p", "consecutive", 1, 10_000)
      // The set's default idle time to live: a breaker holding a streak is not idle, so it is never dropped.
    }).pipe(provideSet({ policy: Policy.consecutive(3) })))

  it.effect("C5: consecutive(0) (and other non-counts) fail the build naming policy.failures", () =>
    Effect.gen(function*() {
      for (const failures of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        yield* assertConfigError({ policy: Policy.consecutive(failures) }, ["policy.failures"])
      }
    }))
})

describe("§4.3 rate over a time window: rate({ threshold: 0.5, minimumCalls: 10, window: 60 s, buckets: 10 })", () => {
  it.effect("R1: F×9@0 stays Closed (9 < 10); F@0 → Open (10/10)", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 9)
      yield* assertState("p", closed(9, 9))
      yield* F()
      yield* assertState("p", {
        _tag: "Open",
        openedAt: 0,
        probeAt: 10_000,
        retryAfter: Duration.seconds(10),
        isolated: false,
        opening: 1,
        reason: "rate"
      })
    }).pipe(withSet({ policy: rateTime })))

  it.effect("R2: S×5@0, F×5@0: Open on the 10th call (5/10 = 0.5, inclusive)", () =>
    Effect.gen(function*() {
      yield* repeat(Effect.succeed(1).pipe(withBreaker("p")), 5)
      yield* repeat(failing.pipe(withBreaker("p")), 4)
      yield* assertState("p", closed(4, 9))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
    }).pipe(withSet({ policy: rateTime })))

  it.effect("R3: S×6, F×4, then S, F, F stay Closed (0.4, 4/11, 5/12, 6/13); the last F makes 7/14 → Open", () =>
    Effect.gen(function*() {
      yield* repeat(Effect.succeed(1).pipe(withBreaker("p")), 6)
      yield* repeat(failing.pipe(withBreaker("p")), 4)
      yield* assertState("p", closed(4, 10))
      yield* S()
      yield* assertState("p", closed(4, 11))
      yield* F()
      yield* assertState("p", closed(5, 12))
      yield* F()
      yield* assertState("p", closed(6, 13))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
      // A success never opens, even one that brings the window to minimumCalls at a ratio above the threshold.
      yield* repeat(failing.pipe(withBreaker("q")), 9)
      yield* S("q")
      yield* assertState("q", closed(9, 10))
      yield* F("q")
      yield* assertOpen("q", "rate", 1, 10_000)
    }).pipe(withSet({ policy: rateTime })))

  it.effect("R4: F×9@0, F@59.999s → Open (10/10 in buckets 0–9); with the last F@60s → Closed (bucket 0 cleared)", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 9)
      yield* repeat(failing.pipe(withBreaker("q")), 9)
      yield* advanceTo(59_999)
      yield* assertState("q", closed(9, 9))
      yield* F("p")
      yield* assertOpen("p", "rate", 1, 10_000)
      yield* advanceTo(60_000)
      yield* assertState("q", closed(0, 0))
      yield* F("q")
      yield* assertState("q", closed(1, 1))
    }).pipe(withSet({ policy: rateTime })))

  it.effect("R5: F×9@5.999s, F@60s → Closed: bucket 0 is forgotten 54.001 s after those failures", () =>
    Effect.gen(function*() {
      yield* advanceTo(5_999)
      yield* repeat(failing.pipe(withBreaker("p")), 9)
      // Control: the same failures 1 ms later fall into bucket 1, still inside the window at 60 s.
      yield* advanceTo(6_000)
      yield* repeat(failing.pipe(withBreaker("q")), 9)
      yield* advanceTo(59_999)
      yield* assertState("p", closed(9, 9))
      yield* advanceTo(60_000)
      yield* assertState("p", closed(0, 0))
      yield* F("p")
      yield* assertState("p", closed(1, 1))
      yield* F("q")
      yield* assertOpen("q", "rate", 1, 10_000)
    }).pipe(withSet({ policy: rateTime })))

  it.effect("R6: F×9@0, nothing for 300 s, F@300s → Closed (1 call in the window: no stale bucket)", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 9)
      // 300 s is 50 bucket widths: index 50 lands on bucket 0's slot again, which must have been cleared.
      yield* advanceTo(300_000)
      yield* assertState("p", closed(0, 0))
      yield* F()
      yield* assertState("p", closed(1, 1))
      // And 9 more at 300 s open it only with the 10th call of the new window.
      yield* repeat(failing.pipe(withBreaker("p")), 8)
      yield* assertState("p", closed(9, 9))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
    }).pipe(withSet({ policy: rateTime })))

  it.effect("R7: F×9@0, I×5@0, F@0: Open at the F (10 calls; interrupted calls are invisible)", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 9)
      yield* repeat(Effect.interrupt.pipe(withBreaker("p")), 5)
      yield* assertState("p", closed(9, 9))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
    }).pipe(withSet({ policy: rateTime })))

  it.effect("R8: threshold 0.07, minimumCalls 100: S×93@0, F×7@0 → Open on the 7th F (division form)", () =>
    Effect.gen(function*() {
      // 7 / 100 >= 0.07 holds; 7 >= 100 * 0.07 (= 7.000000000000001) does not.
      yield* repeat(Effect.succeed(1).pipe(withBreaker("p")), 93)
      yield* repeat(failing.pipe(withBreaker("p")), 6)
      yield* assertState("p", closed(6, 99))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
    }).pipe(
      withSet({ policy: Policy.rate({ threshold: 0.07, minimumCalls: 100, window: "60 seconds", buckets: 10 }) })
    ))

  it.effect("R9: threshold 0 / 1.5, buckets 0, window with calls, 5 ms cut into 10 buckets: each names its field", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [Policy.RateOptions, ReadonlyArray<string>]> = [
        [{ threshold: 0 }, ["policy.threshold"]],
        [{ threshold: 1.5 }, ["policy.threshold"]],
        [{ threshold: -0.5 }, ["policy.threshold"]],
        [{ threshold: Number.NaN }, ["policy.threshold"]],
        [{ buckets: 0 }, ["policy.buckets"]],
        [{ buckets: 2.5 }, ["policy.buckets"]],
        [{ buckets: 1_001 }, ["policy.buckets"]],
        [{ window: "60 seconds", calls: 10 }, ["policy.window"]],
        [{ window: "5 millis", buckets: 10 }, ["policy.buckets"]],
        [{ window: 0 }, ["policy.window"]],
        [{ window: Number.POSITIVE_INFINITY }, ["policy.window"]],
        [{ minimumCalls: 0 }, ["policy.minimumCalls"]],
        [{ minimumCalls: 2.5 }, ["policy.minimumCalls"]],
        [{ calls: 0 }, ["policy.calls"]]
      ]
      // Every case is built; the table of fields named is compared at once, so that one mismatch hides no other.
      const named: Array<readonly [string, ReadonlyArray<string>]> = []
      for (const [options, _] of cases) {
        const error = yield* buildError({ policy: Policy.rate(options) })
        assert.instanceOf(error, CircuitBreakerConfigError)
        for (const field of error.fields) assert.include(error.message, `${field}:`)
        named.push([JSON.stringify(options), error.fields])
      }
      assert.deepStrictEqual(named, cases.map(([options, fields]) => [JSON.stringify(options), fields]))
      // The edge that is valid: 10 ms cut into 10 buckets of 1 ms.
      yield* Layer.build(CircuitBreakerSet.layer({ policy: Policy.rate({ window: "10 millis", buckets: 10 }) }))
    }))
})

describe("§4.4 rate over a count window: rate({ threshold: 0.5, minimumCalls: 4, calls: 10 })", () => {
  it.effect("RC1: F, F, F, S stay Closed (a success never opens: 3/4); then F → 4/5 → Open", () =>
    Effect.gen(function*() {
      yield* F()
      yield* F()
      yield* F()
      yield* assertState("p", closed(3, 3))
      yield* S()
      yield* assertState("p", closed(3, 4))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
    }).pipe(withSet({ policy: rateCount })))

  it.effect("RC2: S×10, then F×4 stay Closed (4/10); the 5th F (ring: 5 S + 5 F) → Open", () =>
    Effect.gen(function*() {
      yield* repeat(Effect.succeed(1).pipe(withBreaker("p")), 10)
      yield* assertState("p", closed(0, 10))
      yield* repeat(failing.pipe(withBreaker("p")), 4)
      yield* assertState("p", closed(4, 10))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
    }).pipe(withSet({ policy: rateCount })))

  it.effect("RC3: F×3@0, F@24h → Open at 24 h (count windows do not age)", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 3)
      yield* advanceTo(24 * hour)
      yield* assertState("p", closed(3, 3))
      yield* F()
      yield* assertOpen("p", "rate", 1, 10_000)
      // The set's default idle time to live: a count window holding failures is not idle, so it is never dropped.
    }).pipe(provideSet({ policy: rateCount })))

  it.effect("RC4: { calls: 10, minimumCalls: 11 } is a config error naming policy.minimumCalls (nothing clamped)", () =>
    Effect.gen(function*() {
      yield* assertConfigError({ policy: Policy.rate({ calls: 10, minimumCalls: 11 }) }, ["policy.minimumCalls"])
      yield* assertConfigError(
        { policy: Policy.slowCalls({ duration: "1 second", calls: 10, minimumCalls: 11 }) },
        ["policy.minimumCalls"]
      )
      // The edge that is valid: minimumCalls = calls.
      yield* Layer.build(CircuitBreakerSet.layer({ policy: Policy.rate({ calls: 10, minimumCalls: 10 }) }))
    }))
})

describe("§4.5 slowCalls({ duration: 2 s, threshold: 0.5, minimumCalls: 4, window: 60 s })", () => {
  it.effect("SC1: 3 calls of 100 ms, then 3 of exactly 2 s: 1/4, 2/5 Closed; the 6th (a success) → 3/6 → Open", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 3; i++) assert.isTrue((yield* slowS(100))._tag === "Success")
      yield* assertState("p", closed(0, 3, 0))
      yield* slowS(2_000)
      yield* assertState("p", closed(0, 4, 1))
      yield* slowS(2_000)
      yield* assertState("p", closed(0, 5, 2))
      const sixth = yield* slowS(2_000)
      // The call itself succeeded (it was admitted while closed); the circuit opened after it.
      assert.isTrue(sixth._tag === "Success")
      yield* assertOpen("p", "slow-calls", 1, 10_000)
    }).pipe(withSet({ policy: slow })))

  it.effect("SC2: a call of 1.999 s is not slow (one of 2 s is)", () =>
    Effect.gen(function*() {
      yield* slowS(1_999)
      yield* assertState("p", closed(0, 1, 0))
      yield* slowS(2_000)
      yield* assertState("p", closed(0, 2, 1))
    }).pipe(withSet({ policy: slow })))

  it.effect("SC3: a call interrupted by an outer Effect.timeout(10 s) is ignored: neither slow nor counted", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.forkChild(
        Effect.exit(Effect.sleep("1 minute").pipe(withBreaker("p"), Effect.timeout("10 seconds"))),
        { startImmediately: true }
      )
      yield* TestClock.adjust("10 seconds")
      const exit = yield* Fiber.join(fiber)
      assert.isTrue(exit._tag === "Failure")
      yield* assertState("p", closed(0, 0, 0))
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "p", outcome: "ignored" }), 1)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "p", outcome: "failure" }), 0)
      // Three slow calls after it make 3/3 < minimumCalls: had the interrupted one counted (slow), 4/4 would open.
      for (let i = 0; i < 3; i++) yield* slowS(2_000)
      yield* assertState("p", closed(0, 3, 3))
    }).pipe(withSet({ policy: slow })))

  it.effect("SC4: a call failing by an inner Effect.timeout(3 s) is a counted failure and slow", () =>
    Effect.gen(function*() {
      // A hung call, cut by a timeout inside the breaker: it ends as a typed failure after 3 s.
      const fiber = yield* forkAdmitted(
        Effect.never.pipe(Effect.timeout("3 seconds")),
        (self) => Effect.exit(self.pipe(withBreaker("p")))
      )
      yield* TestClock.adjust("3 seconds")
      const ended = yield* Fiber.join(fiber)
      assert.isTrue(ended._tag === "Failure" && ended.cause.reasons.some((reason) => reason._tag === "Fail"))
      yield* assertState("p", closed(0, 1, 1))
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "p", outcome: "failure" }), 1)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "p", outcome: "ignored" }), 0)
    }).pipe(withSet({ policy: slow })))

  it.effect("SC5: any(window(3, 60 s), slowCalls): a half-open probe that succeeds in 2.5 s fails → Open (opening 2)", () =>
    Effect.gen(function*() {
      for (const peer of ["p", "q"]) yield* repeat(failing.pipe(withBreaker(peer)), 4)
      yield* assertOpen("p", "window", 1, 10_000)
      yield* assertOpen("q", "window", 1, 10_000)
      yield* advanceTo(10_000)
      // Control: a probe of 1.999 s is not slow, and closes q.
      const fast = yield* slowS(1_999, "q")
      assert.isTrue(fast._tag === "Success")
      yield* assertState("q", closed(0, 0, 0))
      // p's probe starts at 11.999 s and succeeds at 14.499 s, 2.5 s later: slow, so a failed probe.
      const probe = yield* slowS(2_500, "p")
      assert.isTrue(probe._tag === "Success")
      yield* assertState("p", {
        _tag: "Open",
        openedAt: 14_499,
        probeAt: 24_499,
        retryAfter: Duration.seconds(10),
        isolated: false,
        opening: 2,
        reason: "probe-failed"
      })
      const reopened = { peer: "p", from: "HalfOpen", to: "Open", reason: "probe-failed" }
      assert.strictEqual(yield* count(CircuitBreakerMetrics.transitions, reopened), 1)
    }).pipe(withSet({ policy: Policy.any(window3, slow) })))
})

describe("§4.6 any", () => {
  it.effect("A1: any(rate({ minimumCalls: 20 }), consecutive(5)): F every 60 s → Open at 240 s, reason consecutive", () =>
    Effect.gen(function*() {
      for (const t of [0, 60_000, 120_000, 180_000]) {
        yield* advanceTo(t)
        yield* F()
        // The figures come from the first member that keeps them (the rate): one failure in its window.
        yield* assertState("p", closed(1, 1))
      }
      yield* advanceTo(240_000)
      yield* F()
      yield* assertOpen("p", "consecutive", 1, 10_000)
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, {
          peer: "p",
          from: "Closed",
          to: "Open",
          reason: "consecutive"
        }),
        1
      )
    }).pipe(withSet({ policy: Policy.any(Policy.rate({ minimumCalls: 20 }), Policy.consecutive(5)) })))

  it.effect("A2: any(consecutive(5), window(3, 60 s)): F×4@0 → Open at the 4th F, reason window", () =>
    Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("p")), 3)
      yield* assertState("p", closed(3))
      yield* F()
      yield* assertOpen("p", "window", 1, 10_000)
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, { peer: "p", from: "Closed", to: "Open", reason: "window" }),
        1
      )
      // When two members trip on the same failure, the reason is the first in declaration order.
      const firstTripping = (policy: Policy.Policy, reason: string) =>
        Effect.gen(function*() {
          yield* repeat(failing.pipe(withBreaker("r")), 4)
          yield* assertOpen("r", reason, 1, 10_000)
        }).pipe(withSet({ policy }))
      yield* firstTripping(Policy.any(Policy.consecutive(4), window3), "consecutive")
      yield* firstTripping(Policy.any(window3, Policy.consecutive(4)), "window")
    }).pipe(withSet({ policy: Policy.any(Policy.consecutive(5), window3) })))

  it.effect("A3: any() with no member is a config error naming policy.members", () =>
    Effect.gen(function*() {
      // Built with no argument (JavaScript callers, or a spread of an empty array).
      const none = (Policy.any as (...members: ReadonlyArray<Policy.Policy>) => Policy.Policy)()
      const error = yield* buildError({ policy: none })
      assert.instanceOf(error, CircuitBreakerConfigError)
      assert.strictEqual(error.fields.length, 1)
      assert.isTrue(error.fields[0]!.startsWith("policy.members"), error.message)
      assert.include(error.message, "policy.members")
      // As plain data (decoded from JSON): an empty list of members.
      yield* assertConfigError({ policy: { _tag: "Any", members: [] } }, ["policy.members"])
      // A bad member is named by its index.
      yield* assertConfigError(
        { policy: Policy.any(Policy.consecutive(5), Policy.rate({ threshold: 2 })) },
        ["policy.members.1.threshold"]
      )
    }))
})

// =====================================================================================================================
// Requirements beyond the rows, for every policy.

interface Scenario {
  readonly name: string
  readonly policy: Policy.Policy
  /** The reason a trip of this policy reports. */
  readonly reason: string
  /** How long one bad call runs (a slow call's 2 s for `slowCalls`). */
  readonly badMillis: number
  /** One bad call: a counted failure, or a slow call for `slowCalls`. */
  readonly bad: (peer: string) => Effect.Effect<unknown, never, CircuitBreakerSet>
  /** Puts the circuit one bad call short of opening. */
  readonly prime: (peer: string) => Effect.Effect<unknown, never, CircuitBreakerSet>
  /** The state after `prime`. */
  readonly primed: CircuitState.CircuitState
  /** The state of a closed circuit with nothing counted. */
  readonly empty: CircuitState.CircuitState
  /** Whether what `prime` counted is forgotten 60 s later (time windows); `afterAging`: the state then plus one bad call. */
  readonly afterAging: CircuitState.CircuitState | undefined
}

const failN = (n: number) => (peer: string) => repeat(failing.pipe(withBreaker(peer)), n)

const scenarios: ReadonlyArray<Scenario> = [
  {
    name: "window(3, 60 s)",
    policy: window3,
    reason: "window",
    badMillis: 0,
    bad: F,
    prime: failN(3),
    primed: closed(3),
    empty: closed(0),
    afterAging: closed(1)
  },
  {
    name: "consecutive(3)",
    policy: Policy.consecutive(3),
    reason: "consecutive",
    badMillis: 0,
    bad: F,
    prime: failN(2),
    primed: closed(2),
    empty: closed(0),
    afterAging: undefined
  },
  {
    name: "rate over a time window",
    policy: rateTime,
    reason: "rate",
    badMillis: 0,
    bad: F,
    prime: failN(9),
    primed: closed(9, 9),
    empty: closed(0, 0),
    afterAging: closed(1, 1)
  },
  {
    name: "rate over a count window",
    policy: rateCount,
    reason: "rate",
    badMillis: 0,
    bad: F,
    prime: failN(3),
    primed: closed(3, 3),
    empty: closed(0, 0),
    afterAging: undefined
  },
  {
    name: "slowCalls",
    policy: slow,
    reason: "slow-calls",
    badMillis: 2_000,
    bad: (peer) => slowS(2_000, peer),
    // fast, slow, fast: 1 slow of 3 calls; one more slow call makes 2/4.
    prime: (peer) => Effect.all([S(peer), slowS(2_000, peer), S(peer)]),
    primed: closed(0, 3, 1),
    empty: closed(0, 0, 0),
    afterAging: closed(0, 1, 1)
  },
  {
    name: "any(rate({ minimumCalls: 20 }), consecutive(5))",
    policy: Policy.any(Policy.rate({ minimumCalls: 20 }), Policy.consecutive(5)),
    reason: "consecutive",
    badMillis: 0,
    bad: F,
    prime: failN(4),
    primed: closed(4, 4),
    empty: closed(0, 0),
    afterAging: undefined
  }
]

describe("10,000 concurrent failing calls open the circuit exactly once, under every policy", () => {
  for (const scenario of scenarios) {
    it.effect(scenario.name, () => {
      const logs: Array<CapturedLog> = []
      return Effect.gen(function*() {
        const set = yield* CircuitBreakerSet
        const seen: Array<CircuitStateChange.CircuitStateChange> = []
        const watcher = yield* Effect.forkChild(
          Stream.runForEach(set.changes, (change) => Effect.sync(() => seen.push(change))),
          { startImmediately: true }
        )
        const callers = 10_000
        const gate = yield* Deferred.make<void>()
        const admitted = yield* makeCountdown(callers)
        // Every caller is admitted while closed, then all fail together (after 2 s, so slow, for slowCalls).
        const call = admitted.arrive.pipe(
          Effect.andThen(Deferred.await(gate)),
          Effect.andThen(Effect.sleep(Duration.millis(scenario.badMillis))),
          Effect.andThen(failing),
          withBreaker("p")
        )
        const fibers = yield* Effect.forEach(
          Array.from({ length: callers }),
          () => Effect.forkChild(Effect.exit(call))
        )
        yield* admitted.allArrived
        yield* Deferred.succeed(gate, undefined)
        if (scenario.badMillis > 0) yield* TestClock.adjust(Duration.millis(scenario.badMillis))
        yield* Effect.forEach(fibers, Fiber.join, { discard: true })
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow

        yield* assertOpen("p", scenario.reason, 1, 10_000)
        for (const reason of ["window", "consecutive", "rate", "slow-calls"]) {
          const opened = { peer: "p", from: "Closed", to: "Open", reason }
          assert.strictEqual(
            yield* count(CircuitBreakerMetrics.transitions, opened),
            reason === scenario.reason ? 1 : 0,
            `Closed -> Open transitions with reason ${reason}`
          )
        }
        assert.deepStrictEqual(
          seen.map((change) => [change.from, change.to, change.reason, change.opening]),
          [["Closed", "Open", scenario.reason, 1]]
        )
        assert.strictEqual(logs.filter((log) => log.message.startsWith("Circuit opened")).length, 1)
        // All of them ran (admitted while closed) and were counted as failures by the metrics.
        assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "p", outcome: "failure" }), callers)
        yield* Fiber.interrupt(watcher)
      }).pipe(withSet({ policy: scenario.policy }), Effect.provide(captureLogs(logs)))
    })
  }
})

/**
 * The test clock, with its wall clock shifted by `shift.millis` and its monotonic clock untouched: what a wall-clock
 * step (NTP, a VM resumed) does to a real machine. Sleeps and `TestClock.adjust` go to the test clock.
 */
const shiftedWallClock = (clock: Clock.Clock, shift: { millis: number }): Clock.Clock => ({
  ...clock,
  currentTimeMillisUnsafe: () => clock.currentTimeMillisUnsafe() + shift.millis,
  currentTimeMillis: Effect.sync(() => clock.currentTimeMillisUnsafe() + shift.millis),
  currentTimeNanosUnsafe: () => clock.currentTimeNanosUnsafe() + BigInt(shift.millis) * 1_000_000n,
  currentTimeNanos: Effect.sync(() => clock.currentTimeNanosUnsafe() + BigInt(shift.millis) * 1_000_000n)
})

/**
 * Runs `body` with a way to step the wall clock by an hour in `direction`, leaving the monotonic clock where it is:
 * back with `TestClock.setTime` (which never moves the monotonic clock back), forward with a shifted wall clock (a
 * forward `setTime` would advance the monotonic clock as well).
 */
const withWallSteps = <A, E, R>(
  direction: "back" | "forward",
  body: (step: Effect.Effect<void>) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.clockWith((clock) => {
    if (direction === "back") {
      const step = Effect.gen(function*() {
        const monotonicBefore = yield* monotonicNow
        const wall = yield* Clock.currentTimeMillis
        yield* TestClock.setTime(wall - hour)
        assert.strictEqual(yield* Clock.currentTimeMillis, wall - hour)
        // The premise of these tests: the monotonic clock did not move.
        assert.strictEqual(yield* monotonicNow, monotonicBefore)
      })
      return body(step)
    }
    const shift = { millis: 0 }
    const step = Effect.sync(() => {
      shift.millis += hour
    })
    return Effect.provideService(body(step), Clock.Clock, shiftedWallClock(clock, shift))
  })

describe("a wall clock stepped by an hour changes no bucket, window or opening, under every policy", () => {
  for (const direction of ["back", "forward"] as const) {
    for (const scenario of scenarios) {
      it.effect(`${scenario.name}: stepped ${direction}`, () =>
        withWallSteps(direction, (step) =>
          Effect.gen(function*() {
            // Two hours in, so that the wall clock can go back an hour (and back again) without going below 0.
            const t0 = 2 * hour
            yield* advanceTo(t0)
            yield* scenario.prime("p")
            yield* scenario.prime("q")
            yield* assertState("p", scenario.primed)
            yield* step
            // Nothing counted moved: not a bucket, not a failure time.
            yield* assertState("p", scenario.primed)
            yield* assertState("q", scenario.primed)
            let openedAt: number
            if (scenario.afterAging !== undefined) {
              // Still inside the window 59.999 s after the failures (monotonic), forgotten at 60 s.
              yield* advanceTo(t0 + 59_999 - scenario.badMillis)
              yield* scenario.bad("p")
              openedAt = yield* monotonicNow
              yield* assertOpen("p", scenario.reason, 1, 10_000)
              yield* advanceTo(t0 + 60_000 - scenario.badMillis)
              yield* scenario.bad("q")
              yield* assertState("q", scenario.afterAging)
            } else {
              // Nothing ages: an hour later (monotonic) one more bad call still opens it.
              yield* TestClock.adjust("1 hour")
              yield* scenario.bad("p")
              openedAt = yield* monotonicNow
              yield* assertOpen("p", scenario.reason, 1, 10_000)
            }
            // The opening is measured on the monotonic clock too: a step during it neither ends nor extends it.
            yield* advanceTo(openedAt + 4_000)
            yield* step
            yield* assertOpen("p", scenario.reason, 1, 6_000)
            const rejected = yield* Effect.exit(Effect.succeed("ok").pipe(withBreaker("p")))
            assert.isTrue(
              rejected._tag === "Failure" && rejected.cause.reasons.some((reason) =>
                reason._tag === "Fail" && reason.error instanceof CircuitOpenError &&
                Duration.toMillis(reason.error.retryAfter) === 6_000
              ),
              `expected a rejection with retryAfter 6 s, got ${String(rejected)}`
            )
            yield* TestClock.adjust(Duration.millis(5_999))
            yield* assertOpen("p", scenario.reason, 1, 1)
            yield* TestClock.adjust(Duration.millis(1))
            const halfOpen = yield* state("p")
            assert.isTrue(halfOpen._tag === "HalfOpen" && halfOpen.opening === 1, JSON.stringify(halfOpen))
            assert.isTrue((yield* S("p"))._tag === "Success")
            yield* assertState("p", scenario.empty)
          })).pipe(withSet({ policy: scenario.policy })))
    }
  }

  for (const direction of ["back", "forward"] as const) {
    it.effect(`a probe's lease is monotonic across a step ${direction}`, () =>
      withWallSteps(direction, (step) =>
        Effect.gen(function*() {
          yield* advanceTo(2 * hour)
          yield* Effect.exit(failing.pipe(withBreaker("p"))) // consecutive(1): opens for 10 s
          yield* TestClock.adjust("10 seconds")
          const gate = yield* Deferred.make<string>()
          const probe = yield* forkAdmitted(Deferred.await(gate), withBreaker("p"))
          yield* step
          // The lease (10 s, the opening before) runs on the monotonic clock: the step neither ends nor extends it.
          yield* TestClock.adjust(Duration.millis(9_999))
          const running = yield* state("p")
          assert.isTrue(running._tag === "HalfOpen" && running.probesInFlight === 1, JSON.stringify(running))
          yield* step
          yield* TestClock.adjust(Duration.millis(1))
          yield* assertOpen("p", "probe-timeout", 2, 10_000)
          if (direction === "forward") {
            // Sleeps follow the test clock here, so the probe's caller was released at the lease's end.
            const exit = yield* Fiber.await(probe)
            assert.isTrue(
              exit._tag === "Failure" &&
                exit.cause.reasons.some((reason) => reason._tag === "Fail" && reason.error instanceof CircuitOpenError),
              String(exit)
            )
          }
          // Late, its result decides nothing.
          yield* Deferred.succeed(gate, "late")
          yield* assertOpen("p", "probe-timeout", 2)
        })).pipe(withSet({ policy: Policy.consecutive(1) })))

    it.effect(`slowCalls: a call's duration is monotonic across a step ${direction}`, () =>
      withWallSteps(direction, (step) =>
        Effect.gen(function*() {
          yield* advanceTo(2 * hour)
          /** A call that runs `before` ms, sees the wall clock stepped, and runs `after` ms more. */
          const straddling = (before: number, after: number) =>
            Effect.gen(function*() {
              const gate = yield* Deferred.make<void>()
              const fiber = yield* forkAdmitted(
                Deferred.await(gate),
                (self) => Effect.exit(self.pipe(withBreaker("p")))
              )
              yield* TestClock.adjust(Duration.millis(before))
              yield* step
              yield* TestClock.adjust(Duration.millis(after))
              yield* Deferred.succeed(gate, undefined)
              return yield* Fiber.join(fiber)
            })
          // 2 s of monotonic time: slow, whatever the wall clock did meanwhile.
          yield* straddling(1_000, 1_000)
          yield* assertState("p", closed(0, 1, 1))
          // 1 s of monotonic time: not slow, whatever the wall clock did meanwhile.
          yield* straddling(500, 500)
          yield* assertState("p", closed(0, 2, 1))
        })).pipe(withSet({ policy: slow })))
  }

  it.effect("TestClock.setTime forward moves the monotonic clock too: the breaker follows the monotonic clock", () =>
    Effect.gen(function*() {
      // What TestClock does: a forward setTime advances both clocks (like adjust); a backward one only the wall clock.
      yield* F("p")
      yield* repeat(failing.pipe(withBreaker("open")), 4)
      yield* assertState("p", closed(1))
      yield* assertOpen("open", "window", 1, 10_000)
      yield* TestClock.setTime(hour)
      assert.strictEqual(yield* monotonicNow, hour)
      // An hour passed on the monotonic clock: the failure aged out, and the opening is over.
      yield* assertState("p", closed(0))
      const halfOpen = yield* state("open")
      assert.isTrue(halfOpen._tag === "HalfOpen" && halfOpen.opening === 1, JSON.stringify(halfOpen))
      yield* TestClock.setTime(0)
      assert.strictEqual(yield* monotonicNow, hour)
      assert.strictEqual(yield* Clock.currentTimeMillis, 0)
      const stillHalfOpen = yield* state("open")
      assert.isTrue(stillHalfOpen._tag === "HalfOpen", JSON.stringify(stillHalfOpen))
    }).pipe(withSet({ policy: window3 })))
})
