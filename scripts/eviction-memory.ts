/**
 * Bounded memory, shown: drives 1,000,000 distinct peers through one CircuitBreakerSet (one call each), then moves
 * the TestClock past idleTimeToLive twice, calling one peer while the set sweeps the idle breakers away. Prints the
 * heap used per peer while they are held and after eviction.
 *
 * Metric peer labels are off (`metricPeerLabel: "none"`): per-peer series outlive their breakers for
 * `metricRetention`, and this measures the breakers themselves.
 *
 *   npm run memory                                   the default policy, one success per peer, 1,000,000 peers
 *   npm run memory -- --policy rate --outcome failure [peers]
 *   npm run memory -- --all [peers]                  every policy × outcome, each in a fresh process: one table
 *   npm run memory -- --breakdown --policy rate --outcome failure [peers, default 100,000]
 *
 * `--policy`: default (no policy option), window, consecutive, rate (time window), rate-count, slow-calls, any.
 * `--outcome`: success (the peer's only call succeeded) or failure (it was a counted failure). `--breakdown` takes a
 * V8 heap snapshot before and after the peers are driven and prints where the bytes of a held breaker go (see
 * bench/heap.ts), instead of the eviction.
 *
 * Issue 10's targets per held breaker, either outcome: window (the default) and consecutive at most 250 B, rate over a
 * time window at most 400 B, a count window of 100 calls at most 300 B. The exit code is 1 if a target is missed, or
 * if the heap after eviction is more than 1.10 times where it started while every breaker could be dropped.
 *
 * A failure that a policy never forgets pins its breaker (`consecutive`'s streak, a count window's failure, an `any`
 * holding either): those breakers are not idle, the set keeps them, and the eviction bound does not apply.
 */
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { writeHeapSnapshot } from "node:v8"
import { growth, ownership, readHeap } from "../bench/heap.ts"
import { CircuitBreakerSet, Policy } from "../src/index.ts"
import type { SetOptions } from "../src/index.ts"

declare const gc: () => void
if (typeof gc !== "function") {
  console.error("run with --expose-gc (npm run memory)")
  process.exit(1)
}

const rateTime = Policy.rate({ minimumCalls: 10, window: "60 seconds", buckets: 10 })

/** Each policy measured: its options, its target (bytes per held breaker), and whether a failure pins its breaker. */
const policies: Record<
  string,
  { readonly label: string; readonly options: SetOptions; readonly target?: number; readonly pins: boolean }
> = {
  default: { label: "default options (window 3 in 60 s)", options: {}, target: 250, pins: false },
  window: { label: "Policy.window()", options: { policy: Policy.window() }, target: 250, pins: false },
  consecutive: { label: "Policy.consecutive(5)", options: { policy: Policy.consecutive(5) }, target: 250, pins: true },
  rate: {
    label: "Policy.rate (minimumCalls 10, 60 s, 10 buckets)",
    options: { policy: rateTime },
    target: 400,
    pins: false
  },
  "rate-count": {
    label: "Policy.rate (minimumCalls 10, calls 100)",
    options: { policy: Policy.rate({ minimumCalls: 10, calls: 100 }) },
    target: 300,
    pins: true
  },
  "slow-calls": {
    label: "Policy.slowCalls (2 s; minimumCalls 10, 60 s, 10 buckets)",
    options: {
      policy: Policy.slowCalls({ duration: "2 seconds", minimumCalls: 10, window: "60 seconds", buckets: 10 })
    },
    pins: false
  },
  any: {
    label: "Policy.any(rate 60 s / 10 buckets, consecutive(5))",
    options: { policy: Policy.any(rateTime, Policy.consecutive(5)) },
    pins: true
  }
}

const outcomes = ["success", "failure"] as const
type Outcome = (typeof outcomes)[number]

const args = process.argv.slice(2)
const flag = (name: string): string | undefined => {
  const at = args.indexOf(name)
  return at < 0 ? undefined : args[at + 1]
}
const breakdown = args.includes("--breakdown")
const positional = args.filter((arg, i) => !arg.startsWith("--") && !["--policy", "--outcome"].includes(args[i - 1]!))
const peers = Number(positional[0] ?? (breakdown ? 100_000 : 1_000_000))
const policyName = flag("--policy") ?? "default"
const outcome = (flag("--outcome") ?? "success") as Outcome
const known = ["--all", "--breakdown", "--json", "--policy", "--outcome"]
if (
  args.some((arg) => arg.startsWith("--") && !known.includes(arg)) || !(policyName in policies) ||
  !outcomes.includes(outcome) || !Number.isSafeInteger(peers) || peers < 1
) {
  console.error(
    `usage: npm run memory -- [--all | --breakdown] [--policy ${Object.keys(policies).join("|")}] ` +
      `[--outcome success|failure] [peers]`
  )
  process.exit(2)
}

const heapUsed = () => {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`

interface Result {
  readonly policy: string
  readonly outcome: Outcome
  readonly peers: number
  readonly held: number
  readonly perPeerHeld: number
  readonly perPeerAfter: number
  readonly afterOverStart: number
  readonly remaining: number
}

const failure = new Error("peer failed")

/** One run: `peers` peers, one call each, held, then swept (or, with `--breakdown`, snapshotted). */
const measure = (name: string, ending: Outcome, snapshots?: { before: string; after: string }) =>
  Effect.gen(function*() {
    const set = yield* CircuitBreakerSet
    const names = Array.from({ length: peers }, (_, i) => `peer-${i}`)
    const start = heapUsed()
    if (snapshots !== undefined) writeHeapSnapshot(snapshots.before)

    if (ending === "success") {
      for (const name of names) yield* set.withBreaker(name)(Effect.void)
    } else {
      for (const name of names) yield* Effect.exit(set.withBreaker(name)(Effect.fail(failure)))
    }
    const heldSize = (yield* set.snapshot).peers.length
    // The peers' one call is in their counts: a failure counted, nothing opened. This read also keeps the snapshot
    // out of the figure: Effect's runtime holds the value of the last synchronous effect until the next one runs, and
    // a snapshot of every peer (about 74 B a peer) measured as held was in the figures of this script before
    // 2026-12-03 (280 B for da11d68, whose breakers hold 222 B).
    const sample = yield* set.state(names[0]!)
    const expected = ending === "failure" && name !== "slow-calls" ? 1 : 0
    if (sample._tag !== "Closed" || sample.failures !== expected) {
      throw new Error(`memory: expected peer-0 closed with ${expected} failure, found ${JSON.stringify(sample)}`)
    }
    const held = heapUsed()
    if (snapshots !== undefined) {
      writeHeapSnapshot(snapshots.after)
      if (names.length !== peers) throw new Error("unreachable")
      return { start, held, after: held, heldSize, remaining: heldSize, calls: 0 }
    }

    // The set reads the clock on every 64th call and then sweeps up to 64 breakers: the sweeps of one TTL clear the
    // breakers' call flags, those of the next drop the idle breakers. One peer's calls drive them all.
    let calls = 0
    for (const wait of ["2 minutes", "2 minutes"] as const) {
      yield* TestClock.adjust(wait)
      for (let i = 0; i < peers + 64; i++) yield* set.withBreaker("sweeper")(Effect.void)
      calls += peers + 64
    }
    const remaining = (yield* set.snapshot).peers.length
    const after = heapUsed()
    // Keep the names alive to the end, so every reading includes them.
    if (names.length !== peers) throw new Error("unreachable")
    return { start, held, after, heldSize, remaining, calls }
  }).pipe(
    Effect.provide(
      CircuitBreakerSet.layer({ ...policies[name]!.options, metricPeerLabel: "none", idleTimeToLive: "1 minute" })
    ),
    Effect.provide(TestClock.layer())
  )

const verdict = (bytes: number, target: number | undefined) =>
  target === undefined ? "" : bytes <= target ? "PASS" : "MISS"

/** Whether the eviction bound applies: every breaker can be dropped once its counts age out. */
const evictable = (name: string, ending: Outcome) => ending === "success" || !policies[name]!.pins

const single = async () => {
  const { label, target } = policies[policyName]!
  const command = `npm run memory -- --policy ${policyName} --outcome ${outcome} ${peers}`
  if (breakdown) {
    const dir = mkdtempSync(join(tmpdir(), "eviction-memory-"))
    const snapshots = { before: join(dir, "before.heapsnapshot"), after: join(dir, "after.heapsnapshot") }
    try {
      const r = await Effect.runPromise(measure(policyName, outcome, snapshots))
      console.log(`${label}, one ${outcome} per peer, ${peers.toLocaleString("en")} peers (${command} --breakdown)`)
      console.log(`heapUsed while held: ${((r.held - r.start) / peers).toFixed(1)} bytes per peer\n`)
      const before = readHeap(snapshots.before)
      const after = readHeap(snapshots.after)
      const grown = growth(before, after, peers)
      console.log("Heap growth by kind (self sizes, bytes per peer):")
      for (const row of grown) console.log(`  ${row.bytes.toFixed(1).padStart(8)}  ${row.kind}`)
      const total = grown.reduce((sum, row) => sum + row.bytes, 0)
      console.log(`  ${total.toFixed(1).padStart(8)}  total of the kinds listed\n`)
      const owned = ownership(after, "PeerBreaker")
      console.log(
        `What each PeerBreaker alone holds (${owned.roots.toLocaleString("en")} breakers; bytes per breaker):`
      )
      const rows = owned.paths.filter((p) => p.bytes >= 0.5).sort((a, b) => a.path.localeCompare(b.path))
      for (const p of rows) {
        const share = p.share < 0.999 ? ` (${(p.share * 100).toFixed(0)}% of breakers)` : ""
        console.log(`  ${p.bytes.toFixed(1).padStart(8)}  ${p.path}  [${p.kind}]${share}`)
      }
      const own = rows.reduce((sum, p) => sum + p.bytes, 0)
      console.log(`  ${own.toFixed(1).padStart(8)}  total held by each breaker alone`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
    return
  }
  const r = await Effect.runPromise(measure(policyName, outcome))
  const result: Result = {
    policy: policyName,
    outcome,
    peers,
    held: r.heldSize,
    perPeerHeld: (r.held - r.start) / peers,
    perPeerAfter: (r.after - r.start) / peers,
    afterOverStart: r.after / r.start,
    remaining: r.remaining
  }
  if (args.includes("--json")) {
    console.log(JSON.stringify(result))
    return
  }
  const bound = evictable(policyName, outcome)
  console.log(`policy:                   ${label}; one ${outcome} per peer`)
  console.log(`peers driven:             ${peers.toLocaleString("en")} (${r.heldSize.toLocaleString("en")} held)`)
  console.log(`heap at start:            ${mb(r.start)} (peer names allocated)`)
  console.log(
    `heap while held:          ${mb(r.held)}  = ${result.perPeerHeld.toFixed(0)} bytes per peer` +
      (target === undefined ? "" : ` (target ≤ ${target}: ${verdict(result.perPeerHeld, target)})`)
  )
  console.log(
    `calls that swept them:    ${r.calls.toLocaleString("en")} on one peer (${
      r.remaining.toLocaleString("en")
    } breakers left)`
  )
  console.log(`heap after eviction:      ${mb(r.after)}  = ${result.perPeerAfter.toFixed(1)} bytes per peer`)
  console.log(
    `after / start:            ${result.afterOverStart.toFixed(3)} ` +
      (bound ? "(must be within 1.10)" : "(not bounded: the policy never forgets a failure, so it keeps every breaker)")
  )
  if ((bound && result.afterOverStart > 1.1) || verdict(result.perPeerHeld, target) === "MISS") process.exitCode = 1
}

/** Every policy × outcome, each in a process of its own (a fresh heap), as one Markdown table. */
const all = () => {
  const script = fileURLToPath(import.meta.url)
  const lines = [
    "| policy | outcome | bytes per held breaker | target | result | held | after eviction ÷ start | breakers left |",
    "|---|---|--:|--:|---|--:|--:|--:|"
  ]
  let failed = false
  for (const name of Object.keys(policies)) {
    for (const ending of outcomes) {
      const child = spawnSync(
        process.execPath,
        ["--expose-gc", script, "--policy", name, "--outcome", ending, "--json", String(peers)],
        { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }
      )
      const line = child.stdout.trim().split("\n").at(-1) ?? ""
      if (child.status !== 0 || !line.startsWith("{")) {
        lines.push(`| ${policies[name]!.label} | ${ending} | failed (exit ${child.status}) | | | | | |`)
        failed = true
        continue
      }
      const r = JSON.parse(line) as Result
      const target = policies[name]!.target
      const result = verdict(r.perPeerHeld, target)
      const bound = evictable(name, ending)
      const evicted = bound
        ? `${r.afterOverStart.toFixed(3)}${r.afterOverStart > 1.1 ? " **over 1.10**" : ""}`
        : `${r.afterOverStart.toFixed(3)} (kept: pinned)`
      if (result === "MISS" || (bound && r.afterOverStart > 1.1)) failed = true
      lines.push(
        `| ${policies[name]!.label} | ${ending} | ${r.perPeerHeld.toFixed(0)} | ${target ?? ""} | ${
          result === "MISS" ? "**MISS**" : result
        } | ${r.held.toLocaleString("en")} | ${evicted} | ${r.remaining.toLocaleString("en")} |`
      )
      process.stderr.write(`${name} ${ending}: ${r.perPeerHeld.toFixed(0)} B\n`)
    }
  }
  console.log(`npm run memory -- --all ${peers}: metricPeerLabel "none", Node ${process.version}\n`)
  console.log(lines.join("\n"))
  if (failed) process.exitCode = 1
}

if (args.includes("--all")) all()
else await single()
