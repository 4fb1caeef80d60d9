/**
 * Per-peer options (`peers` on a set): a listed peer's entry is merged over the set's options, field by field, with
 * the rules (a peer's `policy` replaces the set's policy and its shorthands, its `openDuration` or
 * `resetTimeout` replaces both of the set's, its `halfOpen` replaces the set's whole); a peer not listed uses the
 * set's options; every entry is validated when the layer is built, with paths such as
 * `peers.payments.policy.threshold`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Layer, Schedule } from "effect"
import { TestClock } from "effect/testing"
import {
  CircuitBreakerMetrics,
  CircuitBreakerSet,
  OpenDuration,
  Policy,
  type SetOptions,
  withBreaker
} from "../src/index.ts"
import { count, failing, provideSet, state } from "./utils.ts"

const fail = (peer: string) => Effect.exit(failing.pipe(withBreaker(peer)))

const failTimes = (peer: string, n: number) =>
  Effect.forEach(Array.from({ length: n }), () => fail(peer), { discard: true })

const openOf = (peer: string) =>
  Effect.map(state(peer), (s) => {
    assert.strictEqual(s._tag, "Open", `${peer}: expected Open, got ${JSON.stringify(s)}`)
    const open = s as Extract<typeof s, { _tag: "Open" }>
    return { opening: open.opening, reason: open.reason, millis: Duration.toMillis(open.retryAfter) }
  })

const buildError = (options: SetOptions) => Effect.flip(Layer.build(CircuitBreakerSet.layer(options)))

describe("a listed peer uses its own options, the others the set's", () => {
  it.effect("maxFailures 1 for the set, consecutive(3) for payments", () =>
    Effect.gen(function*() {
      yield* failTimes("payments", 2)
      assert.deepStrictEqual(yield* state("payments"), { _tag: "Closed", failures: 2 })
      yield* fail("payments")
      assert.deepStrictEqual((yield* openOf("payments")).reason, "consecutive")

      yield* fail("orders")
      assert.deepStrictEqual(yield* state("orders"), { _tag: "Closed", failures: 1 })
      yield* fail("orders")
      assert.deepStrictEqual((yield* openOf("orders")).reason, "window")

      const set = yield* CircuitBreakerSet
      assert.deepStrictEqual(Object.keys(set.options.peers), ["payments"])
      assert.deepStrictEqual(set.options.peers.payments!.policy, Policy.consecutive(3))
      const policy = set.options.policy
      assert.deepStrictEqual(
        policy._tag === "Window"
          ? { maxFailures: policy.maxFailures, window: Duration.toMillis(Duration.fromInputUnsafe(policy.window)) }
          : policy,
        { maxFailures: 1, window: 60_000 }
      )
      assert.strictEqual(
        yield* count(CircuitBreakerMetrics.transitions, {
          peer: "payments",
          from: "Closed",
          to: "Open",
          reason: "consecutive"
        }),
        1
      )
    }).pipe(provideSet({ maxFailures: 1, peers: { payments: { policy: Policy.consecutive(3) } } })))

  it.effect("a listed peer's other options come from the set: its open duration, its isFailure", () =>
    Effect.gen(function*() {
      yield* failTimes("payments", 3)
      assert.deepStrictEqual(yield* openOf("payments"), { opening: 1, reason: "consecutive", millis: 2_000 })
      const set = yield* CircuitBreakerSet
      const peer = set.options.peers.payments!
      assert.strictEqual(Duration.toMillis(peer.openDuration as Duration.Duration), 2_000)
      assert.strictEqual(peer.isFailure, set.options.isFailure)
      assert.strictEqual(peer.mode, "enforce")
    }).pipe(provideSet({
      maxFailures: 1,
      resetTimeout: "2 seconds",
      isFailure: () => true,
      peers: { payments: { policy: Policy.consecutive(3) } }
    })))
})

describe("merging a peer's entry over the set's options", () => {
  it.effect("a peer's policy replaces the set's shorthands maxFailures and window: no conflict", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.deepStrictEqual(set.options.peers.payments!.policy, Policy.consecutive(2))
      yield* failTimes("payments", 2)
      assert.strictEqual((yield* openOf("payments")).reason, "consecutive")
    }).pipe(
      provideSet({ maxFailures: 5, window: "5 seconds", peers: { payments: { policy: Policy.consecutive(2) } } })
    ))

  it.effect("a peer's maxFailures replaces the set's policy: the peer gets the window rule", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const policy = set.options.peers.payments!.policy
      assert.strictEqual(policy._tag, "Window")
      assert.strictEqual(policy._tag === "Window" ? policy.maxFailures : undefined, 0)
      yield* fail("payments")
      assert.strictEqual((yield* openOf("payments")).reason, "window")
      yield* failTimes("orders", 4)
      assert.deepStrictEqual(yield* state("orders"), { _tag: "Closed", failures: 4 })
    }).pipe(provideSet({ policy: Policy.consecutive(5), peers: { payments: { maxFailures: 0 } } })))

  it.effect("a peer's window alone keeps the set's maxFailures (field by field)", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const policy = set.options.peers.payments!.policy
      assert.deepStrictEqual(
        policy._tag === "Window"
          ? { maxFailures: policy.maxFailures, window: Duration.toMillis(Duration.fromInputUnsafe(policy.window)) }
          : policy,
        { maxFailures: 1, window: 5_000 }
      )
      // Failures 5 s apart never meet in the peer's 5 s window.
      yield* fail("payments")
      yield* TestClock.adjust("5 seconds")
      yield* fail("payments")
      assert.deepStrictEqual(yield* state("payments"), { _tag: "Closed", failures: 1 })
      // The set's 60 s window holds both.
      yield* fail("orders")
      yield* TestClock.adjust("5 seconds")
      yield* fail("orders")
      assert.strictEqual((yield* openOf("orders")).reason, "window")
    }).pipe(provideSet({ maxFailures: 1, peers: { payments: { window: "5 seconds" } } })))

  it.effect("a peer's openDuration replaces the set's resetTimeout: no conflict, and the peer's openings follow it", () =>
    Effect.gen(function*() {
      yield* fail("payments")
      yield* fail("orders")
      assert.deepStrictEqual(yield* openOf("payments"), { opening: 1, reason: "window", millis: 1_000 })
      assert.deepStrictEqual(yield* openOf("orders"), { opening: 1, reason: "window", millis: 10_000 })
      yield* TestClock.adjust("1 second")
      yield* fail("payments") // the probe fails: opening 2 of the peer's backoff
      assert.deepStrictEqual(yield* openOf("payments"), { opening: 2, reason: "probe-failed", millis: 2_000 })
    }).pipe(provideSet({
      maxFailures: 0,
      resetTimeout: "10 seconds",
      peers: {
        payments: { openDuration: OpenDuration.exponential({ base: "1 second", max: "1 minute", jitter: false }) }
      }
    })))

  it.effect("a peer's resetTimeout replaces the set's openDuration schedule", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.isTrue(Duration.isDuration(set.options.peers.payments!.openDuration))
      yield* fail("payments")
      yield* TestClock.adjust("3 seconds")
      yield* fail("payments")
      assert.deepStrictEqual(yield* openOf("payments"), { opening: 2, reason: "probe-failed", millis: 3_000 })
    }).pipe(provideSet({
      maxFailures: 0,
      openDuration: Schedule.exponential("1 second"),
      peers: { payments: { resetTimeout: "3 seconds" } }
    })))

  it.effect("a peer's halfOpen replaces the set's whole: fields it leaves out take the defaults, not the set's", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.deepStrictEqual(set.options.halfOpen, {
        probes: 3,
        successThreshold: 3,
        probeTimeout: Duration.seconds(1)
      })
      // Field by field it would be { probes: 3, successThreshold: 2 }: a config error. Whole, it is valid.
      assert.deepStrictEqual(set.options.peers.payments!.halfOpen, {
        probes: 1,
        successThreshold: 2,
        probeTimeout: undefined
      })
    }).pipe(provideSet({
      halfOpen: { probes: 3, successThreshold: 3, probeTimeout: "1 second" },
      peers: { payments: { halfOpen: { successThreshold: 2 } } }
    })))

  it.effect("a peer can run in observe mode while the set enforces", () =>
    Effect.gen(function*() {
      let ran = 0
      const call = (peer: string) => Effect.sync(() => ran++).pipe(Effect.andThen(failing), withBreaker(peer))
      for (let i = 0; i < 3; i++) yield* Effect.exit(call("payments"))
      for (let i = 0; i < 3; i++) yield* Effect.exit(call("orders"))
      assert.strictEqual(ran, 5) // payments ran all three; orders' third was rejected
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "payments", outcome: "would_reject" }), 1)
      assert.strictEqual(yield* count(CircuitBreakerMetrics.calls, { peer: "orders", outcome: "rejected" }), 1)
    }).pipe(provideSet({ maxFailures: 1, peers: { payments: { mode: "observe" } } })))
})

describe("each peer's entry is validated when the layer is built, under its path", () => {
  const cases: ReadonlyArray<readonly [name: string, options: SetOptions, fields: ReadonlyArray<string>]> = [
    [
      "a bad policy field",
      { peers: { payments: { policy: Policy.rate({ threshold: 1.5 }) } } },
      ["peers.payments.policy.threshold"]
    ],
    [
      "a bad member of an any",
      { peers: { payments: { policy: Policy.any(Policy.consecutive(3), Policy.consecutive(0)) } } },
      ["peers.payments.policy.members.1.failures"]
    ],
    ["not a policy", { peers: { payments: { policy: "consecutive" as never } } }, ["peers.payments.policy"]],
    [
      "policy with maxFailures in one entry",
      { peers: { payments: { policy: Policy.consecutive(3), maxFailures: 2 } } },
      ["peers.payments.maxFailures"]
    ],
    [
      "openDuration with resetTimeout in one entry",
      { peers: { payments: { openDuration: "1 second", resetTimeout: "2 seconds" } } },
      ["peers.payments.resetTimeout"]
    ],
    ["a bad maxFailures", { peers: { payments: { maxFailures: -1 } } }, ["peers.payments.maxFailures"]],
    ["a bad halfOpen", { peers: { payments: { halfOpen: { probes: 0 } } } }, ["peers.payments.halfOpen.probes"]],
    [
      "probes above successThreshold",
      { peers: { payments: { halfOpen: { probes: 2, successThreshold: 1 } } } },
      ["peers.payments.halfOpen.probes"]
    ],
    ["a bad mode", { peers: { payments: { mode: "bogus" as never } } }, ["peers.payments.mode"]],
    ["an unknown key", { peers: { payments: { maxFailure: 3 } as never } }, ["peers.payments.maxFailure"]],
    [
      "metricPeerLabel, which belongs to the set",
      { peers: { payments: { metricPeerLabel: "none" } as never } },
      ["peers.payments.metricPeerLabel"]
    ],
    ["an entry that is not an object", { peers: { payments: 5 as never } }, ["peers.payments"]],
    [
      "a schedule that yields no delay",
      { peers: { payments: { openDuration: Schedule.recurs(0) } } },
      ["peers.payments.openDuration"]
    ],
    [
      "a fixed openDuration longer than the set's maxOpenDuration",
      { maxOpenDuration: "1 minute", peers: { payments: { openDuration: "2 minutes" } } },
      ["peers.payments.maxOpenDuration"]
    ],
    [
      "a peer's own probes above its own successThreshold, whatever the set's halfOpen",
      {
        halfOpen: { probes: 1, successThreshold: 1 },
        peers: { payments: { halfOpen: { probes: 4, successThreshold: 3 } } }
      },
      ["peers.payments.halfOpen.probes"]
    ],
    [
      "two peers, each named",
      {
        peers: {
          payments: { policy: Policy.consecutive(0) },
          orders: { policy: Policy.rate({ minimumCalls: 0 }) }
        }
      },
      ["peers.payments.policy.failures", "peers.orders.policy.minimumCalls"]
    ]
  ]
  for (const [name, options, fields] of cases) {
    it.effect(`${name}: ${fields.join(", ")}`, () =>
      Effect.gen(function*() {
        const error = yield* buildError(options)
        assert.strictEqual(error._tag, "CircuitBreakerConfigError")
        assert.deepStrictEqual([...error.fields].sort(), [...fields].sort())
        for (const field of fields) assert.include(error.message, `${field}:`)
      }))
  }

  it.effect("a conflict inside one entry names both options in its message", () =>
    Effect.gen(function*() {
      const error = yield* buildError({ peers: { payments: { policy: Policy.consecutive(3), maxFailures: 2 } } })
      assert.match(error.message, /^peers\.payments\.maxFailures: .*policy/m)
    }))

  it.effect("a peer's policy does not conflict with the set's maxFailures, nor a peer's openDuration with the set's resetTimeout", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.deepStrictEqual(Object.keys(set.options.peers), ["payments"])
    }).pipe(Effect.provide(
      CircuitBreakerSet.layer({
        maxFailures: 2,
        window: "10 seconds",
        resetTimeout: "5 seconds",
        peers: { payments: { policy: Policy.consecutive(3), openDuration: "1 second" } }
      }).pipe(Layer.orDie)
    )))

  it.effect("peers must be an object of entries", () =>
    Effect.gen(function*() {
      const error = yield* buildError({ peers: 5 as never })
      assert.deepStrictEqual(error.fields, ["peers"])
    }))
})
