/**
 * The fleet group (`npm run bench -- --only fleet`; in the default run when `redis-server` is on PATH): a set in
 * fleet mode (`CircuitBreakerSet.makeRedis`, connected to a `redis-server` the group starts on a free 127.0.0.1
 * port) against the in-memory set, in the same interleaved rounds, and `effect/persistence`'s breaker with
 * `layerStoreRedis` on the same server.
 *
 * - Closed call: the closed group's loops (service and top-level `withBreaker` around `Effect.succeed(1)`), on a
 *   fleet set and on an in-memory set built with the same options. Issue 11's target: within 10%.
 * - Counted failure: the record group's `maxFailures: 5, window: "1 nanos"` loop (the local window never holds more
 *   than one failure). The fleet set adds `minProcesses: 2`, so that the failures of this one process never open the
 *   fleet's circuit (Redis `TIME` is in milliseconds: every failure of a millisecond would be in the window). What is
 *   timed is the caller's cost: the script is sent from a fiber forked once the call's result is settled, which
 *   starts after the caller goes on. A peer has one failure script in flight at a time; the failures that come
 *   meanwhile wait for it (at most `maxFailures` + 1 of them, all the window rule needs). A sample is a fixed 512
 *   failures; after it, untimed, the group lets the event loop run until Redis's script counter stops moving (read
 *   in `INFO commandstats`). The two Redis-side rows come from that wait: how many scripts a sample of 512 failures
 *   sent, and Redis's own CPU time per script (`usec` in `INFO commandstats`).
 * - Rejection: a fleet set whose circuit another fleet set (another process id, same prefix and Redis) opened: this
 *   one's local breaker is closed, its fleet view open; against an in-memory set opened by its own failures.
 * - `effect/persistence`: a closed successful call (2 EVALSHA per call), and one `PING` through the same client for
 *   the round trip's floor; both are async loops.
 * - Rule 1: before the rounds, 100,000 successful calls to a closed circuit on a fleet set, in chunks of 1,000
 *   every 20 ms (so that anything they sent would go out, and the health check runs meanwhile), with Redis's
 *   command counters read before and after; only the health check's `PING` (about one a second) may appear.
 *
 * Every case lets the event loop run after each sample (untimed): the fleet's health check and its replies need
 * it. The fleet sets' `timeout` is 1 second, not the default 100 ms: a sample is tens of milliseconds of synchronous
 * work, more on a busy machine, and a reply that the event loop cannot read in time would take the set local (the
 * set gives a reply one more turn of the loop once its timeout fires, which covers a short stall, not a long one).
 * The timeout changes nothing on the measured paths: the closed call and the rejection send nothing, and a failure
 * arms its timer whatever its length. Each case's `verify` checks that the fleet sets are still connected, with the same
 * `since` as when they connected (a set that went local and came back would have measured the local path).
 *
 * Working tree only: a `--baseline` build from before fleet mode has no `makeRedis`. The redis-server is started and
 * stopped by scripts/redisServer.ts, as the fleet tests do.
 */
import { NodeRedis } from "@effect/platform-node"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { CircuitBreaker as Persistence } from "effect/persistence"
import * as Redis from "effect/persistence/Redis"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { setImmediate as yieldToLoop, setTimeout as sleep } from "node:timers/promises"
import { redisAvailable, redisCommand, type RedisServer, startRedis } from "../scripts/redisServer.ts"
import type { RedisSetOptions, SetOptions } from "../src/index.ts"
import { CircuitBreakerSet } from "../src/index.ts"
import type { Settings } from "./groups.ts"
import type { Case, Row, Samples } from "./harness.ts"
import { effectLoop, median, runGroup } from "./harness.ts"
import {
  current,
  expectFailureTagged,
  expectState,
  failure,
  forever,
  makeSet,
  openSet,
  providing,
  type SetService
} from "./subjects.ts"

export { redisAvailable }

const PEER = "p"

/** Failures per sample of the fleet's failure case (see the module's documentation). */
const failuresPerSample = 512

/** Rule 1's figures. */
const ruleOneCalls = 100_000
const ruleOneChunk = 1_000
const ruleOneEveryMs = 20

const ratio = (a: string, b: string) => (at: (name: string) => number) => at(a) / at(b)

/** `INFO commandstats`, by command: calls and microseconds spent. */
type CommandStats = ReadonlyMap<string, { readonly calls: number; readonly usec: number }>

const commandStats = async (port: number): Promise<CommandStats> => {
  const text = await redisCommand(port, "INFO", "commandstats")
  const stats = new Map<string, { calls: number; usec: number }>()
  for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats.set(match[1]!, { calls: Number(match[2]), usec: Number(match[3]) })
  }
  return stats
}

const callsOf = (stats: CommandStats, command: string): number => stats.get(command)?.calls ?? 0

/** Runs `effect` with the library's logs silenced: the fleet logs when it connects, and every opening. */
const quiet = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
  Effect.provideService(effect, References.MinimumLogLevel, "None")

/** A fleet set built in `scope` (left open), once its link reports `Connected`; with the `since` it connected at. */
const connectedFleetSet = async (
  options: RedisSetOptions,
  scope: Scope.Scope
): Promise<{ readonly set: SetService; readonly since: number }> => {
  const set = await Effect.runPromise(quiet(Scope.provide(CircuitBreakerSet.makeRedis(options), scope))) as SetService
  const deadline = Date.now() + 10_000
  for (;;) {
    const status = Effect.runSync(set.fleet)
    if (status._tag === "Connected") return { set, since: status.since }
    if (Date.now() > deadline) throw new Error(`bench: the fleet set did not connect (${status.reason})`)
    await sleep(10)
  }
}

const expectConnected = (set: SetService, since: number, what: string): void => {
  const status = Effect.runSync(set.fleet)
  if (status._tag !== "Connected" || status.since !== since) {
    throw new Error(
      `bench: the ${what} fleet set is no longer connected as it was (${JSON.stringify(status)}): its figures ` +
        "would be the local path's"
    )
  }
}

/** What the fleet group measured, for `report`, and the lines to print. */
export interface FleetResult {
  readonly samples: Samples
  readonly rows: ReadonlyArray<Row>
}

/**
 * Rule 1: 100,000 successful calls on a closed circuit of a connected fleet set add no Redis command but the health
 * check's `PING`. Run on a set of its own, the only fleet set connected then; closed before the rounds.
 */
const ruleOne = async (server: RedisServer, options: RedisSetOptions, log: (line: string) => void): Promise<Row> => {
  const scope = Effect.runSync(Scope.make())
  try {
    const { set, since } = await connectedFleetSet(options, scope)
    const call = set.withBreaker(PEER)(Effect.succeed(1))
    const chunk = effectLoop(Effect, "yield* call", { call }) as (n: number) => unknown
    chunk(ruleOneChunk)
    // Let anything the first calls (and the connection) sent settle before the first reading.
    await sleep(50)
    const before = await commandStats(server.port)
    const started = performance.now()
    let next = started
    for (let done = 0; done < ruleOneCalls; done += ruleOneChunk) {
      chunk(Math.min(ruleOneChunk, ruleOneCalls - done))
      next += ruleOneEveryMs
      await sleep(Math.max(0, next - performance.now()))
    }
    await sleep(50)
    const seconds = (performance.now() - started) / 1000
    const after = await commandStats(server.port)
    expectConnected(set, since, "rule 1")
    expectState(set, PEER, "Closed")
    const added: Array<[string, number]> = []
    for (const [command, { calls }] of after) {
      const delta = calls - callsOf(before, command)
      // The reading before is itself an INFO, counted once it has run.
      if (command === "info" && delta === 1) continue
      if (delta !== 0) added.push([command, delta])
    }
    const pings = added.find(([command]) => command === "ping")?.[1] ?? 0
    const others = added.filter(([command]) => command !== "ping")
    const detail = added.length === 0 ? "none" : added.map(([command, n]) => `${command} +${n}`).join(", ")
    log(
      `fleet: commands added by ${ruleOneCalls.toLocaleString("en-US")} closed calls: ${detail} ` +
        `(over ${seconds.toFixed(1)} s; the health check pings about once a second)`
    )
    return {
      label: `fleet: commands added by ${ruleOneCalls.toLocaleString("en-US")} closed calls, beyond the health check`,
      value: () => others.reduce((sum, [, n]) => sum + n, 0),
      fromMedians: true,
      unit: "n",
      vs: `${detail} in ${seconds.toFixed(1)} s${pings > 0 ? "; ping is the health check, about 1/s" : ""}`,
      target: { op: "<=", limit: 0, source: "issue 11, rule 1" }
    }
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** Starts a redis-server, runs the rule-1 check and the group's rounds, stops everything; see the module's doc. */
export const runFleet = async (settings: Settings, log: (line: string) => void): Promise<FleetResult> => {
  const server = await startRedis()
  const scope = Effect.runSync(Scope.make())
  try {
    log(`fleet: redis-server pid ${server.pid} on ${server.url}`)
    const redis = NodeRedis.layer({ url: server.url, disableOfflineQueue: true })
    const fleetOptions = { redis, timeout: "1 second" } as const
    const closedOptions: SetOptions = { maxFailures: 5, idleTimeToLive: forever }
    const ruleOneRow = await ruleOne(server, { ...closedOptions, ...fleetOptions, prefix: "bench-rule1:" }, log)

    // Closed: the same options for both sets.
    const closedMemory = makeSet(current, closedOptions)
    const closedFleet = await connectedFleetSet({ ...closedOptions, ...fleetOptions, prefix: "bench-closed:" }, scope)

    // Counted failure: the record group's options; minProcesses 2 keeps the fleet's circuit closed.
    const failureOptions: SetOptions = { maxFailures: 5, window: "1 nanos", idleTimeToLive: forever }
    const failureMemory = makeSet(current, failureOptions)
    const failureFleet = await connectedFleetSet(
      { ...failureOptions, ...fleetOptions, prefix: "bench-failure:", minProcesses: 2 },
      scope
    )

    // Rejection: opened by another fleet set (another process id) on the same prefix.
    const openOptions: SetOptions = { maxFailures: 5, resetTimeout: forever, idleTimeToLive: forever }
    const openMemory = openSet(current, PEER)
    const openFleet = await connectedFleetSet({ ...openOptions, ...fleetOptions, prefix: "bench-open:" }, scope)
    const opener = await connectedFleetSet({ ...openOptions, ...fleetOptions, prefix: "bench-open:" }, scope)
    for (let i = 0; i < 6; i++) {
      Effect.runSync(quiet(Effect.exit(opener.set.withBreaker(PEER)(Effect.fail(failure)))))
    }
    for (const deadline = Date.now() + 5_000;;) {
      if (Effect.runSync(openFleet.set.state(PEER))._tag === "Open") break
      if (Date.now() > deadline) throw new Error("bench: the fleet's circuit did not open for the other set")
      await sleep(5)
    }

    // effect/persistence on the same server, and a PING through the same client.
    const persistenceContext = await Effect.runPromise(
      Layer.buildWithScope(
        Layer.provideMerge(Persistence.layerStoreRedis({ prefix: "bench-persistence:" }), redis),
        scope
      )
    )
    const persistence = await Effect.runPromise(
      Persistence.make({ tripPolicy: Persistence.consecutive(5), openDuration: forever, maxOpenDuration: forever })
        .pipe(Effect.provideContext(persistenceContext), Scope.provide(scope))
    )
    const redisService = Context.get(persistenceContext, Redis.Redis)

    const fleets = { closed: closedFleet, failure: failureFleet, open: openFleet, opener }
    const allConnected = () => {
      for (const [what, { set, since }] of Object.entries(fleets)) expectConnected(set, since, what)
    }

    // Every case lets the event loop run after each sample, and reads Redis's counters; the failure case then
    // waits for its scripts. `evalsha` is the count once the previous sample was done.
    let evalsha = callsOf(await commandStats(server.port), "evalsha")
    let evalshaUsec = 0
    const settle = async () => {
      await yieldToLoop()
      const stats = await commandStats(server.port)
      evalsha = callsOf(stats, "evalsha")
      evalshaUsec = stats.get("evalsha")?.usec ?? 0
    }
    const scriptsPerSample: Array<number> = []
    const redisCpu: Array<number> = []
    const drain = async (_ms: number, _n: number) => {
      const started = performance.now()
      const usecBefore = evalshaUsec
      let last = -1
      let movedAt = started
      for (;;) {
        await yieldToLoop()
        const stats = await commandStats(server.port)
        const calls = callsOf(stats, "evalsha")
        if (calls !== last) {
          last = calls
          movedAt = performance.now()
        } else if (calls > evalsha && performance.now() - movedAt > 50) {
          scriptsPerSample.push(calls - evalsha)
          redisCpu.push((((stats.get("evalsha")?.usec ?? 0) - usecBefore) * 1000) / (calls - evalsha))
          evalsha = calls
          evalshaUsec = stats.get("evalsha")?.usec ?? 0
          return
        }
        if (performance.now() - started > 10_000) {
          throw new Error(`bench: Redis ran ${calls - evalsha} failure scripts and had not settled in 10 s`)
        }
      }
    }

    const guarded = {
      bare: Effect.succeed(1),
      memoryService: closedMemory.withBreaker(PEER)(Effect.succeed(1)),
      fleetService: closedFleet.set.withBreaker(PEER)(Effect.succeed(1)),
      topLevel: Effect.succeed(1).pipe(current.withBreaker(PEER)),
      failure,
      memoryFailure: failureMemory.withBreaker(PEER)(Effect.fail(failure)),
      fleetFailure: failureFleet.set.withBreaker(PEER)(Effect.fail(failure)),
      memoryRejected: openMemory.withBreaker(PEER)(Effect.succeed(1)),
      fleetRejected: openFleet.set.withBreaker(PEER)(Effect.succeed(1)),
      persistence: Effect.succeed(1).pipe(persistence.execute({ key: PEER })),
      ping: redisService.send("PING")
    }
    // Warms the failure script (its first call loads it) before the rounds count scripts.
    Effect.runSync(Effect.exit(guarded.fleetFailure))
    await sleep(50)
    await settle()

    const cases: Array<Case> = [
      { name: "fleet.closed.bare", run: effectLoop(Effect, "yield* bare", guarded) },
      {
        name: "fleet.closed.memory.service",
        run: effectLoop(Effect, "yield* memoryService", guarded),
        verify: () => expectState(closedMemory, PEER, "Closed")
      },
      {
        name: "fleet.closed.fleet.service",
        run: effectLoop(Effect, "yield* fleetService", guarded),
        verify: () => {
          expectState(closedFleet.set, PEER, "Closed")
          allConnected()
        }
      },
      {
        name: "fleet.closed.memory.topLevel",
        run: effectLoop(Effect, "yield* topLevel", guarded, { wrap: providing(current, closedMemory) })
      },
      {
        name: "fleet.closed.fleet.topLevel",
        run: effectLoop(Effect, "yield* topLevel", guarded, { wrap: providing(current, closedFleet.set) })
      },
      { name: "fleet.failure.bare", run: effectLoop(Effect, "yield* Effect.exit(Effect.fail(failure))", guarded) },
      {
        name: "fleet.failure.memory",
        run: effectLoop(Effect, "yield* Effect.exit(memoryFailure)", guarded),
        verify: () => expectState(failureMemory, PEER, "Closed")
      },
      {
        name: "fleet.failure.fleet",
        fixedN: failuresPerSample,
        run: effectLoop(Effect, "yield* Effect.exit(fleetFailure)", guarded),
        after: drain,
        verify: () => expectState(failureFleet.set, PEER, "Closed")
      },
      {
        name: "fleet.open.memory",
        run: effectLoop(Effect, "yield* Effect.exit(memoryRejected)", guarded),
        verify: () => expectFailureTagged(guarded.memoryRejected, "CircuitOpenError")
      },
      {
        name: "fleet.open.fleet",
        run: effectLoop(Effect, "yield* Effect.exit(fleetRejected)", guarded),
        verify: () => {
          expectFailureTagged(guarded.fleetRejected, "CircuitOpenError")
          // The other set opened it: this set's own breaker has seen no failure.
          const { peers } = Effect.runSync(openFleet.set.snapshot)
          if (peers.find((peer) => peer.peer === PEER)?.state !== "Open") {
            throw new Error("bench: the fleet set's snapshot does not show the fleet's circuit open")
          }
        }
      },
      {
        name: "fleet.persistence.redis",
        async: true,
        run: effectLoop(Effect, "yield* persistence", guarded, { async: true }),
        verify: () =>
          Effect.runPromise(persistence.state(PEER)).then((state) => {
            if (state._tag !== "Closed") throw new Error(`bench: persistence ${PEER} is ${state._tag}`)
          })
      },
      { name: "fleet.ping", async: true, run: effectLoop(Effect, "yield* ping", guarded, { async: true }) }
    ].map((c): Case => c.after === undefined ? { ...c, after: settle } : c)

    const samples = await runGroup({ name: "fleet", cases, ...settings }, log)
    allConnected()
    // The Redis-side figures of the measured rounds (the warm-up rounds' come first).
    const all = new Map(samples)
    all.set("fleet.failure.redisCpu", redisCpu.slice(-settings.rounds))
    const scripts = median(scriptsPerSample.slice(-settings.rounds))

    const rows: Array<Row> = [
      ruleOneRow,
      { label: "fleet: bare `yield* Effect.succeed(1)`", ns: "fleet.closed.bare" },
      {
        label: "fleet: closed, in memory, set.withBreaker(peer) (service)",
        ns: "fleet.closed.memory.service",
        value: ratio("fleet.closed.memory.service", "fleet.closed.bare"),
        vs: "bare"
      },
      {
        label: "fleet: closed, fleet mode, set.withBreaker(peer) (service)",
        ns: "fleet.closed.fleet.service",
        value: ratio("fleet.closed.fleet.service", "fleet.closed.memory.service"),
        vs: "in memory, same round",
        target: { op: "<=", limit: 1.1, source: "issue 11" }
      },
      {
        label: "fleet: closed, in memory, withBreaker(peer) (top-level)",
        ns: "fleet.closed.memory.topLevel",
        value: ratio("fleet.closed.memory.topLevel", "fleet.closed.bare"),
        vs: "bare"
      },
      {
        label: "fleet: closed, fleet mode, withBreaker(peer) (top-level)",
        ns: "fleet.closed.fleet.topLevel",
        value: ratio("fleet.closed.fleet.topLevel", "fleet.closed.memory.topLevel"),
        vs: "in memory, same round",
        target: { op: "<=", limit: 1.1, source: "issue 11" }
      },
      { label: "fleet: bare `Effect.exit(Effect.fail(err))`", ns: "fleet.failure.bare" },
      {
        label: "fleet: counted failure, in memory (maxFailures 5, window 1 nanos)",
        ns: "fleet.failure.memory",
        value: ratio("fleet.failure.memory", "fleet.failure.bare"),
        vs: "bare fail"
      },
      {
        label: `fleet: counted failure, fleet mode, caller's cost (${failuresPerSample} a sample)`,
        ns: "fleet.failure.fleet",
        value: ratio("fleet.failure.fleet", "fleet.failure.memory"),
        vs: "in memory, same round"
      },
      {
        label: `fleet:   ↳ Redis side: scripts sent for a sample of ${failuresPerSample} failures (median)`,
        value: () => scripts,
        fromMedians: true,
        unit: "n",
        vs: "one in flight per peer; those meanwhile wait, at most maxFailures + 1"
      },
      {
        label: "fleet:   ↳ Redis side: Redis CPU per failure script (INFO commandstats)",
        ns: "fleet.failure.redisCpu"
      },
      {
        label: "fleet: rejection, in memory, set.withBreaker(peer) (service)",
        ns: "fleet.open.memory",
        value: ratio("fleet.open.memory", "fleet.failure.bare"),
        vs: "bare fail"
      },
      {
        label: "fleet: rejection, fleet mode, opened by another fleet set",
        ns: "fleet.open.fleet",
        value: ratio("fleet.open.fleet", "fleet.open.memory"),
        vs: "in memory, same round"
      },
      {
        label: "fleet: effect/persistence layerStoreRedis, closed call (2 EVALSHA)",
        ns: "fleet.persistence.redis",
        value: ratio("fleet.persistence.redis", "fleet.closed.fleet.service"),
        vs: "ours in fleet mode is N× faster"
      },
      { label: "fleet: one PING round trip through the same client (Redis.send)", ns: "fleet.ping" }
    ]
    return { samples: all, rows }
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void)).catch(() => undefined)
    await server.stop()
  }
}
