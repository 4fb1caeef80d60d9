/**
 * One replica of `npm run demo -- --fleet` (see demo/fleet.ts), run as a child process: a set built with
 * `CircuitBreakerSet.layerRedis` on the demo's Redis, calling the demo's flaky peer through `withBreaker`, on the
 * schedule the parent sends. It reports everything to the parent over the IPC channel, as `ReplicaEvent`s, and
 * prints nothing itself.
 */
import { NodeRedis } from "@effect/platform-node"
import { Data, Duration, Effect, Fiber, Layer, Logger, Stream } from "effect"
import type { CircuitStateChange } from "../src/CircuitStateChange.ts"
import { CircuitBreakerSet, CircuitOpenError, withBreaker } from "../src/index.ts"

/** What the parent passes as the first argument, as JSON. */
export interface ReplicaConfig {
  readonly name: string
  readonly redisUrl: string
  readonly prefix: string
  readonly peer: string
  readonly peerUrl: string
  readonly maxFailures: number
  readonly windowMs: number
  readonly resetTimeoutMs: number
  /** The call's timeout, inside the breaker. */
  readonly timeoutMs: number
  readonly intervalMs: number
  /** When this replica's first call starts, after the start of the script. */
  readonly offsetMs: number
  /** How long the script lasts: no call starts after it. */
  readonly durationMs: number
}

/** The parent's message that starts the calls: the script's start, wall-clock epoch milliseconds. */
export interface StartMessage {
  readonly type: "start"
  readonly startedAt: number
}

export type CallOutcome = "ok" | "failed" | "rejected"

/** What a replica tells the parent. Times are wall-clock epoch milliseconds. */
export type ReplicaEvent =
  | { readonly type: "ready"; readonly name: string; readonly process: string }
  | {
    readonly type: "call"
    readonly name: string
    readonly seq: number
    readonly startedAt: number
    readonly endedAt: number
    /** The circuit's state (`state(peer)`: the stricter of the fleet's view and the local breaker) before the call. */
    readonly stateBefore: CircuitStateChange["to"]
    readonly outcome: CallOutcome
    /** The peer's status code, when it answered. */
    readonly status?: number | undefined
    /** Why a call was rejected (`CircuitOpenError.state`), and when it may be admitted again. */
    readonly rejectedBy?: string | undefined
    readonly retryAfterMs?: number | undefined
  }
  | { readonly type: "change"; readonly name: string; readonly change: CircuitStateChange }
  | {
    readonly type: "log"
    readonly name: string
    readonly at: number
    readonly level: string
    readonly message: string
  }
  | { readonly type: "done"; readonly name: string; readonly finalState: CircuitStateChange["to"] }

class PeerError extends Data.TaggedError("PeerError")<{ readonly status: number }> {}
class TransportError extends Data.TaggedError("TransportError")<{ readonly cause: unknown }> {}

const config = JSON.parse(process.argv[2] ?? "{}") as ReplicaConfig
const { name } = config

const send = (event: ReplicaEvent): void => {
  process.send?.(event)
}

/** The library's log lines go to the parent (the parent prints those about the link to Redis). */
const forward = Logger.make((options) => {
  const message = Array.isArray(options.message) ? options.message.map(String).join(" ") : String(options.message)
  send({ type: "log", name, at: options.date.getTime(), level: options.logLevel, message })
})

const started = Effect.callback<number>((resume) => {
  const onMessage = (message: StartMessage) => {
    if (message?.type === "start") resume(Effect.succeed(message.startedAt))
  }
  process.on("message", onMessage)
  return Effect.sync(() => process.off("message", onMessage))
})

/** One call to the peer: a status below 500 is an answer, anything else a failure. */
const callPeer = (seq: number) =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(`${config.peerUrl}/stock/sku-1`, {
        signal,
        headers: { "x-replica": name, "x-call": String(seq) }
      })
      await response.text()
      return response.status
    },
    catch: (cause) => new TransportError({ cause })
  }).pipe(
    Effect.flatMap((status) => status >= 500 ? Effect.fail(new PeerError({ status })) : Effect.succeed(status))
  )

const program = Effect.gen(function*() {
  const breakers = yield* CircuitBreakerSet
  yield* breakers.changes.pipe(
    Stream.runForEach((change) => Effect.sync(() => send({ type: "change", name, change }))),
    Effect.forkScoped({ startImmediately: true })
  )
  // The set joins the fleet in the background: calls before that would decide alone.
  for (;;) {
    const status = yield* breakers.fleet
    if (status._tag === "Connected") {
      send({ type: "ready", name, process: status.process })
      break
    }
    yield* Effect.sleep(10)
  }
  const startedAt = yield* started

  const fibers: Array<Fiber.Fiber<void>> = []
  for (let seq = 0;; seq++) {
    const at = startedAt + config.offsetMs + seq * config.intervalMs
    if (at >= startedAt + config.durationMs) break
    const wait = at - Date.now()
    if (wait > 0) yield* Effect.sleep(wait)
    const stateBefore = (yield* breakers.state(config.peer))._tag
    const callStarted = Date.now()
    const call = callPeer(seq).pipe(
      Effect.timeout(config.timeoutMs),
      withBreaker(config.peer),
      Effect.matchEffect({
        onSuccess: (status) => Effect.succeed({ outcome: "ok" as const, status }),
        onFailure: (error) =>
          Effect.succeed(
            error instanceof CircuitOpenError
              ? {
                outcome: "rejected" as const,
                rejectedBy: error.state,
                retryAfterMs: Duration.toMillis(error.retryAfter)
              }
              : { outcome: "failed" as const, status: error._tag === "PeerError" ? error.status : undefined }
          )
      }),
      Effect.flatMap((result) =>
        Effect.sync(() =>
          send({ type: "call", name, seq, startedAt: callStarted, endedAt: Date.now(), stateBefore, ...result })
        )
      )
    )
    fibers.push(yield* Effect.forkChild(call))
  }
  yield* Fiber.joinAll(fibers)
  // The last changes reach the stream's subscriber in a later step.
  yield* Effect.sleep(50)
  send({ type: "done", name, finalState: (yield* breakers.state(config.peer))._tag })
})

const loggers = Logger.layer([forward])

Effect.runPromise(
  program.pipe(
    Effect.scoped,
    Effect.provide(
      Layer.mergeAll(
        CircuitBreakerSet.layerRedis({
          redis: NodeRedis.layer({ url: config.redisUrl, disableOfflineQueue: true }),
          prefix: config.prefix,
          maxFailures: config.maxFailures,
          window: Duration.millis(config.windowMs),
          resetTimeout: Duration.millis(config.resetTimeoutMs)
        }).pipe(Layer.provide(loggers)),
        loggers
      )
    )
  )
).then(
  () => {
    // The IPC channel keeps the process alive: close it once everything has been sent.
    process.disconnect?.()
  },
  (error: unknown) => {
    process.stderr.write(`replica ${name}: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
    process.exitCode = 1
    process.disconnect?.()
  }
)
