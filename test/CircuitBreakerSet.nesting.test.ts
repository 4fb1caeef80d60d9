import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreaker, CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import { Boom, count, failing, freshMetricRegistry, provideSet, state, stateTag, trip } from "./utils.ts"

/** A client helper that guards its own calls, as a library of HTTP calls would. */
const client = <A, E, R>(call: Effect.Effect<A, E, R>) => call.pipe(withBreaker("api"))

describe("the same peer guarded twice", () => {
  it.effect("one real failure under two guards of the same set counts once", () =>
    Effect.gen(function*() {
      yield* Effect.exit(client(failing).pipe(withBreaker("api")))
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 1 })
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "failure" }), 1)
      yield* Effect.exit(client(failing).pipe(withBreaker("api")))
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 2 })
    }).pipe(provideSet({ maxFailures: 2 })))

  it.effect("a success under two guards counts once", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* client(Effect.succeed(1)).pipe(withBreaker("api")), 1)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "api", outcome: "success" }), 1)
    }).pipe(provideSet()))

  it.effect("half-open: the inner guard never rejects the outer probe's own call, and the probe closes the circuit", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      yield* TestClock.adjust("10 seconds")
      let reached = 0
      const call = client(Effect.sync(() => ++reached)).pipe(withBreaker("api"))
      for (let i = 0; i < 5; i++) yield* call
      assert.strictEqual(reached, 5)
      assert.strictEqual(yield* stateTag("api"), "Closed")
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("half-open: a failing probe under two guards reopens the circuit once", () =>
    Effect.gen(function*() {
      yield* trip("api", 1)
      yield* TestClock.adjust("10 seconds")
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(client(failing).pipe(withBreaker("api")))
      assert.strictEqual(yield* stateTag("api"), "Open")
      const snapshot = yield* set.snapshot
      assert.strictEqual(snapshot.peers.length, 1)
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, {
          peer: "api",
          from: "HalfOpen",
          to: "Open",
          reason: "probe-failed"
        }),
        1
      )
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("a guard in a fiber forked by a guarded call is transparent too", () =>
    Effect.gen(function*() {
      const inner = Effect.forkChild(client(failing)).pipe(Effect.flatMap(Fiber.join))
      yield* Effect.exit(inner.pipe(withBreaker("api")))
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 1 })
    }).pipe(provideSet({ maxFailures: 5 })))

  it.effect("the same CircuitBreaker guarding twice counts once", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ maxFailures: 1 })
      const twice = failing.pipe(CircuitBreaker.withBreaker(breaker), CircuitBreaker.withBreaker(breaker))
      yield* Effect.exit(twice)
      assert.deepStrictEqual(yield* CircuitBreaker.state(breaker), { _tag: "Closed", failures: 1 })
    }).pipe(Effect.provide(freshMetricRegistry)))

  it.effect("once the outer call has ended, the next call is guarded again", () =>
    Effect.gen(function*() {
      yield* client(Effect.succeed(1)).pipe(withBreaker("api"))
      yield* Effect.exit(client(failing))
      yield* Effect.exit(client(failing))
      assert.strictEqual(yield* stateTag("api"), "Open")
    }).pipe(provideSet({ maxFailures: 1 })))

  it.effect("different peers nest as before: an inner rejection never counts against the outer peer", () =>
    Effect.gen(function*() {
      yield* trip("db", 3)
      assert.strictEqual(yield* stateTag("db"), "Open")
      const exit = yield* Effect.exit(Effect.fail(new Boom()).pipe(withBreaker("db"), withBreaker("api")))
      assert.isTrue(exit._tag === "Failure")
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 0 })
      // A real failure of the inner peer does count against the outer one: the outer call failed.
      yield* Effect.exit(failing.pipe(withBreaker("other"), withBreaker("api")))
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 1 })
    }).pipe(provideSet({ maxFailures: 3 })))
})
