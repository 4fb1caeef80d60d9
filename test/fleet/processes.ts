// The multi-process fleet tests' harness: replicas (test/fleet/replica.ts, child Node processes) against one
// redis-server per test file, driven over stdin/stdout. Real time, short durations, generous bounds; speeds are
// measured and printed (FLEET_* lines), never asserted tightly.
import type * as Duration from "effect/Duration"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterAll, afterEach, assert, beforeAll, describe } from "vitest"
import { describeRedis, redisCommand, type RedisServer, startRedis } from "./redisServer.ts"
import type { Command, ReplicaOptions } from "./replica.ts"

export const REPLICA = fileURLToPath(new URL("./replica.ts", import.meta.url))
export const ROOT = fileURLToPath(new URL("../../", import.meta.url))
export const TEST_TIMEOUT_MS = 60_000
/** The fleet's `timeout` for each Redis call, and the bound the issue sets on going local: 2 × timeout + 1 s. */
export const REDIS_TIMEOUT_MS = 100
export const DETECT_BOUND_MS = 2 * REDIS_TIMEOUT_MS + 1_000
/** Slack over every bound: the machine may be a busy 2-core one. */
export const SLACK_MS = 2_000

/** How long an isolation lasts in Redis unless its holder renews it (once a second): see docs/fleet.md. */
export const ISOLATION_LEASE_MS = 10_000
/** The bound on an isolation outliving its dead holder: the lease, with room for a busy machine. */
export const LAPSE_BOUND_MS = 20_000

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export type Reply = Record<string, any>

/** A replica: a child process holding a fleet set, answering one JSON line per command. */
export class Replica {
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
export const live = new Set<Replica>()
process.on("exit", () => {
  for (const replica of live) replica.child.kill("SIGKILL")
})

export let server: RedisServer
export let fleetCount = 0

/** Options for a new fleet: a prefix of its own, and the test's figures over the defaults. */
export const fleetOptions = (overrides: Partial<ReplicaOptions> = {}): ReplicaOptions => ({
  url: server.url,
  prefix: `fleet${++fleetCount}:`,
  maxFailures: 5,
  window: "60 seconds",
  resetTimeout: "60 seconds",
  timeout: `${REDIS_TIMEOUT_MS} millis`,
  ...overrides
})

export const startReplica = async (name: string, options: ReplicaOptions): Promise<Replica> => {
  const replica = new Replica(name, options)
  await replica.ready()
  return replica
}

/** `count` replicas sharing `options`, each connected to Redis. */
export const startFleet = async (count: number, options: ReplicaOptions): Promise<Array<Replica>> => {
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
export const waitUntil = async (what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`)
    await sleep(20)
  }
}

/** Waits until every replica's `state(peer)` is `tag`. */
export const waitForState = (replicas: ReadonlyArray<Replica>, peer: string, tag: string, timeoutMs = 10_000) =>
  waitUntil(
    `${peer} ${tag} in ${replicas.map((r) => r.name).join(", ")}`,
    timeoutMs,
    async () => (await Promise.all(replicas.map((replica) => replica.state(peer)))).every((state) => state === tag)
  )

/** The peer's hash in Redis (`s` state, `f` failure times, …): see src/internal/fleetScripts.ts. */
export const field = (prefix: string, peer: string, name: string): Promise<string> =>
  redisCommand(server.port, "HGET", `${prefix}{${encodeURIComponent(peer)}}`, name)

/** How many failure times Redis holds in the peer's window. */
export const failuresInRedis = async (prefix: string, peer: string): Promise<number> => {
  const times = await field(prefix, peer, "f")
  return times === "(nil)" || times === "" ? 0 : times.split(",").length
}

/** One call to `peer` in `replica`: "admitted" or "rejected". */
export const oneCall = async (replica: Replica, peer: string): Promise<"admitted" | "rejected"> => {
  const result = await replica.send({ op: "call", peer, n: 1, concurrency: 1, delayMs: 0 })
  assert.strictEqual(result["admitted"] + result["rejected"], 1)
  return result["admitted"] === 1 ? "admitted" : "rejected"
}

/** One call to `peer` in `replica`: "admitted", or the `state` of its `CircuitOpenError`; and when it was decided. */
export const oneCallBy = async (
  replica: Replica,
  peer: string
): Promise<{ readonly by: string; readonly at: number }> => {
  const result = await replica.send({ op: "call", peer, n: 1, concurrency: 1, delayMs: 0 })
  assert.strictEqual(result["admitted"] + result["rejected"], 1, `${replica.name}: ${JSON.stringify(result)}`)
  return result["admitted"] === 1
    ? { by: "admitted", at: result["admittedAt"][0] }
    : { by: result["rejectedBy"][0], at: result["startedAt"] }
}

/** Calls `peer` in `replica` every 50 ms until a call is admitted; when the first one was (wall-clock ms). */
export const firstAdmission = async (replica: Replica, peer: string, timeoutMs: number): Promise<number> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { at, by } = await oneCallBy(replica, peer)
    if (by === "admitted") return at
    assert.strictEqual(by, "Isolated", `${replica.name}: a call to ${peer} rejected, but not as isolated`)
    if (Date.now() > deadline) assert.fail(`${replica.name}: no call to ${peer} admitted within ${timeoutMs} ms`)
    await sleep(50)
  }
}

export const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

export const ms = (value: number) => `${value.toFixed(1)}ms`

export const count = (text: string, pattern: RegExp): number => text.match(new RegExp(pattern, "g"))?.length ?? 0

/**
 * Rule 4: `rounds` rounds of 3 processes × 1,000 concurrent callers at half-open; in each, exactly one call is
 * admitted while the circuit is half-open. Even rounds: the probe fails and the circuit reopens. Odd rounds: it
 * succeeds and closes it, and the next round trips it again.
 */
export const probeRounds = async (
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

export const detections: { kill?: Array<number> } = {}

/** Calls of scripts Redis has served so far (EVAL and EVALSHA). */
export const scriptCalls = async (): Promise<number> => {
  const stats = await redisCommand(server.port, "INFO", "commandstats")
  let calls = 0
  for (const match of stats.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+)/gm)) calls += Number(match[1])
  return calls
}

/**
 * A describe block of multi-process tests with a redis-server of its own (started before, killed after), skipped or
 * failed as `describeRedis` says when there is none. Its tests run one at a time: they share the server (the outage
 * tests kill it), and time is measured. Replicas still running are killed after each test.
 */
export const describeProcesses = (name: string, body: () => void): void =>
  describeRedis(name, () => {
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
    describe(name, { concurrent: false }, body)
  })
