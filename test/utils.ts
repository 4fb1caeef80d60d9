import { Data, Effect, Layer, Logger, References } from "effect"
import type { LogLevel } from "effect"

/** A typed failure the tests count (or not) with `isFailure`. */
export class Boom extends Data.TaggedError("Boom")<{}> {}

/** A typed failure that means "the peer answered", like an HTTP 404. */
export class NotFound extends Data.TaggedError("NotFound")<{}> {}

export interface CapturedLog {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger layer that records every log line (every level) into `logs`. */
export const captureLogs = (logs: Array<CapturedLog>) =>
  Layer.mergeAll(
    Logger.layer([
      Logger.make((options) => {
        logs.push({
          level: options.logLevel,
          message: String(Array.isArray(options.message) ? options.message.join(" ") : options.message),
          annotations: options.fiber.getRef(References.CurrentLogAnnotations)
        })
      })
    ]),
    Layer.succeed(References.MinimumLogLevel, "All")
  )

/** Runs `self` n times in sequence, discarding the exits. */
export const repeat = <A, E, R>(self: Effect.Effect<A, E, R>, n: number) =>
  Effect.forEach(Array.from({ length: n }), () => Effect.exit(self), { discard: true })
