/**
 * Bugs found by a review of the policies engine (483e96a), each pinned by the test that showed it; all are fixed.
 * The comment above each test says what went wrong before the fix.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Schedule, Scheduler } from "effect"
import { TestClock } from "effect/testing"
import {
  CircuitBreaker,
  CircuitBreakerConfigError,
  CircuitBreakerSet,
  OpenDuration,
  Policy,
  withBreaker
} from "../src/index.ts"
import { type CapturedLog, captureLogs, failing, forkAdmitted, provideSet, repeat, state } from "./utils.ts"

/** `""` if `self` fails with a `CircuitBreakerConfigError` (and does not die), else what it did instead. */
const configErrorOrWhy = <A, E, R>(label: string, self: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.exit(self), (exit) =>
    Exit.isFailure(exit) && !Cause.hasDies(exit.cause) &&
      exit.cause.reasons.some((reason) =>
        Cause.isFailReason(reason) && reason.error instanceof CircuitBreakerConfigError
      )
      ? ""
      : `${label}: ${String(exit)}`)

/** Asserts that every case fails with a `CircuitBreakerConfigError`, listing those that do not. */
const expectConfigErrors = (cases: ReadonlyArray<Effect.Effect<string>>) =>
  Effect.map(Effect.all(cases), (results) => assert.deepStrictEqual(results.filter((why) => why !== ""), []))

describe("Review: set accessors are evaluated when run", () => {
  // src/internal/set.ts:268-271: `state` looks the breaker up when `state(peer)` is CALLED, not when the effect runs,
  // so an effect built before the peer is held (or before its breaker was dropped and recreated) reads a stale Ref.
  it.effect("state(peer) built before the first call reads the circuit as it is when run", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const read = set.state("api") // e.g. a health endpoint's effect, built once
      yield* repeat(failing.pipe(withBreaker("api")), 4)
      assert.strictEqual((yield* set.state("api"))._tag, "Open")
      // expected Open, got Closed
      assert.strictEqual((yield* read)._tag, "Open")
    }).pipe(provideSet()))

  // src/internal/set.ts:288-291: same for `reset`: decided to be a no-op when `reset(peer)` is called, so
  // `Effect.andThen(trip, set.reset(peer))` or a stored admin effect never resets.
  it.effect("reset(peer) built before the first call resets the circuit when run", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const resetApi = set.reset("api")
      yield* repeat(failing.pipe(withBreaker("api")), 4)
      yield* resetApi
      // expected Closed, got Open
      assert.strictEqual((yield* state("api"))._tag, "Closed")
    }).pipe(provideSet()))
})

describe("Review: odd option values are config errors, never defects", () => {
  // src/internal/options.ts:222: `tag in knownKeys` is true for Object.prototype members ("constructor",
  // "toString", …), then line 229 calls `knownKeys[tag]!.includes`, which is not a function: TypeError (defect).
  it.effect("a policy whose _tag is an Object.prototype member", () =>
    Effect.gen(function*() {
      // expected [], got both cases dying with "TypeError: knownKeys[tag].includes is not a function"
      yield* expectConfigErrors([
        configErrorOrWhy("constructor", CircuitBreaker.make({ policy: { _tag: "constructor" } as never })),
        configErrorOrWhy(
          "any member toString",
          CircuitBreaker.make({ policy: Policy.any(Policy.consecutive(2), { _tag: "toString" } as never) })
        )
      ])
    }))

  // An options object shaped like the validator's own issue record ({ path, message, value }) was taken for one.
  it.effect("options shaped like an issue record are reported as unknown options", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        CircuitBreakerSet.make(
          { path: "x", message: "y", value: 1 } as unknown as Parameters<typeof CircuitBreakerSet.make>[0]
        )
      )
      assert.deepStrictEqual(error.fields, ["path", "message", "value"])
      assert.include(error.message, "path: Unknown option")
    }).pipe(Effect.scoped))

  // Nested options are read outside any try: options.ts:221 (policy._tag), :31 (Object.values of a duration object,
  // which inside the schema predicate makes decodeIssues rethrow `undefined` at :162-163), CircuitBreakerSet.ts:103
  // (Object.entries(peers)). Only the top level and `halfOpen` are read under presentEntries' try.
  it.effect("options whose getters throw", () =>
    Effect.gen(function*() {
      const throwing = (): never => {
        throw new Error("getter")
      }
      const getter = (key: string) => Object.defineProperty({}, key, { get: throwing, enumerable: true }) as never
      // expected [], got four defects: Die(Error: getter) for policy and openDuration, Die(undefined) for window and
      // peers
      yield* expectConfigErrors([
        configErrorOrWhy("policy", CircuitBreaker.make({ policy: getter("_tag") })),
        configErrorOrWhy("window", CircuitBreaker.make({ window: getter("seconds") })),
        configErrorOrWhy("openDuration", CircuitBreaker.make({ openDuration: getter("seconds") })),
        configErrorOrWhy("peers", Effect.scoped(CircuitBreakerSet.make({ peers: getter("a") })))
      ])
    }))
})

describe("Review: the closed fast path's context mark", () => {
  // src/internal/guard.ts:122-126: the closed fast path marks the CALLER's fiber with `fiber.setContext(marked)` and
  // relies on the exit handler installed by the effect it returns to put the context back. The runtime may yield
  // between the two (the scheduler's operation budget, checked before every primitive); a fiber interrupted at that
  // yield never runs the handler and keeps the mark, so every later call to the same peer in that fiber (its
  // finalizers) is treated as nested and bypasses the breaker. MaxOpsBeforeYield only moves the budget boundary
  // (2048 by default) to where the test can hit it.
  it.effect("a call interrupted before its exit handler is in place leaves no mark behind", () =>
    Effect.gen(function*() {
      const bypassed: Array<number> = []
      for (let budget = 2; budget <= 40; budget++) {
        const ran = yield* Effect.gen(function*() {
          const set = yield* CircuitBreakerSet
          let ran = false
          const cleanup = Effect.exit(Effect.sync(() => (ran = true)).pipe(withBreaker("api")))
          const child = yield* Effect.forkChild(
            Effect.never.pipe(
              withBreaker("api"),
              Effect.ensuring(cleanup),
              Effect.provideService(Scheduler.MaxOpsBeforeYield, budget)
            ),
            { startImmediately: true }
          )
          yield* set.isolate("api") // every call is rejected from here on
          yield* Fiber.interrupt(child)
          return ran
        }).pipe(Effect.scoped, provideSet())
        if (ran) bypassed.push(budget)
      }
      // expected [], got [4]: the cleanup ran on an isolated circuit
      assert.deepStrictEqual(bypassed, [])
    }))

  it.effect("… and under Effect's own scheduler, where the call is marked in its admitting step unless the next may yield", () =>
    Effect.gen(function*() {
      const bypassed: Array<number> = []
      for (let budget = 2; budget <= 60; budget++) {
        const ran = yield* Effect.gen(function*() {
          const set = yield* CircuitBreakerSet
          let ran = false
          const cleanup = Effect.exit(Effect.sync(() => (ran = true)).pipe(withBreaker("api")))
          const child = yield* Effect.forkChild(
            Effect.never.pipe(
              withBreaker("api"),
              Effect.ensuring(cleanup),
              Effect.provideService(Scheduler.MaxOpsBeforeYield, budget),
              // TestClock runs fibers on a scheduler of its own, under which every call takes the safe path.
              Effect.provideService(Scheduler.Scheduler, new Scheduler.MixedScheduler())
            ),
            { startImmediately: true }
          )
          yield* set.isolate("api") // every call is rejected from here on
          yield* Fiber.interrupt(child)
          return ran
        }).pipe(Effect.scoped, provideSet())
        if (ran) bypassed.push(budget)
      }
      // expected [], got [4]: the cleanup ran on an isolated circuit
      assert.deepStrictEqual(bypassed, [])
    }))
})

describe("Review: probes and openings", () => {
  // src/internal/openings.ts:462 accepts a 0 ms delay after the first step (only the first is validated,
  // options.ts:473 / openings.ts:417), and machine.ts:195 makes the probe's lease the preceding opening: 0 ms. Every
  // probe's lease has ended when it starts, so every call is a probe that is interrupted and rejected ("admitted
  // again in 0"), and the opening number climbs forever: a healthy peer never recovers. OpenDuration.exponential
  // does not validate `factor` either (0 here; NaN or negative behave as badly).
  it.effect("a schedule with 0 ms openings is a config error when the breaker is built", () =>
    Effect.gen(function*() {
      // factor 0 gives 1 s, then 0 ms openings, whose default probe lease (the opening before) would be 0 ms too:
      // every probe would time out as it starts. Reported at build, naming openDuration and what is wrong.
      const exponential = yield* Effect.flip(
        CircuitBreakerSet.make({
          policy: Policy.consecutive(1),
          openDuration: OpenDuration.exponential({ base: "1 second", max: "30 seconds", factor: 0, jitter: false })
        })
      )
      assert.deepStrictEqual(exponential.fields, ["openDuration"])
      assert.include(exponential.message, "factor: expected a finite number of at least 1, got 0")
      // Any schedule: its first openings are stepped at build, and a zero one among them is reported.
      const zeroLater = yield* Effect.flip(
        CircuitBreakerSet.make({
          openDuration: Schedule.exponential("1 second", 0) as Schedule.Schedule<unknown, number>
        })
      )
      assert.deepStrictEqual(zeroLater.fields, ["openDuration"])
      assert.include(zeroLater.message, "got 0 ms for opening 2")
    }).pipe(Effect.scoped))

  // src/internal/guard.ts:273-279: the lease watcher interrupts the probe's call and fails its caller with
  // CircuitOpenError whenever the lease ends, without checking that the call still holds a probe slot. After a
  // reset (calls in flight "decide nothing") the circuit is Closed, yet the running call is interrupted and its
  // caller told the circuit is open ("admitted again in 0"); leaseEnded (:299) also counts a failure. The same
  // happens to a probe still running after another probe reopened or the circuit was isolated.
  it.effect("a probe still running after a reset is not interrupted and rejected at its lease end", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      const probe = yield* forkAdmitted(Effect.as(Effect.sleep("15 seconds"), "done"), withBreaker("api"))
      yield* set.reset("api")
      yield* TestClock.adjust("15 seconds")
      assert.strictEqual((yield* state("api"))._tag, "Closed")
      // expected Success("done"), got Failure(CircuitOpenError(state Open, retryAfter 0))
      assert.deepStrictEqual(yield* Fiber.await(probe), Exit.succeed("done"))
    }).pipe(provideSet({ policy: Policy.consecutive(1) })))
})

describe("Review: log lines", () => {
  // src/internal/report.ts:182-195: tripText picks the first member whose tag matches the reason, so with two
  // members of the same kind the log describes the one that did not trip.
  it.effect("any(window, window): the opening log names the member that tripped", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("api")), 2) // the second member (1 in 1 s) trips on the 2nd failure
      const opened = logs.find((log) => log.message.startsWith("Circuit opened"))
      // expected "…more than 1 failures within 1s…", got "Circuit opened: more than 5 failures within 1m; …"
      assert.include(opened?.message ?? "", "more than 1 failures within 1s")
    }).pipe(
      provideSet({
        policy: Policy.any(
          Policy.window({ maxFailures: 5, window: "1 minute" }),
          Policy.window({ maxFailures: 1, window: "1 second" })
        )
      }),
      Effect.provide(captureLogs(logs))
    )
  })
})
