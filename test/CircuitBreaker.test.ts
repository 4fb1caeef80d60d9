import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Ref } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreaker } from "../src/index.ts"
import { expectRejection, openMillisOf, repeat, windowOf } from "./utils.ts"

/** python-circuit's `handle_error(ValueError)`: only this error type counts. */
class ValueError extends Error {}
class KeyError extends Error {}

const pythonCircuitBreaker = CircuitBreaker.make({
  name: "my-remote-peer",
  maxFailures: 2,
  window: "60 seconds",
  resetTimeout: "10 seconds",
  isFailure: (error) => error instanceof ValueError
})

const stateTag = (breaker: CircuitBreaker.CircuitBreaker) => Effect.map(CircuitBreaker.state(breaker), (s) => s._tag)

describe("python-circuit's own test cases", () => {
  it.effect("unhandled errors pass through and are not counted", () =>
    Effect.gen(function*() {
      const breaker = yield* pythonCircuitBreaker
      for (let i = 0; i < 10; i++) {
        const exit = yield* Effect.exit(Effect.fail(new KeyError("nope")).pipe(CircuitBreaker.withBreaker(breaker)))
        assert.isTrue(Exit.isFailure(exit))
      }
      assert.deepStrictEqual(yield* CircuitBreaker.state(breaker), { _tag: "Closed", failures: 0 })
    }))

  it.effect("handled errors are counted", () =>
    Effect.gen(function*() {
      const breaker = yield* pythonCircuitBreaker
      const error = yield* Effect.flip(Effect.fail(new ValueError("oh no")).pipe(CircuitBreaker.withBreaker(breaker)))
      assert.instanceOf(error, ValueError)
      assert.deepStrictEqual(yield* CircuitBreaker.state(breaker), { _tag: "Closed", failures: 1 })
    }))

  it.effect("the circuit opens on errors", () =>
    Effect.gen(function*() {
      const breaker = yield* pythonCircuitBreaker
      yield* repeat(Effect.fail(new ValueError()).pipe(CircuitBreaker.withBreaker(breaker)), 3)
      assert.strictEqual(yield* stateTag(breaker), "Open")
    }))

  it.effect("infrequent errors are allowed", () =>
    Effect.gen(function*() {
      const breaker = yield* pythonCircuitBreaker
      for (let i = 0; i < 20; i++) {
        yield* Effect.exit(Effect.fail(new ValueError()).pipe(CircuitBreaker.withBreaker(breaker)))
        yield* TestClock.adjust("30 seconds")
      }
      assert.strictEqual(yield* stateTag(breaker), "Closed")
    }))

  it.effect("a successful probe closes the circuit", () =>
    Effect.gen(function*() {
      const breaker = yield* pythonCircuitBreaker
      yield* repeat(Effect.fail(new ValueError()).pipe(CircuitBreaker.withBreaker(breaker)), 3)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* stateTag(breaker), "HalfOpen")
      assert.strictEqual(yield* Effect.succeed("pong").pipe(CircuitBreaker.withBreaker(breaker)), "pong")
      assert.strictEqual(yield* stateTag(breaker), "Closed")
    }))

  it.effect("an open circuit fails fast, naming the peer", () =>
    Effect.gen(function*() {
      const breaker = yield* pythonCircuitBreaker
      yield* repeat(Effect.fail(new ValueError()).pipe(CircuitBreaker.withBreaker(breaker)), 3)
      const calls = yield* Ref.make(0)
      const error = yield* expectRejection(Ref.update(calls, (n) => n + 1).pipe(CircuitBreaker.withBreaker(breaker)))
      assert.strictEqual(error._tag, "CircuitOpenError")
      assert.strictEqual(error.peer, "my-remote-peer")
      assert.strictEqual(yield* Ref.get(calls), 0)
    }))
})

describe("CircuitBreaker", () => {
  it.effect("withBreaker is dual: data-first and data-last give the same breaker", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ maxFailures: 1 })
      yield* Effect.exit(CircuitBreaker.withBreaker(Effect.fail("x"), breaker))
      yield* Effect.exit(Effect.fail("y").pipe(CircuitBreaker.withBreaker(breaker)))
      assert.strictEqual(yield* stateTag(breaker), "Open")
    }))

  it.effect("name defaults to \"default\" and is the peer in errors", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ maxFailures: 0 })
      assert.strictEqual(breaker.name, "default")
      yield* Effect.exit(Effect.fail("x").pipe(CircuitBreaker.withBreaker(breaker)))
      const error = yield* expectRejection(Effect.void.pipe(CircuitBreaker.withBreaker(breaker)))
      assert.strictEqual(error.peer, "default")
    }))

  it.effect("options are resolved with defaults", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make()
      assert.deepStrictEqual(windowOf(breaker.options), { maxFailures: 3, windowMillis: 60_000 })
      assert.strictEqual(openMillisOf(breaker.options), 10_000)
      assert.isTrue(Duration.equals(breaker.options.maxOpenDuration, Duration.hours(1)))
      assert.deepStrictEqual(breaker.options.halfOpen, { probes: 1, successThreshold: 1, probeTimeout: undefined })
      assert.strictEqual(breaker.options.mode, "enforce")
      assert.strictEqual(breaker.options.metricPeerLabel, "peer")
      assert.isTrue(breaker.options.isFailure("anything"))
      assert.isTrue(CircuitBreaker.isCircuitBreaker(breaker))
      assert.isFalse(CircuitBreaker.isCircuitBreaker({ name: "fake" }))
    }))

  it.effect("make fails with CircuitBreakerConfigError for a bad name or an option only a set takes", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(CircuitBreaker.make({ name: 42, idleTimeToLive: "1 minute" } as any))
      assert.strictEqual(error._tag, "CircuitBreakerConfigError")
      assert.deepStrictEqual([...error.fields].sort(), ["idleTimeToLive", "name"])
    }))

  it.effect("a value that is not a breaker is a defect, and the effect does not run", () =>
    Effect.gen(function*() {
      const calls = yield* Ref.make(0)
      const exit = yield* Effect.exit(
        CircuitBreaker.withBreaker(Ref.update(calls, (n) => n + 1), { name: "fake" } as any)
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.strictEqual(yield* Ref.get(calls), 0)
    }))
})
