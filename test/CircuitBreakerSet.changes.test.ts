// A regression (found while writing the fleet's multi-process tests): a subscriber of `changes` is handed a
// change before the state it announces is stored. Reading `state(peer)`, or making a call, in reaction to a change
// to Open finds the circuit still Closed: the call is admitted. Not specific to fleet mode: the in-memory set does it.
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Stream from "effect/Stream"
import { assert, it } from "vitest"
import { CircuitBreakerSet } from "../src/index.ts"

it("a subscriber of changes that reacts to a change to Open finds the circuit Open", async () => {
  const program = Effect.scoped(Effect.gen(function*() {
    const breakers = yield* CircuitBreakerSet.make({ maxFailures: 1, resetTimeout: "1 minute" })
    const seen = yield* Deferred.make<string>()
    yield* Effect.forkScoped(Stream.runForEach(breakers.changes, (change) =>
      Effect.gen(function*() {
        const state = yield* breakers.state(change.peer)
        const call = yield* Effect.exit(breakers.withBreaker(change.peer)(Effect.void))
        yield* Deferred.succeed(
          seen,
          `${change.to}: state ${state._tag}, call ${Exit.isSuccess(call) ? "admitted" : "rejected"}`
        )
      })))
    yield* Effect.sleep("20 millis")
    yield* Effect.exit(breakers.withBreaker("peer")(Effect.fail("boom")))
    yield* Effect.exit(breakers.withBreaker("peer")(Effect.fail("boom")))
    return yield* Deferred.await(seen)
  }))
  assert.strictEqual(await Effect.runPromise(program), "Open: state Open, call rejected")
})
