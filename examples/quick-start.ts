// The README's quick start, kept here so `npm run check` type-checks it.
import { Data, Effect } from "effect"
import { CircuitBreakerSet, withBreaker } from "effect-circuit"

class InventoryError extends Data.TaggedError("InventoryError")<{ readonly status: number }> {}

// Your call to a remote peer. Put the timeout inside the breaker, so a slow peer counts as failing.
const getStock = (sku: string) =>
  Effect.tryPromise({
    try: () =>
      fetch(`http://inventory.internal/stock/${sku}`).then((response) => {
        if (!response.ok) throw response.status
        return response.json() as Promise<number>
      }),
    catch: (status) => new InventoryError({ status: typeof status === "number" ? status : 0 })
  }).pipe(Effect.timeout("2 seconds"))

const program = Effect.gen(function*() {
  const stock = yield* getStock("sku-42").pipe(
    withBreaker("inventory-api"),
    // The circuit is open: the call was not made. Serve a fallback.
    Effect.catchTag(
      "CircuitOpenError",
      (error) => Effect.logWarning(`inventory-api is down; retry in ${error.retryAfter}`).pipe(Effect.as(0))
    )
  )
  yield* Effect.log(`stock: ${stock}`)
})

// Provide the set once for the whole application.
const BreakersLive = CircuitBreakerSet.layer({
  maxFailures: 3, // a 4th counted failure within the window opens the circuit
  window: "60 seconds",
  resetTimeout: "10 seconds",
  isFailure: (error) => !(error instanceof InventoryError && error.status === 404) // a 404 is an answer
})

export const main = program.pipe(Effect.provide(BreakersLive))
