// A breaker driven through every state by TestClock, with a fresh layer for the test.
import { assert, it } from "@effect/vitest"
import { Effect } from "effect"
import { CircuitBreakerSet, withBreaker } from "effect-circuit"
import { TestClock } from "effect/testing"

it.effect("opens after the 4th failure and probes after 10 seconds", () =>
  Effect.gen(function*() {
    const breakers = yield* CircuitBreakerSet
    const failing = Effect.fail("boom").pipe(withBreaker("api"))
    for (let i = 0; i < 4; i++) yield* Effect.exit(failing)
    assert.strictEqual((yield* breakers.state("api"))._tag, "Open")

    yield* TestClock.adjust("10 seconds")
    assert.strictEqual((yield* breakers.state("api"))._tag, "HalfOpen")
    assert.strictEqual(yield* Effect.succeed("ok").pipe(withBreaker("api")), "ok")
    assert.strictEqual((yield* breakers.state("api"))._tag, "Closed")
  }).pipe(Effect.provide(CircuitBreakerSet.layer())))
