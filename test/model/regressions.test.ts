/**
 * Minimal cases found by the model-based test (`CircuitBreakerSet.model.test.ts`), pinned one by one.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerSet } from "../../src/index.ts"

const expiredProbeIsIgnored = (end: Effect.Effect<void, string>) =>
  Effect.gen(function*() {
    const set = yield* CircuitBreakerSet
    yield* Effect.exit(set.withBreaker("p")(Effect.fail("down"))) // maxFailures 0: opens at t = 0
    yield* TestClock.adjust("1 second")
    const release = yield* Deferred.make<void>()
    const probe = yield* Effect.forkChild(
      set.withBreaker("p")(Effect.andThen(Deferred.await(release), end)),
      { startImmediately: true }
    ) // the probe, admitted at t = 1 s
    yield* TestClock.adjust("1 second") // t = 2 s: the probe has held its slot for a whole resetTimeout
    const before = yield* set.state("p")
    assert.strictEqual(before._tag, "HalfOpen")
    assert.isFalse(before._tag === "HalfOpen" && before.probeInFlight)
    yield* Deferred.succeed(release, undefined)
    yield* Fiber.await(probe)
    // The probe lost its slot, so its result decides nothing: the circuit is still half-open with a free slot.
    const after = yield* set.state("p")
    assert.deepStrictEqual(
      after._tag === "HalfOpen" ? { ...after, retryAfter: Duration.toMillis(after.retryAfter) } : after,
      { _tag: "HalfOpen", openedAt: 0, probeInFlight: false, retryAfter: 0 }
    )
  }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0, resetTimeout: "1 second" })))

describe("found by the model-based test: a stale probe's result decides nothing", () => {
  // The rule of "hung probes and stale results" in CircuitBreakerSet.test.ts. Found by the model: the breaker applied
  // the result of a probe whose slot had expired as long as no newer probe was admitted (it closed or re-opened the
  // circuit).
  it.effect("a probe that ends successfully after its slot expired decides nothing", () =>
    expiredProbeIsIgnored(Effect.void))

  it.effect("a probe that fails after its slot expired decides nothing", () =>
    expiredProbeIsIgnored(Effect.fail("down")))
})
