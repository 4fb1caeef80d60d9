/**
 * Validation of the new options (policies, open durations, half-open, mode): every bad value is a
 * `CircuitBreakerConfigError` naming its path, and nothing is clamped. Each case is built three ways:
 * `CircuitBreakerSet.layer`, `CircuitBreaker.make` and `CircuitBreakerSet.layerConfig` (whose argument takes
 * `policy`, `openDuration`, `maxOpenDuration`, `halfOpen`, `mode` and `peers`).
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer, Schedule } from "effect"
import { CircuitBreaker, CircuitBreakerSet, OpenDuration, Policy, withBreaker } from "../src/index.ts"
import { failing, state } from "./utils.ts"

const fromEnv = (env: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromEnv({ env }))

const layerConfigKeys = new Set([
  "policy",
  "openDuration",
  "maxOpenDuration",
  "halfOpen",
  "mode",
  "isFailure",
  "metricPeerLabel",
  "peers"
])

/** Builds the options each way that accepts them, giving the error each one fails with (a defect if it succeeds). */
const builders: ReadonlyArray<
  readonly [
    name: string,
    accepts: (options: Record<string, unknown>) => boolean,
    build: (options: Record<string, unknown>) => Effect.Effect<unknown, unknown, never>
  ]
> = [
  ["CircuitBreakerSet.layer", () => true, (options) => Effect.scoped(Layer.build(CircuitBreakerSet.layer(options)))],
  ["CircuitBreaker.make", (options) => !("peers" in options), (options) => CircuitBreaker.make(options)],
  [
    "CircuitBreakerSet.layerConfig",
    (options) => Object.keys(options).every((key) => layerConfigKeys.has(key)),
    (options) => Effect.scoped(Layer.build(CircuitBreakerSet.layerConfig(options).pipe(Layer.provide(fromEnv({})))))
  ]
]

const configError = (effect: Effect.Effect<unknown, unknown, never>) =>
  Effect.flatMap(Effect.flip(effect), (error) => {
    assert.strictEqual((error as { _tag?: unknown })._tag, "CircuitBreakerConfigError", String(error))
    return Effect.succeed(error as { readonly fields: ReadonlyArray<string>; readonly message: string })
  })

const show = (value: unknown): string =>
  typeof value === "number" || typeof value === "bigint"
    ? String(value)
    : typeof value === "string"
    ? JSON.stringify(value)
    : value === null
    ? "null"
    : Array.isArray(value)
    ? "an array"
    : typeof value === "function"
    ? "a function"
    : Schedule.isSchedule(value)
    ? "a Schedule"
    : JSON.stringify(value) ?? String(value)

interface Case {
  readonly name: string
  readonly options: Record<string, unknown>
  readonly fields: ReadonlyArray<string>
  /** Text the message must hold besides each field's name. */
  readonly mentions?: ReadonlyArray<RegExp>
}

// ---- the bad values of each kind of field ----

/** Not a non-negative integer. */
const notWhole = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1.5, -1, "3", null]
/** Not an integer ≥ 1. */
const notCount = [...notWhole, 0]
/** Not a ratio in (0, 1]. */
const notRatio = [Number.NaN, Number.POSITIVE_INFINITY, 0, -0.5, 1.5, "0.5", null]
/** Not a finite duration longer than zero. */
const notDuration = [Number.NaN, Number.POSITIVE_INFINITY, -1, 0, "soon", "-3 seconds", Duration.infinity, null]

/** `options` with the value at `path` (dot-separated, through arrays and frozen policies) replaced by `value`. */
const setPath = (options: unknown, path: ReadonlyArray<string>, value: unknown): unknown => {
  if (path.length === 0) return value
  const [key, ...rest] = path
  const copy: Record<string, unknown> = Array.isArray(options) ? [...options] as never : { ...(options as object) }
  copy[key!] = setPath(copy[key!], rest, value)
  return copy
}

/**
 * One case per bad value. Each is built with the `Policy` constructors; `null`, which they would read as "absent"
 * (their parameters are typed without it), replaces the `valid` value in the built options, as plain data would.
 */
const each = (
  values: ReadonlyArray<unknown>,
  field: string,
  valid: unknown,
  options: (value: never) => Record<string, unknown>
): Array<Case> =>
  values.map((value) => ({
    name: `${field} ${show(value)}`,
    options: value === null
      ? setPath(options(valid as never), field.split("."), null) as Record<string, unknown>
      : options(value as never),
    fields: [field]
  }))

const rateTime = { threshold: 0.5, minimumCalls: 10, window: "60 seconds", buckets: 10 } as const
const slow = { duration: "2 seconds", threshold: 0.5, minimumCalls: 4, window: "60 seconds", buckets: 10 } as const

const numericCases: Array<Case> = [
  // window
  ...each(notWhole, "policy.maxFailures", 3, (v) => ({ policy: Policy.window({ maxFailures: v }) })),
  ...each(notDuration, "policy.window", "1 minute", (v) => ({ policy: Policy.window({ window: v }) })),
  // consecutive
  ...each(notCount, "policy.failures", 3, (v) => ({ policy: Policy.consecutive(v) })),
  // rate over a time window
  ...each(notRatio, "policy.threshold", 0.5, (v) => ({ policy: Policy.rate({ ...rateTime, threshold: v }) })),
  ...each(notCount, "policy.minimumCalls", 1, (v) => ({ policy: Policy.rate({ ...rateTime, minimumCalls: v }) })),
  ...each(notDuration, "policy.window", "1 minute", (v) => ({ policy: Policy.rate({ ...rateTime, window: v }) })),
  ...each([...notCount, 1001], "policy.buckets", 10, (v) => ({ policy: Policy.rate({ ...rateTime, buckets: v }) })),
  // rate over a count window
  ...each([...notCount, 100_001], "policy.calls", 10, (v) => ({ policy: Policy.rate({ minimumCalls: 1, calls: v }) })),
  ...each(notCount, "policy.minimumCalls", 1, (v) => ({ policy: Policy.rate({ minimumCalls: v, calls: 10 }) })),
  // slow calls
  ...each(notDuration, "policy.duration", "1 second", (v) => ({ policy: Policy.slowCalls({ ...slow, duration: v }) })),
  ...each(notRatio, "policy.threshold", 0.5, (v) => ({ policy: Policy.slowCalls({ ...slow, threshold: v }) })),
  ...each(notCount, "policy.minimumCalls", 1, (v) => ({ policy: Policy.slowCalls({ ...slow, minimumCalls: v }) })),
  ...each(notDuration, "policy.window", "1 minute", (v) => ({ policy: Policy.slowCalls({ ...slow, window: v }) })),
  ...each(notCount, "policy.buckets", 10, (v) => ({ policy: Policy.slowCalls({ ...slow, buckets: v }) })),
  ...each(notCount, "policy.calls", 10, (v) => ({
    policy: Policy.slowCalls({ duration: "2 seconds", minimumCalls: 1, calls: v })
  })),
  // a member of an any, under its index
  ...each(notRatio, "policy.members.1.threshold", 0.5, (v) => ({
    policy: Policy.any(Policy.consecutive(5), Policy.rate({ ...rateTime, threshold: v }))
  })),
  // half-open
  ...each([...notCount, 1001], "halfOpen.probes", 1, (v) => ({ halfOpen: { probes: v, successThreshold: 2000 } })),
  ...each(notCount, "halfOpen.successThreshold", 1, (v) => ({ halfOpen: { successThreshold: v } })),
  ...each(notDuration, "halfOpen.probeTimeout", "1 second", (v) => ({ halfOpen: { probeTimeout: v } })),
  // open durations
  ...each(notDuration, "openDuration", "1 second", (v) => ({ openDuration: v })),
  ...each(notDuration, "maxOpenDuration", "1 hour", (v) => ({ maxOpenDuration: v }))
]

const structuralCases: Array<Case> = [
  // not a policy
  ...["consecutive", {}, { _tag: "Nope" }, 5, null, [], Policy.consecutive, Schedule.spaced("1 second")].map((
    policy
  ) => ({ name: `policy ${show(policy)}`, options: { policy }, fields: ["policy"] })),
  {
    name: "a member of an any that is not a policy",
    options: { policy: Policy.any(Policy.consecutive(2), "x" as never) },
    fields: ["policy.members.1"]
  },
  { name: "an any without members", options: { policy: { _tag: "Any", members: [] } }, fields: ["policy.members"] },
  {
    name: "Policy.any() called from JavaScript with no member",
    options: { policy: (Policy.any as unknown as () => Policy.Policy)() },
    fields: ["policy.members"]
  },
  {
    name: "any(p) is p: its path is p's",
    options: { policy: Policy.any(Policy.consecutive(0)) },
    fields: ["policy.failures"]
  },
  {
    name: "nested anys are flattened: the member's index is in the flat list",
    options: { policy: Policy.any(Policy.consecutive(2), Policy.any(Policy.consecutive(3), Policy.consecutive(-1))) },
    fields: ["policy.members.2.failures"]
  },
  {
    name: "a tagged policy missing its fields",
    options: { policy: { _tag: "Window" } },
    fields: ["policy.maxFailures", "policy.window"]
  },
  // unknown keys
  {
    name: "an unknown key inside a policy",
    options: { policy: { ...Policy.consecutive(3), maxFailures: 3 } },
    fields: ["policy.maxFailures"],
    mentions: [/Unknown option/]
  },
  {
    name: "an unknown key inside a member of an any",
    options: { policy: Policy.any(Policy.consecutive(2), { ...Policy.consecutive(3), window: "1 minute" } as never) },
    fields: ["policy.members.1.window"]
  },
  {
    name: "an unknown key inside halfOpen",
    options: { halfOpen: { probes: 1, probe: 2 } },
    fields: ["halfOpen.probe"],
    mentions: [/Unknown option/]
  },
  { name: "halfOpen null", options: { halfOpen: null }, fields: ["halfOpen"] },
  { name: "halfOpen 5", options: { halfOpen: 5 }, fields: ["halfOpen"] },
  // half-open slots
  {
    name: "probes > successThreshold",
    options: { halfOpen: { probes: 3, successThreshold: 2 } },
    fields: ["halfOpen.probes"],
    mentions: [/successThreshold/]
  },
  {
    name: "probes > the default successThreshold of an explicit 1",
    options: { halfOpen: { probes: 2, successThreshold: 1 } },
    fields: ["halfOpen.probes"]
  },
  { name: "{ probes: 0 }", options: { halfOpen: { probes: 0 } }, fields: ["halfOpen.probes"] },
  // conflicts
  {
    name: "policy with maxFailures",
    options: { policy: Policy.consecutive(3), maxFailures: 3 },
    fields: ["maxFailures"],
    mentions: [/^maxFailures: .*\bpolicy\b/m]
  },
  {
    name: "policy with window",
    options: { policy: Policy.consecutive(3), window: "1 minute" },
    fields: ["window"],
    mentions: [/^window: .*\bpolicy\b/m]
  },
  {
    name: "policy with maxFailures and window",
    options: { policy: Policy.rate(), maxFailures: 3, window: "1 minute" },
    fields: ["maxFailures", "window"]
  },
  {
    name: "openDuration with resetTimeout",
    options: { openDuration: "1 second", resetTimeout: "2 seconds" },
    fields: ["resetTimeout"],
    mentions: [/^resetTimeout: .*\bopenDuration\b/m]
  },
  {
    name: "an openDuration schedule with resetTimeout",
    options: { openDuration: Schedule.exponential("1 second"), resetTimeout: "2 seconds" },
    fields: ["resetTimeout"]
  },
  {
    name: "a fixed openDuration longer than maxOpenDuration (it would be cut, not clamped)",
    options: { openDuration: "2 hours", maxOpenDuration: "1 hour" },
    fields: ["maxOpenDuration"]
  },
  {
    name: "a resetTimeout longer than maxOpenDuration",
    options: { resetTimeout: "2 minutes", maxOpenDuration: "1 minute" },
    fields: ["maxOpenDuration"]
  },
  // schedules that yield no delay
  { name: "Schedule.recurs(0)", options: { openDuration: Schedule.recurs(0) }, fields: ["openDuration"] },
  { name: "Schedule.spaced(0)", options: { openDuration: Schedule.spaced(0) }, fields: ["openDuration"] },
  {
    name: "a schedule that yields no delay, under a policy",
    options: { policy: Policy.consecutive(2), openDuration: Schedule.recurs(0).pipe(Schedule.upTo({ times: 3 })) },
    fields: ["openDuration"]
  },
  // mode
  ...["bogus", "Observe", null, true].map((mode) => ({
    name: `mode ${show(mode)}`,
    options: { mode },
    fields: ["mode"]
  })),
  // buckets narrower than 1 ms
  {
    name: "a 9 ms window in 10 buckets",
    options: { policy: Policy.rate({ window: "9 millis", buckets: 10 }) },
    fields: ["policy.buckets"],
    mentions: [/1 ms/]
  },
  {
    name: "a 999 ms window in 1000 buckets",
    options: { policy: Policy.slowCalls({ duration: "1 second", window: 999, buckets: 1000 }) },
    fields: ["policy.buckets"]
  },
  // a time window with a count window
  {
    name: "window with calls (plain data)",
    options: { policy: { _tag: "Rate", threshold: 0.5, minimumCalls: 5, window: "1 minute", calls: 10 } },
    fields: ["policy.window"],
    mentions: [/calls/]
  },
  {
    name: "buckets with calls (plain data)",
    options: { policy: { _tag: "SlowCalls", duration: 100, threshold: 0.5, minimumCalls: 5, buckets: 10, calls: 10 } },
    fields: ["policy.buckets"]
  },
  // minimumCalls above a count window
  {
    name: "minimumCalls > calls (rate)",
    options: { policy: Policy.rate({ calls: 10, minimumCalls: 11 }) },
    fields: ["policy.minimumCalls"]
  },
  {
    name: "minimumCalls > calls (slowCalls, default minimumCalls 10)",
    options: { policy: Policy.slowCalls({ duration: "1 second", calls: 5 }) },
    fields: ["policy.minimumCalls"]
  },
  // several at once
  {
    name: "every bad field at once",
    options: {
      policy: Policy.rate({ threshold: 0, minimumCalls: 0 }),
      halfOpen: { probes: 0, probeTimeout: "soon" },
      mode: "x",
      maxOpenDuration: 0
    },
    fields: [
      "policy.threshold",
      "policy.minimumCalls",
      "halfOpen.probes",
      "halfOpen.probeTimeout",
      "mode",
      "maxOpenDuration"
    ]
  }
]

describe("every option is validated to a CircuitBreakerConfigError naming its path", () => {
  for (const testCase of [...numericCases, ...structuralCases]) {
    for (const [builder, accepts, build] of builders) {
      if (!accepts(testCase.options)) continue
      it.effect(`${builder}: ${testCase.name} → ${testCase.fields.join(", ")}`, () =>
        Effect.gen(function*() {
          const error = yield* configError(build(testCase.options))
          assert.deepStrictEqual([...error.fields].sort(), [...testCase.fields].sort())
          for (const field of testCase.fields) {
            assert.match(error.message, new RegExp(`^${field.replace(/\./g, "\\.")}: `, "m"))
          }
          for (const mention of testCase.mentions ?? []) {
            assert.match(error.message, mention)
          }
        }))
    }
  }
})

describe("Policy constructors report only what the user gave", () => {
  // Policy.rate fills in the default buckets when a window is given; with calls as well, the conflict should name
  // the window the user gave, not a `buckets` the user never wrote.
  it.effect("Policy.rate({ window, calls }): the error names policy.window, not a defaulted policy.buckets", () =>
    Effect.gen(function*() {
      const error = yield* configError(
        Effect.scoped(
          Layer.build(
            CircuitBreakerSet.layer({ policy: Policy.rate({ window: "1 minute", calls: 10, minimumCalls: 5 }) })
          )
        )
      )
      assert.deepStrictEqual([...error.fields], ["policy.window"])
    }))

  it.effect("Policy.rate({ buckets, calls }): the error names policy.buckets, not a defaulted policy.window", () =>
    Effect.gen(function*() {
      const error = yield* configError(
        Effect.scoped(
          Layer.build(CircuitBreakerSet.layer({ policy: Policy.rate({ buckets: 5, calls: 10, minimumCalls: 5 }) }))
        )
      )
      assert.deepStrictEqual([...error.fields], ["policy.buckets"])
    }))
})

describe("nothing is clamped: values at the edges are kept as given", () => {
  it.effect("the defaults", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const policy = set.options.policy
      assert.strictEqual(policy._tag, "Window")
      if (policy._tag === "Window") {
        assert.strictEqual(policy.maxFailures, 3)
        assert.strictEqual(Duration.toMillis(Duration.fromInputUnsafe(policy.window)), 60_000)
      }
      assert.strictEqual(Duration.toMillis(set.options.openDuration as Duration.Duration), 10_000)
      assert.strictEqual(Duration.toMillis(set.options.maxOpenDuration), 3_600_000)
      assert.deepStrictEqual(set.options.halfOpen, { probes: 1, successThreshold: 1, probeTimeout: undefined })
      assert.strictEqual(set.options.mode, "enforce")
    }).pipe(Effect.provide(CircuitBreakerSet.layer().pipe(Layer.orDie))))

  const edges = {
    policy: Policy.any(
      Policy.rate({ threshold: 1, minimumCalls: 1, window: "10 millis", buckets: 10 }),
      Policy.rate({ threshold: Number.MIN_VALUE, minimumCalls: 100_000, calls: 100_000 }),
      Policy.window({ maxFailures: 0 }),
      Policy.slowCalls({ duration: "1 millis", window: "1 second", buckets: 1000 })
    ),
    halfOpen: { probes: 1000, successThreshold: 1000, probeTimeout: "1 millis" }
  } as const

  for (const [builder, , build] of builders) {
    it.effect(`${builder} accepts the edges of every range`, () =>
      Effect.gen(function*() {
        yield* Effect.exit(build(edges)).pipe(
          Effect.map((exit) => assert.strictEqual(exit._tag, "Success", String(exit)))
        )
      }))
  }

  it.effect("the resolved options are the values given", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.strictEqual(set.options.policy, edges.policy)
      assert.deepStrictEqual(set.options.halfOpen, {
        probes: 1000,
        successThreshold: 1000,
        probeTimeout: Duration.millis(1)
      })
    }).pipe(Effect.provide(CircuitBreakerSet.layer(edges).pipe(Layer.orDie))))

  it.effect("a fixed openDuration longer than an hour raises the default maxOpenDuration instead of being cut", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.strictEqual(Duration.toMillis(set.options.maxOpenDuration), 2 * 3_600_000)
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      const s = yield* state("api")
      assert.strictEqual(s._tag === "Open" ? Duration.toMillis(s.retryAfter) : undefined, 2 * 3_600_000)
    }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0, openDuration: "2 hours" }).pipe(Layer.orDie))))

  it.effect("a policy as plain tagged data (decoded from JSON) is accepted and runs", () =>
    Effect.gen(function*() {
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      assert.deepStrictEqual(yield* state("api"), { _tag: "Closed", failures: 1 })
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      const s = yield* state("api")
      assert.deepStrictEqual(s._tag === "Open" ? s.reason : s, "consecutive")
    }).pipe(Effect.provide(
      CircuitBreakerSet.layer({ policy: JSON.parse(JSON.stringify(Policy.consecutive(2))) }).pipe(Layer.orDie)
    )))
})

describe("layerConfig's argument", () => {
  const options = {
    policy: Policy.consecutive(2),
    openDuration: OpenDuration.exponential({ base: "1 second", max: "1 minute", jitter: false }),
    maxOpenDuration: "5 minutes",
    halfOpen: { probes: 2, successThreshold: 3 },
    mode: "observe",
    peers: { payments: { policy: Policy.consecutive(4) } }
  } as const

  it.effect("takes policy, openDuration, maxOpenDuration, halfOpen, mode and peers, alongside the environment", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.strictEqual(set.options.policy, options.policy)
      assert.strictEqual(set.options.openDuration, options.openDuration)
      assert.strictEqual(Duration.toMillis(set.options.maxOpenDuration), 300_000)
      assert.deepStrictEqual(set.options.halfOpen, { probes: 2, successThreshold: 3, probeTimeout: undefined })
      assert.strictEqual(set.options.mode, "observe")
      assert.strictEqual(set.options.peers.payments!.policy, options.peers.payments.policy)
      assert.strictEqual(Duration.toMillis(set.options.idleTimeToLive), 120_000)
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      yield* Effect.exit(failing.pipe(withBreaker("api")))
      const s = yield* state("api")
      assert.deepStrictEqual(s._tag === "Open" ? [s.reason, Duration.toMillis(s.retryAfter)] : s, [
        "consecutive",
        1_000
      ])
    }).pipe(Effect.provide(
      CircuitBreakerSet.layerConfig(options).pipe(
        Layer.provide(fromEnv({ CIRCUIT_IDLE_TIME_TO_LIVE: "2 minutes" })),
        Layer.orDie
      )
    )))

  const conflicting = (env: Record<string, string>, argument: Parameters<typeof CircuitBreakerSet.layerConfig>[0]) =>
    configError(Effect.scoped(Layer.build(CircuitBreakerSet.layerConfig(argument).pipe(Layer.provide(fromEnv(env))))))

  it.effect("CIRCUIT_MAX_FAILURES with a policy argument is an error naming the variable", () =>
    Effect.gen(function*() {
      const error = yield* conflicting({ CIRCUIT_MAX_FAILURES: "5" }, { policy: Policy.consecutive(2) })
      assert.deepStrictEqual(error.fields, ["CIRCUIT_MAX_FAILURES"])
      assert.match(error.message, /^CIRCUIT_MAX_FAILURES: .*\bpolicy\b/m)
    }))

  it.effect("CIRCUIT_WINDOW with a policy argument, CIRCUIT_RESET_TIMEOUT with an openDuration argument: each named", () =>
    Effect.gen(function*() {
      const error = yield* conflicting(
        { CIRCUIT_MAX_FAILURES: "5", CIRCUIT_WINDOW: "30 seconds", CIRCUIT_RESET_TIMEOUT: "5 seconds" },
        { policy: Policy.consecutive(2), openDuration: "1 second" }
      )
      assert.deepStrictEqual([...error.fields].sort(), [
        "CIRCUIT_MAX_FAILURES",
        "CIRCUIT_RESET_TIMEOUT",
        "CIRCUIT_WINDOW"
      ])
      assert.match(error.message, /^CIRCUIT_RESET_TIMEOUT: .*\bopenDuration\b/m)
    }))

  it.effect("the variables that no argument replaces go along: CIRCUIT_MAX_FAILURES with a peer's policy", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const policy = set.options.policy
      assert.strictEqual(policy._tag === "Window" ? policy.maxFailures : undefined, 5)
      assert.strictEqual(set.options.peers.payments!.policy._tag, "Consecutive")
    }).pipe(Effect.provide(
      CircuitBreakerSet.layerConfig({ peers: { payments: { policy: Policy.consecutive(2) } } }).pipe(
        Layer.provide(fromEnv({ CIRCUIT_MAX_FAILURES: "5", CIRCUIT_RESET_TIMEOUT: "3 seconds" })),
        Layer.orDie
      )
    )))

  for (const key of ["maxFailures", "window", "resetTimeout"] as const) {
    it.effect(`${key} belongs in the environment: in the argument it is an error naming it`, () =>
      Effect.gen(function*() {
        const value = key === "maxFailures" ? 2 : "1 minute"
        const error = yield* conflicting({}, { [key]: value } as never)
        assert.deepStrictEqual(error.fields, [key])
      }))
  }
})
