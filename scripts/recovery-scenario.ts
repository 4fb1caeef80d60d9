/**
 * The recovery scenario of issue 9, on `TestClock`: a peer fails until its circuit opens, recovers, and is then
 * called in 50 fail-fast batches (and, last, 50 calls guarded twice by the same set). Prints, per pattern, how many
 * batches succeeded and how many requests the peer received.
 *
 *   npx node scripts/recovery-scenario.ts                 # this working tree
 *   npx node scripts/recovery-scenario.ts <dir>/src/index.ts   # another checkout, e.g. a `git worktree` of main
 */
import { Effect, Exit, Fiber, Layer, References } from "effect"
import { TestClock } from "effect/testing"
import { pathToFileURL } from "node:url"
import type * as Library from "../src/index.ts"

const target = process.argv[2] === undefined ? new URL("../src/index.ts", import.meta.url).href : pathToFileURL(
  process.argv[2]
).href
const { CircuitBreakerSet, withBreaker }: typeof Library = await import(target)

type Call = Effect.Effect<string, unknown, Library.CircuitBreakerSet>

const scenario = (
  batchOf: (call: Call) => Effect.Effect<unknown, unknown, Library.CircuitBreakerSet>,
  nested: boolean
) =>
  Effect.gen(function*() {
    let received = 0
    let down = true
    const request = Effect.suspend(() => {
      received++
      return down ? Effect.fail("503") : Effect.succeed("ok")
    }).pipe(Effect.delay("10 millis"))
    const call: Call = nested ? request.pipe(withBreaker("api"), withBreaker("api")) : request.pipe(withBreaker("api"))
    const settle = <A, E, R>(self: Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const fiber = yield* Effect.forkChild(self)
        yield* TestClock.adjust("10 millis")
        yield* TestClock.adjust("10 millis")
        return yield* Fiber.await(fiber)
      })
    for (let i = 0; i < 4; i++) yield* settle(call)
    down = false
    received = 0
    yield* TestClock.adjust("10 seconds")
    let succeeded = 0
    for (let i = 0; i < 50; i++) {
      if (Exit.isSuccess(yield* settle(batchOf(call)))) succeeded++
    }
    const state = yield* CircuitBreakerSet.use((set) => set.state("api"))
    return `${succeeded}/50 succeeded, the peer received ${received} requests, final state ${state._tag}`
  }).pipe(
    Effect.provide(
      Layer.merge(CircuitBreakerSet.layer({ maxFailures: 1, resetTimeout: "10 seconds" }), TestClock.layer())
    ),
    Effect.provideService(References.MinimumLogLevel, "None")
  )

const patterns: Array<[string, (call: Call) => Effect.Effect<unknown, unknown, Library.CircuitBreakerSet>, boolean]> = [
  ["Effect.forEach, concurrency 3", (call) => Effect.forEach([1, 2, 3], () => call, { concurrency: 3 }), false],
  [
    "Effect.all, 4 calls, unbounded",
    (call) => Effect.all([call, call, call, call], { concurrency: "unbounded" }),
    false
  ],
  ["Effect.raceFirst", (call) => Effect.raceFirst(call, call), false],
  ["one call guarded twice by the same set", (call) => call, true]
]
for (const [name, batchOf, nested] of patterns) {
  console.log(`${name}: ${await Effect.runPromise(scenario(batchOf, nested))}`)
}
