import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Metric, type Tracer } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import {
  Boom,
  type CapturedLog,
  captureLogs,
  collect,
  count,
  expectRejection,
  failing,
  forkAdmitted,
  gauge,
  NotFound,
  openingGauge,
  provideSet,
  repeat
} from "./utils.ts"

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
      assert.strictEqual(yield* count(calls, { peer: "api", outcome: "would_reject" }), 0)
      const opened = { peer: "api", from: "Closed", to: "Open", reason: "window" }
      assert.strictEqual(yield* count(CircuitBreakerMetrics.transitions, opened), 1)
      assert.strictEqual(yield* gauge({ peer: "api" }), 2)
      assert.strictEqual(yield* openingGauge({ peer: "api" }), 1)
    }).pipe(provideSet({ maxFailures: 1, isFailure: (e) => e instanceof Boom })))

  it.effect("the state gauge reads closed from a peer's first call, then follows every transition", () =>
    Effect.gen(function*() {
      const registry = yield* Metric.MetricRegistry
      assert.isFalse([...registry.values()].some((m) => m.id === "circuit_breaker_state"))
      yield* Effect.succeed(1).pipe(withBreaker("db"))
      assert.strictEqual(yield* gauge({ peer: "db" }), 0)
      yield* Effect.exit(failing.pipe(withBreaker("db")))
      assert.strictEqual(yield* gauge({ peer: "db" }), 2)
      assert.strictEqual(yield* openingGauge({ peer: "db" }), 1)
      yield* TestClock.adjust("10 seconds")
      // A probe whose own effect is interrupted gives its slot back: the next call is a second probe.
      const release = yield* Deferred.make<void>()
      const probe = yield* forkAdmitted(Effect.andThen(Deferred.await(release), Effect.interrupt), withBreaker("db"))
      assert.strictEqual(yield* gauge({ peer: "db" }), 1)
      assert.strictEqual(yield* openingGauge({ peer: "db" }), 1)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "db" }), 1)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.await(probe)
      yield* Effect.succeed(1).pipe(withBreaker("db"))
      assert.strictEqual(yield* gauge({ peer: "db" }), 0)
      assert.strictEqual(yield* openingGauge({ peer: "db" }), 0)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, { peer: "db" }), 2)
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, {
          peer: "db",
          from: "HalfOpen",
          to: "Closed",
          reason: "probe-succeeded"
        }),
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
  it.effect("a dropped breaker's per-peer series are kept for metricRetention, then removed", () =>
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
      assert.deepStrictEqual((yield* set.snapshot).peers, [])
      assert.strictEqual(peerSeries(), 200)
      // Released when the set next creates or drops a breaker after the retention.
      yield* TestClock.setTime(120_000 + 5 * 60_000)
      yield* Effect.succeed(1).pipe(withBreaker("other"))
      assert.strictEqual(peerSeries(), 0)
    }).pipe(provideSet({ idleTimeToLive: "1 minute", metricRetention: "5 minutes" })))

  it.effect("at most 10,000 dropped peers' series are kept: the oldest go first", () =>
    Effect.gen(function*() {
      const registry = yield* Metric.MetricRegistry
      const peersWithSeries = () =>
        new Set([...registry.values()].map((m) => m.attributes?.peer).filter((p) => p?.startsWith("peer-"))).size
      for (let i = 0; i < 10_050; i++) yield* Effect.succeed(1).pipe(withBreaker(`peer-${i}`))
      const set = yield* CircuitBreakerSet
      // Snapshots run the sweeps (64 breakers each): the first minute's clear the call flags, the second's drop.
      for (const at of [60_000, 120_000]) {
        yield* TestClock.setTime(at)
        for (let i = 0; i < 160; i++) yield* set.snapshot
      }
      assert.deepStrictEqual((yield* set.snapshot).peers, [])
      assert.strictEqual(peersWithSeries(), 10_000)
      // The first 50 dropped are the ones gone.
      const kept = new Set([...registry.values()].map((m) => m.attributes?.peer))
      assert.isFalse(kept.has("peer-0"))
      assert.isTrue(kept.has("peer-10049"))
    }).pipe(provideSet({ idleTimeToLive: "1 minute" })), 60_000)

  it.effect("a peer called less often than idleTimeToLive keeps counting: 1, 2, 3, 4, 5", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const seen: Array<number> = []
      for (let i = 0; i < 5; i++) {
        yield* Effect.succeed(1).pipe(withBreaker("rare"))
        seen.push(yield* count(CircuitBreakerMetrics.calls, { peer: "rare", outcome: "success" }))
        // Three minutes later, its breaker has been dropped (the snapshot runs the sweep).
        yield* TestClock.adjust("3 minutes")
        yield* set.snapshot
        yield* TestClock.adjust("1 millis")
        yield* set.snapshot
      }
      assert.deepStrictEqual(seen, [1, 2, 3, 4, 5])
    }).pipe(provideSet({ idleTimeToLive: "1 minute" })))

  it.effect("closing a set's scope removes every series it registered; a new set's gauge reads 0", () =>
    Effect.gen(function*() {
      const registry = new Map()
      const useOnce = (open: boolean) =>
        Effect.gen(function*() {
          yield* Effect.succeed(1).pipe(withBreaker("api"))
          if (open) yield* Effect.exit(failing.pipe(withBreaker("api")))
          yield* Effect.exit(failing.pipe(withBreaker("db")))
          return yield* gauge({ peer: "api" })
        }).pipe(
          Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0 })),
          Effect.provideService(Metric.MetricRegistry, registry)
        )
      assert.strictEqual(yield* useOnce(true), 2)
      assert.strictEqual(registry.size, 0)
      for (let i = 0; i < 500; i++) yield* useOnce(i % 2 === 0)
      assert.strictEqual(registry.size, 0)
      // A rebuilt set whose peer is closed reads 0, whatever an earlier set's gauge said.
      assert.strictEqual(yield* useOnce(false), 0)
    }))

  it.effect("sets built under different metric attributes report different series", () =>
    Effect.gen(function*() {
      const registry = new Map()
      const under = (service: string, calls: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < calls; i++) yield* Effect.succeed(1).pipe(withBreaker("db"))
          return yield* count(CircuitBreakerMetrics.calls, { peer: "db", outcome: "success" })
        }).pipe(
          Effect.provide(CircuitBreakerSet.layer()),
          Effect.provideService(Metric.CurrentMetricAttributes, { service }),
          Effect.provideService(Metric.MetricRegistry, registry)
        )
      // Each count is read while its set is alive: a set's series go when it closes.
      assert.deepStrictEqual([yield* under("orders", 3), yield* under("billing", 1)], [3, 1])
    }))

  it.effect("two live sets reporting the same series in one registry add up", () =>
    Effect.gen(function*() {
      const registry = new Map()
      const layer = CircuitBreakerSet.layer().pipe(Layer.provide(Layer.succeed(Metric.MetricRegistry, registry)))
      const first = yield* Layer.build(layer)
      const second = yield* Layer.build(layer.pipe(Layer.fresh))
      for (const context of [first, second]) {
        yield* Effect.succeed(1).pipe(withBreaker("shared"), Effect.provide(context))
      }
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

describe("warnings and log lines", () => {
  it.effect("a metricPeerLabel that throws is logged at Warning once, with the peer and the error", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      yield* Effect.succeed(1).pipe(withBreaker("not a url"))
      yield* Effect.succeed(1).pipe(withBreaker("nor this"))
      const warnings = logs.filter((log) => log.level === "Warn")
      assert.strictEqual(warnings.length, 1)
      assert.include(warnings[0]!.message, "metricPeerLabel threw for peer \"not a url\"")
      assert.include(warnings[0]!.message, "Invalid URL")
    }).pipe(provideSet({ metricPeerLabel: (peer) => new URL(peer).host }), Effect.provide(captureLogs(logs)))
  })

  it.effect("an isFailure that throws is logged at Warning once per peer, with the thrown error", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      for (const peer of ["a", "a", "a", "b"]) yield* Effect.exit(failing.pipe(withBreaker(peer)))
      const warnings = logs.filter((log) => log.message.includes("isFailure threw"))
      assert.deepStrictEqual(warnings.map((log) => log.annotations.peer), ["a", "b"])
      assert.isTrue(warnings.every((log) => log.level === "Warn" && log.message.includes("predicate bug")))
    }).pipe(
      provideSet({
        maxFailures: 10,
        isFailure: () => {
          throw new Error("predicate bug")
        }
      }),
      Effect.provide(captureLogs(logs))
    )
  })

  it.effect("log lines speak in durations; maxFailures 0 opens on the first failure; long peers are shortened", () => {
    const logs: Array<CapturedLog> = []
    const peer = "x".repeat(300)
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const changes = yield* collect(set.changes, 1)
      yield* Effect.exit(failing.pipe(withBreaker(peer)))
      const opened = logs.find((log) => log.message.startsWith("Circuit opened"))
      assert.strictEqual(opened?.message, "Circuit opened on the first failure; rejecting calls for 10s")
      assert.strictEqual(opened?.annotations.peer, `${"x".repeat(256)}… (300 characters)`)
      // The change record and the error keep the whole name.
      assert.strictEqual(Array.from(yield* Fiber.join(changes))[0]!.peer, peer)
      assert.strictEqual((yield* expectRejection(Effect.void.pipe(withBreaker(peer)))).peer, peer)
    }).pipe(provideSet({ maxFailures: 0 }), Effect.provide(captureLogs(logs)))
  })

  it.effect("the opening log line gives the window and the open period as durations", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      yield* repeat(failing.pipe(withBreaker("api")), 4)
      assert.isTrue(
        logs.some((log) => log.message === "Circuit opened: more than 3 failures within 1m; rejecting calls for 10s")
      )
    }).pipe(provideSet({ maxFailures: 3, window: "1 minute" }), Effect.provide(captureLogs(logs)))
  })

  it.effect("a reopening logs at Warning why, for how long, and the opening number", () => {
    const logs: Array<CapturedLog> = []
    return Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      // The probe fails: the second opening.
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* TestClock.adjust("10 seconds")
      // The next probe hangs past its lease (the 10 s opening before it): the third opening.
      const hung = yield* forkAdmitted(Effect.never, withBreaker("api"))
      yield* TestClock.adjust("10 seconds")
      yield* expectRejection(Fiber.join(hung))
      assert.deepStrictEqual(
        logs.filter((log) => log.message.startsWith("Circuit") && log.level === "Warn").map((log) => log.message),
        [
          "Circuit opened on the first failure; rejecting calls for 10s",
          "Circuit re-opened: a probe failed; rejecting calls for 10s (opening 2)",
          "Circuit re-opened: a probe was still running when its lease ended; rejecting calls for 10s (opening 3)"
        ]
      )
    }).pipe(provideSet({ maxFailures: 0 }), Effect.provide(captureLogs(logs)))
  })
})
