// Fleet mode within one process: several sets, each its own member of the fleet (its own id and connections),
// against a real redis-server. Real time, short durations, generous bounds; the multi-process tests are in
// Fleet.processes.test.ts, the scripts' rules on passed times in fleetScripts.test.ts.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Fiber, Layer, Logger, Metric, Option, Stream } from "effect"
import * as Redis from "effect/persistence/Redis"
import { afterAll, beforeAll } from "vitest"
import {
  CircuitBreakerConfigError,
  CircuitBreakerMetrics,
  CircuitBreakerSet,
  type CircuitStateChange,
  FleetStatus,
  Policy,
  type RedisSetOptions
} from "../../src/index.ts"
import * as scripts from "../../src/internal/fleetScripts.ts"
import { describeRedis, redisCommand, type RedisServer, startRedis } from "./redisServer.ts"
import { call, connected, fail, patient, redisLayer, rejection, until, untilState } from "./utils.ts"

describe("layerRedis options", () => {
  const configError = (options: RedisSetOptions) =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(CircuitBreakerSet.makeRedis(options)))
      assert.isTrue(Exit.isFailure(exit))
      const error = Cause.squash((exit as Exit.Failure<unknown, unknown>).cause)
      assert.instanceOf(error, CircuitBreakerConfigError)
      return error as CircuitBreakerConfigError
    })
  const redis = redisLayer("redis://127.0.0.1:1")

  it.effect("name each bad fleet option", () =>
    Effect.gen(function*() {
      const error = yield* configError({
        redis: "nope" as never,
        prefix: "a{b}",
        timeout: "0 millis",
        minProcesses: 1.5
      })
      assert.deepStrictEqual([...error.fields], ["redis", "prefix", "timeout", "minProcesses"])
      assert.include(error.message, "minProcesses: must be a whole number of at least 1, got 1.5")
      assert.deepStrictEqual([...(yield* configError({ redis, prefix: "" })).fields], ["prefix"])
      assert.deepStrictEqual([...(yield* configError({ redis, timeout: "forever" as never })).fields], ["timeout"])
      assert.deepStrictEqual([...(yield* configError({ redis, timeout: Infinity })).fields], ["timeout"])
      assert.deepStrictEqual([...(yield* configError({ redis, minProcesses: 0 })).fields], ["minProcesses"])
      assert.deepStrictEqual([...(yield* configError(undefined as never)).fields], ["redis"])
    }))

  it.effect("validate the set's own options as layer does", () =>
    Effect.gen(function*() {
      const error = yield* configError({ redis, maxFailures: -1, policy: Policy.consecutive(2) })
      assert.includeMembers([...error.fields], ["maxFailures"])
    }))

  it.effect("an in-memory set reports a local fleet status", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet.make()
      const status = yield* set.fleet
      assert.isTrue(FleetStatus.isLocal(status))
      assert.strictEqual(status._tag === "Local" && status.reason, "in-memory set")
    }).pipe(Effect.scoped))
})

describeRedis("fleet mode within one process", () => {
  let server: RedisServer
  let prefixes = 0
  beforeAll(async () => {
    server = await startRedis()
  })
  afterAll(async () => {
    await server?.stop()
  })
  /** A fleet of its own for one test (the tests of a file may run at once): members share its prefix. */
  const fleet = () => {
    const prefix = `t${++prefixes}:`
    return (options: Partial<RedisSetOptions> = {}) =>
      Effect.gen(function*() {
        const set = yield* CircuitBreakerSet.makeRedis({
          redis: redisLayer(server.url),
          prefix,
          timeout: patient,
          ...options
        })
        yield* connected(set)
        return set
      })
  }

  it.live(
    "failures from three members open the circuit for all three; one probe closes it for all",
    () =>
      Effect.gen(function*() {
        const member = fleet()
        const sets = [
          yield* member({ maxFailures: 5, resetTimeout: "600 millis" }),
          yield* member({ maxFailures: 5, resetTimeout: "600 millis" }),
          yield* member({ maxFailures: 5, resetTimeout: "600 millis" })
        ]
        // 5 failures: not more than maxFailures.
        for (const set of sets.slice(0, 2)) for (let i = 0; i < 2; i++) yield* fail(set, "p")
        yield* fail(sets[2]!, "p")
        yield* Effect.sleep("150 millis")
        for (const set of sets) assert.isUndefined(rejection(yield* call(set, "p")))
        // The sixth opens it, for every member.
        yield* fail(sets[2]!, "p")
        for (const set of sets) yield* untilState(set, "p", "Open")
        for (const set of sets) assert.strictEqual(rejection(yield* call(set, "p")), "Open")
        yield* Effect.sleep("650 millis")
        const calls = yield* Effect.all(
          sets.flatMap((set) =>
            Array.from(
              { length: 50 },
              () => Effect.exit(Effect.succeed(1).pipe(Effect.delay("30 millis"), set.withBreaker("p")))
            )
          ),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(calls.filter(Exit.isSuccess).length, 1)
        for (const set of sets) yield* untilState(set, "p", "Closed")
      }).pipe(Effect.scoped),
    20_000
  )

  it.live(
    "nothing fleet-wide is held while a call runs: a call hanging in one member delays none in another",
    () =>
      Effect.gen(function*() {
        const member = fleet()
        const a = yield* member({ maxFailures: 0, resetTimeout: "300 millis" })
        const b = yield* member({ maxFailures: 0, resetTimeout: "300 millis" })
        // On a closed circuit: b's call returns (a lock held by a's call would keep it waiting forever).
        yield* Effect.forkScoped(Effect.never.pipe(a.withBreaker("k")))
        assert.isUndefined(rejection(yield* call(b, "k")))
        // As the fleet's probe: a hangs holding the slot; b is answered at once (rejected), not made to wait.
        yield* fail(a, "h")
        yield* untilState(b, "h", "Open")
        yield* Effect.sleep("350 millis")
        yield* Effect.forkScoped(Effect.never.pipe(a.withBreaker("h")))
        // Until b hears that a's call holds the probe slot.
        const deadline = Date.now() + 3_000
        for (;;) {
          const state = yield* b.state("h")
          if (state._tag === "HalfOpen" && state.probeInFlight) break
          if (Date.now() > deadline) assert.fail(`b never saw a's probe: ${JSON.stringify(state)}`)
          yield* Effect.sleep("5 millis")
        }
        const asked = Date.now()
        assert.strictEqual(rejection(yield* call(b, "h")), "HalfOpen")
        // A generous bound: the machine is shared with redis-server and the test runner.
        assert.isBelow(Date.now() - asked, 1_000)
      }).pipe(Effect.scoped),
    20_000
  )

  it.live(
    "changes name the member that caused a fleet transition; snapshot shows a peer the member never called",
    () =>
      Effect.gen(function*() {
        const member = fleet()
        const a = yield* member({ maxFailures: 0, resetTimeout: "10 seconds" })
        const b = yield* member({ maxFailures: 0, resetTimeout: "10 seconds" })
        const aId = (yield* a.fleet).process
        const seen = yield* Effect.forkScoped(
          b.changes.pipe(Stream.filter((change) => change.peer === "q"), Stream.take(1), Stream.runCollect)
        )
        yield* Effect.sleep("20 millis")
        yield* fail(a, "q")
        const [change] = (yield* Fiber.join(seen)) as ReadonlyArray<CircuitStateChange.CircuitStateChange>
        assert.deepInclude(change, {
          peer: "q",
          from: "Closed",
          to: "Open",
          reason: "window",
          opening: 1,
          process: aId
        })
        const snapshot = yield* b.snapshot
        const entry = snapshot.peers.find((peer) => peer.peer === "q")
        assert.strictEqual(entry?.state, "Open")
        // b never called q: its local breaker knows nothing, the fleet's view decides.
        assert.strictEqual((yield* b.state("q"))._tag, "Open")
      }).pipe(Effect.scoped),
    20_000
  )

  it.live(
    "a member that missed a change corrects itself on its next counted failure, and on its next deadline",
    () =>
      Effect.gen(function*() {
        const prefix = `missed${++prefixes}:`
        const b = yield* CircuitBreakerSet.makeRedis({
          timeout: patient,
          redis: redisLayer(server.url),
          prefix,
          maxFailures: 3,
          resetTimeout: "400 millis"
        })
        yield* connected(b)
        // Another process opens the circuit, its message published on a channel b does not hear: b missed it.
        const redis = Context.get(yield* Layer.build(redisLayer(server.url)), Redis.Redis)
        const context: scripts.ScriptContext = {
          key: `${prefix}{m}`,
          peer: "m",
          channel: "nobody-listens",
          process: "other",
          idleMillis: 60_000,
          probes: 1,
          probeTimeoutMillis: undefined,
          delays: [400],
          successThreshold: 1,
          now: undefined
        }
        const rule = { maxFailures: 3, windowMillis: 60_000, minProcesses: 1 }
        for (let i = 0; i < 4; i++) yield* redis.eval(scripts.record)(context, "*", "failure", 0, rule)
        assert.isUndefined(rejection(yield* call(b, "m")))
        // b's next counted failure is answered with the open circuit.
        yield* fail(b, "m")
        yield* untilState(b, "m", "Open")
        assert.strictEqual(rejection(yield* call(b, "m")), "Open")
        // The fleet's probe succeeds elsewhere, and b misses that too: past its deadline b asks, and learns it closed.
        yield* Effect.sleep("450 millis")
        const [admitted, ticket] = yield* redis.eval(scripts.admit)(context)
        assert.strictEqual(admitted, "P")
        yield* redis.eval(scripts.record)(context, ticket, "success", 0, rule)
        yield* untilState(b, "m", "HalfOpen")
        assert.isUndefined(rejection(yield* call(b, "m")))
        assert.strictEqual((yield* b.state("m"))._tag, "Closed")
      }).pipe(Effect.scoped),
    20_000
  )

  it.live("reset closes the circuit for the fleet", () =>
    Effect.gen(function*() {
      const member = fleet()
      const a = yield* member({ maxFailures: 0, resetTimeout: "10 seconds" })
      const b = yield* member({ maxFailures: 0, resetTimeout: "10 seconds" })
      yield* fail(a, "r")
      yield* untilState(b, "r", "Open")
      yield* b.reset("r")
      yield* untilState(a, "r", "Closed")
      assert.isUndefined(rejection(yield* call(a, "r")))
      assert.isUndefined(rejection(yield* call(b, "r")))
    }).pipe(Effect.scoped), 20_000)

  it.live("an isolation held by one member isolates the peer everywhere until released", () =>
    Effect.gen(function*() {
      const member = fleet()
      const a = yield* member()
      const b = yield* member()
      yield* Effect.scoped(Effect.gen(function*() {
        yield* a.isolate("db")
        yield* untilState(b, "db", "Open")
        assert.strictEqual(rejection(yield* call(b, "db")), "Isolated")
        const state = yield* b.state("db")
        assert.isTrue(state._tag === "Open" && state.isolated)
      }))
      yield* untilState(b, "db", "Closed")
      assert.isUndefined(rejection(yield* call(b, "db")))
    }).pipe(Effect.scoped), 20_000)

  it.live("policies that depend on call order stay per process, said once in a log line", () =>
    Effect.gen(function*() {
      const member = fleet()
      const lines: Array<string> = []
      const logger = Logger.make<unknown, void>(({ message }) => {
        lines.push(String(Array.isArray(message) ? message.join(" ") : message))
      })
      const options = { policy: Policy.consecutive(1), peers: { w: { policy: Policy.window({ maxFailures: 0 }) } } }
      const a = yield* member(options).pipe(Effect.provide(Logger.layer([logger])))
      const b = yield* member(options)
      assert.strictEqual(lines.filter((line) => line.includes("decide per process")).length, 1)
      assert.include(lines.find((line) => line.includes("decide per process")), "Consecutive")
      yield* fail(a, "c")
      assert.strictEqual(rejection(yield* call(a, "c")), "Open")
      yield* Effect.sleep("200 millis")
      assert.isUndefined(rejection(yield* call(b, "c")))
      // The peer with a window policy of its own is shared.
      yield* fail(a, "w")
      yield* untilState(b, "w", "Open")
    }).pipe(Effect.scoped), 20_000)

  it.live(
    "a failure rate over a time window is shared: successes of one member, failures of another",
    () =>
      Effect.gen(function*() {
        const member = fleet()
        const policy = Policy.rate({ threshold: 0.5, minimumCalls: 6, window: "10 seconds" })
        const a = yield* member({ policy })
        const b = yield* member({ policy })
        for (let i = 0; i < 4; i++) yield* call(a, "rate")
        // Successes go in batches, at least every 250 ms: these are in Redis before b fails.
        yield* Effect.sleep("1 second")
        yield* fail(b, "rate")
        yield* fail(b, "rate")
        yield* Effect.sleep("300 millis")
        // 2 of 6 calls failed: under half.
        assert.strictEqual((yield* a.state("rate"))._tag, "Closed")
        assert.strictEqual((yield* b.state("rate"))._tag, "Closed")
        // 4 of 8 calls failed: half. b alone saw 4 failures in 4 calls, fewer than minimumCalls.
        yield* fail(b, "rate")
        yield* fail(b, "rate")
        yield* untilState(a, "rate", "Open")
        const state = yield* a.state("rate")
        assert.strictEqual(state._tag === "Open" && state.reason, "rate")
      }).pipe(Effect.scoped),
    20_000
  )

  it.live("slow calls over a time window are shared", () =>
    Effect.gen(function*() {
      const member = fleet()
      const policy = Policy.slowCalls({ duration: "40 millis", threshold: 0.5, minimumCalls: 4, window: "10 seconds" })
      const a = yield* member({ policy })
      const b = yield* member({ policy })
      for (let i = 0; i < 2; i++) {
        yield* Effect.exit(Effect.succeed(1).pipe(Effect.delay("60 millis"), a.withBreaker("slow")))
      }
      // Each slow call is sent at once.
      yield* Effect.sleep("500 millis")
      yield* call(b, "slow")
      assert.isUndefined(rejection(yield* call(b, "slow")))
      yield* Effect.sleep("500 millis")
      assert.strictEqual((yield* b.state("slow"))._tag, "Closed")
      yield* Effect.exit(Effect.succeed(1).pipe(Effect.delay("60 millis"), b.withBreaker("slow")))
      // 3 slow of 5: the slow call sent at once opens it, for a as well.
      yield* untilState(a, "slow", "Open")
      const state = yield* a.state("slow")
      assert.strictEqual(state._tag === "Open" && state.reason, "slow-calls")
    }).pipe(Effect.scoped), 20_000)

  it.live("a rate over a count window stays per process", () =>
    Effect.gen(function*() {
      const member = fleet()
      const policy = Policy.rate({ threshold: 0.5, minimumCalls: 2, calls: 4 })
      const a = yield* member({ policy })
      const b = yield* member({ policy })
      yield* fail(a, "count")
      yield* fail(a, "count")
      assert.strictEqual(rejection(yield* call(a, "count")), "Open")
      yield* Effect.sleep("400 millis")
      assert.isUndefined(rejection(yield* call(b, "count")))
    }).pipe(Effect.scoped), 20_000)

  it.live("observe mode runs calls the fleet would reject", () =>
    Effect.gen(function*() {
      const member = fleet()
      const a = yield* member({ maxFailures: 0, resetTimeout: "10 seconds" })
      const b = yield* member({ maxFailures: 0, resetTimeout: "10 seconds", mode: "observe" })
      yield* fail(a, "o")
      yield* untilState(b, "o", "Open")
      assert.deepStrictEqual(yield* call(b, "o"), Exit.succeed("ok"))
    }).pipe(Effect.scoped), 20_000)

  it.live("a closed circuit's successes send nothing to Redis", () =>
    Effect.gen(function*() {
      // A server of its own: the file's other tests run meanwhile.
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedis()), (server) =>
        Effect.promise(() => server.stop()))
      const set = yield* CircuitBreakerSet.makeRedis({
        redis: redisLayer(server.url),
        prefix: "quiet:",
        timeout: patient
      })
      yield* connected(set)
      yield* fail(set, "s")
      yield* Effect.sleep("100 millis")
      const before = yield* Effect.promise(() =>
        redisCommand(server.port, "INFO", "commandstats")
      )
      for (let i = 0; i < 20_000; i++) yield* call(set, "s")
      const after = yield* Effect.promise(() => redisCommand(server.port, "INFO", "commandstats"))
      const counts = (text: string) =>
        Object.fromEntries([...text.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1]!, Number(m[2])]))
      const [was, now] = [counts(before), counts(after)]
      const added = Object.entries(now)
        .map(([command, calls]) => [command, calls - (was[command] ?? 0)] as const)
        .filter(([command, delta]) => delta > 0 && command !== "info")
      // Only the health check (one PING a second) may run meanwhile.
      for (const [command, delta] of added) {
        assert.strictEqual(command, "ping", `${command} was sent ${delta} times`)
        assert.isAtMost(delta, 10)
      }
    }).pipe(Effect.scoped), 30_000)
})

describeRedis("fleet mode under load", () => {
  const ownServer = Effect.acquireRelease(
    Effect.promise(() => startRedis()),
    (server) => Effect.promise(() => server.stop())
  )
  const scriptCalls = (port: number) =>
    Effect.map(
      Effect.promise(() => redisCommand(port, "INFO", "commandstats")),
      (text) => Number(/cmdstat_evalsha:calls=(\d+)/.exec(text)?.[1] ?? 0)
    )

  it.live(
    "a burst of failures on one peer sends a few scripts, not one each, and the set stays connected",
    () =>
      Effect.gen(function*() {
        const server = yield* ownServer
        const set = yield* CircuitBreakerSet.makeRedis({
          timeout: patient,
          redis: redisLayer(server.url),
          prefix: "burst:",
          maxFailures: 5
        })
        yield* connected(set)
        const before = yield* scriptCalls(server.port)
        yield* Effect.all(Array.from({ length: 1_000 }, () => fail(set, "b")), { concurrency: "unbounded" })
        yield* untilState(set, "b", "Open")
        // Until the scripts settle (the local breaker may open before the fleet's circuit does, on a busy machine).
        let sent = -1
        for (let settled = 0; settled < 5; settled++) {
          yield* Effect.sleep("100 millis")
          const now = (yield* scriptCalls(server.port)) - before
          if (now !== sent) settled = 0
          sent = now
        }
        // Six failures open it (more than 5); the rest waited for the one in flight, and were dropped once it opened.
        assert.isAtLeast(sent, 6)
        assert.isAtMost(sent, 20)
        assert.isTrue(FleetStatus.isConnected(yield* set.fleet))
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "an event loop blocked past the timeout with a reply waiting does not take the set local",
    () =>
      Effect.gen(function*() {
        const server = yield* ownServer
        const set = yield* CircuitBreakerSet.makeRedis({
          redis: redisLayer(server.url),
          prefix: "stall:",
          maxFailures: 5,
          timeout: "100 millis"
        })
        yield* connected(set)
        const since = (yield* set.fleet).since
        yield* fail(set, "s")
        // The failure's script is in flight: block the loop past the timeout; its reply comes in meanwhile.
        yield* Effect.sleep("1 millis")
        const blockedUntil = Date.now() + 250
        while (Date.now() < blockedUntil) {
          // Busy: the event loop cannot run.
        }
        yield* Effect.sleep("200 millis")
        const status = yield* set.fleet
        assert.deepInclude(status, { _tag: "Connected", since })
      }).pipe(Effect.scoped),
    30_000
  )
})

describeRedis("fleet mode while Redis is away", () => {
  it.live(
    "a set built while Redis is down starts local, keeps failures, and joins when Redis comes",
    () =>
      Effect.gen(function*() {
        const first = yield* Effect.promise(() => startRedis())
        const port = first.port
        yield* Effect.promise(() => first.kill())
        const set = yield* CircuitBreakerSet.makeRedis({
          redis: redisLayer(`redis://127.0.0.1:${port}`),
          prefix: "away:",
          maxFailures: 2,
          window: "1 minute",
          timeout: patient
        })
        yield* until(set, (status) => status._tag === "Local" && status.reason !== "connecting", "local")
        assert.isUndefined(rejection(yield* call(set, "x")))
        yield* fail(set, "x")
        yield* fail(set, "x")
        const local = yield* set.fleet
        assert.strictEqual(local._tag === "Local" && local.pendingFailures, 2)
        yield* Effect.promise(() => first.restart())
        yield* connected(set)
        const status = yield* set.fleet
        assert.isTrue(FleetStatus.isConnected(status))
        // The replayed failures are in the fleet's window: one more opens it (more than 2).
        const other = yield* CircuitBreakerSet.makeRedis({
          redis: redisLayer(`redis://127.0.0.1:${port}`),
          prefix: "away:",
          maxFailures: 2,
          window: "1 minute",
          timeout: patient
        })
        yield* connected(other)
        yield* fail(other, "x")
        yield* untilState(set, "x", "Open")
        yield* Effect.promise(() => first.stop())
      }).pipe(Effect.scoped),
    30_000
  )

  it.live("calls never wait on a hung Redis", () =>
    Effect.gen(function*() {
      const server = yield* Effect.promise(() => startRedis())
      const set = yield* CircuitBreakerSet.makeRedis({
        redis: redisLayer(server.url),
        prefix: "hung:",
        maxFailures: 100,
        timeout: "100 millis"
      })
      yield* connected(set)
      server.pause()
      const started = Date.now()
      let slowest = 0
      while (Date.now() - started < 2_500) {
        const t0 = Date.now()
        yield* fail(set, "h")
        yield* call(set, "h")
        slowest = Math.max(slowest, Date.now() - t0)
        yield* Effect.sleep("10 millis")
      }
      yield* until(set, FleetStatus.isLocal, "local", 3_000)
      const storeUp = Metric.withAttributes(CircuitBreakerMetrics.storeUp, { prefix: "hung:" })
      const storeErrors = Metric.withAttributes(CircuitBreakerMetrics.storeErrors, { prefix: "hung:" })
      assert.strictEqual((yield* Metric.value(storeUp)).value, 0)
      assert.isAtLeast((yield* Metric.value(storeErrors)).count, 1)
      server.resume()
      yield* connected(set)
      assert.strictEqual((yield* Metric.value(storeUp)).value, 1)
      yield* Effect.promise(() => server.stop())
      // Generous: a call waits for nothing, but the machine is shared with redis-server and the test runner.
      assert.isBelow(slowest, 1_000)
      assert.isTrue(Option.isSome(Option.some(slowest)))
    }).pipe(Effect.scoped), 30_000)
})
