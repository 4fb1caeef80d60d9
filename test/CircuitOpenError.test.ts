import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Schema } from "effect"
import { TestClock } from "effect/testing"
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { CircuitBreakerSet, CircuitOpenError, withBreaker } from "../src/index.ts"
import { expectRejection, forkAdmitted, provideSet, trip } from "./utils.ts"

describe("CircuitOpenError", () => {
  it.effect("names the peer and the time until a call is admitted again", () =>
    Effect.gen(function*() {
      yield* Effect.exit(Effect.fail("down").pipe(withBreaker("payments")))
      const error = yield* Effect.flip(Effect.succeed(1).pipe(withBreaker("payments")))
      assert.strictEqual(error._tag, "CircuitOpenError")
      assert.strictEqual(error.peer, "payments")
      assert.isTrue(Duration.equals(error.retryAfter, Duration.seconds(10)))
      assert.strictEqual(error.state, "Open")
      assert.strictEqual(error.message, "Circuit for peer \"payments\" is open; a call will be admitted again in 10s")
    }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0 }))))

  it.effect("says which case it is: Open, HalfOpen while a probe runs, or Isolated", () =>
    Effect.gen(function*() {
      yield* trip("api", 0)
      assert.strictEqual((yield* expectRejection(Effect.void.pipe(withBreaker("api")))).state, "Open")
      yield* TestClock.adjust("10 seconds")
      const gate = yield* Deferred.make<void>()
      const probe = yield* forkAdmitted(Deferred.await(gate), withBreaker("api"))
      yield* TestClock.adjust("4 seconds")
      const halfOpen = yield* expectRejection(Effect.void.pipe(withBreaker("api")))
      assert.strictEqual(halfOpen.state, "HalfOpen")
      assert.strictEqual(Duration.toMillis(halfOpen.retryAfter), 6_000)
      assert.strictEqual(
        halfOpen.message,
        "Circuit for peer \"api\" is half-open and its probe is running; a call may be admitted again in 6s at the latest"
      )
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(probe)
      const set = yield* CircuitBreakerSet
      const isolated = yield* Effect.scoped(
        Effect.andThen(set.isolate("api"), expectRejection(Effect.void.pipe(withBreaker("api"))))
      )
      assert.strictEqual(isolated.state, "Isolated")
      // No time can be promised: a retry schedule that honours retryAfter waits instead of spinning.
      assert.isFalse(Duration.isFinite(isolated.retryAfter))
      assert.strictEqual(
        isolated.message,
        "Circuit for peer \"api\" is isolated by an operator; no call is admitted until it is released"
      )
    }).pipe(provideSet({ maxFailures: 0, resetTimeout: "10 seconds" })))

  it("crosses a wire with the ordinary codec, retryAfter in milliseconds", () => {
    const roundTrip = (error: CircuitOpenError) => {
      const json = JSON.stringify(Schema.encodeSync(CircuitOpenError)(error))
      return [json, Schema.decodeUnknownSync(CircuitOpenError)(JSON.parse(json))] as const
    }
    const open = new CircuitOpenError({ peer: "api", state: "Open", retryAfter: Duration.millis(1_500) })
    const [json, decoded] = roundTrip(open)
    assert.deepStrictEqual(JSON.parse(json), { _tag: "CircuitOpenError", peer: "api", state: "Open", retryAfter: 1500 })
    assert.instanceOf(decoded, CircuitOpenError)
    assert.deepStrictEqual(decoded, open)
    const isolated = new CircuitOpenError({ peer: "api", state: "Isolated", retryAfter: Duration.infinity })
    const [isolatedJson, isolatedBack] = roundTrip(isolated)
    assert.strictEqual(JSON.parse(isolatedJson).retryAfter, null)
    assert.deepStrictEqual(isolatedBack, isolated)
  })

  it("shortens a peer name longer than 256 characters in its message, and keeps it whole in peer", () => {
    const peer = "p".repeat(300)
    const error = new CircuitOpenError({ peer, state: "Open", retryAfter: Duration.seconds(1) })
    assert.strictEqual(error.peer, peer)
    assert.strictEqual(
      error.message,
      `Circuit for peer "${"p".repeat(256)}… (300 characters)" is open; a call will be admitted again in 1s`
    )
  })

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
