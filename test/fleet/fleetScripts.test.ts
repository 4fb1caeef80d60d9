// The fleet's Lua scripts (src/internal/fleetScripts.ts) against a real redis-server, one per file, emptied (FLUSHALL)
// before each test. Every call passes its own time (`context.now`, milliseconds) in place of Redis TIME, so the state
// rules are checked at exact instants with no real waiting; only the TTL tests wait (a few hundred ms) to see keys
// expire. The rules are machine.ts's, fleet-wide, for the `window` policy.
//
import { NodeRedis } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Queue, Scope } from "effect"
import * as Redis from "effect/persistence/Redis"
import { afterAll, beforeAll, beforeEach } from "vitest"
import * as scripts from "../../src/internal/fleetScripts.ts"
import { describeRedis, redisCommand, type RedisServer, startRedis } from "./redisServer.ts"

const PREFIX = "ec-test:"
const CHANNEL = `${PREFIX}changes`
const PEER = "api.example"
const KEY = `${PREFIX}{${PEER}}`
const FAILURES_KEY = `${KEY}:f`
const ISOLATIONS_KEY = `${KEY}:i`

/** Durations of openings 1, 2, 3 (and every later one), distinct from each other and from the window. */
const DELAYS = [500, 2_000, 8_000] as const
const WINDOW = 1_000
const IDLE = 60_000

/** What differs between tests in the script's context. */
interface Setup {
  readonly process?: string
  readonly probes?: number
  readonly probeTimeoutMillis?: number
  readonly successThreshold?: number
  readonly delays?: ReadonlyArray<number>
  readonly idleMillis?: number
}

const contextAt = (now: number, setup: Setup = {}): scripts.ScriptContext => ({
  key: KEY,
  peer: PEER,
  channel: CHANNEL,
  process: setup.process ?? "a",
  idleMillis: setup.idleMillis ?? IDLE,
  probes: setup.probes ?? 1,
  probeTimeoutMillis: setup.probeTimeoutMillis,
  delays: setup.delays ?? DELAYS,
  successThreshold: setup.successThreshold ?? setup.probes ?? 1,
  now
})

interface Rule {
  readonly maxFailures?: number
  readonly windowMillis?: number
  readonly minProcesses?: number
}

const ruleOf = (rule: Rule = {}): scripts.WindowRule => ({
  maxFailures: rule.maxFailures ?? 3,
  windowMillis: rule.windowMillis ?? WINDOW,
  minProcesses: rule.minProcesses ?? 1
})

/** A reply, decoded. */
interface View {
  readonly state: scripts.Reply[0]
  readonly generation: number
  readonly remaining: number
  readonly opening: number
  readonly reason: string
  readonly by: string
  readonly openMillis: number
  readonly openedAgo: number
}

const decode = (reply: scripts.Reply): View => {
  assert.strictEqual(reply.length, 8, `a reply has 8 fields: ${JSON.stringify(reply)}`)
  const [state, generation, remaining, opening, reason, by, openMillis, openedAgo] = reply
  return {
    state,
    generation: Number(generation),
    remaining: Number(remaining),
    opening: Number(opening),
    reason,
    by,
    openMillis: Number(openMillis),
    openedAgo: Number(openedAgo)
  }
}

/** A failure of a closed call at `now` (`age` ago: a replayed failure is older). */
const fail = (now: number, options: Setup & Rule & { readonly age?: number } = {}) =>
  Effect.flatMap(
    Effect.service(Redis.Redis),
    (redis) => redis.eval(scripts.record)(contextAt(now, options), "*", "failure", options.age ?? 0, ruleOf(options))
  ).pipe(Effect.map(decode))

/** `count` failures at `start`, `start + step`, …; the last reply. */
const failMany = (count: number, start: number, step: number, options: Setup & Rule = {}) =>
  Effect.gen(function*() {
    let last: View | undefined
    for (let i = 0; i < count; i++) last = yield* fail(start + i * step, options)
    return last!
  })

/** The outcome of a probe admitted with `ticket` (or of a closed call, with `*`). */
const record = (now: number, ticket: string | number, outcome: scripts.FleetOutcome, options: Setup & Rule = {}) =>
  Effect.flatMap(
    Effect.service(Redis.Redis),
    (redis) => redis.eval(scripts.record)(contextAt(now, options), String(ticket), outcome, 0, ruleOf(options))
  ).pipe(Effect.map(decode))

const admit = (now: number, setup: Setup = {}) =>
  Effect.flatMap(Effect.service(Redis.Redis), (redis) => redis.eval(scripts.admit)(contextAt(now, setup))).pipe(
    Effect.map(decode)
  )

const read = (now: number, setup: Setup = {}) =>
  Effect.flatMap(Effect.service(Redis.Redis), (redis) => redis.eval(scripts.read)(contextAt(now, setup))).pipe(
    Effect.map(decode)
  )

const reset = (now: number, setup: Setup = {}) =>
  Effect.flatMap(Effect.service(Redis.Redis), (redis) => redis.eval(scripts.reset)(contextAt(now, setup))).pipe(
    Effect.map(decode)
  )

/** A rate rule: half of at least 4 calls within 1000 ms, in 4 buckets of 250 ms. */
const rateRule = (rule: Partial<scripts.RateRule> = {}): scripts.RateRule => ({
  reason: "rate",
  threshold: 0.5,
  minimumCalls: 4,
  windowMillis: WINDOW,
  buckets: 4,
  slowMillis: Infinity,
  minProcesses: 1,
  ...rule
})

/** A batch of `calls` calls of a rate policy, `bad` of them bad, made `age` before `now`. */
const tally = (
  now: number,
  calls: number,
  bad: number,
  options: Setup & { readonly age?: number; readonly rule?: Partial<scripts.RateRule> } = {}
) =>
  Effect.flatMap(
    Effect.service(Redis.Redis),
    (redis) => redis.eval(scripts.tally)(contextAt(now, options), calls, bad, options.age ?? 0, rateRule(options.rule))
  ).pipe(Effect.map(decode))

const isolate = (now: number, action: "add" | "remove", leaseMillis: number, setup: Setup = {}) =>
  Effect.flatMap(
    Effect.service(Redis.Redis),
    (redis) => redis.eval(scripts.isolate)(contextAt(now, setup), action, leaseMillis)
  ).pipe(Effect.map(decode))

/** Opens the circuit with 4 failures at `at - 30` … `at` (maxFailures 3): opening 1 at `at`, unless backoff says more. */
const trip = (at: number, options: Setup & Rule = {}) => failMany(4, at - 30, 10, options)

/** Admits a call at `now` and expects a probe (`P`): its ticket. */
const probe = (now: number, setup: Setup = {}) =>
  Effect.map(admit(now, setup), (view) => {
    assert.strictEqual(view.state, "P", `expected a probe at ${now}: ${JSON.stringify(view)}`)
    return view.generation
  })

const sleep = (millis: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

/** A published change, decoded (`peer state generation remaining opening transition reason process d ago`). */
interface Message {
  readonly peer: string
  readonly state: string
  readonly generation: number
  readonly remaining: number
  readonly opening: number
  readonly transition: string
  readonly reason: string
  readonly by: string
  readonly openMillis: number
  readonly openedAgo: number
}

const SENTINEL = "sentinel"

/** Subscribes to the fleet's channel (for the test's scope): `next` takes one message within 2 s (real time). */
const listen = Effect.gen(function*() {
  const redis = yield* Redis.Redis
  const queue = yield* redis.subscribe(CHANNEL)
  const nextText = Effect.raceFirst(
    Effect.map(Queue.take(queue), (message) => message.message),
    Effect.andThen(sleep(2_000), Effect.die(new Error("no message on the channel within 2 s")))
  )
  const next = Effect.map(nextText, (text): Message => {
    const fields = text.split(" ")
    assert.strictEqual(fields.length, 10, `a message has 10 fields: ${JSON.stringify(text)}`)
    const [peer, state, generation, remaining, opening, transition, reason, by, openMillis, openedAgo] = fields
    return {
      peer: peer!,
      state: state!,
      generation: Number(generation),
      remaining: Number(remaining),
      opening: Number(opening),
      transition: transition!,
      reason: reason!,
      by: by!,
      openMillis: Number(openMillis),
      openedAgo: Number(openedAgo)
    }
  })
  /** Asserts that nothing was published since the last `next`: publishes a sentinel and expects it first. */
  const nothing = Effect.gen(function*() {
    yield* redis.send("PUBLISH", CHANNEL, SENTINEL)
    assert.strictEqual(yield* nextText, SENTINEL, "expected no message")
  })
  return { next, nothing }
})

describeRedis("fleet scripts (passed times)", () => {
  let server: RedisServer
  beforeAll(async () => {
    server = await startRedis()
  }, 30_000)
  afterAll(async () => {
    await server?.kill()
  })
  beforeEach(async () => {
    await redisCommand(server.port, "FLUSHALL")
  })

  const raw = (...args: ReadonlyArray<string | number>) => Effect.promise(() => redisCommand(server.port, ...args))
  const pttl = (key: string) => Effect.map(raw("PTTL", key), Number)
  const field = (name: string) => raw("HGET", KEY, name)

  /** Runs a test body with a Redis service on this file's server, in a scope (for subscriptions). */
  const run = <A, E>(body: Effect.Effect<A, E, Redis.Redis | Scope.Scope>) =>
    Effect.suspend(() => body.pipe(Effect.scoped, Effect.provide(NodeRedis.layer({ url: server.url }))))

  // The tests share one server and empty it before each: they run one at a time.
  describe("rules", { concurrent: false }, () => {
    describe("window rule (maxFailures 3, window 1000)", () => {
      it.effect("three failures inside the window keep it closed; the fourth opens as opening 1 for delays[0]", () =>
        run(Effect.gen(function*() {
          const { next } = yield* listen
          for (const t of [0, 10, 20]) {
            const view = yield* fail(t)
            assert.strictEqual(view.state, "C", `failure at ${t}`)
            assert.strictEqual(view.remaining, 0)
          }
          assert.strictEqual(yield* field("f"), "0,10,20")
          const opened = yield* fail(30)
          assert.deepInclude(opened, {
            state: "O",
            remaining: DELAYS[0],
            opening: 1,
            reason: "window",
            by: "a",
            openMillis: DELAYS[0],
            openedAgo: 0
          })
          const message = yield* next
          assert.deepStrictEqual(message, {
            peer: PEER,
            state: "O",
            generation: opened.generation,
            remaining: DELAYS[0],
            opening: 1,
            transition: "window",
            reason: "window",
            by: "a",
            openMillis: DELAYS[0],
            openedAgo: 0
          })
          // The failures are forgotten once open.
          assert.strictEqual(yield* field("f"), "(nil)")
          assert.strictEqual(yield* field("s"), "O")
        })))

      it.effect("a failure exactly `window` old has left the window (now - t < window)", () =>
        run(Effect.gen(function*() {
          yield* failMany(3, 0, 10)
          // At 1000 the failure at 0 is 1000 old: out. Two remain (10, 20), so this third keeps it closed.
          assert.strictEqual((yield* fail(1_000)).state, "C")
          assert.strictEqual(yield* field("f"), "10,20,1000")
          // At 1009 the failure at 10 is 999 old: in. 10, 20, 1000 and this one: four, it opens.
          assert.deepInclude(yield* fail(1_009), { state: "O", opening: 1, reason: "window" })
        })))

      it.effect("failures spaced wider than window / maxFailures never open, however many", () =>
        run(Effect.gen(function*() {
          // 334 apart: at most 3 inside any 1000 ms window (t, t-334, t-668; t-1002 is out).
          for (let i = 0; i < 60; i++) {
            const view = yield* fail(i * 334)
            assert.strictEqual(view.state, "C", `failure ${i} at ${i * 334}`)
            const kept = (yield* field("f")).split(",")
            assert.isAtMost(kept.length, 3)
          }
          // 1000 apart: one in any window.
          yield* raw("FLUSHALL")
          for (let i = 0; i < 30; i++) assert.strictEqual((yield* fail(100_000 + i * 1_000)).state, "C")
          // Each failure finds the one before exactly `window` old: only itself is kept.
          assert.strictEqual(yield* field("f"), "129000")
        })))

      it.effect("maxFailures 0 opens on the first failure", () =>
        run(Effect.gen(function*() {
          assert.deepInclude(yield* fail(5, { maxFailures: 0 }), {
            state: "O",
            opening: 1,
            reason: "window",
            remaining: DELAYS[0]
          })
        })))

      it.effect("a replayed failure whose age is >= window is dropped; one younger counts", () =>
        run(Effect.gen(function*() {
          assert.strictEqual((yield* fail(5_000, { age: WINDOW })).state, "C")
          assert.strictEqual((yield* fail(5_000, { age: 50_000 })).state, "C")
          // Dropped before anything is written: no key at all.
          assert.strictEqual(yield* raw("EXISTS", KEY), "0")
          assert.strictEqual((yield* fail(5_000, { age: WINDOW - 1 })).state, "C")
          assert.strictEqual(yield* field("f"), "4001")
        })))

      it.effect("replayed ages place failures in the window: sorted, and leaving it at their own time", () =>
        run(Effect.gen(function*() {
          // Replayed at 1000, out of order: failures at 900, 100, 500.
          for (const age of [100, 900, 500]) assert.strictEqual((yield* fail(1_000, { age })).state, "C")
          assert.strictEqual(yield* field("f"), "100,500,900")
          // At 1150 the replayed failure at 100 is out (1050 old): 500, 900 and this one, closed.
          assert.strictEqual((yield* fail(1_150)).state, "C")
          assert.strictEqual(yield* field("f"), "500,900,1150")
          // A replay older than every kept failure, but inside the window, is the fourth: it opens.
          assert.deepInclude(yield* fail(1_160, { age: 700 }), { state: "O", opening: 1, reason: "window" })
        })))

      it.effect("a replayed failure older than the kept ones keeps the newest maxFailures", () =>
        run(Effect.gen(function*() {
          yield* failMany(2, 900, 10)
          // 700 (replayed) and 900, 910: three, closed, kept sorted.
          assert.strictEqual((yield* fail(950, { age: 250 })).state, "C")
          assert.strictEqual(yield* field("f"), "700,900,910")
        })))
    })

    describe("rate and slow calls over a time window (half of at least 4 calls in 1000 ms, 4 buckets)", () => {
      it.effect("successes alone never open; a bad batch opens once the window holds enough calls at the threshold", () =>
        run(Effect.gen(function*() {
          assert.strictEqual((yield* tally(10, 100, 0)).state, "C")
          // 1 bad in 101: far under half.
          assert.strictEqual((yield* tally(20, 1, 1)).state, "C")
          yield* raw("FLUSHALL")
          // 3 calls, 2 bad: fewer than minimumCalls.
          assert.strictEqual((yield* tally(10, 3, 2)).state, "C")
          // 4 calls, 2 bad: half of 4, opens with the rate's reason.
          assert.deepInclude(yield* tally(20, 1, 0), { state: "C" })
          yield* raw("FLUSHALL")
          yield* tally(10, 2, 0)
          assert.deepInclude(yield* tally(20, 2, 2), { state: "O", reason: "rate", opening: 1, remaining: DELAYS[0] })
        })))

      it.effect("a success batch never opens, even past the threshold: only a bad outcome is judged", () =>
        run(Effect.gen(function*() {
          yield* tally(10, 3, 3)
          assert.strictEqual((yield* tally(20, 1, 0)).state, "C")
          assert.deepInclude(yield* tally(30, 1, 1), { state: "O", reason: "rate" })
        })))

      it.effect("buckets leave the window whole: counts older than the window are forgotten", () =>
        run(Effect.gen(function*() {
          // At 100 (bucket 0): 3 bad of 3.
          yield* tally(100, 3, 3)
          // At 1000 (bucket 4): bucket 0 has left the window; 1 bad of 1 is under minimumCalls.
          assert.strictEqual((yield* tally(1_000, 1, 1)).state, "C")
          assert.strictEqual(yield* field("t"), "4:1:1")
          // At 1100: 2 bad of 2 more: 3 bad of 3 in the window, still under 4 calls.
          assert.strictEqual((yield* tally(1_100, 2, 2)).state, "C")
          assert.strictEqual((yield* tally(1_200, 1, 1)).state, "O")
        })))

      it.effect("a batch lands in the bucket of its age; one older than the window is dropped", () =>
        run(Effect.gen(function*() {
          yield* tally(2_000, 5, 0, { age: 300 })
          assert.strictEqual(yield* field("t"), "6:5:0")
          assert.strictEqual((yield* tally(2_000, 5, 5, { age: WINDOW })).state, "C")
          assert.strictEqual(yield* field("t"), "6:5:0")
        })))

      it.effect("slow calls open with their own reason; minProcesses 2 needs bad outcomes from two processes", () =>
        run(Effect.gen(function*() {
          const slow = { reason: "slow-calls" as const, slowMillis: 50 }
          yield* tally(10, 4, 0, { rule: slow })
          assert.deepInclude(yield* tally(20, 4, 4, { rule: slow }), { state: "O", reason: "slow-calls" })
          yield* raw("FLUSHALL")
          const two = { minProcesses: 2 }
          assert.strictEqual((yield* tally(10, 10, 10, { process: "a", rule: two })).state, "C")
          assert.strictEqual((yield* tally(20, 10, 10, { process: "a", rule: two })).state, "C")
          assert.deepInclude(yield* tally(30, 1, 1, { process: "b", rule: two }), { state: "O", reason: "rate" })
        })))

      it.effect("an open circuit takes no counts", () =>
        run(Effect.gen(function*() {
          yield* tally(10, 4, 4)
          assert.strictEqual((yield* tally(20, 100, 0)).state, "O")
          assert.strictEqual(yield* field("t"), "(nil)")
        })))
    })

    describe("large maxFailures: the sorted set", () => {
      it.effect("maxFailures 100 keeps failures in `{key}:f` (a zset): 100 failures closed, the 101st opens", () =>
        run(Effect.gen(function*() {
          const rule = { maxFailures: 100 }
          assert.isAbove(rule.maxFailures, scripts.sortedAbove)
          const last = yield* failMany(100, 0, 5, rule)
          assert.strictEqual(last.state, "C")
          assert.strictEqual(yield* raw("TYPE", FAILURES_KEY), "zset")
          assert.strictEqual(yield* raw("ZCARD", FAILURES_KEY), "100")
          assert.strictEqual(yield* field("f"), "(nil)")
          assert.deepInclude(yield* fail(500, rule), { state: "O", opening: 1, reason: "window" })
          assert.strictEqual(yield* raw("EXISTS", FAILURES_KEY), "0")
        })))

      it.effect("the sorted set obeys now - t < window, and spaced failures never open", () =>
        run(Effect.gen(function*() {
          const rule = { maxFailures: 100 }
          // 100 failures at 0..99; at 1000 the one at 0 is out (exactly window old): 1..99 and this one, closed.
          yield* failMany(100, 0, 1, rule)
          assert.strictEqual((yield* fail(1_000, rule)).state, "C")
          assert.strictEqual(yield* raw("ZCARD", FAILURES_KEY), "100")
          // Another at 1000: 1..99, 1000 and this one: 101, it opens.
          assert.deepInclude(yield* fail(1_000, rule), { state: "O", reason: "window" })
          yield* raw("FLUSHALL")
          // 20 apart: 50 in any window, never more than 100.
          for (let i = 0; i < 400; i++) assert.strictEqual((yield* fail(i * 20, rule)).state, "C")
          assert.isAtMost(Number(yield* raw("ZCARD", FAILURES_KEY)), 100)
        })))

      it.effect("memory stays bounded: with minProcesses 2, 500 failures of one process keep ZCARD <= maxFailures", () =>
        run(Effect.gen(function*() {
          const rule = { maxFailures: 100, minProcesses: 2 }
          for (let i = 0; i < 500; i++) {
            assert.strictEqual((yield* fail(i, rule)).state, "C")
            assert.isAtMost(Number(yield* raw("ZCARD", FAILURES_KEY)), 100)
          }
          assert.strictEqual(yield* raw("ZCARD", FAILURES_KEY), "100")
          // The newest 100 are kept.
          const oldest = JSON.parse(yield* raw("ZRANGE", FAILURES_KEY, 0, 0, "WITHSCORES")) as Array<string>
          assert.strictEqual(oldest[1], "400")
          // Another process: the window holds more than 100 from 2 processes.
          assert.deepInclude(yield* fail(500, { ...rule, process: "b" }), { state: "O", by: "b" })
        })))

      it.effect("with the string form, minProcesses 2 and one process: `f` never holds more than maxFailures", () =>
        run(Effect.gen(function*() {
          const rule = { maxFailures: 3, minProcesses: 2 }
          for (let i = 0; i < 50; i++) assert.strictEqual((yield* fail(i, rule)).state, "C")
          assert.strictEqual(yield* field("f"), "47,48,49")
        })))
    })

    describe("minProcesses 2", () => {
      it.effect("failures from process `a` alone never open; one more from `b` opens", () =>
        run(Effect.gen(function*() {
          const rule = { minProcesses: 2 }
          for (let i = 0; i < 20; i++) {
            assert.strictEqual((yield* fail(i * 10, { ...rule, process: "a" })).state, "C", `a's failure ${i}`)
          }
          assert.deepInclude(yield* fail(200, { ...rule, process: "b" }), {
            state: "O",
            opening: 1,
            reason: "window",
            by: "b"
          })
        })))

      it.effect("b's failure counts while inside the window, and not once it has left it", () =>
        run(Effect.gen(function*() {
          const rule = { minProcesses: 2 }
          // b at 0; a at 500, 510: three failures from two processes, closed (3 is not more than 3).
          yield* fail(0, { ...rule, process: "b" })
          yield* failMany(2, 500, 10, { ...rule, process: "a" })
          // a at 520: four failures (0, 500, 510, 520), two processes: opens.
          assert.deepInclude(yield* fail(520, { ...rule, process: "a" }), { state: "O", by: "a" })

          yield* raw("FLUSHALL")
          // b at 0; a at 1100..1130: b's failure is out of the window (>= 1000 old) by then, so one process.
          yield* fail(0, { ...rule, process: "b" })
          for (const t of [1_100, 1_110, 1_120, 1_130]) {
            assert.strictEqual((yield* fail(t, { ...rule, process: "a" })).state, "C", `a at ${t}`)
          }
          // A replayed failure of b older than the window is dropped: it brings no second process.
          assert.strictEqual((yield* fail(1_140, { ...rule, process: "b", age: WINDOW })).state, "C")
          assert.strictEqual((yield* fail(1_150, { ...rule, process: "a" })).state, "C")
          // A fresh one from b opens.
          assert.deepInclude(yield* fail(1_160, { ...rule, process: "b" }), { state: "O", by: "b" })
        })))

      it.effect("minProcesses adds a condition, caps nothing: 2 processes but maxFailures not exceeded stays closed", () =>
        run(Effect.gen(function*() {
          const rule = { minProcesses: 2 }
          yield* fail(0, { ...rule, process: "a" })
          yield* fail(10, { ...rule, process: "b" })
          assert.strictEqual((yield* fail(20, { ...rule, process: "a" })).state, "C")
          assert.strictEqual((yield* fail(30, { ...rule, process: "b" })).state, "O")
        })))
    })

    describe("open period and probes (delays 500, 2000, 8000; lease = the opening's duration)", () => {
      it.effect("before delays[0] an admit is rejected with the time left; at its end one probe is granted", () =>
        run(Effect.gen(function*() {
          const opened = yield* trip(30)
          const { next } = yield* listen
          assert.deepInclude(yield* admit(100), { state: "O", remaining: 430, opening: 1, openedAgo: 70 })
          assert.deepInclude(yield* admit(529), { state: "O", remaining: 1 })
          const granted = yield* admit(530)
          assert.deepInclude(granted, { state: "P", remaining: DELAYS[0], opening: 1, reason: "window" })
          assert.isAbove(granted.generation, opened.generation)
          assert.deepInclude(yield* next, {
            peer: PEER,
            state: "H",
            generation: granted.generation,
            remaining: DELAYS[0],
            opening: 1,
            transition: "probe",
            reason: "window",
            openMillis: DELAYS[0],
            openedAgo: 500
          })
          // The slot is taken: the next call waits for the lease's end (530 + 500).
          assert.deepInclude(yield* admit(600), { state: "H", remaining: 430, generation: granted.generation })
          assert.deepInclude(yield* read(700), { state: "H", remaining: 330 })
        })))

      it.effect("probes: 2 grants two probes at once, the third waits for the oldest lease", () =>
        run(Effect.gen(function*() {
          const setup = { probes: 2 }
          yield* trip(30, setup)
          const first = yield* probe(600, setup)
          const { nothing } = yield* listen
          const second = yield* probe(650, setup)
          assert.isAbove(second, first)
          // Only the move to half-open is published.
          yield* nothing
          assert.deepInclude(yield* admit(700, setup), { state: "H", remaining: 600 + DELAYS[0] - 700 })
        })))

      it.effect("a probe's success closes the circuit (message `C … probe-succeeded`)", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          const ticket = yield* probe(530)
          const { next } = yield* listen
          const closed = yield* record(540, ticket, "success")
          assert.deepInclude(closed, { state: "C", remaining: 0, opening: 0 })
          assert.isAbove(closed.generation, ticket)
          assert.deepInclude(yield* next, {
            state: "C",
            generation: closed.generation,
            transition: "probe-succeeded",
            reason: "",
            by: "a"
          })
          assert.strictEqual(yield* field("s"), "C")
          assert.strictEqual(yield* field("b"), `1:540:${DELAYS[0]}`)
          assert.deepInclude(yield* admit(550), { state: "C", generation: closed.generation })
          // A fresh window: three failures keep it closed.
          assert.strictEqual((yield* failMany(3, 2_000, 10)).state, "C")
        })))

      it.effect("successThreshold 2 (one probe at a time) needs two successes", () =>
        run(Effect.gen(function*() {
          const setup = { probes: 1, successThreshold: 2 }
          yield* trip(30, setup)
          const first = yield* probe(530, setup)
          const { nothing } = yield* listen
          const after = yield* record(540, first, "success", setup)
          assert.deepInclude(after, { state: "H", remaining: 0 })
          yield* nothing
          const second = yield* probe(550, setup)
          assert.isAbove(second, first)
          assert.strictEqual((yield* record(560, second, "success", setup)).state, "C")
        })))

      it.effect("a probe's failure reopens as opening 2 for delays[1] (reason probe-failed)", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          const ticket = yield* probe(530)
          const { next } = yield* listen
          const reopened = yield* record(600, ticket, "failure")
          assert.deepInclude(reopened, {
            state: "O",
            opening: 2,
            reason: "probe-failed",
            remaining: DELAYS[1],
            openMillis: DELAYS[1],
            openedAgo: 0
          })
          assert.isAbove(reopened.generation, ticket)
          assert.deepInclude(yield* next, {
            state: "O",
            generation: reopened.generation,
            opening: 2,
            transition: "probe-failed",
            reason: "probe-failed",
            remaining: DELAYS[1]
          })
          assert.deepInclude(yield* admit(600 + DELAYS[1] - 1), { state: "O", remaining: 1 })
          // Opening 3, then the last delay holds for every later opening.
          const third = yield* probe(600 + DELAYS[1])
          assert.deepInclude(yield* record(2_700, third, "failure"), { opening: 3, remaining: DELAYS[2] })
          const fourth = yield* probe(2_700 + DELAYS[2])
          assert.deepInclude(yield* record(10_800, fourth, "failure"), { opening: 4, remaining: DELAYS[2] })
        })))

      it.effect("a stale ticket decides nothing: an earlier half-open's probe, a closed call's `*`", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          const old = yield* probe(530)
          yield* record(540, old, "failure") // opening 2 at 540
          const current = yield* probe(540 + DELAYS[1])
          const before = yield* raw("HGETALL", KEY)
          const { nothing } = yield* listen
          for (const outcome of ["success", "failure", "timeout", "ignored"] as const) {
            assert.deepInclude(yield* record(2_600, old, outcome), { state: "H", generation: current })
            assert.deepInclude(yield* record(2_600, "*", outcome), { state: "H", generation: current })
          }
          yield* nothing
          assert.strictEqual(yield* raw("HGETALL", KEY), before)
          // The current probe still decides.
          assert.strictEqual((yield* record(2_610, current, "success")).state, "C")
        })))

      it.effect("a stale ticket while open decides nothing", () =>
        run(Effect.gen(function*() {
          const opened = yield* trip(30)
          const { nothing } = yield* listen
          for (const ticket of [opened.generation, opened.generation + 1, "*"]) {
            assert.deepInclude(yield* record(100, ticket, "success"), { state: "O", generation: opened.generation })
            assert.deepInclude(yield* record(100, ticket, "failure"), { state: "O", generation: opened.generation })
          }
          yield* nothing
        })))

      it.effect("an `ignored` outcome frees the probe slot and decides nothing", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          const first = yield* probe(530)
          const { nothing } = yield* listen
          const after = yield* record(540, first, "ignored")
          assert.deepInclude(after, { state: "H", remaining: 0, opening: 1 })
          yield* nothing
          const second = yield* probe(545)
          assert.isAbove(second, first)
          // Its lease runs from its own start.
          assert.deepInclude(yield* admit(600), { state: "H", remaining: 545 + DELAYS[0] - 600 })
        })))

      it.effect("a probe whose lease ended reopens at the lease's end as opening 2 (probe-timeout)", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          const ticket = yield* probe(530)
          const { next } = yield* listen
          // An admit exactly at the lease's end (530 + 500).
          const reopened = yield* admit(1_030)
          assert.deepInclude(reopened, {
            state: "O",
            opening: 2,
            reason: "probe-timeout",
            remaining: DELAYS[1],
            openedAgo: 0
          })
          assert.deepInclude(yield* next, { state: "O", opening: 2, transition: "probe-timeout", remaining: DELAYS[1] })
          // Its late success decides nothing.
          assert.deepInclude(yield* record(1_040, ticket, "success"), {
            state: "O",
            generation: reopened.generation,
            remaining: DELAYS[1] - 10
          })
        })))

      it.effect("a lease found ended later (by a read, a late result) reopened at the lease's end", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          yield* probe(530)
          assert.deepInclude(yield* read(1_029), { state: "H", remaining: 1 })
          // Seen 170 ms after the lease's end.
          assert.deepInclude(yield* read(1_200), {
            state: "O",
            opening: 2,
            reason: "probe-timeout",
            remaining: DELAYS[1] - 170,
            openedAgo: 170
          })
          yield* raw("FLUSHALL")
          yield* trip(30)
          const ticket = yield* probe(530)
          // The probe's own success, too late.
          assert.deepInclude(yield* record(1_100, ticket, "success"), {
            state: "O",
            opening: 2,
            reason: "probe-timeout",
            openedAgo: 70
          })
        })))

      it.effect("with probeTimeout set, the lease is probeTimeout", () =>
        run(Effect.gen(function*() {
          const setup = { probeTimeoutMillis: 100 }
          yield* trip(30, setup)
          const granted = yield* admit(530, setup)
          assert.deepInclude(granted, { state: "P", remaining: 100 })
          assert.deepInclude(yield* admit(600, setup), { state: "H", remaining: 30 })
          assert.deepInclude(yield* admit(630, setup), { state: "O", opening: 2, reason: "probe-timeout" })
        })))

      it.effect("outcome `timeout` reopens as the next opening (probe-timeout)", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          const ticket = yield* probe(530)
          const { next } = yield* listen
          assert.deepInclude(yield* record(700, ticket, "timeout"), {
            state: "O",
            opening: 2,
            reason: "probe-timeout",
            remaining: DELAYS[1],
            openedAgo: 0
          })
          assert.deepInclude(yield* next, { state: "O", transition: "probe-timeout", opening: 2 })
        })))

      it.effect("one success of two concurrent probes (probes 2, successThreshold 2) does not close", () =>
        run(Effect.gen(function*() {
          const setup = { probes: 2, successThreshold: 2 }
          yield* trip(30, setup)
          const first = yield* probe(530, setup)
          const second = yield* probe(540, setup)
          assert.strictEqual((yield* record(550, first, "success", setup)).state, "H")
          assert.strictEqual((yield* record(560, second, "success", setup)).state, "C")
        })))

      // As in machine.ts, a probe is admitted only while `successes + probes in flight < successThreshold`: a probe
      // slot beyond it is never needed (a regression: the script once checked only `#list >= probeSlots`).
      it.effect("probes 2, successThreshold 2: after one success, a third probe is not admitted while one runs", () =>
        run(Effect.gen(function*() {
          const setup = { probes: 2, successThreshold: 2 }
          yield* trip(30, setup)
          const first = yield* probe(530, setup)
          yield* probe(540, setup)
          yield* record(550, first, "success", setup)
          // machine: successes (1) + in flight (1) = successThreshold (2): rejected until the running probe's lease
          // ends (540 + 500 - 560 = 480).
          assert.deepInclude(yield* admit(560, setup), { state: "H", remaining: 480 })
        })))
    })

    describe("backoff", () => {
      it.effect("a trip within the last opening's duration after a close continues the count; later starts at 1", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          yield* record(540, yield* probe(530), "success") // closed at 540 after an opening of 500
          // Within 500 of the close: opening 2, delays[1].
          assert.deepInclude(yield* trip(1_039), { state: "O", opening: 2, remaining: DELAYS[1], reason: "window" })
          // Its probe fails: opening 3 (8000) at 3040; then a success closes at 11_050 after an opening of 8000.
          yield* record(3_040, yield* probe(3_039), "failure")
          yield* record(11_050, yield* probe(3_040 + DELAYS[2]), "success")
          assert.strictEqual(yield* field("b"), `3:11050:${DELAYS[2]}`)
          // 7999 after the close: opening 4, which lasts as long as the last delay.
          assert.deepInclude(yield* trip(19_049), { opening: 4, remaining: DELAYS[2] })

          yield* raw("FLUSHALL")
          yield* trip(30)
          yield* record(540, yield* probe(530), "success")
          // Exactly the last opening's duration after the close: a new outage, opening 1.
          assert.deepInclude(yield* trip(1_040), { state: "O", opening: 1, remaining: DELAYS[0] })
        })))

      it.effect("a reset forgets the openings: the next trip is opening 1", () =>
        run(Effect.gen(function*() {
          yield* trip(30)
          yield* record(540, yield* probe(530), "failure") // opening 2
          yield* reset(600)
          assert.deepInclude(yield* trip(700), { opening: 1 })
          // Closed with a backoff running (closed at 1240 after 500), then reset: a relapse starts at 1 too.
          yield* record(1_240, yield* probe(1_200), "success")
          assert.strictEqual(yield* field("b"), "1:1240:500")
          yield* reset(1_300)
          assert.deepInclude(yield* trip(1_400), { opening: 1 })
        })))
    })

    describe("reset and isolate", () => {
      it.effect("reset of an open circuit deletes its state, publishes `C … reset`, and closes it", () =>
        run(Effect.gen(function*() {
          const opened = yield* trip(30)
          const { next } = yield* listen
          const closed = yield* reset(100)
          assert.deepInclude(closed, { state: "C", remaining: 0 })
          assert.isAbove(closed.generation, opened.generation)
          assert.deepInclude(yield* next, {
            state: "C",
            generation: closed.generation,
            transition: "reset",
            by: "a",
            remaining: 0
          })
          assert.deepStrictEqual(
            JSON.parse(yield* raw("HGETALL", KEY)),
            ["s", "C", "g", String(closed.generation)]
          )
          assert.deepInclude(yield* admit(110), { state: "C", generation: closed.generation })
          assert.strictEqual((yield* failMany(3, 120, 1)).state, "C")
        })))

      it.effect("reset of a closed circuit forgets its failures (sorted set too) and publishes nothing", () =>
        run(Effect.gen(function*() {
          yield* failMany(3, 0, 10)
          yield* failMany(50, 0, 1, { maxFailures: 100 })
          assert.strictEqual(yield* raw("EXISTS", FAILURES_KEY), "1")
          const { nothing } = yield* listen
          assert.strictEqual((yield* reset(100)).state, "C")
          yield* nothing
          assert.strictEqual(yield* raw("EXISTS", KEY, FAILURES_KEY), "0")
          assert.strictEqual((yield* failMany(3, 110, 1)).state, "C")
        })))

      // machine.ts: a ticket that is not the closed state's generation decides nothing. Closed calls are sent with
      // ticket `*`, so any other ticket on a closed circuit is a stale probe's.
      it.effect("a probe's failure that arrives after a reset decides nothing", () =>
        run(Effect.gen(function*() {
          const rule = { maxFailures: 0 }
          yield* trip(30, rule)
          const ticket = yield* probe(530)
          const closed = yield* reset(540)
          const after = yield* record(550, ticket, "failure", rule)
          assert.deepInclude(after, { state: "C", generation: closed.generation })
          assert.strictEqual(yield* field("f"), "(nil)")
        })))

      it.effect("a timed-out probe's failure that arrives after the next probe closed the circuit decides nothing", () =>
        run(Effect.gen(function*() {
          const rule = { maxFailures: 0 }
          yield* trip(30, rule)
          const late = yield* probe(530)
          // Its lease ends at 1030: opening 2 (2000) from then; the next probe closes the circuit.
          assert.deepInclude(yield* admit(1_030), { state: "O", opening: 2 })
          const closed = yield* record(3_040, yield* probe(3_030), "success")
          assert.strictEqual(closed.state, "C")
          // The first probe's failure, long after: its ticket is stale, nothing is counted.
          assert.deepInclude(yield* record(3_050, late, "failure", rule), {
            state: "C",
            generation: closed.generation
          })
          assert.strictEqual(yield* field("f"), "(nil)")
        })))

      it.effect("isolate add: admit and read reply `I`; remove: back to the underlying state", () =>
        run(Effect.gen(function*() {
          const opened = yield* trip(30)
          const { next } = yield* listen
          const isolated = yield* isolate(100, "add", 10_000)
          assert.deepInclude(isolated, { state: "I", remaining: 10_000 })
          assert.deepInclude(yield* next, { state: "I", transition: "isolated", by: "a", remaining: 10_000 })
          assert.strictEqual(yield* raw("TYPE", ISOLATIONS_KEY), "zset")
          // Past the open period: still isolated, no probe.
          assert.deepInclude(yield* admit(1_000), { state: "I", remaining: 9_100 })
          assert.deepInclude(yield* read(1_000), { state: "I", remaining: 9_100 })
          // A second holder; releasing one keeps it isolated.
          yield* isolate(1_100, "add", 10_000, { process: "b" })
          assert.deepInclude(yield* isolate(1_200, "remove", 0), { state: "I", remaining: 9_900 })
          const released = yield* isolate(1_300, "remove", 0, { process: "b" })
          // The underlying state: open since 30 for 500, so its period is over (remaining 0). Beginning and ending the
          // isolation each advanced the generation: a reply already on its way reads as older than the change.
          assert.deepInclude(released, { state: "O", opening: 1, remaining: 0 })
          assert.isAbove(isolated.generation, opened.generation)
          assert.isAbove(released.generation, isolated.generation)
          assert.deepInclude(yield* next, { state: "O", transition: "released", by: "b" })
          assert.strictEqual((yield* admit(1_310)).state, "P")
        })))

      it.effect("isolating a closed circuit, then releasing it: closed again; its failures still count", () =>
        run(Effect.gen(function*() {
          yield* failMany(2, 0, 10)
          assert.strictEqual((yield* isolate(20, "add", 5_000)).state, "I")
          assert.strictEqual((yield* admit(30)).state, "I")
          assert.deepInclude(yield* isolate(40, "remove", 0), { state: "C" })
          assert.strictEqual((yield* fail(50)).state, "C")
          assert.strictEqual((yield* fail(60)).state, "O")
        })))

      it.effect("an isolation whose lease lapsed no longer isolates (a dead holder's)", () =>
        run(Effect.gen(function*() {
          yield* isolate(0, "add", 1_000)
          assert.deepInclude(yield* read(999), { state: "I", remaining: 1 })
          assert.deepInclude(yield* read(1_000), { state: "C" })
          assert.deepInclude(yield* admit(1_001), { state: "C" })
          // Renewal moves the lease's end.
          yield* isolate(2_000, "add", 1_000)
          yield* isolate(2_900, "add", 1_000)
          assert.deepInclude(yield* read(3_500), { state: "I", remaining: 400 })
        })))

      // A regression: `isolate add` once set the TTL of the whole isolations key to *this* holder's lease, so a shorter
      // lease added after a longer one made Redis delete the longer one with it.
      it.live("a short isolation added after a longer one does not end the longer one", () =>
        run(Effect.gen(function*() {
          yield* isolate(0, "add", 60_000, { process: "a" })
          yield* isolate(10, "add", 50, { process: "b" })
          yield* sleep(300)
          // a's lease runs to 60_000: expected `I` with 59_900 left.
          assert.deepInclude(yield* read(100), { state: "I", remaining: 59_900 })
        })))
    })

    describe("TTLs (real PTTL; idle keys expire)", () => {
      const setup = { idleMillis: 2_000 }
      /** PTTL is at most `expected` and within 1 s under it (the test's own time). */
      const near = (actual: number, expected: number, what: string) => {
        assert.isAbove(actual, 0, `${what}: PTTL ${actual}`)
        assert.isAtMost(actual, expected, `${what}: PTTL ${actual} > ${expected}`)
        assert.isAbove(actual, expected - 1_000, `${what}: PTTL ${actual} << ${expected}`)
      }

      it.effect("closed with failures: window + idle; open: d + max(d, lease) + idle; half-open and closed after", () =>
        run(Effect.gen(function*() {
          yield* fail(0, setup)
          near(yield* pttl(KEY), WINDOW + 2_000, "closed with a failure")
          yield* trip(100, setup)
          near(yield* pttl(KEY), DELAYS[0] + DELAYS[0] + 2_000, "open")
          yield* probe(600, setup)
          // lease + delay(n + 1) + idle
          near(yield* pttl(KEY), DELAYS[0] + DELAYS[1] + 2_000, "half-open")
          const ticket = Number(yield* field("g"))
          yield* record(610, ticket, "success", setup)
          // the last opening's duration (the backoff) + idle
          near(yield* pttl(KEY), DELAYS[0] + 2_000, "closed after a probe")
          // with probeTimeout longer than the opening
          yield* raw("FLUSHALL")
          yield* trip(100, { ...setup, probeTimeoutMillis: 1_500 })
          near(yield* pttl(KEY), DELAYS[0] + 1_500 + 2_000, "open, lease 1500")
          // the sorted set and the isolations
          yield* raw("FLUSHALL")
          yield* fail(0, { ...setup, maxFailures: 100 })
          near(yield* pttl(FAILURES_KEY), WINDOW + 2_000, "the sorted set")
          near(yield* pttl(KEY), WINDOW + 2_000, "the hash beside the sorted set")
          yield* isolate(0, "add", 3_000, setup)
          near(yield* pttl(ISOLATIONS_KEY), 3_000, "the isolations")
          // after a reset of an open circuit: idle
          yield* raw("FLUSHALL")
          yield* trip(100, setup)
          yield* reset(200, setup)
          near(yield* pttl(KEY), 2_000, "closed by a reset")
        })))

      it.live("every key of an idle peer expires (small window and idle)", () =>
        run(Effect.gen(function*() {
          const small = { idleMillis: 100, windowMillis: 100 }
          yield* fail(0, small)
          yield* fail(0, { ...small, maxFailures: 100 })
          yield* isolate(0, "add", 100, small)
          assert.strictEqual(yield* raw("EXISTS", KEY, FAILURES_KEY, ISOLATIONS_KEY), "3")
          yield* sleep(400)
          assert.strictEqual(yield* raw("DBSIZE"), "0")
          // open: 50 + max(50, 50) + 100
          yield* trip(1_000, { ...small, delays: [50] })
          assert.isAtMost(yield* pttl(KEY), 200)
          yield* sleep(400)
          assert.strictEqual(yield* raw("DBSIZE"), "0")
        })))

      // A failure recorded on a closed circuit keeps the key until the last opening's backoff (closedAt + its duration,
      // kept in `b`) is over, if that is later than window + idle: machine.ts keeps a closed breaker until its backoff
      // is over (`isIdle` requires `backoffOver`). A regression: the TTL was once window + idle alone.
      it.live("a failure after a close does not shorten the key's life below the backoff", () =>
        run(Effect.gen(function*() {
          const setup = { idleMillis: 100, delays: [5_000, 20_000] }
          const rule = { windowMillis: 100, maxFailures: 1 }
          // Opening 1 (5000 ms) at 0, closed at 5000: a trip before 10_000 continues as opening 2.
          yield* failMany(2, 0, 0, { ...setup, ...rule })
          yield* record(5_000, yield* probe(5_000, setup), "success", { ...setup, ...rule })
          assert.isAbove(yield* pttl(KEY), 5_000)
          yield* fail(5_010, { ...setup, ...rule })
          const left = yield* pttl(KEY)
          yield* sleep(400)
          // machine: closed at 5000 after 5000 ms open, so a trip at 6000 is opening 2 (20_000 ms).
          const relapse = yield* failMany(2, 6_000, 10, { ...setup, ...rule })
          assert.deepInclude(
            relapse,
            { state: "O", opening: 2, remaining: 20_000 },
            `PTTL after the failure at 5010 was ${left} ms`
          )
        })))
    })

    describe("generations and hash tags", () => {
      it.effect("generations strictly increase across every transition", () =>
        run(Effect.gen(function*() {
          const { next } = yield* listen
          const seen: Array<readonly [string, number]> = []
          const note = (what: string, generation: number) => seen.push([what, generation])
          yield* failMany(3, 0, 10)
          note("closed with failures", Number(yield* field("g")))
          note("trip", (yield* fail(30)).generation) // opening 1, 500
          note("probe", yield* probe(540))
          note("probe failed", (yield* record(550, yield* field("g"), "failure")).generation) // opening 2, 2000
          note("probe", yield* probe(2_550)) // lease 2000
          note("probe-timeout", (yield* admit(4_550)).generation) // opening 3, 8000
          note("probe", yield* probe(12_550))
          note("ignored", (yield* record(12_560, yield* field("g"), "ignored")).generation)
          note("probe", yield* probe(12_570))
          note("timeout", (yield* record(12_580, yield* field("g"), "timeout")).generation) // opening 4, 8000
          note("probe", yield* probe(20_580))
          note("close", (yield* record(20_590, yield* field("g"), "success")).generation)
          note("trip (backoff)", (yield* trip(20_700)).generation)
          note("reset", (yield* reset(20_800)).generation)
          // A failure on a closed circuit is no transition: the generation stays.
          assert.strictEqual((yield* fail(20_900)).generation, seen.at(-1)![1])
          note("trip", (yield* trip(21_000)).generation)
          for (let i = 1; i < seen.length; i++) {
            const [what, generation] = seen[i]!
            const [previous, before] = seen[i - 1]!
            assert.isAbove(generation, before, `${what} after ${previous}: ${JSON.stringify(seen)}`)
          }
          // Every published message carries a generation above the one before.
          let last = -1
          for (;;) {
            const message = yield* Effect.raceFirst(
              Effect.map(next, (m) => m.generation),
              Effect.andThen(sleep(200), Effect.succeed(undefined))
            )
            if (message === undefined) break
            assert.isAbove(message, last)
            last = message
          }
          assert.isAbove(last, 0)
        })))

      it.effect("every key a peer's scripts touch carries the peer's hash tag", () =>
        run(Effect.gen(function*() {
          // Peers travel URI-encoded (fleet.ts): a brace in a peer's name cannot end its tag early.
          const peers = ["a.example:443", "b", "https://c.example/{x}"].map(encodeURIComponent)
          for (const peer of peers) {
            const key = `${PREFIX}{${peer}}`
            const redis = yield* Redis.Redis
            const context = (now: number, process = "a"): scripts.ScriptContext => ({
              ...contextAt(now, { process }),
              key,
              peer
            })
            const rule = ruleOf({ maxFailures: 100, minProcesses: 2 })
            for (let i = 0; i < 101; i++) yield* redis.eval(scripts.record)(context(i), "*", "failure", 0, rule)
            yield* redis.eval(scripts.record)(context(200, "b"), "*", "failure", 0, rule)
            yield* redis.eval(scripts.isolate)(context(300), "add", 10_000)
            yield* redis.eval(scripts.admit)(context(1_000))
            yield* redis.eval(scripts.read)(context(1_000))
            yield* redis.eval(scripts.isolate)(context(1_100), "remove", 0)
            yield* redis.eval(scripts.reset)(context(1_200))
            yield* redis.eval(scripts.record)(context(1_300), "*", "failure", 0, ruleOf({ maxFailures: 100 }))
            yield* redis.eval(scripts.isolate)(context(1_400), "add", 10_000)
          }
          const keys = (JSON.parse(yield* raw("KEYS", "*")) as Array<string>).sort()
          assert.deepStrictEqual(
            keys,
            peers.flatMap((peer) => [`${PREFIX}{${peer}}`, `${PREFIX}{${peer}}:f`, `${PREFIX}{${peer}}:i`]).sort()
          )
          for (const key of keys) {
            // Redis Cluster hashes the first `{…}` with something inside: it must be the peer's.
            const tag = /\{([^}]+)\}/.exec(key)?.[1]
            assert.include(peers, tag, key)
          }
        })))
    })
  })
})
