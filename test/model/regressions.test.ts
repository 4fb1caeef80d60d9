/**
 * Minimal cases found by the model-based test (`CircuitBreakerSet.model.test.ts`), pinned one by one.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerSet } from "../../src/index.ts"
import type { CircuitState } from "../../src/index.ts"
import { collect, expectRejection } from "../utils.ts"

/** A state with its `retryAfter` in milliseconds, for `deepStrictEqual`. */
const inMillis = (state: CircuitState.CircuitState): unknown =>
  state._tag === "Closed" ? state : { ...state, retryAfter: Duration.toMillis(state.retryAfter) }

const lateProbeDecidesNothing = (end: Effect.Effect<void, string>) =>
  Effect.gen(function*() {
    const set = yield* CircuitBreakerSet
    const changes = yield* collect(set.changes, 3)
    const moreChanges = yield* collect(set.changes, 4)
    yield* Effect.exit(set.withBreaker("p")(Effect.fail("down"))) // maxFailures 0: opens at t = 0
    yield* TestClock.adjust("1 second")
    const release = yield* Deferred.make<void>()
    const started = yield* Deferred.make<void>()
    const probe = yield* Effect.forkChild(
      set.withBreaker("p")(
        Deferred.succeed(started, undefined).pipe(
          Effect.andThen(Deferred.await(release)),
          Effect.andThen(end)
        )
      )
    )
    yield* Deferred.await(started) // the probe, admitted at t = 1 s: its lease ends at t = 2 s
    yield* TestClock.adjust("1 second")
    // The lease ended with the probe still running: it failed, and the circuit reopened then for a whole resetTimeout.
    const expired = { _tag: "Open", openedAt: 2_000, probeAt: 3_000, retryAfter: 1_000, isolated: false }
    assert.deepStrictEqual(inMillis(yield* set.state("p")), expired)
    const error = yield* expectRejection(Fiber.join(probe))
    assert.strictEqual(Duration.toMillis(error.retryAfter), 1_000)
    assert.deepStrictEqual(
      Array.from(yield* Fiber.join(changes), (c) => [c.from, c.to, c.at, c.reason]),
      [["Closed", "Open", 0, "failures"], ["Open", "HalfOpen", 1_000, "probe"], [
        "HalfOpen",
        "Open",
        2_000,
        "probe-timeout"
      ]]
    )
    // The probe's result comes too late: it decides nothing further (no close, no reopen at the time it ended).
    yield* TestClock.adjust("500 millis")
    yield* Deferred.succeed(release, undefined)
    for (let i = 0; i < 10; i++) yield* Effect.yieldNow
    assert.deepStrictEqual(inMillis(yield* set.state("p")), { ...expired, retryAfter: 500 })
    assert.isUndefined(moreChanges.pollUnsafe())
  }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0, resetTimeout: "1 second" })))

describe("found by the model-based test: a probe that outlives its lease has failed", () => {
  // The rule of the probe's lease in CircuitBreakerSet.recovery.test.ts. Found by the model (under the earlier rule,
  // where an expired probe only lost its slot): the breaker applied the result of a probe whose lease had ended (it
  // closed or reopened the circuit). Now the lease's end itself reopens the circuit, and the late result decides
  // nothing further.
  it.effect("a probe that ends successfully after its lease ended decides nothing: the lease's end reopened", () =>
    lateProbeDecidesNothing(Effect.void))

  it.effect("a probe that fails after its lease ended decides nothing: the lease's end reopened", () =>
    lateProbeDecidesNothing(Effect.fail("down")))
})
