import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Metric } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import {
  type CapturedLog,
  captureLogs,
  collect,
  count,
  expectRejection,
  failing,
  gauge,
  makeCountdown,
  provideSet,
  repeat
} from "./utils.ts"

describe("reset", () => {
  it.effect("reset closes a circuit and empties its window; it is logged and published", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* repeat(failing.pipe(withBreaker("p")), 2)
      assert.strictEqual((yield* set.state("p"))._tag, "Open")
      const changes = yield* collect(set.changes, 2)
      yield* set.reset("p")
      assert.deepStrictEqual(yield* set.state("p"), { _tag: "Closed", failures: 0 })
      yield* Effect.exit(failing.pipe(withBreaker("q")))
      yield* set.reset("q")
      assert.deepStrictEqual(yield* set.state("q"), { _tag: "Closed", failures: 0 })
      assert.deepStrictEqual((yield* Fiber.join(changes)).map((c) => [c.peer, c.from, c.to, c.reason, c.opening]), [
        ["p", "Open", "Closed", "reset", 0],
        ["q", "Closed", "Closed", "reset", 0]
      ])
      assert.isTrue(logs.some((log) => log.message.includes("reset") && log.annotations.peer === "p"))
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, { peer: "p", from: "Open", to: "Closed", reason: "reset" }),
        1
      )
    }).pipe(provideSet({ maxFailures: 1 }), Effect.provide(captureLogs(logs)))
  })

  it.effect("reset of a peer never seen, or closed with an empty window, changes nothing and creates nothing", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 1)
      yield* set.reset("unseen")
      assert.deepStrictEqual((yield* set.snapshot).peers, [])
      yield* Effect.succeed(1).pipe(withBreaker("idle"))
      yield* set.reset("idle")
      // Only this reset, of a window holding a failure, is a change.
      yield* Effect.exit(failing.pipe(withBreaker("failed")))
      yield* set.reset("failed")
      assert.deepStrictEqual((yield* Fiber.join(changes)).map((c) => [c.peer, c.reason]), [["failed", "reset"]])
      assert.isFalse(logs.some((log) => log.message.includes("reset") && log.annotations.peer !== "failed"))
      const registry = yield* Metric.MetricRegistry
      const transitions = [...registry.values()].filter((m) => m.id === "circuit_breaker_transitions_total")
      assert.deepStrictEqual(transitions.map((m) => m.attributes?.peer), ["failed"])
    }).pipe(provideSet({ maxFailures: 1 }), Effect.provide(captureLogs(logs)))
  })

  it.effect("a reset that empties the window makes calls in flight decide nothing", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      const gate = yield* Deferred.make<void>()
      const admitted = yield* makeCountdown(2)
      const inFlight = yield* Effect.forEach(
        [1, 2],
        () =>
          Effect.forkChild(
            admitted.arrive.pipe(
              Effect.andThen(Deferred.await(gate)),
              Effect.andThen(failing),
              withBreaker("p"),
              Effect.exit
            )
          )
      )
      yield* admitted.allArrived
      yield* set.reset("p")
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.forEach(inFlight, Fiber.join)
      assert.deepStrictEqual(yield* set.state("p"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet({ maxFailures: 2 })))
})

describe("isolate", () => {
  it.effect("isolate holds a circuit open past resetTimeout until its scope closes; isolations stack", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      const isolated = yield* makeCountdown(2)
      const isolateUntilInterrupted = Effect.scoped(
        set.isolate("p").pipe(Effect.andThen(isolated.arrive), Effect.andThen(Effect.never))
      )
      const outer = yield* Effect.forkChild(isolateUntilInterrupted)
      const inner = yield* Effect.forkChild(isolateUntilInterrupted)
      yield* isolated.allArrived
      yield* TestClock.adjust("1 hour")
      const error = yield* expectRejection(Effect.succeed(1).pipe(withBreaker("p")))
      assert.strictEqual(error._tag, "CircuitOpenError")
      // An isolation lasts until released: no time is promised.
      assert.isFalse(Duration.isFinite(error.retryAfter))
      assert.strictEqual(error.state, "Isolated")
      const state = yield* set.state("p")
      assert.isTrue(state._tag === "Open" && state.isolated && state.opening === 0 && state.reason === "isolated")
      // reset does not end an isolation
      yield* set.reset("p")
      assert.strictEqual((yield* set.state("p"))._tag, "Open")
      yield* Fiber.interrupt(inner)
      assert.strictEqual((yield* set.state("p"))._tag, "Open")
      yield* Fiber.interrupt(outer)
      assert.deepStrictEqual(yield* set.state("p"), { _tag: "Closed", failures: 0 })
      assert.strictEqual(yield* Effect.succeed(2).pipe(withBreaker("p")), 2)
      const snapshot = yield* set.snapshot
      assert.deepStrictEqual(snapshot.peers, [{ peer: "p", state: "Closed", failures: 0 }])
    }).pipe(provideSet({ maxFailures: 1, resetTimeout: "10 seconds" })))

  it.effect("isolating an open circuit is logged, published and counted; stacked isolations are not", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      const changes = yield* collect(set.changes, 2)
      yield* Effect.scoped(Effect.andThen(set.isolate("p"), set.isolate("p")))
      assert.deepStrictEqual((yield* Fiber.join(changes)).map((c) => [c.from, c.to, c.reason, c.opening]), [
        ["Open", "Open", "isolated", 0],
        ["Open", "Closed", "released", 0]
      ])
      assert.deepStrictEqual(logs.filter((l) => l.message.includes("operator")).map((l) => l.level), ["Warn", "Info"])
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, { peer: "p", from: "Open", to: "Open", reason: "isolated" }),
        1
      )
    }).pipe(provideSet({ maxFailures: 0 }), Effect.provide(captureLogs(logs)))
  })

  it.effect("isolating a peer never seen creates its breaker; isolation shows in snapshot and metrics", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.scoped(Effect.gen(function*() {
        yield* set.isolate("fresh")
        const snapshot = yield* set.snapshot
        assert.deepStrictEqual(snapshot.peers.map((p) => [p.peer, p.state, p.isolated, p.opening, p.reason]), [
          ["fresh", "Open", true, 0, "isolated"]
        ])
        assert.strictEqual(yield* gauge({ peer: "fresh" }), 2)
      }))
      assert.strictEqual(yield* gauge({ peer: "fresh" }), 0)
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, {
          peer: "fresh",
          from: "Open",
          to: "Closed",
          reason: "released"
        }),
        1
      )
    }).pipe(provideSet()))
})
