import { assert, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerSet, withBreaker } from "../src/index.ts"

it.effect("smoke", () =>
  Effect.gen(function*() {
    const fail = Effect.fail("boom").pipe(withBreaker("a"))
    for (let i = 0; i < 3; i++) assert.isTrue(Exit.isFailure(yield* Effect.exit(fail)))
    const set = yield* CircuitBreakerSet
    assert.strictEqual((yield* set.state("a"))._tag, "Closed")
    yield* Effect.exit(fail)
    const s = yield* set.state("a")
    assert.strictEqual(s._tag, "Open")
    const e = yield* Effect.flip(Effect.succeed(1).pipe(withBreaker("a")))
    console.log(e, e.message)
    yield* TestClock.adjust("10 seconds")
    assert.strictEqual((yield* set.state("a"))._tag, "HalfOpen")
    assert.strictEqual(yield* Effect.succeed(5).pipe(withBreaker("a")), 5)
    assert.strictEqual((yield* set.state("a"))._tag, "Closed")
  }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 3 }))))
