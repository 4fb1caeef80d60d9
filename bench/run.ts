/**
 * `npm run bench` (3 to 5 minutes) or `npm run bench -- --quick` (under 30 s). `--only closed,open` runs some
 * groups: closed, open, record, promise, fibers, persistence, policies, fleet, memory, lookup.
 *
 * The fleet group (fleet.ts) starts a redis-server of its own: the default run includes it when `redis-server` is on
 * PATH, and says in one line that it skipped it otherwise (an `--only` naming fleet then fails at once, exit code
 * 2). It measures the working tree only, with or without `--baseline`.
 *
 * `--baseline <git-ref>` (e.g. `npm run bench -- --baseline HEAD`, or `--baseline=main`) also runs the library as it
 * was at that commit, side by side with the working tree's, in the same rounds: the closed, open, record and promise
 * groups run each of the library's cases against both builds, the policies group the default policy's closed call
 * (a baseline from before issue 10 has no other policy), and the memory group measures both (see baseline.ts for
 * how the build is loaded). Each such row is then followed by "↳ baseline <sha>", the baseline's value against the
 * same reference, and "↳ current ÷ baseline", the change in ns per call between the two builds within a round (each
 * baseline case runs right next to its twin, and those groups alternate direction every round). The fibers and
 * lookup groups measure the working tree only. The baseline cases lengthen those groups (a full run with a baseline
 * took 4 min 12 s on a shared 2-core machine).
 *
 * How small a change it can see: with the baseline at the very code of the working tree (A/A runs), the medians of
 * "current ÷ baseline" stayed within ±6% on that machine, so a change of a few per cent needs the same sign in
 * repeated runs before it is a finding.
 *
 * How it measures, and why it is built by hand:
 *
 * - A case is a loop of n calls inside one `Effect.runSync` (or one async function): one `runSync` per call would
 *   cost microseconds and hide the breaker. Each case's loop is compiled from source for that case alone
 *   (`new Function`), so its call sites stay monomorphic and no case pays for another's shapes.
 * - Interleaved rounds: every round runs one sample of each case of a group, starting from a different case each
 *   round; a sample is calibrated to about 40 ms during the warm-up rounds. A ratio is taken between two samples of
 *   the same round, less than a second apart, and the table shows its median over the rounds with the smallest and
 *   largest round. On a shared, noisy machine this cancels the drift that separate runs pick up.
 * - tinybench and mitata finish one task before starting the next, so the machine's drift between tasks leaks into
 *   their ratios; they also call (and, for async tasks, await) the function under test once per iteration, which at
 *   50–200 ns per call is as large as what we measure here.
 * - No `gc()` between samples (a forced full GC slows the next sample down about 2×); each case pays for its own
 *   garbage through ordinary scavenges. `gc()` is used only for the memory rows (run with `--expose-gc`).
 *
 * The method and the earlier figures are in the project's performance research notes (performance.md).
 */
import type { Baseline } from "./baseline.ts"
import { loadBaseline } from "./baseline.ts"
import { redisAvailable, runFleet } from "./fleet.ts"
import * as groups from "./groups.ts"
import type { Line, Row, Samples } from "./harness.ts"
import { evaluate, runGroup, table } from "./harness.ts"
import { canMeasureMemory, lookup, measureMemory, measurePolicyMemory } from "./memory.ts"

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const onlyAt = args.indexOf("--only")
const only = onlyAt >= 0 ? new Set((args[onlyAt + 1] ?? "").split(",")) : undefined
const wanted = (name: string) => only === undefined || only.has(name)
const baselineAt = args.findIndex((arg) => arg === "--baseline" || arg.startsWith("--baseline="))
const baselineRef = baselineAt < 0
  ? undefined
  : args[baselineAt]!.startsWith("--baseline=")
  ? args[baselineAt]!.slice("--baseline=".length)
  : args[baselineAt + 1]
if (baselineAt >= 0 && (baselineRef === undefined || baselineRef === "" || baselineRef.startsWith("--"))) {
  process.stderr.write("bench: --baseline needs a git ref, e.g. --baseline HEAD\n")
  process.exit(2)
}

const timed: groups.Settings = quick ? { warmup: 2, rounds: 5, sampleMs: 10 } : { warmup: 3, rounds: 15, sampleMs: 40 }
const fibers: groups.Settings = quick ? { warmup: 1, rounds: 3, sampleMs: 0 } : { warmup: 2, rounds: 9, sampleMs: 0 }
const memoryRepetitions = quick ? 1 : 3
// The memory target is stated at 1M peers; the quick run measures 100k to stay under 30 s.
const peerCount = quick ? 100_000 : 1_000_000
const lookupSizes = quick ? [1_000, 100_000] : [1_000, 100_000, 1_000_000]
const callsPerFiber = quick ? 64 : 128

const log = (line: string) => process.stderr.write(`${line}\n`)
const started = performance.now()
const lines: Array<Line> = []

const report = (samples: Samples, rows: ReadonlyArray<Row>) => {
  lines.push(...evaluate(samples, rows))
}

log(`effect-circuit bench${quick ? " (quick)" : ""}, Node ${process.version}`)
if (only?.has("fleet") && !redisAvailable) {
  log("bench: --only fleet needs redis-server on PATH (install it: apt-get install -y redis-server)")
  process.exit(2)
}
let baseline: Baseline | undefined
try {
  baseline = baselineRef === undefined ? undefined : await loadBaseline(baselineRef, log)
} catch (error) {
  log(error instanceof Error ? error.message : String(error))
  process.exit(2)
}

const timedBenches: Array<[string, () => groups.Bench]> = [
  ["closed", () => groups.closed(timed, baseline)],
  ["open", () => groups.open(timed, baseline)],
  ["record", () => groups.record(timed, 4096, baseline)],
  ["promise", () => groups.promise(timed, baseline)],
  ["fibers", () => groups.concurrency(fibers, 10_000, callsPerFiber)],
  // After every group that measures the library alone: see groups.persistence for why.
  ["persistence", () => groups.persistence(timed)],
  // After every group that measures the default policy alone: see groups.policies for why.
  ["policies", () => groups.policies(timed, baseline)]
]

for (const [name, make] of timedBenches) {
  if (!wanted(name)) continue
  const bench = make()
  try {
    report(await runGroup(bench.group, log), bench.rows)
  } finally {
    await bench.dispose?.()
  }
}

// After the library's groups, as persistence is (see groups.persistence): the Redis client and effect/persistence's
// code share call sites of Effect's runtime with ours. Before memory and lookup, which fill the heap.
if (wanted("fleet")) {
  if (redisAvailable) {
    const fleet = await runFleet(timed, log)
    report(fleet.samples, fleet.rows)
  } else {
    log("fleet: skipped, redis-server is not on PATH (install it: apt-get install -y redis-server)")
  }
}

// Last, because they fill the heap (the lookup rows leave a million breakers on it).
if (wanted("memory")) {
  if (canMeasureMemory) {
    const memory = measureMemory(peerCount, memoryRepetitions, baseline)
    report(memory.samples, memory.rows)
    log(`memory: ${memoryRepetitions} × ${peerCount} peers`)
    // One repetition each (about 5 s at 1M peers): two full runs on 2026-12-03 gave every figure within 1 B.
    const policies = measurePolicyMemory(peerCount, 1, baseline)
    report(policies.samples, policies.rows)
    log(`memory: policies, 1 × ${peerCount} peers per policy and outcome`)
  } else {
    log("memory: skipped, run with --expose-gc (npm run bench does)")
  }
}
if (wanted("lookup")) {
  const bench = lookup(timed, lookupSizes)
  report(await runGroup(bench.group, log), bench.rows)
}

log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`)
if (baseline !== undefined) {
  console.log(
    `baseline: ${baseline.ref} = ${baseline.sha}; "↳ current ÷ baseline" is the change in ns per call (in bytes for memory)\n`
  )
}
console.log(table(lines))
const misses = lines.filter((line) => line.pass === false).length
const checked = lines.filter((line) => line.pass !== undefined).length
console.log(`\n${checked - misses}/${checked} targets met${quick ? " (quick run: indicative only)" : ""}`)
// opossum keeps timers; nothing else is pending.
process.exit(0)
