/**
 * The error a guarded call fails with when its circuit does not admit it.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"

/**
 * A call was not run because the circuit of its peer is open, or half-open with a probe in flight.
 *
 * **When to use**
 *
 * Catch it with `Effect.catchTag("CircuitOpenError", …)` to serve a fallback, or read `retryAfter` to decide when
 * to try again (for example to answer with an HTTP `Retry-After` header).
 *
 * **Details**
 *
 * - `peer` is the key the call was guarded with (the breaker's `name` for a single `CircuitBreaker`).
 * - `retryAfter` is how long until the breaker will admit a call again, as best it knows: the rest of the open
 *   period, or, while a probe is in flight, the time until that probe's slot expires. A probe that succeeds earlier
 *   closes the circuit sooner.
 * - It is a `Schema.TaggedError`, so it can be encoded and sent across a wire.
 *
 * **Gotchas**
 *
 * - The wrapped effect did not run: nothing was sent to the peer.
 * - The breaker builds it without a stack trace (rejections are the hot path of an outage); the `peer` and
 *   `retryAfter` fields say where it came from.
 *
 * **Example** (Serving a fallback while the circuit is open)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { withBreaker } from "effect-circuit"
 *
 * declare const fetchPrice: Effect.Effect<number, Error>
 *
 * const price = fetchPrice.pipe(
 *   withBreaker("pricing-api"),
 *   Effect.catchTag("CircuitOpenError", (error) =>
 *     Effect.logWarning(`pricing-api unavailable, retry in ${error.retryAfter}`).pipe(Effect.as(0)))
 * )
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class CircuitOpenError extends Schema.TaggedError<CircuitOpenError>()("CircuitOpenError", {
  peer: Schema.String,
  retryAfter: Schema.Duration
}) {
  override get message(): string {
    return `Circuit for peer ${JSON.stringify(this.peer)} is open; a call will be admitted again in ${
      Duration.format(this.retryAfter)
    }`
  }
}
