/**
 * Redis memory per peer in fleet mode (issue 11, rule 10: under 300 B per peer with `maxFailures: 3`; the spike saw
 * 211 B). Starts its own redis-server (scripts/redisServer.ts), and for each case empties it, reads `used_memory`
 * (INFO memory), drives every peer through the fleet's `record` script (Redis TIME, as in production; many peers in
 * flight at once, so node-redis pipelines them), reads `used_memory` again, and prints the difference per peer, with
 * one peer's key as Redis stores it (MEMORY USAGE, fields and their sizes).
 *
 *   npx node scripts/fleet-memory.ts            100,000 peers (1,000 for the sorted set)
 *   npx node scripts/fleet-memory.ts 20000      fewer peers (the sorted-set case uses 1/100 of them)
 *
 * Keys are named as fleet.ts names them, `effect-circuit:{peer-N}` (the peer URI-encoded, inside its hash tag).
 * The exit code is 1 if the closed peer with 3 failures (`maxFailures: 3`) costs 300 B or more.
 */
import { NodeRedis } from "@effect/platform-node"
import { Effect } from "effect"
import * as Redis from "effect/persistence/Redis"
import * as scripts from "../src/internal/fleetScripts.ts"
import { redisAvailable, startRedis } from "./redisServer.ts"

const TARGET_BYTES = 300
const peers = Number(process.argv[2] ?? 100_000)
if (!Number.isInteger(peers) || peers < 100) {
  console.error(`usage: npx node scripts/fleet-memory.ts [peers >= 100], got ${process.argv[2]}`)
  process.exit(2)
}
if (!redisAvailable) {
  console.error("redis-server is not on PATH: install it (apt-get install -y redis-server)")
  process.exit(2)
}

const PREFIX = "effect-circuit:"
const CONCURRENCY = 512

/** What fleet.ts sends for a peer of the default set (1 probe, its lease the opening's length, 32 delays). */
const contextOf = (peer: string): scripts.ScriptContext => ({
  key: `${PREFIX}{${encodeURIComponent(peer)}}`,
  peer: encodeURIComponent(peer),
  channel: `${PREFIX}changes`,
  process: "k3j9x0qa",
  idleMillis: 60_000,
  probes: 1,
  probeTimeoutMillis: undefined,
  delays: Array.from({ length: 32 }, () => 60_000),
  successThreshold: 1,
  now: undefined
})

interface Case {
  readonly label: string
  readonly peers: number
  readonly failures: number
  readonly rule: scripts.WindowRule
  /** The state every peer must end in. */
  readonly state: "C" | "O"
}

const window = { windowMillis: 60_000, minProcesses: 1 }
const cases: ReadonlyArray<Case> = [
  { label: "closed, 3 failures, maxFailures 3", peers, failures: 3, rule: { maxFailures: 3, ...window }, state: "C" },
  { label: "open (4 failures), maxFailures 3", peers, failures: 4, rule: { maxFailures: 3, ...window }, state: "O" },
  { label: "closed, 1 failure, maxFailures 3", peers, failures: 1, rule: { maxFailures: 3, ...window }, state: "C" },
  {
    label: "closed, 100 failures, maxFailures 100 (sorted set)",
    peers: Math.max(1, Math.floor(peers / 100)),
    failures: 100,
    rule: { maxFailures: 100, ...window },
    state: "C"
  }
]

const usedMemory = (redis: Redis.Redis["Service"]) =>
  Effect.map(redis.send<string>("INFO", "memory"), (info) => {
    const match = /^used_memory:(\d+)/m.exec(String(info))
    if (match === null) throw new Error(`no used_memory in INFO memory: ${String(info).slice(0, 200)}`)
    return Number(match[1])
  })

interface Sample {
  readonly key: string
  readonly usage: number
  readonly encoding: string
  readonly fields: ReadonlyArray<readonly [string, string]>
  readonly sortedUsage: number | undefined
  readonly sortedEncoding: string | undefined
  readonly pttl: number
}

/** One peer's key as Redis stores it. */
const sampleOf = (redis: Redis.Redis["Service"], key: string) =>
  Effect.gen(function*() {
    const usage = Number(yield* redis.send("MEMORY", "USAGE", key, "SAMPLES", "0"))
    const encoding = String(yield* redis.send("OBJECT", "ENCODING", key))
    const flat = (yield* redis.send<Array<string>>("HGETALL", key)) as unknown
    // node-redis may answer HGETALL with a flat array or an object, depending on its protocol.
    const fields: Array<readonly [string, string]> = Array.isArray(flat)
      ? Array.from({ length: flat.length / 2 }, (_, i) => [String(flat[2 * i]), String(flat[2 * i + 1])] as const)
      : Object.entries(flat as Record<string, string>)
    const sortedExists = Number(yield* redis.send("EXISTS", `${key}:f`)) === 1
    const sortedUsage = sortedExists
      ? Number(yield* redis.send("MEMORY", "USAGE", `${key}:f`, "SAMPLES", "0"))
      : undefined
    const sortedEncoding = sortedExists ? String(yield* redis.send("OBJECT", "ENCODING", `${key}:f`)) : undefined
    const pttl = Number(yield* redis.send("PTTL", key))
    return { key, usage, encoding, fields, sortedUsage, sortedEncoding, pttl } satisfies Sample
  })

interface Result {
  readonly label: string
  readonly peers: number
  readonly keys: number
  readonly bytes: number
  readonly perPeer: number
  readonly seconds: number
  readonly sample: Sample
}

const measure = (redis: Redis.Redis["Service"], c: Case) =>
  Effect.gen(function*() {
    yield* redis.send("FLUSHALL")
    const before = yield* usedMemory(redis)
    const started = Date.now()
    const states = new Map<string, number>()
    yield* Effect.forEach(
      Array.from({ length: c.peers }, (_, i) => `peer-${i}`),
      (peer) =>
        Effect.gen(function*() {
          const context = contextOf(peer)
          let reply: scripts.Reply | undefined
          for (let i = 0; i < c.failures; i++) {
            reply = yield* redis.eval(scripts.record)(context, "*", "failure", 0, c.rule)
          }
          states.set(reply![0], (states.get(reply![0]) ?? 0) + 1)
        }),
      { concurrency: CONCURRENCY, discard: true }
    )
    const seconds = (Date.now() - started) / 1000
    if (states.size !== 1 || states.get(c.state) !== c.peers) {
      throw new Error(`${c.label}: expected every peer ${c.state}, got ${JSON.stringify([...states])}`)
    }
    const after = yield* usedMemory(redis)
    const keys = Number(yield* redis.send("DBSIZE"))
    const sample = yield* sampleOf(redis, contextOf("peer-12").key)
    const bytes = after - before
    return { label: c.label, peers: c.peers, keys, bytes, perPeer: bytes / c.peers, seconds, sample } satisfies Result
  })

const pad = (text: string, width: number) => text.padEnd(width)
const padLeft = (text: string, width: number) => text.padStart(width)
const grouped = (n: number) => n.toLocaleString("en-US")

const report = (results: ReadonlyArray<Result>, version: string) => {
  console.log(`\nRedis memory per peer (redis-server ${version}, used_memory delta / peers)\n`)
  const header = [
    pad("case", 52),
    padLeft("peers", 9),
    padLeft("keys", 9),
    padLeft("used_memory Δ", 15),
    padLeft("B/peer", 8),
    padLeft("MEMORY USAGE", 13),
    padLeft("time", 7)
  ].join(" ")
  console.log(header)
  console.log("-".repeat(header.length))
  for (const r of results) {
    const usage = r.sample.usage + (r.sample.sortedUsage ?? 0)
    console.log([
      pad(r.label, 52),
      padLeft(grouped(r.peers), 9),
      padLeft(grouped(r.keys), 9),
      padLeft(grouped(r.bytes), 15),
      padLeft(r.perPeer.toFixed(0), 8),
      padLeft(r.sample.sortedUsage === undefined ? String(usage) : `${r.sample.usage}+${r.sample.sortedUsage}`, 13),
      padLeft(`${r.seconds.toFixed(1)} s`, 7)
    ].join(" "))
  }
  console.log("\nOne peer's key in each case (MEMORY USAGE counts the key's own allocations, not the keyspace's")
  console.log("dict and expires entries, which the used_memory delta includes):")
  for (const r of results) {
    const s = r.sample
    const fields = s.fields.map(([name, value]) => `${name}=${value.length} B`).join(", ")
    const sorted = s.sortedUsage === undefined ? "" : `; ${s.key}:f ${s.sortedEncoding} ${s.sortedUsage} B`
    console.log(`- ${r.label}: ${s.key} (${s.key.length} B name), ${s.encoding}, ${s.usage} B, PTTL ${s.pttl} ms`)
    console.log(`    fields: ${fields}${sorted}`)
  }
}

const main = Effect.gen(function*() {
  const redis = yield* Redis.Redis
  const info = String(yield* redis.send("INFO", "server"))
  const version = /^redis_version:(.+)$/m.exec(info)?.[1]?.trim() ?? "?"
  // Load the script once (its cache is not keys: FLUSHALL keeps it) so that no case pays for it.
  yield* redis.eval(scripts.record)(contextOf("warm-up"), "*", "failure", 0, { maxFailures: 3, ...window })
  const results: Array<Result> = []
  for (const c of cases) {
    process.stderr.write(`${c.label}: ${grouped(c.peers)} peers × ${c.failures} failures…\n`)
    results.push(yield* measure(redis, c))
  }
  report(results, version)
  const closed3 = results[0]!
  const verdict = closed3.perPeer < TARGET_BYTES ? "under" : "NOT under"
  console.log(
    `\n${closed3.label}: ${
      closed3.perPeer.toFixed(0)
    } B per peer, ${verdict} the ${TARGET_BYTES} B target (issue 11, rule 10).`
  )
  return closed3.perPeer < TARGET_BYTES
})

// The redis-server child and its pipes are unref'd by the helper: keep the process alive until it has been killed.
const keepAlive = setInterval(() => {}, 1_000)
const server = await startRedis()
let ok = false
try {
  ok = await Effect.runPromise(main.pipe(Effect.provide(NodeRedis.layer({ url: server.url }))))
} finally {
  await server.kill()
  clearInterval(keepAlive)
}
process.exitCode = ok ? 0 : 1
