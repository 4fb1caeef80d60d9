// Fleet mode across real processes (issue 11, rules 2, 3, 4, 6, 8 and 11): each test spawns replicas
// (test/fleet/replica.ts, child Node processes) against one redis-server, and drives them over stdin/stdout. Real
// time, short durations, generous bounds; speeds are measured and printed (FLEET_* lines), never asserted tightly.
import type * as Duration from "effect/Duration"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterAll, afterEach, assert, beforeAll, describe, it } from "vitest"
import { describeRedis, redisCommand, type RedisServer, startRedis } from "./redisServer.ts"
import type { Command, ReplicaOptions } from "./replica.ts"

const REPLICA = fileURLToPath(new URL("./replica.ts", import.meta.url))
const ROOT = fileURLToPath(new URL("../../", import.meta.url))
const TEST_TIMEOUT_MS = 60_000
/** The fleet's `timeout` for each Redis call, and the bound the issue sets on going local: 2 × timeout + 1 s. */
const REDIS_TIMEOUT_MS = 100
const DETECT_BOUND_MS = 2 * REDIS_TIMEOUT_MS + 1_000
/** Slack over every bound: the machine may be a busy 2-core one. */
const SLACK_MS = 2_000

/** How long an isolation lasts in Redis unless its holder renews it (once a second): see docs/fleet.md. */
const ISOLATION_LEASE_MS = 10_000
/** The bound on an isolation outliving its dead holder: the lease, with room for a busy machine. */
const LAPSE_BOUND_MS = 20_000

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

type Reply = Record<string, any>

/** A replica: a child process holding a fleet set, answering one JSON line per command. */
class Replica {
  readonly name: string
  readonly child: ChildProcess
  /** Everything it wrote that is not a reply (its logs), for the checks on logging and for diagnosis. */
  logs = ""
  readonly #waiting = new Map<number, (reply: Reply) => void>()
  #nextId = 1
  #exited = false

  constructor(name: string, options: ReplicaOptions) {
    this.name = name
    this.child = spawn(process.execPath, [REPLICA, JSON.stringify(options)], {
      cwd: ROOT,
      stdio: ["pipe", "pipe", "pipe"]
    })
    live.add(this)
    let pending = ""
    this.child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      pending += chunk
      let end: number
      while ((end = pending.indexOf("\n")) !== -1) {
        const line = pending.slice(0, end)
        pending = pending.slice(end + 1)
        if (!line.startsWith("@@R ")) {
          this.#log(line + "\n")
          continue
        }
        const reply = JSON.parse(line.slice(4)) as Reply
        this.#waiting.get(reply["id"])?.(reply)
        this.#waiting.delete(reply["id"])
      }
    })
    this.child.stderr!.setEncoding("utf8").on("data", (chunk: string) => this.#log(chunk))
    this.child.once("exit", (code, signal) => {
      this.#exited = true
      live.delete(this)
      this.#log(`[exited: code ${code}, signal ${signal}]\n`)
      for (const resolve of this.#waiting.values()) resolve({ error: `${this.name} exited` })
      this.#waiting.clear()
    })
  }

  #log(text: string): void {
    this.logs = (this.logs + text).slice(-200_000)
  }

  /** Resolves once the replica has built its set (its reply 0). */
  ready(): Promise<Reply> {
    return this.#await(0, 20_000, "start")
  }

  /** Sends a command; resolves with its reply (rejects on an error reply, an exit, or after `timeoutMs`). */
  send(command: Command, timeoutMs = 30_000): Promise<Reply> {
    const id = this.#nextId++
    const replied = this.#await(id, timeoutMs, command.op)
    this.child.stdin!.write(JSON.stringify({ id, ...command }) + "\n")
    return replied
  }

  #await(id: number, timeoutMs: number, what: string): Promise<Reply> {
    return new Promise((resolve, reject) => {
      if (this.#exited) return reject(new Error(`${this.name} has exited:\n${this.logs}`))
      const timer = setTimeout(() => {
        this.#waiting.delete(id)
        reject(new Error(`${this.name}: no reply to ${what} within ${timeoutMs} ms; its output:\n${this.logs}`))
      }, timeoutMs)
      this.#waiting.set(id, (reply) => {
        clearTimeout(timer)
        if (reply["error"] !== undefined) reject(new Error(`${this.name}: ${what}: ${reply["error"]}\n${this.logs}`))
        else resolve(reply)
      })
    })
  }

  async state(peer: string): Promise<string> {
    return (await this.send({ op: "state", peer }))["state"]
  }

  async status(): Promise<Reply> {
    return (await this.send({ op: "status" }))["status"]
  }

  /** SIGKILL, and resolves once it has exited. */
  kill(): Promise<void> {
    if (this.#exited) return Promise.resolve()
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()))
    this.child.kill("SIGKILL")
    return exited
  }
}

/** Every replica still running: killed after each test, and when this process exits. */
const live = new Set<Replica>()
process.on("exit", () => {
  for (const replica of live) replica.child.kill("SIGKILL")
})

let server: RedisServer
let fleetCount = 0

/** Options for a new fleet: a prefix of its own, and the test's figures over the defaults. */
const fleetOptions = (overrides: Partial<ReplicaOptions> = {}): ReplicaOptions => ({
  url: server.url,
  prefix: `fleet${++fleetCount}:`,
  maxFailures: 5,
  window: "60 seconds",
  resetTimeout: "60 seconds",
  timeout: `${REDIS_TIMEOUT_MS} millis`,
  ...overrides
})

const startReplica = async (name: string, options: ReplicaOptions): Promise<Replica> => {
  const replica = new Replica(name, options)
  await replica.ready()
  return replica
}

/** `count` replicas sharing `options`, each connected to Redis. */
const startFleet = async (count: number, options: ReplicaOptions): Promise<Array<Replica>> => {
  const replicas = await Promise.all(
    Array.from({ length: count }, (_, i) => startReplica(String.fromCharCode(65 + i), options))
  )
  for (const replica of replicas) {
    const { status } = await replica.send({ op: "waitStatus", tag: "Connected", timeoutMs: 10_000 })
    assert.strictEqual(status._tag, "Connected", `${replica.name} never connected`)
  }
  return replicas
}

/** Polls `check` every 20 ms until it holds; fails with `what` after `timeoutMs`. */
const waitUntil = async (what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`)
    await sleep(20)
  }
}

/** Waits until every replica's `state(peer)` is `tag`. */
const waitForState = (replicas: ReadonlyArray<Replica>, peer: string, tag: string, timeoutMs = 3_000) =>
  waitUntil(
    `${peer} ${tag} in ${replicas.map((r) => r.name).join(", ")}`,
    timeoutMs,
    async () => (await Promise.all(replicas.map((replica) => replica.state(peer)))).every((state) => state === tag)
  )

/** The peer's hash in Redis (`s` state, `f` failure times, …): see src/internal/fleetScripts.ts. */
const field = (prefix: string, peer: string, name: string): Promise<string> =>
  redisCommand(server.port, "HGET", `${prefix}{${encodeURIComponent(peer)}}`, name)

/** How many failure times Redis holds in the peer's window. */
const failuresInRedis = async (prefix: string, peer: string): Promise<number> => {
  const times = await field(prefix, peer, "f")
  return times === "(nil)" || times === "" ? 0 : times.split(",").length
}

/** One call to `peer` in `replica`: "admitted" or "rejected". */
const oneCall = async (replica: Replica, peer: string): Promise<"admitted" | "rejected"> => {
  const result = await replica.send({ op: "call", peer, n: 1, concurrency: 1, delayMs: 0 })
  assert.strictEqual(result["admitted"] + result["rejected"], 1)
  return result["admitted"] === 1 ? "admitted" : "rejected"
}

/** One call to `peer` in `replica`: "admitted", or the `state` of its `CircuitOpenError`; and when it was decided. */
const oneCallBy = async (replica: Replica, peer: string): Promise<{ readonly by: string; readonly at: number }> => {
  const result = await replica.send({ op: "call", peer, n: 1, concurrency: 1, delayMs: 0 })
  assert.strictEqual(result["admitted"] + result["rejected"], 1, `${replica.name}: ${JSON.stringify(result)}`)
  return result["admitted"] === 1
    ? { by: "admitted", at: result["admittedAt"][0] }
    : { by: result["rejectedBy"][0], at: result["startedAt"] }
}

/** Calls `peer` in `replica` every 50 ms until a call is admitted; when the first one was (wall-clock ms). */
const firstAdmission = async (replica: Replica, peer: string, timeoutMs: number): Promise<number> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { at, by } = await oneCallBy(replica, peer)
    if (by === "admitted") return at
    assert.strictEqual(by, "Isolated", `${replica.name}: a call to ${peer} rejected, but not as isolated`)
    if (Date.now() > deadline) assert.fail(`${replica.name}: no call to ${peer} admitted within ${timeoutMs} ms`)
    await sleep(50)
  }
}

const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

const ms = (value: number) => `${value.toFixed(1)}ms`

const count = (text: string, pattern: RegExp): number => text.match(new RegExp(pattern, "g"))?.length ?? 0

/**
 * Rule 4: `rounds` rounds of 3 processes × 1,000 concurrent callers at half-open; in each, exactly one call is
 * admitted while the circuit is half-open. Even rounds: the probe fails and the circuit reopens. Odd rounds: it
 * succeeds and closes it, and the next round trips it again.
 */
const probeRounds = async (
  label: string,
  rounds: number,
  timeout: Duration.Input,
  resetMs: number
): Promise<void> => {
  const options = fleetOptions({
    maxFailures: 2,
    window: "500 millis",
    resetTimeout: `${resetMs} millis`,
    timeout
  })
  const replicas = await startFleet(3, options)
  const peer = "probed"
  const admittedPerRound: Array<number> = []
  const afterClosePerRound: Array<number> = []
  const scriptCallsPerRound: Array<number> = []
  let closed = true
  try {
    for (let round = 0; round < rounds; round++) {
      // Even rounds: the probe fails and the circuit reopens. Odd rounds: it succeeds, closes it, and the next
      // round trips it again, with one failure in each process (3 > maxFailures within the window; no local
      // breaker trips).
      const probeFails = round % 2 === 0
      if (closed) {
        await Promise.all(replicas.map((replica) => replica.send({ op: "fail", peer, n: 1 })))
      }
      await waitForState(replicas, peer, "Open")
      const scriptsBefore = await scriptCalls()
      const at = Date.now() + resetMs + 300
      const results = await Promise.all(
        replicas.map((replica) =>
          replica.send({ op: "call", peer, n: 1_000, concurrency: 1_000, delayMs: 60, fail: probeFails, at })
        )
      )
      scriptCallsPerRound.push((await scriptCalls()) - scriptsBefore)
      let admitted = 0
      for (const result of results) {
        assert.strictEqual(result["ok"] + result["failed"] + result["rejected"], 1_000)
        assert.strictEqual(result["ok"] + result["failed"], result["admitted"])
        admitted += result["admitted"]
      }
      // The probe is the first admitted call to end; a call admitted before it ended was admitted at half-open.
      // A successful probe closes the circuit, and a caller whose request for the slot is answered after that is
      // an ordinary call on a closed circuit (counted apart).
      const probeEnd = Math.min(...results.map((result) => result["firstEnd"] ?? Infinity))
      const starts = results.flatMap((result) => result["admittedAt"] as Array<number>)
      const atHalfOpen = starts.filter((start) => start < probeEnd).length
      admittedPerRound.push(atHalfOpen)
      afterClosePerRound.push(admitted - atHalfOpen)
      const detail = results.map((r, i) => `${replicas[i]!.name} admitted ${r["admitted"]}`).join(", ")
      assert.strictEqual(
        atHalfOpen,
        1,
        `round ${round}: ${atHalfOpen} calls admitted at half-open (${detail}; ` +
          `${scriptCallsPerRound.at(-1)} script calls to Redis)`
      )
      if (probeFails) assert.strictEqual(admitted, 1, `round ${round}: the probe failed, yet ${detail}`)
      closed = !probeFails
      if (closed) await waitForState(replicas, peer, "Closed")
    }
  } finally {
    console.log(
      `FLEET_PROBES ${label} rounds=${admittedPerRound.length}/${rounds} ` +
        `admitted per round: ${admittedPerRound.join(",")} ` +
        `(admitted after a successful probe closed the circuit: ${afterClosePerRound.join(",")}; ` +
        `Redis script calls per round: ${scriptCallsPerRound.join(",")})`
    )
  }
}

describeRedis("fleet mode across processes (real redis-server, real Node processes)", () => {
  beforeAll(async () => {
    server = await startRedis()
  })
  afterAll(async () => {
    await server?.kill()
  })
  afterEach(async ({ task }) => {
    if (task.result?.state === "fail") {
      for (const replica of live) console.log(`--- ${replica.name} output ---\n${replica.logs}`)
    }
    await Promise.all([...live].map((replica) => replica.kill()))
  })

  // One test at a time: they share the redis-server (and the outage tests kill it), and time is measured.
  describe("rules", { concurrent: false }, () => {
    it("rule 2: failures add up across processes: 2 + 2 + 2 open for all three, 2 + 2 + 1 do not", async () => {
      const options = fleetOptions({ maxFailures: 5 })
      const replicas = await startFleet(3, options)
      const [a, b, c] = replicas as [Replica, Replica, Replica]

      // 5 failures in all: not more than maxFailures.
      for (const [replica, n] of [[a, 2], [b, 2], [c, 1]] as const) {
        const result = await replica.send({ op: "fail", peer: "five", n })
        assert.deepInclude(result, { failed: n, rejected: 0 })
      }
      await waitUntil(
        "5 failures recorded in Redis",
        3_000,
        async () => (await failuresInRedis(options.prefix, "five")) === 5
      )
      await sleep(300)
      assert.strictEqual(await field(options.prefix, "five", "s"), "C")
      for (const replica of replicas) {
        assert.strictEqual(await replica.state("five"), "Closed", replica.name)
        assert.strictEqual(await oneCall(replica, "five"), "admitted", replica.name)
      }

      // 6 failures: two from each process open the circuit for the fleet (no local breaker saw more than 2).
      for (const replica of replicas) {
        const result = await replica.send({ op: "fail", peer: "six", n: 2 })
        assert.deepInclude(result, { failed: 2, rejected: 0 })
      }
      await waitForState(replicas, "six", "Open")
      assert.strictEqual(await field(options.prefix, "six", "s"), "O")
      for (const replica of replicas) assert.strictEqual(await oneCall(replica, "six"), "rejected", replica.name)
    }, TEST_TIMEOUT_MS)

    it(
      "rule 3: an opening reaches every process: delay from the tripping call's return to Open elsewhere",
      async () => {
        const replicas = await startFleet(3, fleetOptions({ maxFailures: 2 }))
        const rounds = 30
        const elsewhere: Array<number> = []
        const own: Array<number> = []
        for (let round = 0; round < rounds; round++) {
          const peer = `fan-out-${round}`
          const tripper = replicas[round % 3]!
          const others = replicas.filter((replica) => replica !== tripper)
          // Two failures first (not enough), one per other process; the tripper's failure is the third.
          for (const replica of others) await replica.send({ op: "fail", peer, n: 1 })
          const watches = replicas.map((replica) => replica.send({ op: "watch", peer, timeoutMs: 5_000 }))
          const trip = await tripper.send({ op: "fail", peer, n: 1 })
          assert.deepInclude(trip, { failed: 1, rejected: 0 })
          const seen = await Promise.all(watches)
          replicas.forEach((replica, i) => {
            const { rejected, seenAt } = seen[i]!
            assert.isDefined(seenAt, `round ${round}: ${replica.name} never saw ${peer} open`)
            assert.isTrue(rejected, `round ${round}: ${replica.name} saw ${peer} open but admitted a call`)
            const delay = seenAt - trip["at"]
            assert.isBelow(delay, 2_000, `round ${round}: ${replica.name} saw the opening ${delay} ms late`)
            ;(replica === tripper ? own : elsewhere).push(delay)
          })
        }
        elsewhere.sort((x, y) => x - y)
        own.sort((x, y) => x - y)
        console.log(
          `FLEET_FANOUT median=${ms(percentile(elsewhere, 50))} p99=${ms(percentile(elsewhere, 99))} ` +
            `max=${ms(elsewhere.at(-1)!)} n=${elsewhere.length} (other processes; from the return of the tripping ` +
            `call to the change in each other process) tripping-process median=${ms(percentile(own, 50))} ` +
            `max=${ms(own.at(-1)!)}`
        )
      },
      TEST_TIMEOUT_MS
    )

    it(
      "rule 4: 3 processes × 1,000 concurrent callers at half-open: exactly one call admitted fleet-wide, every round",
      () => probeRounds("timeout=100ms", 20, `${REDIS_TIMEOUT_MS} millis`, 400),
      TEST_TIMEOUT_MS
    )

    // The same with a Redis timeout that no request for the slot reaches, and a probe lease (the open duration) long
    // enough for the probe's result to get through the requests queued in Redis: tells the slot's logic from the
    // effects of every caller asking Redis for the slot.
    it(
      "rule 4, with a 3 s Redis timeout: exactly one call admitted fleet-wide at half-open, every round",
      () => probeRounds("timeout=3s", 10, "3 seconds", 1_000),
      TEST_TIMEOUT_MS
    )

    it(
      "rule 6: with minProcesses 2, one process's failures trip only its local breaker; two processes trip the fleet",
      async () => {
        const options = fleetOptions({ maxFailures: 3, minProcesses: 2 })
        const replicas = await startFleet(3, options)
        const [a, b, c] = replicas as [Replica, Replica, Replica]

        // A alone: its 4th failure opens its local breaker (its 6 later calls are rejected locally); not the fleet.
        assert.deepInclude(await a.send({ op: "fail", peer: "solo", n: 10 }), { failed: 4, rejected: 6 })
        await waitUntil(
          "A's failures recorded",
          3_000,
          async () => (await failuresInRedis(options.prefix, "solo")) === 3
        )
        await sleep(500)
        assert.strictEqual(await field(options.prefix, "solo", "s"), "C")
        assert.strictEqual(await a.state("solo"), "Open")
        assert.strictEqual(await oneCall(a, "solo"), "rejected")
        for (const replica of [b, c]) {
          assert.strictEqual(await replica.state("solo"), "Closed", replica.name)
          assert.strictEqual(await oneCall(replica, "solo"), "admitted", replica.name)
        }

        // One failure from B: the window holds more than 3 failures from 2 processes: open for the fleet, C included.
        assert.deepInclude(await b.send({ op: "fail", peer: "solo", n: 1 }), { failed: 1 })
        await waitForState([b, c], "solo", "Open")
        assert.strictEqual(await field(options.prefix, "solo", "s"), "O")
        for (const replica of [b, c]) {
          assert.strictEqual(await oneCall(replica, "solo"), "rejected", replica.name)
        }
      },
      TEST_TIMEOUT_MS
    )

    it("rule 6: with the default minProcesses 1, one process's failures open the circuit for all", async () => {
      const options = fleetOptions({ maxFailures: 3 })
      const replicas = await startFleet(3, options)
      const [a, b, c] = replicas as [Replica, Replica, Replica]
      assert.deepInclude(await a.send({ op: "fail", peer: "solo", n: 4 }), { failed: 4, rejected: 0 })
      await waitForState(replicas, "solo", "Open")
      assert.strictEqual(await field(options.prefix, "solo", "s"), "O")
      for (const replica of [b, c]) assert.strictEqual(await oneCall(replica, "solo"), "rejected", replica.name)
    }, TEST_TIMEOUT_MS)

    it(
      "rule 8: redis-server SIGKILLed: local in bounds, calls unharmed, failures replayed; a process booted then joins",
      async () => {
        const options = fleetOptions({ maxFailures: 5 })
        const replicas = await startFleet(3, options)
        const [a, b, c] = replicas as [Replica, Replica, Replica]

        // Successful calls on a closed circuit, every 10 ms in each process, across the outage.
        const loads = replicas.map((replica) =>
          replica.send({ op: "load", peer: "steady", durationMs: 3_500, intervalMs: 10, delayMs: 5 })
        )
        await sleep(200)
        const killedAt = Date.now()
        await server.kill()
        // One failure in each process during the outage: not shared now, kept for replay.
        for (const replica of replicas) {
          assert.deepInclude(await replica.send({ op: "fail", peer: "outage", n: 1 }), { failed: 1 })
        }
        const detected: Array<number> = []
        for (const replica of replicas) {
          const { status } = await replica.send({ op: "waitStatus", tag: "Local", timeoutMs: 10_000 })
          assert.strictEqual(status._tag, "Local", replica.name)
          detected.push(status.since - killedAt)
        }
        for (const [i, delay] of detected.entries()) {
          assert.isBelow(
            delay,
            DETECT_BOUND_MS + SLACK_MS,
            `${replicas[i]!.name} went local ${delay} ms after the kill`
          )
        }
        for (const replica of replicas) {
          await waitUntil(
            `${replica.name} holds its failure for replay`,
            2_000,
            async () => (await replica.status()).pendingFailures === 1
          )
        }

        // A process started while Redis is down starts, in local mode.
        const d = await startReplica("D", options)
        const booted = await d.status()
        assert.strictEqual(booted._tag, "Local")
        assert.strictEqual(booted.pendingFailures, 0)

        const loaded = await Promise.all(loads)
        for (const [i, load] of loaded.entries()) {
          assert.deepInclude(load, { rejected: 0, failed: 0 }, replicas[i]!.name)
          assert.isAbove(load["ok"], 50)
          assert.isBelow(load["longestOverheadMs"], 1_000, `${replicas[i]!.name}: a call waited`)
        }

        // Redis comes back (empty, on the same port): every process rejoins, D included.
        const restartedAt = Date.now()
        await server.restart()
        const rejoined: Array<number> = []
        for (const replica of [...replicas, d]) {
          const { status } = await replica.send({ op: "waitStatus", tag: "Connected", timeoutMs: 15_000 })
          assert.strictEqual(status._tag, "Connected", `${replica.name} did not rejoin`)
          rejoined.push(status.since - restartedAt)
        }
        for (const delay of rejoined) assert.isBelow(delay, 10_000)

        // The three failures kept are replayed: Redis holds them, and with 3 more (6 > 5) the fleet opens.
        await waitUntil(
          "3 replayed failures in Redis",
          5_000,
          async () => (await failuresInRedis(options.prefix, "outage")) === 3
        )
        await sleep(300)
        for (const replica of [...replicas, d]) {
          assert.strictEqual(await replica.state("outage"), "Closed", replica.name)
        }
        assert.deepInclude(await d.send({ op: "fail", peer: "outage", n: 2 }), { failed: 2 })
        await waitUntil(
          "5 failures in Redis",
          3_000,
          async () => (await failuresInRedis(options.prefix, "outage")) === 5
        )
        await sleep(300)
        assert.strictEqual(await field(options.prefix, "outage", "s"), "C")
        assert.deepInclude(await d.send({ op: "fail", peer: "outage", n: 1 }), { failed: 1 })
        await waitForState([...replicas, d], "outage", "Open")
        for (const replica of [a, b, c]) assert.strictEqual(await oneCall(replica, "outage"), "rejected")

        // One Warning going local, one Info coming back, per process (not one per reconnection attempt).
        for (const replica of replicas) {
          assert.strictEqual(
            count(replica.logs, /Fleet store (lost|unreachable)/),
            1,
            `${replica.name}:\n${replica.logs}`
          )
          assert.strictEqual(count(replica.logs, /Fleet store reachable again/), 1, `${replica.name}:\n${replica.logs}`)
        }
        assert.strictEqual(count(d.logs, /Fleet store (lost|unreachable)/), 1, d.logs)
        assert.strictEqual(count(d.logs, /Fleet store reachable again/), 1, d.logs)

        detections.kill = detected
        console.log(
          `FLEET_DETECT kill=${detected.map(ms).join(",")} ` +
            `(A, B, C: Local since − SIGKILL; bound ${DETECT_BOUND_MS}ms)`
        )
        console.log(
          `FLEET_REJOIN kill: ${
            rejoined.map(ms).join(",")
          } (A, B, C, D-booted-while-down: Connected since − restart; ` +
            `longest call overhead during the outage: ${loaded.map((l) => ms(l["longestOverheadMs"])).join(",")})`
        )
      },
      TEST_TIMEOUT_MS
    )

    it(
      "rule 8: redis-server SIGSTOPped: local in bounds, no call waits longer than the timeout, rejoins after SIGCONT",
      async () => {
        const resetMs = 500
        const options = fleetOptions({ maxFailures: 5, resetTimeout: `${resetMs} millis` })
        const replicas = await startFleet(3, options)
        const [a, b, c] = replicas as [Replica, Replica, Replica]

        // A peer open for the fleet, past its deadline: the next call to it asks Redis for the probe slot.
        for (const replica of replicas) await replica.send({ op: "fail", peer: "held", n: 2 })
        await waitForState(replicas, "held", "Open")
        await sleep(resetMs + 200)

        const loads = replicas.map((replica) =>
          replica.send({ op: "load", peer: "steady", durationMs: 3_500, intervalMs: 10, delayMs: 5 })
        )
        await sleep(200)
        const pausedAt = Date.now()
        server.pause()
        let detected: Array<number> = []
        let asked: Reply
        let loaded: Array<Reply>
        try {
          // A, at once, makes a call that needs Redis: it must not wait longer than the timeout.
          asked = await a.send({ op: "call", peer: "held", n: 1, concurrency: 1, delayMs: 5 })
          assert.isBelow(asked["longestMs"], 1_000, "a call waited on the hung Redis")
          // B and C do nothing that needs Redis: only their health check finds it hung.
          for (const replica of replicas) {
            const { status } = await replica.send({ op: "waitStatus", tag: "Local", timeoutMs: 10_000 })
            assert.strictEqual(status._tag, "Local", replica.name)
            detected.push(status.since - pausedAt)
          }
          for (const [i, delay] of detected.entries()) {
            assert.isBelow(
              delay,
              DETECT_BOUND_MS + SLACK_MS,
              `${replicas[i]!.name} went local ${delay} ms after SIGSTOP`
            )
          }
          // One failure in each process while local: kept for replay.
          for (const replica of replicas) {
            assert.deepInclude(await replica.send({ op: "fail", peer: "hung", n: 1 }), { failed: 1 })
          }
          for (const replica of replicas) {
            await waitUntil(
              `${replica.name} holds its failure for replay`,
              2_000,
              async () => (await replica.status()).pendingFailures === 1
            )
          }
          loaded = await Promise.all(loads)
          for (const [i, load] of loaded.entries()) {
            assert.deepInclude(load, { rejected: 0, failed: 0 }, replicas[i]!.name)
            assert.isBelow(load["longestOverheadMs"], 1_000, `${replicas[i]!.name}: a call waited`)
          }
        } finally {
          server.resume()
        }
        const resumedAt = Date.now()
        const rejoined: Array<number> = []
        for (const replica of replicas) {
          const { status } = await replica.send({ op: "waitStatus", tag: "Connected", timeoutMs: 15_000 })
          assert.strictEqual(status._tag, "Connected", `${replica.name} did not rejoin`)
          rejoined.push(status.since - resumedAt)
        }
        for (const delay of rejoined) assert.isBelow(delay, 10_000)
        console.log(
          `FLEET_DETECT stop=${detected.map(ms).join(",")} (A, B, C: Local since − SIGSTOP; A made a call ` +
            `that needed Redis, B and C had only their health check; bound ${DETECT_BOUND_MS}ms) ` +
            `kill=${(detections.kill ?? []).map(ms).join(",")}`
        )
        console.log(
          `FLEET_REJOIN stop: ${rejoined.map(ms).join(",")} (Connected since − SIGCONT; the call needing the hung ` +
            `Redis took ${ms(asked["longestMs"])}; longest closed-path call overhead during the outage: ` +
            `${loaded.map((l) => ms(l["longestOverheadMs"])).join(",")})`
        )

        // The three failures of the outage are replayed: 3 in Redis, 2 more (5) keep it closed, 1 more opens it.
        await waitUntil(
          "3 replayed failures in Redis",
          5_000,
          async () => (await failuresInRedis(options.prefix, "hung")) === 3
        )
        assert.deepInclude(await b.send({ op: "fail", peer: "hung", n: 2 }), { failed: 2 })
        await waitUntil("5 failures in Redis", 3_000, async () => (await failuresInRedis(options.prefix, "hung")) === 5)
        await sleep(300)
        assert.strictEqual(await field(options.prefix, "hung", "s"), "C")
        assert.deepInclude(await c.send({ op: "fail", peer: "hung", n: 1 }), { failed: 1 })
        await waitForState(replicas, "hung", "Open")
      },
      TEST_TIMEOUT_MS
    )

    it(
      "rule 11: an isolation held by one process rejects calls everywhere as Isolated; released, all admit within 2 s",
      async () => {
        const replicas = await startFleet(3, fleetOptions())
        const [a, b, c] = replicas as [Replica, Replica, Replica]
        const peer = "held"
        const isolated = await a.send({ op: "isolate", peer })
        assert.deepInclude(await oneCallBy(a, peer), { by: "Isolated" })
        const reached: Array<number> = []
        for (const replica of [b, c]) {
          await waitUntil(
            `${replica.name} rejects ${peer} as isolated`,
            2_000,
            async () => (await oneCallBy(replica, peer)).by === "Isolated"
          )
          reached.push(Date.now() - isolated["at"])
          assert.strictEqual(await replica.state(peer), "Open", replica.name)
        }
        // Another peer is not affected.
        for (const replica of replicas) assert.strictEqual(await oneCall(replica, "other"), "admitted", replica.name)

        const released = await a.send({ op: "release", peer })
        assert.isTrue(released["released"])
        const admitted = await Promise.all(
          replicas.map(async (replica) => (await firstAdmission(replica, peer, 2_000)) - released["at"])
        )
        admitted.forEach((delay, i) => assert.isBelow(delay, 2_000, `${replicas[i]!.name} admitted ${delay} ms late`))
        assert.deepInclude(await a.send({ op: "release", peer }), { released: false })
        console.log(
          `FLEET_ISOLATION_RELEASE ${admitted.map(ms).join(",")} (A, B, C: first admitted call − release in A; ` +
            `bound 2000ms) isolation reached B, C within ${reached.map(ms).join(",")}`
        )
      },
      TEST_TIMEOUT_MS
    )

    it(
      "rule 11: an isolation whose holder is SIGKILLed lapses with its lease: the others admit again, in bounds",
      async () => {
        const replicas = await startFleet(3, fleetOptions())
        const [a, b, c] = replicas as [Replica, Replica, Replica]
        const peer = "orphaned"
        const isolated = await a.send({ op: "isolate", peer })
        for (const replica of [b, c]) {
          await waitUntil(
            `${replica.name} rejects ${peer} as isolated`,
            2_000,
            async () => (await oneCallBy(replica, peer)).by === "Isolated"
          )
        }
        // A holds it for a while (renewing its lease every second), then dies without releasing it.
        await sleep(isolated["at"] + 4_000 - Date.now())
        const killedAt = Date.now()
        await a.kill()
        // Past the first lease's end: the renewals kept it, and B and C still reject.
        await sleep(isolated["at"] + ISOLATION_LEASE_MS + 1_000 - Date.now())
        for (const replica of [b, c]) {
          assert.deepInclude(
            await oneCallBy(replica, peer),
            { by: "Isolated" },
            `${replica.name}: the isolation ended with its first lease, though A renewed it`
          )
        }
        // The last renewal's lease ends: B and C admit calls again, each finding it out on its own.
        const lapses = await Promise.all(
          [b, c].map(async (replica) => (await firstAdmission(replica, peer, LAPSE_BOUND_MS)) - killedAt)
        )
        lapses.forEach((lapse, i) => assert.isBelow(lapse, LAPSE_BOUND_MS, `${[b, c][i]!.name}: ${lapse} ms`))
        console.log(
          `FLEET_ISOLATION_LAPSE ${lapses.map(ms).join(",")} (B, C: first admitted call − SIGKILL of the holder, ` +
            `which held it ${ms(killedAt - isolated["at"])}; lease ${ISOLATION_LEASE_MS}ms renewed every 1s; ` +
            `bound ${LAPSE_BOUND_MS}ms)`
        )
      },
      TEST_TIMEOUT_MS
    )

    // A regression: the failure's script reached the hung Redis and timed out in the process, which kept the failure
    // for replay; Redis ran the script when it resumed, and the replay recorded the failure a second time. A failure
    // whose script timed out is not kept (Redis may still run it); one whose script failed outright is.
    it(
      "rule 8: a failure whose script timed out on a hung Redis counts once (not on resume and again on replay)",
      async () => {
        const options = fleetOptions({ maxFailures: 5 })
        const [a] = (await startFleet(1, options)) as [Replica]
        // A failure first, on another peer: the connection has sent the script before (EVALSHA), as in any process
        // that has run for a while.
        assert.deepInclude(await a.send({ op: "fail", peer: "warm-up", n: 1 }), { failed: 1 })
        await waitUntil(
          "the warm-up failure in Redis",
          3_000,
          async () => (await failuresInRedis(options.prefix, "warm-up")) === 1
        )
        server.pause()
        try {
          assert.deepInclude(await a.send({ op: "fail", peer: "once", n: 1 }), { failed: 1 })
          const { status } = await a.send({ op: "waitStatus", tag: "Local", timeoutMs: 10_000 })
          assert.deepInclude(status, { _tag: "Local", pendingFailures: 0 })
        } finally {
          server.resume()
        }
        const { status } = await a.send({ op: "waitStatus", tag: "Connected", timeoutMs: 15_000 })
        assert.strictEqual(status._tag, "Connected")
        await waitUntil("the failure in Redis", 5_000, async () => (await failuresInRedis(options.prefix, "once")) > 0)
        await sleep(500)
        assert.strictEqual(await failuresInRedis(options.prefix, "once"), 1, "one failure, counted twice")
      },
      TEST_TIMEOUT_MS
    )
  })
})

const detections: { kill?: Array<number> } = {}

/** Calls of scripts Redis has served so far (EVAL and EVALSHA). */
const scriptCalls = async (): Promise<number> => {
  const stats = await redisCommand(server.port, "INFO", "commandstats")
  let calls = 0
  for (const match of stats.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+)/gm)) calls += Number(match[1])
  return calls
}
