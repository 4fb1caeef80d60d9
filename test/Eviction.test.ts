import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerSet, type SetOptions, withBreaker } from "../src/index.ts"
import { Boom, repeat } from "./utils.ts"

const provideSet = (options?: SetOptions) => Effect.provide(CircuitBreakerSet.layer(options))

const held = Effect.map(CircuitBreakerSet.use((set) => set.snapshot), (s) => s.peers.map((p) => p.peer).sort())

const touch = (peer: string) => Effect.succeed(peer).pipe(withBreaker(peer))

describe("idle eviction", () => {
  it.effect("drops a closed, empty, idle breaker once a call arrives after idleTimeToLive, never before", () =>
    Effect.gen(function*() {
      yield* touch("a")
      yield* touch("b")
      yield* TestClock.adjust("59 seconds")
      yield* touch("c")
      assert.deepStrictEqual(yield* held, ["a", "b", "c"])
      yield* TestClock.adjust("1 second")
      yield* touch("c")
      assert.deepStrictEqual(yield* held, ["c"])
    }).pipe(provideSet({ idleTimeToLive: "1 minute" })))

  it.effect("keeps open breakers, breakers with failures in the window, and breakers with calls in flight", () =>
    Effect.gen(function*() {
      yield* repeat(Effect.fail(new Boom()).pipe(withBreaker("open")), 2)
      yield* Effect.exit(Effect.fail(new Boom()).pipe(withBreaker("failing")))
      const gate = yield* Deferred.make<void>()
      const busy = yield* Effect.forkChild(Deferred.await(gate).pipe(withBreaker("busy")))
      yield* touch("idle")
      yield* TestClock.adjust("2 minutes")
      yield* touch("other")
      assert.deepStrictEqual(yield* held, ["busy", "open", "other"])
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(busy)
      yield* TestClock.adjust("2 minutes")
      yield* touch("other")
      assert.deepStrictEqual(yield* held, ["open", "other"])
    }).pipe(provideSet({ maxFailures: 1, window: "90 seconds", resetTimeout: "1 hour", idleTimeToLive: "1 minute" })))

  it.effect("a breaker dropped and recreated behaves exactly like the one that was dropped", () =>
    Effect.gen(function*() {
      yield* Effect.exit(Effect.fail(new Boom()).pipe(withBreaker("p")))
      yield* TestClock.adjust("61 seconds")
      yield* touch("q")
      assert.deepStrictEqual(yield* held, ["q"])
      // The failure aged out of the window, so a fresh breaker and the old one agree: one more failure keeps it closed.
      yield* Effect.exit(Effect.fail(new Boom()).pipe(withBreaker("p")))
      assert.deepStrictEqual(yield* CircuitBreakerSet.use((set) => set.state("p")), { _tag: "Closed", failures: 1 })
    }).pipe(provideSet({ maxFailures: 1, window: "60 seconds", idleTimeToLive: "1 minute" })))

  it.effect("a hot peer created first does not keep idle peers behind it from being dropped", () =>
    Effect.gen(function*() {
      yield* touch("hot")
      for (let i = 0; i < 10; i++) yield* touch(`cold-${i}`)
      for (let second = 0; second < 300; second++) {
        yield* TestClock.adjust("1 second")
        yield* touch("hot")
      }
      assert.deepStrictEqual(yield* held, ["hot"])
    }).pipe(provideSet({ idleTimeToLive: "1 minute" })))

  it.effect("eviction is amortized: each call drops a bounded number, and all idle peers go as calls arrive", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 1_000; i++) yield* touch(`peer-${i}`)
      yield* TestClock.adjust("2 minutes")
      yield* touch("hot")
      const afterOne = (yield* held).length
      assert.isAbove(afterOne, 900)
      for (let i = 0; i < 20; i++) yield* touch("hot")
      assert.deepStrictEqual(yield* held, ["hot"])
    }).pipe(provideSet({ idleTimeToLive: "1 minute" })))
})
