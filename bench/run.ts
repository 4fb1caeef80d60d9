/**
 * `npm run bench` (3 to 5 minutes) or `npm run bench -- --quick` (under 30 s). `--only closed,open` runs some
 * groups: closed, open, record, promise, fibers, memory, lookup.
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
import * as groups from "./groups.ts"
import type { Line, Row, Samples } from "./harness.ts"
import { evaluate, runGroup, table } from "./harness.ts"
import { canMeasureMemory, lookup, measureMemory } from "./memory.ts"

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const onlyAt = args.indexOf("--only")
const only = onlyAt >= 0 ? new Set((args[onlyAt + 1] ?? "").split(",")) : undefined
const wanted = (name: string) => only === undefined || only.has(name)

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

const timedBenches: Array<[string, () => groups.Bench]> = [
  ["closed", () => groups.closed(timed)],
  ["open", () => groups.open(timed)],
  ["record", () => groups.record(timed, 4096)],
  ["promise", () => groups.promise(timed)],
  ["fibers", () => groups.concurrency(fibers, 10_000, callsPerFiber)]
]

log(`effect-circuit bench${quick ? " (quick)" : ""}, Node ${process.version}`)
for (const [name, make] of timedBenches) {
  if (!wanted(name)) continue
  const bench = make()
  try {
    report(await runGroup(bench.group, log), bench.rows)
  } finally {
    bench.dispose?.()
  }
}

// Last, because they fill the heap (the lookup rows leave a million breakers on it).
if (wanted("memory")) {
  if (canMeasureMemory) {
    const memory = measureMemory(peerCount, memoryRepetitions)
    report(memory.samples, memory.rows)
    log(`memory: ${memoryRepetitions} × ${peerCount} peers`)
  } else {
    log("memory: skipped, run with --expose-gc (npm run bench does)")
  }
}
if (wanted("lookup")) {
  const bench = lookup(timed, lookupSizes)
  report(await runGroup(bench.group, log), bench.rows)
}

log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`)
console.log(table(lines))
const misses = lines.filter((line) => line.pass === false).length
const checked = lines.filter((line) => line.pass !== undefined).length
console.log(`\n${checked - misses}/${checked} targets met${quick ? " (quick run: indicative only)" : ""}`)
// opossum keeps timers; nothing else is pending.
process.exit(0)
