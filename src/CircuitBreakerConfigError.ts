/**
 * The error a breaker or a set fails with when its options are invalid.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The options given to `CircuitBreaker.make`, `CircuitBreakerSet.layer` or `CircuitBreakerSet.layerConfig` are
 * invalid.
 *
 * **Details**
 *
 * `message` names every invalid field and says what was expected, one field per line, for example
 * `maxFailures: Expected an integer, got 1.5`. `fields` lists the same field names, for programs.
 *
 * **Gotchas**
 *
 * Nothing is clamped or replaced by a default: `null` is an error, not "use the default", and an unknown key (a
 * typo such as `maxFailure`) is an error naming that key.
 *
 * **Example** (Reporting bad options)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker } from "effect-circuit"
 *
 * const program = CircuitBreaker.make({ maxFailures: -1 }).pipe(
 *   Effect.catchTag("CircuitBreakerConfigError", (error) => Effect.logError(error.message))
 * )
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class CircuitBreakerConfigError extends Schema.TaggedError<CircuitBreakerConfigError>()(
  "CircuitBreakerConfigError",
  {
    fields: Schema.Array(Schema.String),
    details: Schema.String
  }
) {
  override get message(): string {
    return `Invalid circuit breaker options:\n${this.details}`
  }
}
