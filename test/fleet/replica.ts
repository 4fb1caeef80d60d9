// One replica of a fleet, for the multi-process tests (Fleet.processes.test.ts): a child Node process holding a
// `CircuitBreakerSet.makeRedis` set, driven by JSON-line commands on stdin.
//
//   node test/fleet/replica.ts '{"url":"redis://127.0.0.1:6379","prefix":"t1:","maxFailures":5}'
//
// Every reply is one line on stdout, `@@R {"id":…,…}` (log lines, sent to stderr, are never taken for replies). The
// first reply, id 0, says the set is built. Commands run concurrently; each gets exactly one reply. The process
// exits on `{"op":"exit"}` and when its stdin closes (the test process ended).
import { NodeRedis } from "@effect/platform-node"
import * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createInterface } from "node:readline"
import { format } from "node:util"
import { CircuitBreakerSet } from "../../src/index.ts"

/** What the test passes on argv: where Redis is, and the set's options. */
export interface ReplicaOptions {
  readonly url: string
  readonly prefix: string
  readonly maxFailures: number
  readonly window: Duration.Input
  readonly resetTimeout: Duration.Input
  readonly timeout?: Duration.Input
  readonly minProcesses?: number
}

/** A command; `peer` names the breaker. */
export type Command =
  /** The set's `fleet` status. */
  | { readonly op: "status" }
  /** Polls `fleet` every 5 ms until its tag is `tag` (or `timeoutMs` passes): the status, and when it was seen. */
  | { readonly op: "waitStatus"; readonly tag: "Connected" | "Local"; readonly timeoutMs: number }
  /** The tag of `state(peer)`. */
  | { readonly op: "state"; readonly peer: string }
  /** `n` calls, one after another, that fail (`Effect.fail`); `at`: when the last one returned. */
  | { readonly op: "fail"; readonly peer: string; readonly n: number }
  /**
   * `n` calls, `concurrency` at a time, each sleeping `delayMs` then succeeding (or failing, with `fail`), all started
   * at the wall-clock instant `at` if given: how many were admitted (ran) or rejected, and the longest any took;
   * `admittedAt` when each admitted call started, `firstEnd` when the first admitted call ended; `rejectedBy` the
   * `state` of each rejection's `CircuitOpenError`.
   */
  | {
    readonly op: "call"
    readonly peer: string
    readonly n: number
    readonly concurrency: number
    readonly delayMs: number
    readonly fail?: boolean
    readonly at?: number
  }
  /** One call every `intervalMs` for `durationMs`, each sleeping `delayMs`: outcomes and the longest overhead. */
  | {
    readonly op: "load"
    readonly peer: string
    readonly durationMs: number
    readonly intervalMs: number
    readonly delayMs: number
  }
  /**
   * Waits (up to `timeoutMs`) until the set has published a change of `peer` to Open: when this process saw it, and
   * whether a call made at that instant was rejected.
   */
  | { readonly op: "watch"; readonly peer: string; readonly timeoutMs: number }
  /**
   * `breakers.isolate(peer)` in a scope of its own, kept open until `release` (or until the process dies): when the
   * isolation was in place.
   */
  | { readonly op: "isolate"; readonly peer: string }
  /** Closes the scope of this process's oldest isolation of `peer` still held: whether there was one, and when. */
  | { readonly op: "release"; readonly peer: string }
  | { readonly op: "exit" }

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes of one machine. */
const wall = (): number => performance.timeOrigin + performance.now()

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Waits until the wall-clock instant `at`: a timer, then a short spin for the last milliseconds. */
const until = async (at: number): Promise<void> => {
  if (at - wall() > 5) await sleep(at - wall() - 5)
  while (wall() < at) {
    // spin
  }
}

// Logs go to stderr: stdout carries the replies only.
for (const method of ["log", "info", "warn", "error", "debug", "trace"] as const) {
  console[method] = (...args: Array<unknown>) => void process.stderr.write(`${format(...args)}\n`)
}

const reply = (id: number, body: object) => void process.stdout.write(`@@R ${JSON.stringify({ id, ...body })}\n`)

const options = JSON.parse(process.argv[2]!) as ReplicaOptions
const scope = Scope.makeUnsafe()
const breakers = await Effect.runPromise(Scope.provide(
  CircuitBreakerSet.makeRedis({
    redis: NodeRedis.layer({ url: options.url, disableOfflineQueue: true }),
    prefix: options.prefix,
    maxFailures: options.maxFailures,
    window: options.window,
    resetTimeout: options.resetTimeout,
    timeout: options.timeout,
    minProcesses: options.minProcesses
  }),
  scope
))

/** The first change of each peer to Open that this process saw: when, and whether a call then was rejected. */
const opened = new Map<string, { readonly seenAt: number; rejected: boolean | undefined }>()
const isRejection = (exit: Exit.Exit<unknown, unknown>): boolean =>
  Exit.isFailure(exit) && Cause.squash(exit.cause) instanceof Error &&
  (Cause.squash(exit.cause) as { _tag?: string })._tag === "CircuitOpenError"

Effect.runFork(Stream.runForEach(breakers.changes, (change) =>
  Effect.sync(() => {
    if (change.to !== "Open" || opened.has(change.peer)) return
    const seen = { seenAt: wall(), rejected: undefined as boolean | undefined }
    opened.set(change.peer, seen)
    Effect.runPromiseExit(breakers.withBreaker(change.peer)(Effect.void)).then((exit) => {
      seen.rejected = isRejection(exit)
    })
  })))
// Lets the listener subscribe before the test is told the replica is ready.
await sleep(20)

const outcome = (exit: Exit.Exit<unknown, unknown>): "ok" | "rejected" | "failed" =>
  Exit.isSuccess(exit) ? "ok" : isRejection(exit) ? "rejected" : "failed"

/** The `state` of a rejection's `CircuitOpenError` ("Open", "HalfOpen" or "Isolated"). */
const rejectedBy = (exit: Exit.Exit<unknown, unknown>): string | undefined =>
  Exit.isFailure(exit) && isRejection(exit) ? (Cause.squash(exit.cause) as { state?: string }).state : undefined

/** The scopes of the isolations this process holds, by peer, oldest first: closed by `release`. */
const isolations = new Map<string, Array<Scope.Closeable>>()

const run = async (command: Command): Promise<object> => {
  switch (command.op) {
    case "status":
      return { status: await Effect.runPromise(breakers.fleet) }
    case "waitStatus": {
      const deadline = wall() + command.timeoutMs
      for (;;) {
        const status = await Effect.runPromise(breakers.fleet)
        if (status._tag === command.tag || wall() > deadline) return { status, at: wall() }
        await sleep(5)
      }
    }
    case "state":
      return { state: (await Effect.runPromise(breakers.state(command.peer)))._tag }
    case "fail": {
      const counts = { failed: 0, rejected: 0, ok: 0 }
      for (let i = 0; i < command.n; i++) {
        const exit = await Effect.runPromiseExit(breakers.withBreaker(command.peer)(Effect.fail("boom")))
        const result = outcome(exit)
        counts[result === "failed" ? "failed" : result]++
      }
      return { ...counts, at: wall() }
    }
    case "call": {
      if (command.at !== undefined) await until(command.at)
      const startedAt = wall()
      const admittedAt: Array<number> = []
      let firstEnd: number | undefined
      let longest = 0
      const one = Effect.suspend(() => {
        admittedAt.push(wall())
        return Effect.ensuring(
          Effect.andThen(Effect.sleep(command.delayMs), command.fail === true ? Effect.fail("boom") : Effect.void),
          Effect.sync(() => (firstEnd ??= wall()))
        )
      })
      const exits = await Effect.runPromise(Effect.forEach(
        Array.from({ length: command.n }),
        () =>
          Effect.suspend(() => {
            const start = wall()
            return Effect.tap(Effect.exit(breakers.withBreaker(command.peer)(one)), () =>
              Effect.sync(() => {
                longest = Math.max(longest, wall() - start)
              }))
          }),
        { concurrency: command.concurrency }
      ))
      const outcomes = exits.map(outcome)
      return {
        admitted: admittedAt.length,
        admittedAt,
        firstEnd,
        rejected: outcomes.filter((o) => o === "rejected").length,
        ok: outcomes.filter((o) => o === "ok").length,
        failed: outcomes.filter((o) => o === "failed").length,
        rejectedBy: exits.flatMap((exit) => rejectedBy(exit) ?? []),
        startedAt,
        longestMs: longest
      }
    }
    case "load": {
      const deadline = wall() + command.durationMs
      const counts = { ok: 0, rejected: 0, failed: 0 }
      let longestOverheadMs = 0
      while (wall() < deadline) {
        const start = wall()
        const exit = await Effect.runPromiseExit(breakers.withBreaker(command.peer)(Effect.sleep(command.delayMs)))
        counts[outcome(exit)]++
        longestOverheadMs = Math.max(longestOverheadMs, wall() - start - command.delayMs)
        await sleep(command.intervalMs)
      }
      return { ...counts, longestOverheadMs }
    }
    case "watch": {
      const deadline = wall() + command.timeoutMs
      for (;;) {
        const seen = opened.get(command.peer)
        if (seen !== undefined && seen.rejected !== undefined) return { ...seen }
        if (wall() > deadline) return { seenAt: undefined, rejected: undefined }
        await sleep(2)
      }
    }
    case "isolate": {
      const held = Scope.makeUnsafe()
      await Effect.runPromise(Scope.provide(breakers.isolate(command.peer), held))
      isolations.set(command.peer, [...(isolations.get(command.peer) ?? []), held])
      return { at: wall() }
    }
    case "release": {
      const [held, ...rest] = isolations.get(command.peer) ?? []
      if (held === undefined) return { released: false, at: wall() }
      if (rest.length === 0) isolations.delete(command.peer)
      else isolations.set(command.peer, rest)
      await Effect.runPromise(Scope.close(held, Exit.void))
      return { released: true, at: wall() }
    }
    case "exit":
      setTimeout(() => process.exit(0), 10)
      return {}
  }
}

reply(0, { ready: true, pid: process.pid })
const lines = createInterface({ input: process.stdin })
lines.on("line", (line) => {
  const { id, ...command } = JSON.parse(line) as { id: number } & Command
  run(command as Command).then(
    (body) => reply(id, body),
    (error: unknown) => reply(id, { error: String(error) })
  )
})
lines.on("close", () => process.exit(0))
