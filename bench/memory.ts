/**
 * Row 5: the set at scale. Bytes per breaker held in the set, and the cost of finding a peer's breaker among many.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { SetOptions } from "../src/index.ts"
import { Policy } from "../src/index.ts"
import type { Baseline } from "./baseline.ts"
import type { Settings } from "./groups.ts"
import type { Case, Row, Samples } from "./harness.ts"
import { compile, effectLoop } from "./harness.ts"
import { current, failure, forever, makeSet } from "./subjects.ts"
import type { Library, SetService } from "./subjects.ts"

const gc = (globalThis as { gc?: () => void }).gc

export const canMeasureMemory = gc !== undefined

/** heapUsed after two full collections. */
const heapUsed = (): number => {
  gc!()
  gc!()
  return process.memoryUsage().heapUsed
}

export const peers = (count: number): Array<string> => Array.from({ length: count }, (_, i) => `peer-${i}`)

/** How the one call of each peer ends: a success, or a counted failure. */
export type Ending = "success" | "failure"

/** Creates one breaker per peer by running one call through each, inside one `runSync`. */
const drive = (
  set: SetService,
  keys: ReadonlyArray<string>,
  ending: Ending = "success"
): Effect.Effect<void, unknown> =>
  ending === "success"
    ? Effect.gen(function*() {
      for (const peer of keys) yield* set.withBreaker(peer)(Effect.void)
    })
    : Effect.gen(function*() {
      for (const peer of keys) yield* Effect.exit(set.withBreaker(peer)(Effect.fail(failure)))
    })

const populatedSet = (keys: ReadonlyArray<string>, options: SetOptions = {}): SetService => {
  const set = makeSet(current, { maxFailures: 5, idleTimeToLive: forever, ...options })
  Effect.runSync(drive(set, keys))
  return set
}

/** Whether this version of the library accepts `options` (older ones reject unknown options). */
export const accepts = (options: SetOptions): boolean => {
  try {
    makeSet(current, options)
    return true
  } catch {
    return false
  }
}

/**
 * One repetition: allocate the peer strings, then build a set holding one breaker per peer. heapUsed deltas (after
 * two `gc()` each) give the bytes per peer string (with its array slot) and the bytes per breaker, the second
 * excluding the first. The calls run against a fresh `MetricRegistry`, held until measured: a breaker's metric
 * series live there, and a fresh one per repetition keeps the repetitions independent (the default registry lives
 * as long as the process and would keep every earlier repetition's series).
 */
const measureOnce = (
  lib: Library,
  count: number,
  options: SetOptions,
  ending: Ending = "success"
): { key: number; breaker: number } => {
  const h0 = heapUsed()
  const keys = peers(count)
  const h1 = heapUsed()
  const registry: Metric.MetricRegistry = new Map()
  // Built with its own registry, so that its series are measured here and dropped with it.
  const set = makeSet(lib, { idleTimeToLive: forever, ...options }, registry)
  Effect.runSync(drive(set, keys, ending))
  const h2 = heapUsed()
  // Keeps all three alive up to here.
  if (keys.length !== count || registry.size < 0 || set.options === undefined) throw new Error("unreachable")
  return { key: (h1 - h0) / count, breaker: (h2 - h1) / count }
}

export interface MemoryResult {
  readonly samples: Samples
  readonly rows: ReadonlyArray<Row>
}

/**
 * Bytes per breaker with the default options and, when this version has the option, without per-peer metrics; with a
 * baseline, the baseline's with the default options too, measured in the same repetitions.
 */
export const measureMemory = (count: number, repetitions: number, baseline?: Baseline): MemoryResult => {
  const noLabel: SetOptions = { metricPeerLabel: "none" } as SetOptions
  const variants: Array<[string, Library, SetOptions, string]> = [["default", current, {}, "default options"]]
  if (accepts(noLabel)) variants.push(["noLabel", current, noLabel, "metricPeerLabel \"none\""])
  const samples = new Map<string, Array<number>>([["memory.key", []]])
  const m = count >= 1e6 ? `${count / 1e6}M` : `${count / 1e3}k`
  const rows: Array<Row> = [
    { label: `memory: peer string + array slot (${m} peers)`, value: (at) => at("memory.key"), unit: "B" }
  ]
  for (const [name, , , label] of variants) {
    samples.set(`memory.${name}`, [])
    rows.push({
      label: `memory: per breaker, ${label} (${m} peers)`,
      value: (at) => at(`memory.${name}`),
      unit: "B",
      vs: "excl. peer string",
      // The target is the breaker's own footprint; per-peer series are Effect's metric objects, about 1.9 KB a peer.
      ...(name === "noLabel" ? { target: { op: "<=", limit: 250 } } : {})
    })
    if (baseline !== undefined && name === "default") {
      rows.push(
        {
          label: `  ↳ baseline ${baseline.short}`,
          value: (at) => at("memory.default.baseline"),
          unit: "B",
          vs: "excl. peer string"
        },
        {
          label: "  ↳ current ÷ baseline",
          value: (at) => (at("memory.default") / at("memory.default.baseline") - 1) * 100,
          unit: "%",
          vs: `baseline ${baseline.short}, per repetition`
        }
      )
    }
  }
  if (baseline !== undefined) {
    variants.push(["default.baseline", baseline.library, {}, "baseline"])
    samples.set("memory.default.baseline", [])
  }
  for (let r = 0; r < repetitions; r++) {
    for (const [name, lib, options] of variants) {
      const { breaker, key } = measureOnce(lib, count, { maxFailures: 5, ...options })
      samples.get(`memory.${name}`)!.push(breaker)
      if (name === "default") samples.get("memory.key")!.push(key)
    }
  }
  return { samples, rows }
}

const rateTime = Policy.rate({ minimumCalls: 10, window: "60 seconds", buckets: 10 })

/**
 * The policies of issue 10's memory targets (bytes per held breaker, either outcome, `metricPeerLabel: "none"`),
 * and `any`, the pairing the README recommends for busy peers (no target).
 */
export const memoryPolicies: ReadonlyArray<
  { readonly name: string; readonly label: string; readonly policy: Policy.Policy; readonly target?: number }
> = [
  { name: "window", label: "Policy.window() (the default)", policy: Policy.window(), target: 250 },
  { name: "consecutive", label: "Policy.consecutive(5)", policy: Policy.consecutive(5), target: 250 },
  { name: "rateTime", label: "Policy.rate, 60 s in 10 buckets", policy: rateTime, target: 400 },
  {
    name: "rateCount",
    label: "Policy.rate, calls 100",
    policy: Policy.rate({ minimumCalls: 10, calls: 100 }),
    target: 300
  },
  { name: "any", label: "Policy.any(rate 60 s, consecutive(5))", policy: Policy.any(rateTime, Policy.consecutive(5)) }
]

/**
 * Bytes per held breaker under each policy of `memoryPolicies`, for peers whose only call succeeded and for peers
 * whose only call was a counted failure, with `metricPeerLabel: "none"`. With a baseline, its default policy (the
 * same window rule) is measured too, with the same options but `policy`, in the same repetitions.
 */
export const measurePolicyMemory = (count: number, repetitions: number, baseline?: Baseline): MemoryResult => {
  const m = count >= 1e6 ? `${count / 1e6}M` : `${count / 1e3}k`
  const samples = new Map<string, Array<number>>()
  const rows: Array<Row> = []
  const runs: Array<[string, Library, SetOptions, Ending]> = []
  for (const { label, name, policy, target } of memoryPolicies) {
    for (const ending of ["success", "failure"] as const) {
      const key = `memory.policy.${name}.${ending}`
      samples.set(key, [])
      runs.push([key, current, { policy, metricPeerLabel: "none" }, ending])
      rows.push({
        label: `memory: per breaker, ${label}, one ${ending} (${m} peers)`,
        value: (at) => at(key),
        unit: "B",
        vs: "excl. peer string; label \"none\"",
        ...(target === undefined ? {} : { target: { op: "<=", limit: target } })
      })
      if (baseline !== undefined && name === "window") {
        const base = `${key}.baseline`
        samples.set(base, [])
        runs.push([base, baseline.library, { metricPeerLabel: "none" }, ending])
        rows.push(
          {
            label: `  ↳ baseline ${baseline.short} (its default policy)`,
            value: (at) => at(base),
            unit: "B",
            vs: "excl. peer string; label \"none\""
          },
          {
            label: "  ↳ current ÷ baseline",
            value: (at) => (at(key) / at(base) - 1) * 100,
            unit: "%",
            vs: `baseline ${baseline.short}, per repetition`
          }
        )
      }
    }
  }
  for (let r = 0; r < repetitions; r++) {
    for (const [key, lib, options, ending] of runs) {
      samples.get(key)!.push(measureOnce(lib, count, options, ending).breaker)
    }
  }
  return { samples, rows }
}

const mask = (1 << 20) - 1

/** 2^20 pseudo-random indices below `count` (xorshift32, fixed seed: every run looks up the same sequence). */
const randomIndices = (count: number): Uint32Array => {
  const idx = new Uint32Array(mask + 1)
  let x = 0x9e3779b9
  for (let i = 0; i <= mask; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    idx[i] = (x >>> 0) % count
  }
  return idx
}

/**
 * Per size N: a plain `Map.get` (+ one field read) of a random key among N, alone; a guarded call on a random peer
 * of a set holding N breakers ("set"); and a guarded call on a one-peer set plus that same `Map.get` ("base").
 * Once more, shared by the sizes: the guarded call on the one-peer set alone ("one").
 *
 * `set ÷ base` (per round) says whether finding a peer among N costs more than a `Map.get` among N, inside the same
 * kind of loop (the loop's own garbage evicts the cache, so a `Map.get` costs more there than in the plain loop).
 * `(set − one) ÷ (base − one)` is the set's lookup cost in units of that `Map.get`; it is a ratio of differences,
 * so it is taken from the medians (per round, a 20 ns `Map.get` is lost in the noise of a 500 ns call).
 */
export const lookup = (
  settings: Settings,
  sizes: ReadonlyArray<number>
): { readonly group: { name: string; cases: Array<Case> } & Settings; readonly rows: Array<Row> } => {
  const one = makeSet(current, { maxFailures: 5, idleTimeToLive: forever })
  const cases: Array<Case> = [{
    name: "lookup.one",
    run: effectLoop(Effect, "yield* one.withBreaker(p0)(Effect.void)", { one, p0: "peer-0" })
  }]
  const rows: Array<Row> = [{ label: "lookup: guarded call, one-peer set", ns: "lookup.one" }]
  for (const size of sizes) {
    const keys = peers(size)
    const set = populatedSet(keys)
    const map = new Map(keys.map((k) => [k, { state: 0, failures: 0, openUntil: 0 }]))
    const scope = { Effect, keys, idx: randomIndices(size), mask, map, set, one, p0: "peer-0", out: { s: 0 } }
    const label = size >= 1e6 ? `${size / 1e6}M` : `${size / 1e3}k`
    cases.push(
      {
        name: `lookup.map.${label}`,
        run: compile(
          scope,
          `return function run(n) {
  let s = 0
  for (let i = 0; i < n; i++) s += map.get(keys[idx[i & mask]]).failures
  out.s += s
}`
        )
      },
      {
        name: `lookup.base.${label}`,
        run: effectLoop(
          Effect,
          "out.s += map.get(keys[idx[i & mask]]).failures\n      yield* one.withBreaker(p0)(Effect.void)",
          scope
        )
      },
      {
        name: `lookup.set.${label}`,
        run: effectLoop(Effect, "yield* set.withBreaker(keys[idx[i & mask]])(Effect.void)", scope)
      }
    )
    rows.push(
      { label: `lookup ${label}: plain Map.get, random key`, ns: `lookup.map.${label}` },
      {
        label: `lookup ${label}: guarded call, random peer`,
        ns: `lookup.set.${label}`,
        value: (at) => at(`lookup.set.${label}`) / at(`lookup.base.${label}`),
        vs: "one-peer call + Map.get"
      }
    )
    // At 1k peers a Map.get costs ~20 ns, below the noise of a ~500 ns call: the estimate is left out.
    if (size >= 100_000) {
      rows.push({
        label: `lookup ${label}: set lookup ÷ Map.get`,
        fromMedians: true,
        value: (at) => (at(`lookup.set.${label}`) - at("lookup.one")) / (at(`lookup.base.${label}`) - at("lookup.one")),
        vs: "Map.get, same loop",
        target: { op: "<=", limit: 1.5, source: "performance.md" }
      })
    }
  }
  return { group: { name: "lookup", cases, ...settings }, rows }
}
