/**
 * The timed groups. Each case is a loop compiled for that case alone; each row is a same-round ratio.
 *
 * With `--baseline <ref>`, the groups that measure the library run each of its cases a second time against the
 * baseline build (case name + `.baseline`), in the same rounds, built by the same functions; each such row is followed
 * by the baseline's own value and by current ÷ baseline, the two cases' ns per call taken in the same round.
 */
import { circuitBreaker, ConsecutiveBreaker, handleAll } from "cockatiel"
import * as Effect from "effect/Effect"
import * as ManagedRuntime from "effect/ManagedRuntime"
import Opossum from "opossum"
import type { SetOptions } from "../src/index.ts"
import { Policy } from "../src/index.ts"
import type { Baseline } from "./baseline.ts"
import type { Case, Group, Row } from "./harness.ts"
import { asyncLoop, compile, effectLoop } from "./harness.ts"
import type { Library } from "./subjects.ts"
import {
  current,
  expectFailureTagged,
  expectState,
  failure,
  forever,
  makePersistence,
  makeSet,
  openPersistence,
  openSet,
  providing
} from "./subjects.ts"

export interface Settings {
  readonly warmup: number
  readonly rounds: number
  readonly sampleMs: number
}

export interface Bench {
  readonly group: Group
  readonly rows: ReadonlyArray<Row>
  readonly dispose?: () => unknown
}

const ratio = (a: string, b: string) => (at: (name: string) => number) => at(a) / at(b)

const PEER = "p"

/** The suffix of a baseline case's name. */
const BASELINE = ".baseline"

/**
 * The library's cases, built by `ours` for the working tree's build and, with a baseline, for the baseline build
 * (named with the suffix), each baseline case right after its current twin: the two samples a row compares are then
 * taken next to each other in every round, and the group alternates its direction so that each goes first as often.
 */
const pairs = (baseline: Baseline | undefined, ours: (lib: Library, suffix: string) => Array<Case>): Array<Case> => {
  const mine = ours(current, "")
  if (baseline === undefined) return mine
  const theirs = ours(baseline.library, BASELINE)
  return mine.flatMap((c, i) => [c, theirs[i]!])
}

/**
 * A row comparing case `name` with case `bare`; with a baseline, followed by the baseline case's row (no target: the
 * targets are the working tree's) and by current ÷ baseline, per round, as a change in per cent.
 */
const compared = (
  baseline: Baseline | undefined,
  name: string,
  bare: string,
  row: Omit<Row, "ns" | "value">
): Array<Row> => {
  const main: Row = { ...row, ns: name, value: ratio(name, bare) }
  if (baseline === undefined) return [main]
  const base = name + BASELINE
  return [
    main,
    { label: `  ↳ baseline ${baseline.short}`, ns: base, value: ratio(base, bare), ...(row.vs ? { vs: row.vs } : {}) },
    {
      label: "  ↳ current ÷ baseline",
      value: (at) => (at(name) / at(base) - 1) * 100,
      unit: "%",
      vs: `baseline ${baseline.short}, per round`
    }
  ]
}

/**
 * Row 1: a closed call, around `Effect.succeed(1)`.
 *
 * The `runtime` cases are the call as users write it: a `ManagedRuntime` built from `CircuitBreakerSet.layer`, and
 * the guarded effect built inside the loop, on every call, with the top-level `withBreaker`; against the same loop
 * without the breaker, built the same way and run by the same runtime.
 */
export const closed = (settings: Settings, baseline?: Baseline): Bench => {
  const scope = { bare: Effect.succeed(1) }
  const options: SetOptions = { maxFailures: 5, idleTimeToLive: forever }
  const runtimes: Array<ManagedRuntime.ManagedRuntime<never, unknown>> = []
  const ours = (lib: Library, suffix: string): Array<Case> => {
    const set = makeSet(lib, options)
    const single = Effect.runSync(lib.CircuitBreaker.make({ name: PEER, maxFailures: 5 }))
    const runtime = ManagedRuntime.make(lib.CircuitBreakerSet.layer(options))
    runtimes.push(runtime)
    // Builds the layer, so every sample runs against the runtime's cached context; the call also creates the peer's
    // breaker, which `verify` then finds in this runtime's set.
    runtime.runSync(Effect.succeed(1).pipe(lib.withBreaker(PEER)))
    const runtimeSet = runtime.runSync(Effect.gen(function*() {
      return yield* lib.CircuitBreakerSet
    }))
    const guarded = {
      service: set.withBreaker(PEER)(Effect.succeed(1)),
      topLevel: Effect.succeed(1).pipe(lib.withBreaker(PEER)),
      single: Effect.succeed(1).pipe(lib.CircuitBreaker.withBreaker(single))
    }
    return [
      {
        name: `closed.service${suffix}`,
        run: effectLoop(Effect, "yield* service", guarded),
        verify: () => expectState(set, PEER, "Closed")
      },
      {
        name: `closed.topLevel${suffix}`,
        run: effectLoop(Effect, "yield* topLevel", guarded, { wrap: providing(lib, set) })
      },
      { name: `closed.single${suffix}`, run: effectLoop(Effect, "yield* single", guarded) },
      {
        name: `closed.runtime${suffix}`,
        run: effectLoop(Effect, `yield* Effect.succeed(1).pipe(withBreaker("${PEER}"))`, {
          withBreaker: lib.withBreaker
        }, { runner: runtime }),
        verify: () => {
          expectState(runtimeSet, PEER, "Closed")
          const { peers } = Effect.runSync(runtimeSet.snapshot)
          if (!peers.some((p) => p.peer === PEER)) {
            throw new Error(`bench: the runtime's set holds no breaker for ${PEER}`)
          }
        }
      }
    ]
  }
  const library = pairs(baseline, ours)
  const cases: Array<Case> = [
    { name: "closed.bare", run: effectLoop(Effect, "yield* bare", scope) },
    // The bare loop in the current build's runtime: it reads nothing from the set, so it is the floor of both.
    { name: "closed.runtime.bare", run: effectLoop(Effect, "yield* Effect.succeed(1)", {}, { runner: runtimes[0] }) },
    // What any guard built per call pays before doing anything: a combinator's closure, a step that reads the fiber,
    // and an exit handler that restores its context (the two runtime steps a closed call takes), no breaker.
    {
      name: "closed.runtime.floor",
      run: effectLoop(Effect, `yield* Effect.succeed(1).pipe(emptyGuard("${PEER}"))`, { emptyGuard }, {
        runner: runtimes[0]
      })
    },
    ...library
  ]
  return {
    group: { name: "closed", cases, ...settings, alternate: baseline !== undefined },
    rows: [
      { label: "closed: bare `yield* Effect.succeed(1)`", ns: "closed.bare" },
      ...compared(baseline, "closed.service", "closed.bare", {
        label: "closed: set.withBreaker(peer) (service)",
        vs: "bare",
        target: { op: "<=", limit: 6 }
      }),
      ...compared(baseline, "closed.topLevel", "closed.bare", {
        label: "closed: withBreaker(peer) (top-level)",
        vs: "bare",
        target: { op: "<=", limit: 6 }
      }),
      ...compared(baseline, "closed.single", "closed.bare", {
        label: "closed: CircuitBreaker.withBreaker(b) (single)",
        vs: "bare"
      }),
      { label: "closed: runtime, bare `yield* Effect.succeed(1)` built per call", ns: "closed.runtime.bare" },
      ...compared(baseline, "closed.runtime", "closed.runtime.bare", {
        label: "closed: runtime, top-level withBreaker built per call",
        vs: "runtime bare",
        target: { op: "<=", limit: 6 }
      }),
      {
        label: "closed: runtime, floor: two runtime steps built per call, no breaker",
        ns: "closed.runtime.floor",
        value: ratio("closed.runtime.floor", "closed.runtime.bare"),
        vs: "runtime bare"
      }
    ],
    dispose: () => Promise.all(runtimes.map((runtime) => runtime.dispose()))
  }
}

/**
 * The least a guard of a closed call can do, as a combinator like `withBreaker(peer)`: read the fiber in one step and
 * run the effect under an exit handler that puts the fiber's context back (the guard marks it), deciding nothing.
 */
const emptyGuard = (_peer: string) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) => {
    const context = fiber.context
    return Effect.onExitPrimitive(self, () => {
      fiber.setContext(context)
      return undefined
    })
  })

/** Row 2: a rejected call while the circuit is open. */
export const open = (settings: Settings, baseline?: Baseline): Bench => {
  const scope = { failure }
  const ours = (lib: Library, suffix: string): Array<Case> => {
    const set = openSet(lib, PEER)
    const guarded = {
      service: set.withBreaker(PEER)(Effect.succeed(1)),
      topLevel: Effect.succeed(1).pipe(lib.withBreaker(PEER))
    }
    const stillOpen = () => {
      expectState(set, PEER, "Open")
      expectFailureTagged(guarded.service, "CircuitOpenError")
    }
    return [
      {
        name: `open.service${suffix}`,
        run: effectLoop(Effect, "yield* Effect.exit(service)", guarded),
        verify: stillOpen
      },
      {
        name: `open.topLevel${suffix}`,
        run: effectLoop(Effect, "yield* Effect.exit(topLevel)", guarded, { wrap: providing(lib, set) }),
        verify: () => expectFailureTagged(providing(lib, set)(guarded.topLevel), "CircuitOpenError")
      }
    ]
  }
  const library = pairs(baseline, ours)
  const cases: Array<Case> = [
    { name: "open.bare", run: effectLoop(Effect, "yield* Effect.exit(Effect.fail(failure))", scope) },
    { name: "open.failSync", run: effectLoop(Effect, "yield* Effect.exit(Effect.failSync(() => failure))", scope) },
    ...library
  ]
  return {
    group: { name: "open", cases, ...settings, alternate: baseline !== undefined },
    rows: [
      { label: "open: bare `Effect.exit(Effect.fail(err))`", ns: "open.bare" },
      ...compared(baseline, "open.service", "open.bare", {
        label: "open: rejection, set.withBreaker(peer)",
        vs: "bare fail",
        target: { op: "<=", limit: 5 }
      }),
      ...compared(baseline, "open.topLevel", "open.bare", {
        label: "open: rejection, withBreaker(peer) (top-level)",
        vs: "bare fail",
        target: { op: "<=", limit: 5 }
      }),
      { label: "open: floor `Effect.exit(Effect.failSync(() => err))`", ns: "open.failSync" },
      {
        label: "open: rejection (service) ÷ failSync floor",
        value: ratio("open.service", "open.failSync"),
        vs: "failSync floor",
        target: { op: "<=", limit: 1.5, source: "performance.md" }
      }
    ]
  }
}

/**
 * `effect/persistence`'s `CircuitBreaker` against ours, closed and open, in a group of its own that runs after the
 * library's groups: run in the same rounds as the library's cases, its code makes call sites in Effect's own runtime
 * megamorphic for the rest of the process, which added 50–80 ns to each of our closed cases (the runtime case:
 * 228 ns measured without it, 272–308 ns beside it, on 2026-12-03). The ratios here are same-round ones, so that
 * effect does not bias them.
 */
export const persistence = (settings: Settings): Bench => {
  const closedCircuit = makePersistence()
  const openCircuit = makePersistence()
  openPersistence(openCircuit, PEER)
  const set = makeSet(current, { maxFailures: 5, idleTimeToLive: forever })
  const opened = openSet(current, PEER)
  const scope = {
    failure,
    bare: Effect.succeed(1),
    service: set.withBreaker(PEER)(Effect.succeed(1)),
    rejected: opened.withBreaker(PEER)(Effect.succeed(1)),
    closedCircuit: Effect.succeed(1).pipe(closedCircuit.execute({ key: PEER })),
    openCircuit: Effect.succeed(1).pipe(openCircuit.execute({ key: PEER }))
  }
  const cases: Array<Case> = [
    { name: "persistence.closed.bare", run: effectLoop(Effect, "yield* bare", scope) },
    {
      name: "persistence.closed.ours",
      run: effectLoop(Effect, "yield* service", scope),
      verify: () => expectState(set, PEER, "Closed")
    },
    { name: "persistence.closed.theirs", run: effectLoop(Effect, "yield* closedCircuit", scope) },
    { name: "persistence.open.bare", run: effectLoop(Effect, "yield* Effect.exit(Effect.fail(failure))", scope) },
    {
      name: "persistence.open.ours",
      run: effectLoop(Effect, "yield* Effect.exit(rejected)", scope),
      verify: () => expectFailureTagged(scope.rejected, "CircuitOpenError")
    },
    {
      name: "persistence.open.theirs",
      run: effectLoop(Effect, "yield* Effect.exit(openCircuit)", scope),
      verify: () => expectFailureTagged(scope.openCircuit, "CircuitBreakerError")
    }
  ]
  return {
    group: { name: "persistence", cases, ...settings },
    rows: [
      {
        label: "persistence: closed, effect/persistence execute",
        ns: "persistence.closed.theirs",
        value: ratio("persistence.closed.theirs", "persistence.closed.bare"),
        vs: "bare"
      },
      {
        label: "persistence: closed, theirs ÷ ours (service)",
        value: ratio("persistence.closed.theirs", "persistence.closed.ours"),
        vs: "ours is N× faster",
        target: { op: ">=", limit: 15 }
      },
      {
        label: "persistence: open, effect/persistence rejection",
        ns: "persistence.open.theirs",
        value: ratio("persistence.open.theirs", "persistence.open.bare"),
        vs: "bare fail"
      },
      {
        label: "persistence: open, theirs ÷ ours (service)",
        value: ratio("persistence.open.theirs", "persistence.open.ours"),
        vs: "ours is N× faster",
        target: { op: ">=", limit: 20 }
      }
    ]
  }
}

/**
 * The trip policies whose closed call the policies group times (issue 10), each in a set of its own. Every call
 * succeeds, so each circuit stays closed: what is timed is a success on a closed circuit, the path nearly every call
 * takes. `Policy.window()` is the default policy given explicitly: it should cost what the default costs.
 */
export const closedPolicies: ReadonlyArray<
  { readonly name: string; readonly label: string; readonly policy: Policy.Policy }
> = [
  { name: "window", label: "Policy.window() (the default: 3 in 60 s)", policy: Policy.window() },
  { name: "consecutive", label: "Policy.consecutive(5)", policy: Policy.consecutive(5) },
  {
    name: "rateTime",
    label: "Policy.rate, time window (minimumCalls 10, 60 s, 10 buckets)",
    policy: Policy.rate({ minimumCalls: 10, window: "60 seconds", buckets: 10 })
  },
  {
    name: "rateCount",
    label: "Policy.rate, count window (minimumCalls 10, calls 100)",
    policy: Policy.rate({ minimumCalls: 10, calls: 100 })
  },
  {
    name: "slowCalls",
    label: "Policy.slowCalls (2 s; minimumCalls 10, 60 s, 10 buckets)",
    policy: Policy.slowCalls({ duration: "2 seconds", minimumCalls: 10, window: "60 seconds", buckets: 10 })
  },
  {
    name: "any",
    label: "Policy.any(rate time window, consecutive(5))",
    policy: Policy.any(Policy.rate({ minimumCalls: 10, window: "60 seconds", buckets: 10 }), Policy.consecutive(5))
  }
]

/**
 * Row 1 per policy: a closed call (a success) under every trip policy, against the default policy's closed call in
 * the same rounds (issue 10: each within 2× of it). Each case is `closed.service`'s loop, a set's
 * `withBreaker(peer)` around `Effect.succeed(1)`, on a set built with that policy.
 *
 * A group of its own, run after the library's other groups, for the reason `persistence` is: the policies' trackers
 * share the engine's call sites (`tracker.recordsSuccess`, `tracker.record`), and when they ran in the closed group
 * they made the default policy's closed call about 5–10% slower against the baseline than without them (medians of
 * four and three runs against da11d68, which has no such call sites, on 2026-12-03). The closed and open groups thus
 * measure the default policy as an application that uses only it runs it; here every policy runs beside the others.
 *
 * With a baseline, the baseline's default closed call runs here too: "current ÷ baseline" on that row is what a
 * process that uses several policies pays on the default's closed call.
 */
export const policies = (settings: Settings, baseline?: Baseline): Bench => {
  const ours = (lib: Library, suffix: string): Array<Case> => {
    const set = makeSet(lib, { idleTimeToLive: forever })
    return [{
      name: `policies.default${suffix}`,
      run: effectLoop(Effect, "yield* service", { service: set.withBreaker(PEER)(Effect.succeed(1)) }),
      verify: () => expectState(set, PEER, "Closed")
    }]
  }
  const cases: Array<Case> = [
    { name: "policies.bare", run: effectLoop(Effect, "yield* bare", { bare: Effect.succeed(1) }) },
    ...pairs(baseline, ours),
    ...closedPolicies.map(({ name, policy }): Case => {
      const set = makeSet(current, { policy, idleTimeToLive: forever })
      return {
        name: `policies.${name}`,
        run: effectLoop(Effect, "yield* service", { service: set.withBreaker(PEER)(Effect.succeed(1)) }),
        verify: () => expectState(set, PEER, "Closed")
      }
    })
  ]
  return {
    group: { name: "policies", cases, ...settings, alternate: baseline !== undefined },
    rows: [
      { label: "policies: bare `yield* Effect.succeed(1)`", ns: "policies.bare" },
      ...compared(baseline, "policies.default", "policies.bare", {
        label: "policies: closed call, default policy (service), beside the others",
        vs: "bare"
      }),
      ...closedPolicies.map(({ label, name }): Row => ({
        label: `policies: closed call, ${label}`,
        ns: `policies.${name}`,
        value: ratio(`policies.${name}`, "policies.default"),
        vs: "default policy, same round",
        target: { op: "<=", limit: 2 }
      }))
    ]
  }
}

/**
 * Row 3: recording a counted failure while the circuit stays closed.
 *
 * Two ways to keep it closed: a tiny window with a realistic `maxFailures` (the window never holds more than one
 * timestamp), or an unreachable `maxFailures` with the default 60-second window, where the window keeps every
 * failure. The second one cannot reach a steady state, so each of its samples starts from a fresh set and makes a
 * fixed number of calls: the window grows from 0 to `growCalls` timestamps during the sample.
 */
export const record = (settings: Settings, growCalls: number, baseline?: Baseline): Bench => {
  const scope = { failure }
  const ours = (lib: Library, suffix: string): Array<Case> => {
    const tiny = makeSet(lib, { maxFailures: 5, window: "1 nanos", idleTimeToLive: forever })
    const guarded = {
      tiny: tiny.withBreaker(PEER)(Effect.fail(failure)),
      freshGuard: () =>
        makeSet(lib, { maxFailures: Number.MAX_SAFE_INTEGER, idleTimeToLive: forever }).withBreaker(PEER)(
          Effect.fail(failure)
        )
    }
    return [
      {
        name: `record.tinyWindow${suffix}`,
        run: effectLoop(Effect, "yield* Effect.exit(tiny)", guarded),
        verify: () => expectState(tiny, PEER, "Closed")
      },
      {
        name: `record.growingWindow${suffix}`,
        fixedN: growCalls,
        run: effectLoop(Effect, "yield* Effect.exit(guarded)", guarded, { prelude: "const guarded = freshGuard()" })
      }
    ]
  }
  const library = pairs(baseline, ours)
  const cases: Array<Case> = [
    { name: "record.bare", run: effectLoop(Effect, "yield* Effect.exit(Effect.fail(failure))", scope) },
    { name: "record.failSync", run: effectLoop(Effect, "yield* Effect.exit(Effect.failSync(() => failure))", scope) },
    ...library
  ]
  return {
    group: { name: "record", cases, ...settings, alternate: baseline !== undefined },
    rows: [
      { label: "record: bare `Effect.exit(Effect.fail(err))`", ns: "record.bare" },
      ...compared(baseline, "record.tinyWindow", "record.bare", {
        label: "record: maxFailures 5, window 1 nanos",
        vs: "bare fail",
        target: { op: "<=", limit: 3 }
      }),
      { label: "record: floor `Effect.exit(Effect.failSync(() => err))`", ns: "record.failSync" },
      {
        label: "record: maxFailures 5 ÷ failSync floor",
        value: ratio("record.tinyWindow", "record.failSync"),
        vs: "failSync floor",
        target: { op: "<=", limit: 3, source: "performance.md" }
      },
      ...compared(baseline, "record.growingWindow", "record.bare", {
        label: `record: maxFailures MAX_SAFE, 60 s window, 0→${growCalls} in window`,
        vs: "bare fail",
        target: { op: "<=", limit: 3 }
      })
    ]
  }
}

/** Row 6: wrapping a promise. Our breaker around `Effect.tryPromise`, and cockatiel and opossum for context. */
export const promise = (settings: Settings, baseline?: Baseline): Bench => {
  const fn = () => Promise.resolve(1)
  const tryPromise = Effect.tryPromise(fn)
  const cockatiel = circuitBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) })
  const opossum = new Opossum(fn, { timeout: 10_000 })
  const opossumNoTimeout = new Opossum(fn, { timeout: false })
  const scope = { fn, tryPromise, cockatiel, opossum, opossumNoTimeout }
  const ours = (lib: Library, suffix: string): Array<Case> => {
    const set = makeSet(lib, { maxFailures: 5, idleTimeToLive: forever })
    return [{
      name: `promise.ours${suffix}`,
      async: true,
      run: effectLoop(Effect, "yield* guarded", { guarded: set.withBreaker(PEER)(tryPromise) }, { async: true }),
      verify: () => expectState(set, PEER, "Closed")
    }]
  }
  const library = pairs(baseline, ours)
  const cases: Array<Case> = [
    { name: "promise.bare", async: true, run: effectLoop(Effect, "yield* tryPromise", scope, { async: true }) },
    ...library,
    { name: "promise.await", async: true, run: asyncLoop("await fn()", scope) },
    { name: "promise.cockatiel", async: true, run: asyncLoop("await cockatiel.execute(fn)", scope) },
    { name: "promise.opossum", async: true, run: asyncLoop("await opossum.fire()", scope) },
    { name: "promise.opossumNoTimeout", async: true, run: asyncLoop("await opossumNoTimeout.fire()", scope) }
  ]
  return {
    group: { name: "promise", cases, ...settings, alternate: baseline !== undefined },
    rows: [
      { label: "promise: bare `yield* Effect.tryPromise(f)`", ns: "promise.bare" },
      ...compared(baseline, "promise.ours", "promise.bare", {
        label: "promise: set.withBreaker(peer)(tryPromise)",
        vs: "bare tryPromise",
        target: { op: "<=", limit: 1.8 }
      }),
      { label: "promise: bare `await f()`", ns: "promise.await" },
      {
        label: "promise: cockatiel execute(f)",
        ns: "promise.cockatiel",
        value: ratio("promise.cockatiel", "promise.await"),
        vs: "bare await"
      },
      {
        label: "promise: opossum fire() (10 s timeout)",
        ns: "promise.opossum",
        value: ratio("promise.opossum", "promise.await"),
        vs: "bare await"
      },
      {
        label: "promise: opossum fire() (timeout: false)",
        ns: "promise.opossumNoTimeout",
        value: ratio("promise.opossumNoTimeout", "promise.await"),
        vs: "bare await"
      }
    ],
    dispose: () => {
      opossum.shutdown()
      opossumNoTimeout.shutdown()
    }
  }
}

/**
 * Row 4: 10,000 fibers sharing one breaker. One sample is a whole run of `fibers × calls` calls: sequentially in one
 * fiber, concurrently (`concurrency: "unbounded"`), and concurrently with every fiber yielding every 16 calls, so
 * the fibers really interleave instead of each finishing inside its first time slice.
 */
export const concurrency = (settings: Settings, fibers: number, calls: number): Bench => {
  const set = makeSet(current, { maxFailures: 5, idleTimeToLive: forever })
  const items = Array.from({ length: fibers }, (_, i) => i)
  // One fiber's loop, compiled per case like every other loop; the effect is built once and run by every fiber.
  const fiberLoop = (effect: Effect.Effect<number, unknown>, interleave: boolean): Effect.Effect<void> =>
    compile<Effect.Effect<void>>(
      { Effect, effect, calls },
      `return Effect.gen(function* () {
  for (let i = 0; i < calls; i++) {
    yield* effect
    ${interleave ? "if ((i & 15) === 15) yield* Effect.yieldNow" : ""}
  }
})`
    )
  const bare = Effect.succeed(1)
  const guarded = set.withBreaker(PEER)(Effect.succeed(1))
  const whole = (loop: Effect.Effect<void>, concurrent: boolean) => () =>
    Effect.runPromise(
      Effect.forEach(items, () => loop, concurrent ? { concurrency: "unbounded", discard: true } : { discard: true })
    )
  const n = fibers * calls
  const cases: Array<Case> = [
    { name: "fibers.seq.bare", async: true, fixedN: n, run: whole(fiberLoop(bare, false), false) },
    { name: "fibers.seq.ours", async: true, fixedN: n, run: whole(fiberLoop(guarded, false), false) },
    { name: "fibers.conc.bare", async: true, fixedN: n, run: whole(fiberLoop(bare, false), true) },
    { name: "fibers.conc.ours", async: true, fixedN: n, run: whole(fiberLoop(guarded, false), true) },
    { name: "fibers.inter.bare", async: true, fixedN: n, run: whole(fiberLoop(bare, true), true) },
    {
      name: "fibers.inter.ours",
      async: true,
      fixedN: n,
      run: whole(fiberLoop(guarded, true), true),
      verify: () => expectState(set, PEER, "Closed")
    }
  ]
  const k = `${fibers / 1000}k`
  return {
    group: { name: "fibers", cases, ...settings },
    rows: [
      { label: `fibers: sequential, ${k} loops of ${calls} bare calls`, ns: "fibers.seq.bare" },
      {
        label: "fibers: sequential, guarded",
        ns: "fibers.seq.ours",
        value: ratio("fibers.seq.ours", "fibers.seq.bare"),
        vs: "sequential bare"
      },
      {
        label: `fibers: ${k} concurrent, bare`,
        ns: "fibers.conc.bare",
        value: ratio("fibers.conc.bare", "fibers.seq.bare"),
        vs: "sequential bare"
      },
      {
        label: `fibers: ${k} concurrent, guarded`,
        ns: "fibers.conc.ours",
        value: ratio("fibers.conc.ours", "fibers.seq.ours"),
        vs: "sequential guarded",
        target: { op: "<=", limit: 1.1 }
      },
      {
        label: `fibers: ${k} interleaved (yield every 16), bare`,
        ns: "fibers.inter.bare",
        value: ratio("fibers.inter.bare", "fibers.seq.bare"),
        vs: "sequential bare"
      },
      {
        label: `fibers: ${k} interleaved, guarded`,
        ns: "fibers.inter.ours",
        value: ratio("fibers.inter.ours", "fibers.inter.bare"),
        vs: "interleaved bare"
      },
      {
        label: "fibers: interleaved added ns ÷ sequential added ns",
        value: (at) =>
          (at("fibers.inter.ours") - at("fibers.inter.bare")) / (at("fibers.seq.ours") - at("fibers.seq.bare")),
        vs: "guarded − bare",
        target: { op: "<=", limit: 1.25, source: "performance.md" }
      }
    ]
  }
}
