/**
 * Open durations and the opening number: rows O1–O9, O11, O12 of the policies note (§4.8) and the issue's
 * replacement of O10 (a probe still running at its lease's end reopens the circuit as the next opening).
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Layer, Metric, Random, Schedule } from "effect"
import { TestClock } from "effect/testing"
import {
  CircuitBreaker,
  CircuitBreakerMetrics,
  CircuitBreakerSet,
  type CircuitBreakerSetService,
  OpenDuration,
  Policy,
  type SetOptions,
  withBreaker
} from "../src/index.ts"
import {
  collect,
  count,
  expectRejection,
  failing,
  forkAdmitted,
  freshMetricRegistry,
  gauge,
  isRejection,
  makeCountdown,
  provideSet,
  state
} from "./utils.ts"

const exponential = OpenDuration.exponential({ base: "1 second", max: "30 seconds", jitter: false })

const rowOptions = { policy: Policy.consecutive(1), openDuration: exponential } as const

const fail = Effect.exit(failing.pipe(withBreaker("api")))

/** The circuit as it reads now, which must be open: its opening, reason, when it opened, and how long it has left. */
const openNow = Effect.map(state("api"), (s) => {
  assert.strictEqual(s._tag, "Open", `expected Open, got ${JSON.stringify(s)}`)
  const open = s as Extract<typeof s, { _tag: "Open" }>
  return {
    opening: open.opening,
    reason: open.reason,
    openedAt: open.openedAt,
    millis: Duration.toMillis(open.retryAfter)
  }
})

/**
 * From a circuit that has just opened, lets `openings` openings pass, each ended by a failing probe, and checks the
 * boundary of each: 1 ms before its end a call is rejected with `retryAfter` 1 ms, at its end a call is a probe.
 * Returns each opening as read when it began.
 */
const failEveryProbe = (openings: number) =>
  Effect.gen(function*() {
    const seen: Array<{ opening: number; reason: string; openedAt: number; millis: number }> = []
    for (let i = 0; i < openings; i++) {
      const open = yield* openNow
      seen.push(open)
      let ran = false
      yield* TestClock.adjust(open.millis - 1)
      const early = yield* expectRejection(Effect.sync(() => (ran = true)).pipe(withBreaker("api")))
      assert.strictEqual(Duration.toMillis(early.retryAfter), 1)
      assert.isFalse(ran)
      yield* TestClock.adjust(1)
      let probed = false
      yield* Effect.exit(
        Effect.suspend(() => {
          probed = true
          return failing
        }).pipe(withBreaker("api"))
      )
      assert.isTrue(probed, `opening ${open.opening}: the call at its end should have been the probe`)
    }
    return seen
  })

describe("O1: the first opening lasts the schedule's first delay", () => {
  it.effect("F@0: open until 1 s; a call at 999 ms is rejected with retryAfter 1 ms; the call at 1000 ms is the probe", () =>
    Effect.gen(function*() {
      yield* fail
      assert.deepStrictEqual(yield* openNow, { opening: 1, reason: "consecutive", openedAt: 0, millis: 1_000 })
      yield* TestClock.adjust("999 millis")
      const early = yield* expectRejection(Effect.succeed(1).pipe(withBreaker("api")))
      assert.strictEqual(early.state, "Open")
      assert.strictEqual(Duration.toMillis(early.retryAfter), 1)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Effect.succeed("probed").pipe(withBreaker("api")), "probed")
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet(rowOptions)))
})

describe("O2: every failed probe is the next opening, capped at max", () => {
  it.effect("open until 1, 3, 7, 15, 31 s (openings 1–5: 1, 2, 4, 8, 16 s), then 30 s each from opening 6", () =>
    Effect.gen(function*() {
      yield* fail
      const seen = yield* failEveryProbe(8)
      assert.deepStrictEqual(seen.map((o) => [o.opening, o.openedAt, o.millis]), [
        [1, 0, 1_000],
        [2, 1_000, 2_000],
        [3, 3_000, 4_000],
        [4, 7_000, 8_000],
        [5, 15_000, 16_000],
        [6, 31_000, 30_000],
        [7, 61_000, 30_000],
        [8, 91_000, 30_000]
      ])
      assert.deepStrictEqual(seen.slice(1).map((o) => o.reason), Array(7).fill("probe-failed"))
      assert.deepStrictEqual(yield* openNow, { opening: 9, reason: "probe-failed", openedAt: 121_000, millis: 30_000 })
      assert.strictEqual(yield* gauge({ peer: "api" }), 2)
      // The opening gauge follows the opening number.
      const opening = yield* Metric.value(Metric.withAttributes(CircuitBreakerMetrics.opening, { peer: "api" }))
      assert.strictEqual(opening.value, 9)
    }).pipe(provideSet(rowOptions)))
})

/** F@0, two failed probes (at 1 s and 3 s), then the probe at 7 s succeeds: closed at 7 s after opening 3 (4 s). */
const closedAfterOpening3 = Effect.gen(function*() {
  yield* fail
  yield* failEveryProbe(2)
  assert.deepStrictEqual(yield* openNow, { opening: 3, reason: "probe-failed", openedAt: 3_000, millis: 4_000 })
  yield* TestClock.adjust("4 seconds")
  yield* Effect.succeed("ok").pipe(withBreaker("api"))
  assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
})

describe("O3: a relapse within the last opening's length goes on with the backoff; a later trip starts again", () => {
  it.effect("closed at 7 s after opening 3 (4 s); F at 10.999 s is opening 4, open 8 s", () =>
    Effect.gen(function*() {
      yield* closedAfterOpening3
      yield* TestClock.adjust("3999 millis")
      yield* fail
      assert.deepStrictEqual(yield* openNow, { opening: 4, reason: "consecutive", openedAt: 10_999, millis: 8_000 })
    }).pipe(provideSet(rowOptions)))

  it.effect("closed at 7 s after opening 3 (4 s); F at 11 s (closed exactly 4 s) is opening 1, open 1 s", () =>
    Effect.gen(function*() {
      yield* closedAfterOpening3
      yield* TestClock.adjust("4 seconds")
      yield* fail
      assert.deepStrictEqual(yield* openNow, { opening: 1, reason: "consecutive", openedAt: 11_000, millis: 1_000 })
    }).pipe(provideSet(rowOptions)))
})

describe("O4: reset forgets the openings", () => {
  it.effect("set.reset during opening 4, then F: opening 1", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* fail
      yield* failEveryProbe(3)
      assert.deepStrictEqual(yield* openNow, { opening: 4, reason: "probe-failed", openedAt: 7_000, millis: 8_000 })
      yield* TestClock.adjust("2 seconds")
      yield* set.reset("api")
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
      yield* fail
      assert.deepStrictEqual(yield* openNow, { opening: 1, reason: "consecutive", openedAt: 9_000, millis: 1_000 })
    }).pipe(provideSet(rowOptions)))

  it.effect("set.reset soon after a close forgets the backoff too: the relapse is opening 1, not 5", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* fail
      yield* failEveryProbe(3)
      yield* TestClock.adjust("8 seconds")
      yield* Effect.succeed("ok").pipe(withBreaker("api")) // closed at 15 s after opening 4 (8 s)
      yield* TestClock.adjust("1 second")
      yield* set.reset("api")
      yield* TestClock.adjust("1 second")
      yield* fail
      assert.deepStrictEqual(yield* openNow, { opening: 1, reason: "consecutive", openedAt: 17_000, millis: 1_000 })
    }).pipe(provideSet(rowOptions)))

  it.effect("without the reset, the same F right after a successful probe would have been opening 5", () =>
    Effect.gen(function*() {
      yield* fail
      yield* failEveryProbe(3)
      yield* TestClock.adjust("8 seconds")
      yield* Effect.succeed("ok").pipe(withBreaker("api"))
      yield* fail
      assert.strictEqual((yield* openNow).opening, 5)
    }).pipe(provideSet(rowOptions)))
})

describe("O5: once a schedule ends, its last delay repeats", () => {
  it.effect("Schedule.exponential(1 s) upTo 3 times: openings of 1, 2, 4, 4, 4 s", () =>
    Effect.gen(function*() {
      yield* fail
      const seen = yield* failEveryProbe(5)
      assert.deepStrictEqual(seen.map((o) => [o.opening, o.millis]), [[1, 1_000], [2, 2_000], [3, 4_000], [
        4,
        4_000
      ], [5, 4_000]])
    }).pipe(provideSet({
      policy: Policy.consecutive(1),
      openDuration: Schedule.exponential("1 second").pipe(Schedule.upTo({ times: 3 }))
    })))
})

describe("O6: a schedule that yields no delay is a config error when the breaker is built", () => {
  const noDelay = [
    ["Schedule.recurs(0)", Schedule.recurs(0)],
    ["Schedule.spaced(0)", Schedule.spaced(0)]
  ] as const
  for (const [name, schedule] of noDelay) {
    it.effect(`${name}: CircuitBreakerConfigError naming openDuration, from the layer and from make`, () =>
      Effect.gen(function*() {
        const fromLayer = yield* Effect.flip(
          Layer.build(CircuitBreakerSet.layer({ policy: Policy.consecutive(1), openDuration: schedule }))
        )
        assert.strictEqual(fromLayer._tag, "CircuitBreakerConfigError")
        assert.deepStrictEqual(fromLayer.fields, ["openDuration"])
        assert.include(fromLayer.message, "openDuration:")
        const fromMake = yield* Effect.flip(CircuitBreaker.make({ openDuration: schedule }))
        assert.strictEqual(fromMake._tag, "CircuitBreakerConfigError")
        assert.deepStrictEqual(fromMake.fields, ["openDuration"])
      }))
  }
})

describe("O7: maxOpenDuration caps every opening", () => {
  it.effect("Schedule.exponential(1 s) with maxOpenDuration 1 minute: 1, 2, 4, 8, 16, 32, 60, 60 s", () =>
    Effect.gen(function*() {
      yield* fail
      const seen = yield* failEveryProbe(8)
      assert.deepStrictEqual(seen.map((o) => o.millis / 1_000), [1, 2, 4, 8, 16, 32, 60, 60])
      assert.deepStrictEqual(seen.map((o) => o.opening), [1, 2, 3, 4, 5, 6, 7, 8])
    }).pipe(provideSet({
      policy: Policy.consecutive(1),
      openDuration: Schedule.exponential("1 second"),
      maxOpenDuration: "1 minute"
    })))
})

describe("O8: jitter after the cap", () => {
  /** The durations of `openings` openings of a fresh set, each ended by a failing probe, in milliseconds. */
  const durations = (options: SetOptions, openings: number) =>
    Effect.scoped(Effect.gen(function*() {
      const set: CircuitBreakerSetService = yield* CircuitBreakerSet.make(options)
      const peer = `api-${Math.random()}`
      const seen: Array<number> = []
      yield* Effect.exit(failing.pipe(set.withBreaker(peer)))
      for (let i = 0; i < openings; i++) {
        const s = yield* set.state(peer)
        assert.strictEqual(s._tag, "Open")
        if (s._tag !== "Open") break
        assert.strictEqual(s.opening, i + 1)
        const millis = Duration.toMillis(s.retryAfter)
        seen.push(millis)
        yield* TestClock.adjust(Math.ceil(millis))
        yield* Effect.exit(failing.pipe(set.withBreaker(peer)))
      }
      return seen
    })).pipe(Effect.provide(freshMetricRegistry))

  const jittered = {
    policy: Policy.consecutive(1),
    openDuration: OpenDuration.exponential({ base: "1 second", max: "30 seconds" })
  }

  it.effect("Random.withSeed(42): every opening within [0.8 d, 1.2 d]; from opening 6 within [24 s, 36 s], not all equal", () =>
    Effect.gen(function*() {
      const seen = yield* durations(jittered, 12).pipe(Random.withSeed(42))
      seen.forEach((millis, i) => {
        const d = Math.min(1_000 * 2 ** i, 30_000)
        assert.isAtLeast(millis, 0.8 * d, `opening ${i + 1}`)
        assert.isAtMost(millis, 1.2 * d, `opening ${i + 1}`)
      })
      const capped = seen.slice(5)
      for (const millis of capped) {
        assert.isAtLeast(millis, 24_000)
        assert.isAtMost(millis, 36_000)
      }
      assert.isAbove(new Set(capped).size, 1, `openings from 6 should spread, got ${capped}`)
      // Deterministic under the seed; another seed draws other openings.
      assert.deepStrictEqual(yield* durations(jittered, 12).pipe(Random.withSeed(42)), seen)
      assert.notDeepEqual(yield* durations(jittered, 12).pipe(Random.withSeed(43)), seen)
    }))

  it.effect("anti-row: jitter inside Schedule.min collapses to exactly the cap once the jittered delay exceeds it", () =>
    Effect.gen(function*() {
      const inside = Schedule.min([
        Schedule.exponential("1 second").pipe(Schedule.jittered),
        Schedule.spaced("30 seconds")
      ])
      const seen = yield* durations({ policy: Policy.consecutive(1), openDuration: inside }, 12).pipe(
        Random.withSeed(42)
      )
      // The same seed as above: jitter still spreads the openings below the cap, then the cap swallows it. (Opening 6's
      // jittered 32 s lies in [25.6 s, 38.4 s]: with this seed it is above 30 s; from opening 7 it always is.)
      assert.deepStrictEqual(seen.slice(0, 5).map((millis, i) => millis !== 1_000 * 2 ** i), Array(5).fill(true))
      assert.deepStrictEqual(seen.slice(5), Array(7).fill(30_000))
    }))
})

describe("O9: a fixed open duration", () => {
  it.effect("openDuration 10 seconds: every opening lasts 10 s, and the opening number still counts 1, 2, 3, … (relapse too)", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 10)
      yield* fail
      const seen = yield* failEveryProbe(3)
      assert.deepStrictEqual(seen.map((o) => [o.opening, o.openedAt, o.millis]), [
        [1, 0, 10_000],
        [2, 10_000, 10_000],
        [3, 20_000, 10_000]
      ])
      // The third probe failed at 30 s: opening 4, until 40 s.
      assert.deepStrictEqual(yield* openNow, { opening: 4, reason: "probe-failed", openedAt: 30_000, millis: 10_000 })
      yield* TestClock.adjust("10 seconds")
      yield* Effect.succeed("ok").pipe(withBreaker("api")) // closes at 40 s
      yield* TestClock.adjust("5 seconds")
      yield* fail // within 10 s of the close: a relapse
      assert.deepStrictEqual(yield* openNow, { opening: 5, reason: "consecutive", openedAt: 45_000, millis: 10_000 })
      const seenChanges = yield* Fiber.join(changes)
      assert.deepStrictEqual(Array.from(seenChanges, (c) => [c.to, c.opening]), [
        ["Open", 1],
        ["HalfOpen", 1],
        ["Open", 2],
        ["HalfOpen", 2],
        ["Open", 3],
        ["HalfOpen", 3],
        ["Open", 4],
        ["HalfOpen", 4],
        ["Closed", 0],
        ["Open", 5]
      ])
    }).pipe(provideSet({ policy: Policy.consecutive(1), openDuration: "10 seconds" })))
})

describe("O10 (replaced by the issue): a hung probe during opening 3", () => {
  it.effect("the probe admitted at 7 s never returns: at 11 s (probeTimeout = the 4 s opening) the circuit reopens as opening 4", () =>
    Effect.gen(function*() {
      yield* fail
      yield* failEveryProbe(2)
      assert.deepStrictEqual(yield* openNow, { opening: 3, reason: "probe-failed", openedAt: 3_000, millis: 4_000 })
      yield* TestClock.adjust("4 seconds")
      let interrupted = false
      const caller = yield* forkAdmitted(
        Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))),
        withBreaker("api")
      )
      yield* TestClock.adjust("3999 millis")
      const s = yield* state("api")
      assert.strictEqual(s._tag, "HalfOpen")
      assert.isFalse(interrupted)
      yield* TestClock.adjust("1 millis")
      assert.isTrue(interrupted)
      const error = yield* expectRejection(Fiber.join(caller))
      assert.strictEqual(Duration.toMillis(error.retryAfter), 8_000)
      assert.deepStrictEqual(yield* openNow, { opening: 4, reason: "probe-timeout", openedAt: 11_000, millis: 8_000 })
    }).pipe(provideSet(rowOptions)))
})

describe("O11: concurrent failures open the circuit once", () => {
  it.effect("10,000 concurrent counted failures with consecutive(3): exactly one opening, n = 1", () =>
    Effect.gen(function*() {
      const callers = 10_000
      const gate = yield* Deferred.make<void>()
      const started = yield* makeCountdown(callers)
      const call = started.arrive.pipe(
        Effect.andThen(Deferred.await(gate)),
        Effect.andThen(failing),
        withBreaker("api")
      )
      const all = yield* Effect.forkChild(
        Effect.forEach(Array.from({ length: callers }), () => Effect.exit(call), { concurrency: "unbounded" })
      )
      // Every call was admitted while the circuit was closed; now they all fail at the same instant.
      yield* started.allArrived
      yield* Deferred.succeed(gate, undefined)
      const exits = yield* Fiber.join(all)
      assert.strictEqual(exits.filter(isRejection).length, 0)
      assert.deepStrictEqual(yield* openNow, { opening: 1, reason: "consecutive", openedAt: 0, millis: 1_000 })
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, {
          peer: "api",
          from: "Closed",
          to: "Open",
          reason: "consecutive"
        }),
        1
      )
    }).pipe(provideSet({ policy: Policy.consecutive(3), openDuration: exponential })))
})

describe("O12: failures of calls admitted before the opening change nothing", () => {
  it.effect("A, B, C admitted at 0; A fails: Open; B fails at 500 ms and C at 1 s: same opening, same deadline, same reason", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 2)
      const gates = yield* Effect.all([Deferred.make<void>(), Deferred.make<void>(), Deferred.make<void>()])
      const callers = yield* Effect.forEach(
        gates,
        (gate) => forkAdmitted(Deferred.await(gate).pipe(Effect.andThen(failing)), withBreaker("api"))
      )
      const end = (i: number) => Deferred.succeed(gates[i]!, undefined).pipe(Effect.andThen(Fiber.await(callers[i]!)))
      yield* end(0)
      const opened = yield* openNow
      assert.deepStrictEqual(opened, { opening: 1, reason: "consecutive", openedAt: 0, millis: 1_000 })
      yield* TestClock.adjust("500 millis")
      yield* end(1)
      assert.deepStrictEqual(yield* openNow, { ...opened, millis: 500 })
      yield* TestClock.adjust("500 millis")
      yield* end(2)
      const s = yield* state("api")
      assert.deepStrictEqual(
        s._tag === "HalfOpen"
          ? { opening: s.opening, reason: s.reason, probesInFlight: s.probesInFlight, openedAt: s.openedAt }
          : s,
        { opening: 1, reason: "consecutive", probesInFlight: 0, openedAt: 0 }
      )
      // The deadline held: the call at 1 s is the probe.
      assert.strictEqual(yield* Effect.succeed("probe").pipe(withBreaker("api")), "probe")
      const seen = yield* Fiber.join(changes)
      assert.deepStrictEqual(Array.from(seen, (c) => [c.from, c.to, c.reason]), [
        ["Closed", "Open", "consecutive"],
        ["Open", "HalfOpen", "probe"]
      ])
    }).pipe(provideSet({ policy: Policy.consecutive(1), openDuration: exponential })))
})
