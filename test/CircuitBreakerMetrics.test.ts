import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Metric, type Tracer } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import { Boom, count, failing, forkAdmitted, gauge, NotFound, provideSet, repeat } from "./utils.ts"

describe("metrics", () => {
  it.effect("count calls by outcome after a known sequence", () =>
    Effect.gen(function*() {
      yield* repeat(Effect.succeed(1).pipe(withBreaker("api")), 3)
      yield* repeat(Effect.fail(new NotFound()).pipe(withBreaker("api")), 2)
      const hung = yield* forkAdmitted(Effect.never, withBreaker("api"))
      yield* Fiber.interrupt(hung)
      yield* repeat(failing.pipe(withBreaker("api")), 2)
      yield* repeat(Effect.succeed(1).pipe(withBreaker("api")), 4)
      const calls = CircuitBreakerMetrics.calls
      assert.strictEqual(yield* count(calls, { peer: "api", outcome: "success" }), 5)
      assert.strictEqual(yield* count(calls, { peer: "api", outcome: "failure" }), 2)
      assert.strictEqual(yield* count(calls, { peer: "api", outcome: "ignored" }), 1)
      assert.strictEqual(yield* count(calls, { peer: "api", outcome: "rejected" }), 4)
      const opened = { peer: "api", from: "Closed", to: "Open" }
      assert.strictEqual(yield* count(CircuitBreakerMetrics.transitions, opened), 1)
      assert.strictEqual(yield* gauge({ peer: "api" }), 2)
    }).pipe(provideSet({ maxFailures: 1, isFailure: (e) => e instanceof Boom })))

  it.effect("the state gauge reads closed from a peer's first call, then follows every transition", () =>
    Effect.gen(function*() {
      const registry = yield* Metric.MetricRegistry
      assert.isFalse([...registry.values()].some((m) => m.id === "circuit_breaker_state"))
      yield* Effect.succeed(1).pipe(withBreaker("db"))
      assert.strictEqual(yield* gauge({ peer: "db" }), 0)
      yield* Effect.exit(failing.pipe(withBreaker("db")))
      assert.strictEqual(yield* gauge({ peer: "db" }), 2)
      yield* TestClock.adjust("10 seconds")
      const probe = yield* forkAdmitted(Effect.never, withBreaker("db"))
      assert.strictEqual(yield* gauge({ peer: "db" }), 1)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "db" }), 1)
      yield* Fiber.interrupt(probe)
      yield* Effect.succeed(1).pipe(withBreaker("db"))
      assert.strictEqual(yield* gauge({ peer: "db" }), 0)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "db" }), 2)
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, { peer: "db", from: "HalfOpen", to: "Closed" }),
        1
      )
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("metricPeerLabel \"none\" records series without a peer attribute", () =>
    Effect.gen(function*() {
      yield* Effect.succeed(1).pipe(withBreaker("a"))
      yield* Effect.succeed(1).pipe(withBreaker("b"))
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { outcome: "success" }), 2)
      const registry = yield* Metric.MetricRegistry
      const attributes = [...registry.values()].map((m) => m.attributes ?? {})
      assert.isFalse(attributes.some((a) => "peer" in a))
    }).pipe(provideSet({ metricPeerLabel: "none" })))

  it.effect("metricPeerLabel as a function groups peers under its label; a throwing one never fails the call", () =>
    Effect.gen(function*() {
      yield* Effect.succeed(1).pipe(withBreaker("https://a.example/x"))
      yield* Effect.succeed(1).pipe(withBreaker("https://a.example/y"))
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "a.example", outcome: "success" }), 2)
      assert.strictEqual(yield* Effect.succeed("ok").pipe(withBreaker("not a url")), "ok")
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "unlabelled", outcome: "success" }), 1)
    }).pipe(provideSet({ metricPeerLabel: (peer) => new URL(peer).host })))
})

describe("metric series lifetime", () => {
  it.effect("per-peer series go with their breaker when it is dropped as idle", () =>
    Effect.gen(function*() {
      const registry = yield* Metric.MetricRegistry
      const peerSeries = () => [...registry.values()].filter((m) => m.attributes?.peer?.startsWith("peer-")).length
      for (let i = 0; i < 100; i++) yield* Effect.succeed(1).pipe(withBreaker(`peer-${i}`))
      assert.strictEqual(peerSeries(), 200) // calls{outcome=success} and state, per peer
      const set = yield* CircuitBreakerSet
      // Snapshots run the sweeps (64 breakers each): the first minute's clear the call flags, the second's drop.
      for (const at of [60_000, 120_000]) {
        yield* TestClock.setTime(at)
        for (let i = 0; i < 2; i++) yield* set.snapshot
      }
      assert.strictEqual(peerSeries(), 0)
    }).pipe(provideSet({ idleTimeToLive: "1 minute" })))

  it.effect("sets built under different metric attributes report different series", () =>
    Effect.gen(function*() {
      const registry = new Map()
      const under = (service: string, calls: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < calls; i++) yield* Effect.succeed(1).pipe(withBreaker("db"))
        }).pipe(
          Effect.provide(CircuitBreakerSet.layer()),
          Effect.provideService(Metric.CurrentMetricAttributes, { service }),
          Effect.provideService(Metric.MetricRegistry, registry)
        )
      yield* under("orders", 3)
      yield* under("billing", 1)
      const read = (service: string) =>
        count(CircuitBreakerMetrics.calls, { peer: "db", outcome: "success" }).pipe(
          Effect.provideService(Metric.CurrentMetricAttributes, { service }),
          Effect.provideService(Metric.MetricRegistry, registry)
        )
      assert.deepStrictEqual([yield* read("orders"), yield* read("billing")], [3, 1])
    }))

  it.effect("two sets reporting the same series in one registry add up", () =>
    Effect.gen(function*() {
      const registry = new Map()
      const run = Effect.gen(function*() {
        yield* Effect.succeed(1).pipe(withBreaker("shared"))
      })
      const layer = () => CircuitBreakerSet.layer().pipe(Layer.provide(Layer.succeed(Metric.MetricRegistry, registry)))
      yield* run.pipe(Effect.provide(layer()))
      yield* run.pipe(Effect.provide(layer()))
      const value = yield* count(CircuitBreakerMetrics.calls, { peer: "shared", outcome: "success" }).pipe(
        Effect.provideService(Metric.MetricRegistry, registry)
      )
      assert.strictEqual(value, 2)
    }))
})

describe("tracing", () => {
  it.effect("annotates the caller's span with the peer and the state; a rejection ends the span with the error", () =>
    Effect.gen(function*() {
      const spans: Array<Tracer.Span> = []
      const capture = Effect.flatMap(Effect.currentSpan, (span) => Effect.sync(() => spans.push(span)))
      yield* capture.pipe(withBreaker("inventory"), Effect.withSpan("call"))
      yield* Effect.exit(Effect.andThen(capture, failing).pipe(withBreaker("inventory"), Effect.withSpan("call")))
      const rejected = yield* Effect.exit(
        Effect.flatMap(Effect.currentSpan, (span) => {
          spans.push(span)
          return Effect.succeed(1).pipe(withBreaker("inventory"))
        }).pipe(Effect.withSpan("call"))
      )
      assert.strictEqual(rejected._tag, "Failure")
      assert.strictEqual(spans.length, 3)
      assert.deepStrictEqual(
        spans.map((
          span
        ) => [span.attributes.get("circuit_breaker.peer"), span.attributes.get("circuit_breaker.state")]),
        [["inventory", "Closed"], ["inventory", "Closed"], ["inventory", "Open"]]
      )
      const last = spans[2]!
      assert.strictEqual(last.status._tag, "Ended")
      const exit = last.status._tag === "Ended" ? last.status.exit : undefined
      assert.include(String(exit), "CircuitOpenError")
    }).pipe(provideSet({ maxFailures: 0 })))
})
