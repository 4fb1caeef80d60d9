/**
 * The error a guarded call fails with when its circuit does not admit it.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"
import * as SchemaTransformation from "effect/SchemaTransformation"
import { displayPeer } from "./internal/display.ts"

/**
 * Why a circuit rejected a call: `"Open"` (in its open period), `"HalfOpen"` (its probe is running), or `"Isolated"`
 * (an operator holds it open).
 *
 * @category models
 * @since 0.1.0
 */
export const RejectedBy = Schema.Literals(["Open", "HalfOpen", "Isolated"])

/**
 * @category models
 * @since 0.1.0
 */
export type RejectedBy = typeof RejectedBy.Type

/** A duration as whole milliseconds on the wire; an infinite one (an isolation) as `null`. */
const RetryAfter = Schema.NullOr(Schema.Finite).pipe(Schema.decodeTo(
  Schema.Duration,
  SchemaTransformation.transform({
    decode: (millis: number | null) => millis === null ? Duration.infinity : Duration.millis(millis),
    encode: (duration: Duration.Duration) => Duration.isFinite(duration) ? Duration.toMillis(duration) : null
  })
))

/**
 * A call was not run because the circuit of its peer is open, half-open with a probe in flight, or isolated.
 *
 * **When to use**
 *
 * Catch it with `Effect.catchTag("CircuitOpenError", …)` to serve a fallback, or read `retryAfter` to decide when
 * to try again (for example to answer with an HTTP `Retry-After` header).
 *
 * **Details**
 *
 * - `peer` is the key the call was guarded with (the breaker's `name` for a single `CircuitBreaker`), in full.
 * - `state` says which case it is: `"Open"`, `"HalfOpen"` (a probe is running) or `"Isolated"` (an operator holds
 *   the circuit open).
 * - `retryAfter` is how long until the breaker may admit a call again, as best it knows: the rest of the open
 *   period; while a probe runs, the time until its lease ends (a probe that succeeds earlier closes the circuit
 *   sooner); for an isolated circuit, `Duration.infinity`, because no call is admitted until an operator releases
 *   it, so a retry schedule that honours it waits instead of retrying every few seconds.
 * - It is a `Schema.TaggedError` and crosses a wire with the ordinary codec: `retryAfter` is encoded in
 *   milliseconds (`null` for an isolation).
 *
 * **Gotchas**
 *
 * - The wrapped effect did not run, except in one case: a probe still running when its lease ended was interrupted
 *   and its caller fails with this error (`state: "Open"`), as the circuit has just reopened.
 * - The breaker builds it without a stack trace (rejections are the hot path of an outage); the `peer`, `state` and
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
 *     Effect.logWarning(`pricing-api unavailable (${error.state}), retry in ${error.retryAfter}`).pipe(Effect.as(0)))
 * )
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class CircuitOpenError extends Schema.TaggedError<CircuitOpenError>()("CircuitOpenError", {
  peer: Schema.String,
  state: RejectedBy,
  retryAfter: RetryAfter
}) {
  override get message(): string {
    const peer = JSON.stringify(displayPeer(this.peer))
    switch (this.state) {
      case "Isolated":
        return `Circuit for peer ${peer} is isolated by an operator; no call is admitted until it is released`
      case "HalfOpen":
        return `Circuit for peer ${peer} is half-open and its probe is running; a call may be admitted again in ${
          Duration.format(this.retryAfter)
        } at the latest`
      case "Open":
        return `Circuit for peer ${peer} is open; a call will be admitted again in ${Duration.format(this.retryAfter)}`
    }
  }
}
