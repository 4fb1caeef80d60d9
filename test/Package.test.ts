/**
 * The package as users install it: built with `tsconfig.build.json` into a scratch `node_modules/effect-circuit`
 * next to the repository's `package.json`, then imported from plain ESM JavaScript in a child process.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

/** Builds the package into a scratch app and runs `script` there as an ES module; returns what it prints. */
const inInstalledPackage = (script: string): string => {
  const app = mkdtempSync(join(tmpdir(), "effect-circuit-package-"))
  try {
    const pkg = join(app, "node_modules", "effect-circuit")
    mkdirSync(pkg, { recursive: true })
    execFileSync(join(root, "node_modules", ".bin", "tsc"), [
      "-p",
      "tsconfig.build.json",
      "--outDir",
      join(pkg, "dist")
    ], {
      cwd: root
    })
    copyFileSync(join(root, "package.json"), join(pkg, "package.json"))
    symlinkSync(join(root, "node_modules", "effect"), join(app, "node_modules", "effect"), "dir")
    return execFileSync(process.execPath, ["--input-type=module", "-e", script], { cwd: app, encoding: "utf8" })
  } finally {
    rmSync(app, { recursive: true, force: true })
  }
}

const publicNames = [
  "CircuitBreaker",
  "CircuitBreakerConfigError",
  "CircuitBreakerMetrics",
  "CircuitBreakerSet",
  "CircuitOpenError",
  "CircuitSnapshot",
  "CircuitState",
  "CircuitStateChange",
  "FleetStatus",
  "OpenDuration",
  "Policy",
  "RejectedBy",
  "withBreaker"
]

describe("the built package", () => {
  it("exports the public names only, resolves its package.json and fences off its internals", () => {
    const output = inInstalledPackage(`
      import * as index from "effect-circuit"
      import * as CircuitBreaker from "effect-circuit/CircuitBreaker"
      import { createRequire } from "node:module"
      const require = createRequire(import.meta.url)
      const resolves = (specifier) => { try { import.meta.resolve(specifier); return true } catch { return false } }
      console.log(JSON.stringify({
        names: Object.keys(index).sort(),
        single: Object.keys(CircuitBreaker).sort(),
        state: Object.keys(index.CircuitState).sort(),
        metrics: Object.keys(index.CircuitBreakerMetrics).sort(),
        version: require("effect-circuit/package.json").version,
        internal: resolves("effect-circuit/internal/guard"),
        unlisted: ["effect-circuit/dist/index.js", "effect-circuit/CircuitBreakerSet.js", "effect-circuit/src/index.ts"]
          .filter(resolves),
        options: Object.keys(await import("effect-circuit/CircuitBreakerOptions")).sort(),
        policy: Object.keys(index.Policy).sort(),
        policyModule: Object.keys(await import("effect-circuit/Policy")).sort(),
        openDuration: Object.keys(index.OpenDuration).sort(),
        openDurationModule: Object.keys(await import("effect-circuit/OpenDuration")).sort(),
        defaultPolicy: (await import("effect-circuit/CircuitBreakerOptions")).defaults.policy._tag,
        fleetStatus: Object.keys(index.FleetStatus).sort(),
        fleetStatusModule: Object.keys(await import("effect-circuit/FleetStatus")).sort(),
        layerRedis: typeof index.CircuitBreakerSet.layerRedis,
        isOpen: index.CircuitState.isOpen({ _tag: "Open" }),
        isClosed: index.CircuitState.isClosed({ _tag: "Open" })
      }))
    `)
    const result = JSON.parse(output)
    assert.deepStrictEqual(result.names, publicNames)
    assert.deepStrictEqual(result.single, ["isCircuitBreaker", "make", "state", "withBreaker"])
    assert.deepStrictEqual(result.state, ["isClosed", "isHalfOpen", "isOpen"])
    assert.deepStrictEqual(result.metrics, [
      "calls",
      "opening",
      "probes",
      "state",
      "storeErrors",
      "storeUp",
      "transitions"
    ])
    assert.strictEqual(result.version, "0.3.0")
    assert.isFalse(result.internal)
    assert.deepStrictEqual(result.unlisted, [])
    assert.deepStrictEqual(result.options, ["defaults"])
    const policyNames = ["any", "consecutive", "isPolicy", "rate", "rateDefaults", "slowCalls", "window"]
    assert.deepStrictEqual(result.policy, policyNames)
    assert.deepStrictEqual(result.policyModule, policyNames)
    assert.deepStrictEqual(result.openDuration, ["exponential"])
    assert.deepStrictEqual(result.openDurationModule, ["exponential"])
    assert.strictEqual(result.defaultPolicy, "Window")
    assert.deepStrictEqual(result.fleetStatus, ["isConnected", "isLocal"])
    assert.deepStrictEqual(result.fleetStatusModule, ["isConnected", "isLocal"])
    assert.strictEqual(result.layerRedis, "function")
    assert.isTrue(result.isOpen)
    assert.isFalse(result.isClosed)
  })

  it("guards calls from plain JavaScript", () => {
    const output = inInstalledPackage(`
      import { Effect, Exit } from "effect"
      import { CircuitBreakerSet, withBreaker } from "effect-circuit"
      const program = Effect.gen(function*() {
        const set = yield* CircuitBreakerSet
        yield* Effect.exit(Effect.fail("down").pipe(withBreaker("api")))
        const rejected = yield* Effect.exit(Effect.succeed(1).pipe(withBreaker("api")))
        return [(yield* set.state("api"))._tag, Exit.isFailure(rejected) && rejected.cause.reasons[0].error._tag]
      })
      console.log(JSON.stringify(Effect.runSync(program.pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0 }))))))
    `)
    // The circuit's own log line (a warning when it opens) comes first; the result is the last line.
    assert.include(output, "Circuit opened")
    assert.deepStrictEqual(JSON.parse(output.trim().split("\n").at(-1)!), ["Open", "CircuitOpenError"])
  })
})
