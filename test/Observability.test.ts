import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Layer, Metric, Ref, Schema, Stream, type Tracer } from "effect"
import { TestClock } from "effect/testing"
import {
  CircuitBreakerMetrics,
  CircuitBreakerSet,
  CircuitSnapshot,
  type SetOptions,
  withBreaker
} from "../src/index.ts"
import { Boom, type CapturedLog, captureLogs, NotFound, repeat } from "./utils.ts"

/** A fresh metric registry per test, so counts do not leak between concurrent tests. */
const freshRegistry = Layer.sync(Metric.MetricRegistry, () => new Map())

const provideSet = (options?: SetOptions) =>
  Effect.provide(CircuitBreakerSet.layer(options).pipe(Layer.provideMerge(freshRegistry)))

const count = (metric: Metric.Counter<number>, attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, attributes)), (state) => state.count)

const gauge = (attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(CircuitBreakerMetrics.state, attributes)), (state) => state.value)

const failing = Effect.fail(new Boom())

describe("metrics", () => {
  it.effect("count calls by outcome after a known sequence", () =>
    Effect.gen(function*() {
      yield* repeat(Effect.succeed(1).pipe(withBreaker("api")), 3)
      yield* repeat(Effect.fail(new NotFound()).pipe(withBreaker("api")), 2)
      const hung = yield* Effect.forkChild(Effect.never.pipe(withBreaker("api")))
      yield* Effect.yieldNow
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
      const probe = yield* Effect.forkChild(Effect.never.pipe(withBreaker("db")))
      yield* Effect.yieldNow
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
      const traced = <A, E, R>(self: Effect.Effect<A, E, R>) =>
        self.pipe(Effect.withSpan("call"), Effect.tap(() => Effect.void))
      const capture = Effect.flatMap(Effect.currentSpan, (span) => Effect.sync(() => spans.push(span)))
      yield* traced(capture.pipe(withBreaker("inventory")))
      yield* Effect.exit(traced(Effect.andThen(capture, failing).pipe(withBreaker("inventory"))))
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

describe("changes", () => {
  it.effect("publishes every change with peer, from, to, at and reason", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const collected = yield* Effect.forkChild(Stream.runCollect(Stream.take(set.changes, 5)))
      yield* Effect.yieldNow
      yield* TestClock.adjust("1 second")
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      yield* TestClock.adjust("10 seconds")
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      yield* TestClock.adjust("10 seconds")
      yield* Effect.succeed(1).pipe(withBreaker("p"))
      const changes = yield* Fiber.join(collected)
      assert.deepStrictEqual(changes, [
        { peer: "p", from: "Closed", to: "Open", at: 1_000, reason: "failures" },
        { peer: "p", from: "Open", to: "HalfOpen", at: 11_000, reason: "probe" },
        { peer: "p", from: "HalfOpen", to: "Open", at: 11_000, reason: "probe-failed" },
        { peer: "p", from: "Open", to: "HalfOpen", at: 21_000, reason: "probe" },
        { peer: "p", from: "HalfOpen", to: "Closed", at: 21_000, reason: "probe-succeeded" }
      ])
    }).pipe(provideSet({ maxFailures: 0 })))

  it.effect("a stalled subscriber neither blocks calls nor buffers more than 1,024 changes", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const gate = yield* Deferred.make<void>()
      const received = yield* Ref.make<Array<string>>([])
      // The subscriber takes the first change, then stalls on the gate while 2,999 more are published.
      const stalled = yield* Effect.forkChild(
        Stream.runForEach(set.changes, (change) =>
          Effect.andThen(
            Deferred.await(gate),
            Ref.update(received, (peers) => [...peers, change.peer])
          ))
      )
      yield* Effect.yieldNow
      for (let i = 0; i < 3_000; i++) yield* Effect.exit(failing.pipe(withBreaker(`peer-${i}`)))
      assert.strictEqual((yield* set.snapshot).peers.filter((p) => p.state === "Open").length, 3_000)
      yield* Deferred.succeed(gate, undefined)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow
      const peers = yield* Ref.get(received)
      // The first change, then the newest 1,024: the oldest were dropped.
      assert.strictEqual(peers.length, 1 + 1_024)
      assert.strictEqual(peers[0], "peer-0")
      assert.strictEqual(peers[1], `peer-${3_000 - 1_024}`)
      assert.strictEqual(peers.at(-1), "peer-2999")
      yield* Fiber.interrupt(stalled)
    }).pipe(provideSet({ maxFailures: 0 })))
})

describe("snapshot", () => {
  it.effect("lists every peer the set holds and encodes to JSON", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* TestClock.adjust("5 seconds")
      yield* Effect.exit(failing.pipe(withBreaker("open")))
      yield* Effect.exit(failing.pipe(withBreaker("open")))
      yield* Effect.exit(failing.pipe(withBreaker("closed")))
      yield* Effect.succeed(1).pipe(withBreaker("healthy"))
      yield* TestClock.adjust("2 seconds")
      const snapshot = yield* set.snapshot
      const json = JSON.parse(JSON.stringify(Schema.encodeSync(CircuitSnapshot.CircuitSnapshot)(snapshot)))
      assert.deepStrictEqual(json, {
        at: 7_000,
        peers: [
          { peer: "open", state: "Open", failures: 0, openedAt: 5_000, probeAt: 15_000, isolated: false },
          { peer: "closed", state: "Closed", failures: 1 },
          { peer: "healthy", state: "Closed", failures: 0 }
        ]
      })
      assert.deepStrictEqual(Schema.decodeUnknownSync(CircuitSnapshot.CircuitSnapshot)(json), snapshot)
    }).pipe(provideSet({ maxFailures: 1 })))
})

describe("operations", () => {
  it.effect("reset closes a circuit and empties its window; it is logged and published", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* repeat(failing.pipe(withBreaker("p")), 2)
      assert.strictEqual((yield* set.state("p"))._tag, "Open")
      const changes = yield* Effect.forkChild(Stream.runCollect(Stream.take(set.changes, 2)))
      yield* Effect.yieldNow
      yield* set.reset("p")
      assert.deepStrictEqual(yield* set.state("p"), { _tag: "Closed", failures: 0 })
      yield* Effect.exit(failing.pipe(withBreaker("q")))
      yield* set.reset("q")
      assert.deepStrictEqual(yield* set.state("q"), { _tag: "Closed", failures: 0 })
      assert.deepStrictEqual((yield* Fiber.join(changes)).map((c) => [c.peer, c.from, c.to, c.reason]), [
        ["p", "Open", "Closed", "reset"],
        ["q", "Closed", "Closed", "reset"]
      ])
      assert.isTrue(logs.some((log) => log.message.includes("reset") && log.annotations.peer === "p"))
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, { peer: "p", from: "Open", to: "Closed" }),
        1
      )
    }).pipe(provideSet({ maxFailures: 1 }), Effect.provide(captureLogs(logs)))
  })

  it.effect("isolate holds a circuit open past resetTimeout until its scope closes; isolations stack", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      const outer = yield* Effect.forkChild(Effect.scoped(Effect.andThen(set.isolate("p"), Effect.never)))
      const inner = yield* Effect.forkChild(Effect.scoped(Effect.andThen(set.isolate("p"), Effect.never)))
      yield* Effect.yieldNow
      yield* TestClock.adjust("1 hour")
      const error = yield* Effect.flip(Effect.succeed(1).pipe(withBreaker("p")))
      assert.strictEqual(error._tag, "CircuitOpenError")
      assert.strictEqual(error._tag === "CircuitOpenError" && Duration.toMillis(error.retryAfter), 10_000)
      const state = yield* set.state("p")
      assert.isTrue(state._tag === "Open" && state.isolated)
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

  it.effect("reset makes calls in flight decide nothing, whatever the window held", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const gate = yield* Deferred.make<void>()
      const inFlight = yield* Effect.forEach(
        [1, 2],
        () => Effect.forkChild(Deferred.await(gate).pipe(Effect.andThen(failing), withBreaker("p"), Effect.exit))
      )
      yield* Effect.yieldNow
      yield* set.reset("p")
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.forEach(inFlight, Fiber.join)
      assert.deepStrictEqual(yield* set.state("p"), { _tag: "Closed", failures: 0 })
    }).pipe(provideSet({ maxFailures: 1 })))

  it.effect("isolating an open circuit is logged, published and counted; stacked isolations are not", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(failing.pipe(withBreaker("p")))
      const changes = yield* Effect.forkChild(Stream.runCollect(Stream.take(set.changes, 2)))
      yield* Effect.yieldNow
      yield* Effect.scoped(Effect.andThen(set.isolate("p"), set.isolate("p")))
      assert.deepStrictEqual((yield* Fiber.join(changes)).map((c) => [c.from, c.to, c.reason]), [
        ["Open", "Open", "isolated"],
        ["Open", "Closed", "released"]
      ])
      assert.deepStrictEqual(logs.filter((l) => l.message.includes("operator")).map((l) => l.level), ["Warn", "Info"])
      assert.strictEqual(yield* count(CircuitBreakerMetrics.transitions, { peer: "p", from: "Open", to: "Open" }), 1)
    }).pipe(provideSet({ maxFailures: 0 }), Effect.provide(captureLogs(logs)))
  })

  it.effect("isolating a peer never seen creates its breaker; isolation shows in snapshot and metrics", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.scoped(Effect.gen(function*() {
        yield* set.isolate("fresh")
        const snapshot = yield* set.snapshot
        assert.deepStrictEqual(snapshot.peers.map((p) => [p.peer, p.state, p.isolated]), [["fresh", "Open", true]])
        assert.strictEqual(yield* gauge({ peer: "fresh" }), 2)
      }))
      assert.strictEqual(yield* gauge({ peer: "fresh" }), 0)
      const released = { peer: "fresh", from: "Open", to: "Closed" }
      assert.strictEqual(yield* count(CircuitBreakerMetrics.transitions, released), 1)
    }).pipe(provideSet()))
})
