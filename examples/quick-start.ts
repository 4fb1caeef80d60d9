import { Data, Duration, Effect } from "effect"
import { CircuitBreakerSet, withBreaker } from "effect-circuit"

class InventoryError extends Data.TaggedError("InventoryError")<{ readonly status: number }> {}

// A stand-in for a remote peer: its first 4 calls fail with a 503, then it recovers.
// For a real HTTP call, put its timeout inside the breaker, so that a slow peer counts as failing.
let received = 0
const getStock = Effect.suspend(() =>
  ++received <= 4 ? Effect.fail(new InventoryError({ status: 503 })) : Effect.succeed(42)
)

const checkStock = getStock.pipe(
  withBreaker("inventory-api"),
  Effect.map((stock) => `${stock} in stock`),
  // The circuit is open: the peer was not called. Serve a fallback.
  Effect.catchTag(
    "CircuitOpenError",
    (error) => Effect.succeed(`not called, circuit open (retry in ${Duration.format(error.retryAfter)})`)
  ),
  Effect.catchTag("InventoryError", (error) => Effect.succeed(`failed with ${error.status}`))
)

const program = Effect.gen(function*() {
  for (let call = 1; call <= 6; call++) yield* Effect.log(`call ${call}: ${yield* checkStock}`)
  yield* Effect.sleep("1 second") // the reset timeout: the next call is a probe
  yield* Effect.log(`call 7: ${yield* checkStock}`)
  yield* Effect.log(`the peer received ${received} of 7 calls`)
})

// One set for the whole application: a 4th failure within the window (60 seconds) opens a peer's circuit.
const BreakersLive = CircuitBreakerSet.layer({ maxFailures: 3, resetTimeout: "1 second" })

Effect.runPromise(program.pipe(Effect.provide(BreakersLive)))
