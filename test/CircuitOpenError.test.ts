import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { CircuitBreakerSet, withBreaker } from "../src/index.ts"

describe("CircuitOpenError", () => {
  it.effect("names the peer and the time until a call is admitted again", () =>
    Effect.gen(function*() {
      yield* Effect.exit(Effect.fail("down").pipe(withBreaker("payments")))
      const error = yield* Effect.flip(Effect.succeed(1).pipe(withBreaker("payments")))
      assert.strictEqual(error._tag, "CircuitOpenError")
      assert.strictEqual(error.peer, "payments")
      assert.isTrue(Duration.equals(error.retryAfter, Duration.seconds(10)))
      assert.strictEqual(error.message, "Circuit for peer \"payments\" is open; a call will be admitted again in 10s")
    }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0 }))))

  it("is still a typed failure, not a defect, in a runtime whose Error is frozen", () => {
    // A hardened runtime (SES, or `Object.freeze(Error)`) makes writing `Error.stackTraceLimit` throw.
    const index = new URL("../src/index.ts", import.meta.url).href
    const output = execFileSync(process.execPath, [
      "--input-type=module",
      "-e",
      `
        Object.freeze(Error)
        const { Effect, Exit } = await import("effect")
        const { CircuitBreakerSet, withBreaker } = await import(${JSON.stringify(index)})
        const program = Effect.gen(function*() {
          yield* Effect.exit(Effect.fail("down").pipe(withBreaker("api")))
          return yield* Effect.exit(Effect.succeed(1).pipe(withBreaker("api")))
        })
        const exit = Effect.runSync(program.pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0 }))))
        const reason = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
        console.log(JSON.stringify([reason?._tag, reason?.error?._tag]))
      `
    ], { cwd: fileURLToPath(new URL("..", import.meta.url)), encoding: "utf8" })
    assert.deepStrictEqual(JSON.parse(output.trim().split("\n").at(-1)!), ["Fail", "CircuitOpenError"])
  })
})
