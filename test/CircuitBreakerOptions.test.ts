import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer } from "effect"
import { CircuitBreaker, CircuitBreakerSet } from "../src/index.ts"
import { openMillisOf, windowOf } from "./utils.ts"

const buildSet = (options: unknown) => Layer.build(CircuitBreakerSet.layer(options as never))

/** Every option with bad values; each must fail naming the field. */
const badValues: ReadonlyArray<readonly [field: string, value: unknown]> = [
  ["maxFailures", -1],
  ["maxFailures", 1.5],
  ["maxFailures", Number.NaN],
  ["maxFailures", Number.POSITIVE_INFINITY],
  ["maxFailures", Number.MAX_SAFE_INTEGER + 2],
  ["maxFailures", "3"],
  ["maxFailures", null],
  ["maxFailures", 3n],
  ["window", 0],
  ["window", -5],
  ["window", Number.NaN],
  ["window", Number.POSITIVE_INFINITY],
  ["window", "Infinity"],
  ["window", "soon"],
  ["window", "10 lightyears"],
  ["window", null],
  ["window", true],
  ["window", Duration.zero],
  ["window", Duration.infinity],
  ["window", {}],
  ["resetTimeout", 0],
  ["resetTimeout", "-3 seconds"],
  ["resetTimeout", null],
  ["resetTimeout", []],
  ["idleTimeToLive", 0],
  ["idleTimeToLive", "forever"],
  ["idleTimeToLive", Duration.infinity],
  ["idleTimeToLive", null],
  ["metricRetention", 0],
  ["metricRetention", Duration.infinity],
  ["metricRetention", Number.NaN],
  ["metricRetention", "15"],
  ["isFailure", true],
  ["isFailure", "Boom"],
  ["isFailure", null],
  ["window", 1e-7],
  ["window", { seconds: 5, millis: -1_000 }],
  ["window", { seconds: Number.NaN }],
  ["metricPeerLabel", "peers"],
  ["metricPeerLabel", null],
  ["maxFailure", 3],
  ["resetTimout", "1 second"],
  ["__proto__", { maxFailures: 0 }]
]

describe("hostile options", () => {
  for (const [field, value] of badValues) {
    it.effect(`${field}: ${typeof value === "number" || typeof value === "string" ? value : typeof value}`, () =>
      Effect.gen(function*() {
        // A computed key, like JSON.parse of a config file, makes "__proto__" an own key rather than the prototype.
        const options = { [field]: value }
        const error = yield* Effect.flip(buildSet(options))
        assert.strictEqual(error._tag, "CircuitBreakerConfigError")
        assert.deepStrictEqual(error.fields, [field])
        assert.include(error.message, `${field}:`)
      }))
  }

  it.effect("every bad field is named in one error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(buildSet({ maxFailures: -1, window: "x", resetTimeout: 0, typo: 1 }))
      assert.deepStrictEqual([...error.fields].sort(), ["maxFailures", "resetTimeout", "typo", "window"])
      assert.include(error.message, "typo: Unknown option")
      // One line per field: its name, why (Effect's Schema words it), and the bad value.
      assert.match(error.message, /^maxFailures: .+, got -1$/m)

      const another = yield* Effect.flip(buildSet({ maxFailures: -1.5, window: 0, resetTimeout: "soon", isFailure: 3 }))
      assert.strictEqual(another._tag, "CircuitBreakerConfigError")
      assert.deepStrictEqual([...another.fields].sort(), ["isFailure", "maxFailures", "resetTimeout", "window"])
      for (const field of ["maxFailures", "window", "resetTimeout", "isFailure"]) assert.include(another.message, field)
    }))

  for (const options of [null, 5, "options", [1]]) {
    it.effect(`options that are not an object: ${JSON.stringify(options)}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(buildSet(options))
        assert.deepStrictEqual(error.fields, ["options"])
      }))
  }

  it.effect("undefined fields take the defaults; valid inputs of every form are accepted", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.deepStrictEqual(windowOf(set.options), { maxFailures: 3, windowMillis: 1500 })
      assert.strictEqual(openMillisOf(set.options), 2000)
      assert.strictEqual(Duration.toMillis(set.options.idleTimeToLive), 300_000)
      assert.deepStrictEqual(set.options.peers, {})
    }).pipe(Effect.provide(CircuitBreakerSet.layer({
      maxFailures: undefined,
      window: 1500,
      resetTimeout: Duration.seconds(2),
      idleTimeToLive: "5 minutes"
    }))))

  it.effect("options that cannot be read are a CircuitBreakerConfigError, never a crash", () =>
    Effect.gen(function*() {
      const hostile = Object.defineProperty({}, "maxFailures", {
        enumerable: true,
        get: () => {
          throw new Error("getter boom")
        }
      })
      const fromMake = yield* Effect.flip(CircuitBreaker.make(hostile as never))
      assert.include(fromMake.message, "could not be read")
      const fromLayer = yield* Effect.flip(buildSet(
        new Proxy({}, {
          ownKeys: () => {
            throw new Error("no keys")
          }
        })
      ))
      assert.include(fromLayer.message, "could not be read")
    }))

  it.effect("CircuitBreaker.make validates the same way", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(CircuitBreaker.make({ maxFailures: 0.5, window: null } as never))
      assert.deepStrictEqual([...error.fields].sort(), ["maxFailures", "window"])
    }))
})

describe("layerConfig", () => {
  const fromEnv = (env: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromEnv({ env }))

  it.effect("reads CIRCUIT_* keys from the environment", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.deepStrictEqual(windowOf(set.options), { maxFailures: 7, windowMillis: 30_000 })
      assert.strictEqual(openMillisOf(set.options), 1_500)
      assert.strictEqual(Duration.toMillis(set.options.idleTimeToLive), 120_000)
      assert.strictEqual(Duration.toMillis(set.options.metricRetention), 30 * 60_000)
    }).pipe(Effect.provide(
      CircuitBreakerSet.layerConfig().pipe(Layer.provide(fromEnv({
        CIRCUIT_MAX_FAILURES: "7",
        CIRCUIT_WINDOW: "30 seconds",
        CIRCUIT_RESET_TIMEOUT: "1500 millis",
        CIRCUIT_IDLE_TIME_TO_LIVE: "2 minutes",
        CIRCUIT_METRIC_RETENTION: "30 minutes"
      })))
    )))

  it.effect("missing keys take the defaults; isFailure comes from the argument", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      assert.deepStrictEqual(windowOf(set.options), { maxFailures: 3, windowMillis: 60_000 })
      assert.strictEqual(openMillisOf(set.options), 10_000)
      assert.strictEqual(Duration.toMillis(set.options.metricRetention), 15 * 60_000)
      assert.isFalse(set.options.isFailure("anything"))
    }).pipe(Effect.provide(CircuitBreakerSet.layerConfig({ isFailure: () => false }).pipe(Layer.provide(fromEnv({}))))))

  it.effect("the argument takes no option read from the environment, and is validated like every option", () =>
    Effect.gen(function*() {
      const build = (options: unknown) =>
        Layer.build(CircuitBreakerSet.layerConfig(options as never).pipe(Layer.provide(fromEnv({}))))
      const inEnvironment = yield* Effect.flip(build({ maxFailures: 5 }))
      assert.deepStrictEqual(inEnvironment._tag === "CircuitBreakerConfigError" && inEnvironment.fields, [
        "maxFailures"
      ])
      const nullOptions = yield* Effect.flip(build(null))
      assert.strictEqual(nullOptions._tag, "CircuitBreakerConfigError")
      const set = yield* CircuitBreakerSet.pipe(
        Effect.provide(CircuitBreakerSet.layerConfig({ metricPeerLabel: "none" }).pipe(Layer.provide(fromEnv({}))))
      )
      assert.strictEqual(set.options.metricPeerLabel, "none")
    }))

  const buildError = (env: Record<string, string>) =>
    Effect.flip(Layer.build(CircuitBreakerSet.layerConfig().pipe(Layer.provide(fromEnv(env)))))

  it.effect("an error names the variable and the value the operator set", () =>
    Effect.gen(function*() {
      const error = yield* buildError({ CIRCUIT_MAX_FAILURES: "-2" })
      assert.strictEqual(error._tag, "CircuitBreakerConfigError")
      assert.deepStrictEqual(error._tag === "CircuitBreakerConfigError" && error.fields, ["CIRCUIT_MAX_FAILURES"])
      assert.include(error.message, "CIRCUIT_MAX_FAILURES=\"-2\": expected a whole number of failures, 0 or more")
    }))

  it.effect("every bad variable is reported at once", () =>
    Effect.gen(function*() {
      const error = yield* buildError({
        CIRCUIT_MAX_FAILURES: "many",
        CIRCUIT_WINDOW: "soon",
        CIRCUIT_RESET_TIMEOUT: "0 seconds",
        CIRCUIT_IDLE_TIME_TO_LIVE: "Infinity"
      })
      assert.deepStrictEqual(error._tag === "CircuitBreakerConfigError" && error.fields, [
        "CIRCUIT_MAX_FAILURES",
        "CIRCUIT_WINDOW",
        "CIRCUIT_RESET_TIMEOUT",
        "CIRCUIT_IDLE_TIME_TO_LIVE"
      ])
      assert.strictEqual(error.message.split("\n").length, 5)
    }))

  it.effect("an empty value is an error, not the default", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Layer.build(
        CircuitBreakerSet.layerConfig().pipe(Layer.provide(
          ConfigProvider.layer(ConfigProvider.fromEnv({
            env: { CIRCUIT_WINDOW: "", CIRCUIT_MAX_FAILURES: "  " },
            preserveEmptyStrings: true
          }))
        ))
      ))
      assert.deepStrictEqual(error._tag === "CircuitBreakerConfigError" && error.fields, [
        "CIRCUIT_MAX_FAILURES",
        "CIRCUIT_WINDOW"
      ])
      assert.include(error.message, "CIRCUIT_WINDOW is set but empty: unset it to use the default, or give it a value")
    }))

  it.effect("a variable set empty in the process environment is an error, though Effect's provider reads it as unset", () =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        process.env.CIRCUIT_RESET_TIMEOUT = ""
      }),
      () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(
            Layer.build(
              CircuitBreakerSet.layerConfig().pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv())))
            )
          )
          assert.deepStrictEqual(error._tag === "CircuitBreakerConfigError" && error.fields, ["CIRCUIT_RESET_TIMEOUT"])
        }),
      () =>
        Effect.sync(() => {
          delete process.env.CIRCUIT_RESET_TIMEOUT
        })
    ))

  it.effect("a bare number for a duration is rejected with the accepted form", () =>
    Effect.gen(function*() {
      const error = yield* buildError({ CIRCUIT_WINDOW: "30" })
      assert.include(error.message, "CIRCUIT_WINDOW=\"30\": a duration needs a unit, e.g. \"30 seconds\"")
    }))
})
