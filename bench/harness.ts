/**
 * The runner: interleaved rounds, per-sample calibration, same-round ratios, medians with their spread.
 *
 * A group's cases run one sample each per round; the first case of a round rotates (and, in a group that
 * `alternate`s, odd rounds run backwards). During the warm-up rounds each sample is calibrated to `sampleMs`; after
 * that the number of calls per sample is frozen. A row's value (a ratio of two cases, usually) is computed inside
 * each round from samples taken less than a second apart, and the table shows the median over rounds with the
 * smallest and largest round.
 */

/** One thing to time. `run(n)` makes n calls; it returns a promise when the calls are asynchronous. */
export interface Case {
  readonly name: string
  readonly run: (n: number) => unknown
  /** The loop returns a promise to await. */
  readonly async?: boolean
  /** A fixed number of calls per sample (no calibration): `run` is called with it. */
  readonly fixedN?: number
  /** Throws if the scenario is not what the case claims (e.g. the circuit is not open). Run before and after. */
  readonly verify?: () => unknown
  /**
   * Runs after each sample (calibration included), outside the timed region, with the sample's time and calls: e.g.
   * to let the event loop deliver what the sample sent, and wait until it has been delivered.
   */
  readonly after?: (ms: number, n: number) => unknown
}

export interface Group {
  readonly name: string
  readonly cases: ReadonlyArray<Case>
  readonly warmup: number
  readonly rounds: number
  readonly sampleMs: number
  /**
   * Odd rounds run the cases in reverse order (still starting from a rotating case), so that of two neighbouring
   * cases each runs first, right after the other, in half of the rounds.
   */
  readonly alternate?: boolean | undefined
}

/** ns per call, by case name, one entry per measured round. */
export type Samples = ReadonlyMap<string, ReadonlyArray<number>>

const now = (): number => performance.now()

const time = async (c: Case, n: number): Promise<number> => {
  const start = now()
  if (c.async) await c.run(n)
  else c.run(n)
  const ms = now() - start
  await c.after?.(ms, n)
  return ms
}

/** Finds n such that a sample takes about `sampleMs`, re-timing until two consecutive samples agree. */
const calibrate = async (c: Case, n: number | undefined, sampleMs: number): Promise<number> => {
  let calls = n ?? 1
  for (let attempt = 0; attempt < 12; attempt++) {
    const ms = await time(c, calls)
    const next = ms < sampleMs / 16 ? calls * 16 : Math.max(1, Math.round((calls * sampleMs) / ms))
    if (attempt > 0 && ms > sampleMs / 16 && Math.abs(next - calls) <= calls * 0.25) return next
    calls = next
  }
  return calls
}

export const runGroup = async (group: Group, log: (line: string) => void): Promise<Samples> => {
  for (const c of group.cases) await c.verify?.()
  const calls = new Map<string, number>()
  const samples = new Map<string, Array<number>>(group.cases.map((c) => [c.name, []]))
  const total = group.warmup + group.rounds
  for (let round = 0; round < total; round++) {
    const warm = round < group.warmup
    const count = group.cases.length
    const backwards = group.alternate === true && round % 2 === 1
    for (let k = 0; k < count; k++) {
      const c = group.cases[((backwards ? count - 1 - k : k) + round) % count]!
      let n = c.fixedN ?? calls.get(c.name)
      if (warm && c.fixedN === undefined) {
        n = await calibrate(c, n, group.sampleMs)
        calls.set(c.name, n)
      }
      const ms = await time(c, n!)
      if (!warm) samples.get(c.name)!.push((ms * 1e6) / n!)
    }
  }
  for (const c of group.cases) await c.verify?.()
  log(
    `${group.name}: ${group.rounds} rounds, calls/sample: ` +
      group.cases.map((c) => `${c.name}=${c.fixedN ?? calls.get(c.name)}`).join(" ")
  )
  return samples
}

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** A line of the table. `value` is computed per round from that round's samples. */
export interface Row {
  readonly label: string
  /** The case whose median ns/op is shown. */
  readonly ns?: string
  readonly value?: (at: (name: string) => number) => number
  /**
   * Compute `value` once, from each case's median, instead of per round. For differences of samples, whose
   * per-round values are dominated by noise when the difference is small; no spread is shown.
   */
  readonly fromMedians?: boolean
  /** `%`: a change, in per cent (`value` returns it already scaled); shown with its sign. `n`: a count. */
  readonly unit?: "×" | "B" | "%" | "n"
  /** What the value is relative to. */
  readonly vs?: string
  readonly target?: { readonly op: "<=" | ">="; readonly limit: number; readonly source?: string }
}

export interface Line {
  readonly row: Row
  readonly ns: number | undefined
  readonly value: { readonly median: number; readonly min: number; readonly max: number } | undefined
  readonly pass: boolean | undefined
}

export const evaluate = (samples: Samples, rows: ReadonlyArray<Row>): Array<Line> =>
  rows.map((row) => {
    const of = (name: string): ReadonlyArray<number> => {
      const xs = samples.get(name)
      if (xs === undefined) throw new Error(`bench: row "${row.label}" refers to unknown case "${name}"`)
      return xs
    }
    const ns = row.ns === undefined ? undefined : median(of(row.ns))
    let value: Line["value"]
    if (row.value !== undefined && row.fromMedians) {
      const v = row.value((name) => median(of(name)))
      value = { median: v, min: Number.NaN, max: Number.NaN }
    } else if (row.value !== undefined) {
      const rounds = samples.values().next().value!.length
      const per: Array<number> = []
      for (let r = 0; r < rounds; r++) per.push(row.value((name) => of(name)[r]!))
      value = { median: median(per), min: Math.min(...per), max: Math.max(...per) }
    }
    const pass = row.target === undefined || value === undefined ? undefined : row.target.op === "<="
      ? value.median <= row.target.limit
      : value.median >= row.target.limit
    return { row, ns, value, pass }
  })

const fmt = (x: number): string => {
  const a = Math.abs(x)
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2)
}

const fmtValue = (x: number, unit: Row["unit"]): string =>
  unit === "%"
    ? `${x > 0 ? "+" : x < 0 ? "−" : "±"}${fmt(Math.abs(x))}%`
    : unit === "n"
    ? String(Math.round(x))
    : `${fmt(x)}${unit ?? "×"}`

const fmtNs = (x: number): string => x >= 1000 ? Math.round(x).toLocaleString("en-US") : x.toFixed(x >= 10 ? 0 : 1)

/** One Markdown table: row, ns/op, value [min–max], relative to, target, result. */
export const table = (lines: ReadonlyArray<Line>): string => {
  const cells = lines.map(({ ns, pass, row, value }) => [
    row.label,
    ns === undefined ? "" : fmtNs(ns),
    value === undefined ?
      "" :
      row.unit === "n" ?
      fmtValue(value.median, row.unit) :
      `${fmtValue(value.median, row.unit)}${
        Number.isNaN(value.min) ?
          " (medians)" :
          row.unit === "%" ?
          ` [${fmtValue(value.min, row.unit)} … ${fmtValue(value.max, row.unit)}]` :
          ` [${fmt(value.min)}–${fmt(value.max)}]`
      }`,
    row.vs ?? "",
    row.target === undefined ?
      "" :
      `${row.target.op === "<=" ? "≤" : "≥"} ${row.target.limit}${row.unit === "n" ? "" : row.unit ?? "×"}${
        row.target.source ? ` (${row.target.source})` : ""
      }`,
    pass === undefined ? "" : pass ? "PASS" : "**MISS**"
  ])
  const head = ["row", "ns/op", "value [min–max]", "relative to", "target", "result"]
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: ReadonlyArray<string>) =>
    `| ${c.map((x, i) => (i === 1 || i === 2 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join(" | ")} |`
  const rule = `|${widths.map((w, i) => (i === 1 || i === 2 ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`
  return [line(head), rule, ...cells.map(line)].join("\n")
}

/**
 * Compiles a loop from source so that each case gets its own function, and so its own call sites and inline caches:
 * a loop shared by all cases would turn megamorphic and charge every case for the others.
 */
export const compile = <F>(params: Record<string, unknown>, body: string): F => {
  const names = Object.keys(params)
  return new Function(...names, `"use strict";\n${body}`)(...names.map((k) => params[k])) as F
}

type Loop = (n: number) => unknown

/**
 * `n` times `stmt` (which may `yield*`) in one `Effect.gen`, under one `Effect.runSync` (or `runPromise`), or the
 * `runner`'s (a `ManagedRuntime`).
 */
export const effectLoop = (
  Effect: unknown,
  stmt: string,
  scope: Record<string, unknown> = {},
  options: {
    readonly async?: boolean
    /** Wraps the loop's effect (e.g. provides a service). */
    readonly wrap?: (effect: never) => unknown
    /** A statement run before each sample, inside the timed region (e.g. `const guarded = fresh()`). */
    readonly prelude?: string
    /** Runs the loop instead of `Effect`: anything with `runSync` and `runPromise`, such as a `ManagedRuntime`. */
    readonly runner?: unknown
  } = {}
): Loop =>
  compile<Loop>(
    { Effect, wrap: options.wrap ?? ((effect: unknown) => effect), runner: options.runner ?? Effect, ...scope },
    `return function run(n) {
  ${options.prelude ?? ""}
  return runner.${options.async ? "runPromise" : "runSync"}(wrap(Effect.gen(function* () {
    for (let i = 0; i < n; i++) {
      ${stmt}
    }
  })))
}`
  )

/** `n` times `stmt` (which may `await`) in one async function. */
export const asyncLoop = (stmt: string, scope: Record<string, unknown> = {}): Loop =>
  compile<Loop>(scope, `return async function run(n) {\n  for (let i = 0; i < n; i++) {\n    ${stmt}\n  }\n}`)
