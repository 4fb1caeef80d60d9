/**
 * The timed groups. Each case is a loop compiled for that case alone; each row is a same-round ratio.
 */
import { circuitBreaker, ConsecutiveBreaker, handleAll } from "cockatiel"
import * as Effect from "effect/Effect"
import Opossum from "opossum"
import { CircuitBreaker, withBreaker } from "../src/index.ts"
import type { Case, Group, Row } from "./harness.ts"
import { asyncLoop, compile, effectLoop } from "./harness.ts"
import {
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
  readonly dispose?: () => void
}

const ratio = (a: string, b: string) => (at: (name: string) => number) => at(a) / at(b)

const PEER = "p"

/** Row 1: a closed call, around `Effect.succeed(1)`. */
export const closed = (settings: Settings): Bench => {
  const set = makeSet({ maxFailures: 5, idleTimeToLive: forever })
  const single = Effect.runSync(CircuitBreaker.make({ name: PEER, maxFailures: 5 }))
  const persistence = makePersistence()
  const scope = {
    bare: Effect.succeed(1),
    service: set.withBreaker(PEER)(Effect.succeed(1)),
    topLevel: Effect.succeed(1).pipe(withBreaker(PEER)),
    single: Effect.succeed(1).pipe(CircuitBreaker.withBreaker(single)),
    persistence: Effect.succeed(1).pipe(persistence.execute({ key: PEER }))
  }
  const cases: Array<Case> = [
    { name: "closed.bare", run: effectLoop(Effect, "yield* bare", scope) },
    {
      name: "closed.service",
      run: effectLoop(Effect, "yield* service", scope),
      verify: () => expectState(set, PEER, "Closed")
    },
    { name: "closed.topLevel", run: effectLoop(Effect, "yield* topLevel", scope, { wrap: providing(set) }) },
    { name: "closed.single", run: effectLoop(Effect, "yield* single", scope) },
    { name: "closed.persistence", run: effectLoop(Effect, "yield* persistence", scope) }
  ]
  return {
    group: { name: "closed", cases, ...settings },
    rows: [
      { label: "closed: bare `yield* Effect.succeed(1)`", ns: "closed.bare" },
      {
        label: "closed: set.withBreaker(peer) (service)",
        ns: "closed.service",
        value: ratio("closed.service", "closed.bare"),
        vs: "bare",
        target: { op: "<=", limit: 6 }
      },
      {
        label: "closed: withBreaker(peer) (top-level)",
        ns: "closed.topLevel",
        value: ratio("closed.topLevel", "closed.bare"),
        vs: "bare",
        target: { op: "<=", limit: 6 }
      },
      {
        label: "closed: CircuitBreaker.withBreaker(b) (single)",
        ns: "closed.single",
        value: ratio("closed.single", "closed.bare"),
        vs: "bare"
      },
      {
        label: "closed: effect/persistence execute",
        ns: "closed.persistence",
        value: ratio("closed.persistence", "closed.bare"),
        vs: "bare"
      },
      {
        label: "closed: persistence ÷ ours (service)",
        value: ratio("closed.persistence", "closed.service"),
        vs: "ours is N× faster",
        target: { op: ">=", limit: 15 }
      },
      {
        label: "closed: persistence ÷ ours (top-level)",
        value: ratio("closed.persistence", "closed.topLevel"),
        vs: "ours is N× faster",
        target: { op: ">=", limit: 15 }
      }
    ]
  }
}

/** Row 2: a rejected call while the circuit is open. */
export const open = (settings: Settings): Bench => {
  const set = openSet(PEER)
  const persistence = makePersistence()
  openPersistence(persistence, PEER)
  const scope = {
    failure,
    service: set.withBreaker(PEER)(Effect.succeed(1)),
    topLevel: Effect.succeed(1).pipe(withBreaker(PEER)),
    persistence: Effect.succeed(1).pipe(persistence.execute({ key: PEER }))
  }
  const stillOpen = () => {
    expectState(set, PEER, "Open")
    expectFailureTagged(scope.service, "CircuitOpenError")
  }
  const cases: Array<Case> = [
    { name: "open.bare", run: effectLoop(Effect, "yield* Effect.exit(Effect.fail(failure))", scope) },
    { name: "open.failSync", run: effectLoop(Effect, "yield* Effect.exit(Effect.failSync(() => failure))", scope) },
    { name: "open.service", run: effectLoop(Effect, "yield* Effect.exit(service)", scope), verify: stillOpen },
    {
      name: "open.topLevel",
      run: effectLoop(Effect, "yield* Effect.exit(topLevel)", scope, { wrap: providing(set) })
    },
    {
      name: "open.persistence",
      run: effectLoop(Effect, "yield* Effect.exit(persistence)", scope),
      verify: () => expectFailureTagged(scope.persistence, "CircuitBreakerError")
    }
  ]
  return {
    group: { name: "open", cases, ...settings },
    rows: [
      { label: "open: bare `Effect.exit(Effect.fail(err))`", ns: "open.bare" },
      {
        label: "open: rejection, set.withBreaker(peer)",
        ns: "open.service",
        value: ratio("open.service", "open.bare"),
        vs: "bare fail",
        target: { op: "<=", limit: 5 }
      },
      {
        label: "open: rejection, withBreaker(peer) (top-level)",
        ns: "open.topLevel",
        value: ratio("open.topLevel", "open.bare"),
        vs: "bare fail",
        target: { op: "<=", limit: 5 }
      },
      { label: "open: floor `Effect.exit(Effect.failSync(() => err))`", ns: "open.failSync" },
      {
        label: "open: rejection (service) ÷ failSync floor",
        value: ratio("open.service", "open.failSync"),
        vs: "failSync floor",
        target: { op: "<=", limit: 1.5, source: "performance.md" }
      },
      {
        label: "open: effect/persistence rejection",
        ns: "open.persistence",
        value: ratio("open.persistence", "open.bare"),
        vs: "bare fail"
      },
      {
        label: "open: persistence ÷ ours (service)",
        value: ratio("open.persistence", "open.service"),
        vs: "ours is N× faster",
        target: { op: ">=", limit: 20 }
      }
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
export const record = (settings: Settings, growCalls: number): Bench => {
  const tiny = makeSet({ maxFailures: 5, window: "1 nanos", idleTimeToLive: forever })
  const scope = {
    failure,
    tiny: tiny.withBreaker(PEER)(Effect.fail(failure)),
    freshGuard: () =>
      makeSet({ maxFailures: Number.MAX_SAFE_INTEGER, idleTimeToLive: forever }).withBreaker(PEER)(
        Effect.fail(failure)
      )
  }
  const cases: Array<Case> = [
    { name: "record.bare", run: effectLoop(Effect, "yield* Effect.exit(Effect.fail(failure))", scope) },
    { name: "record.failSync", run: effectLoop(Effect, "yield* Effect.exit(Effect.failSync(() => failure))", scope) },
    {
      name: "record.tinyWindow",
      run: effectLoop(Effect, "yield* Effect.exit(tiny)", scope),
      verify: () => expectState(tiny, PEER, "Closed")
    },
    {
      name: "record.growingWindow",
      fixedN: growCalls,
      run: effectLoop(Effect, "yield* Effect.exit(guarded)", scope, { prelude: "const guarded = freshGuard()" })
    }
  ]
  return {
    group: { name: "record", cases, ...settings },
    rows: [
      { label: "record: bare `Effect.exit(Effect.fail(err))`", ns: "record.bare" },
      {
        label: "record: maxFailures 5, window 1 nanos",
        ns: "record.tinyWindow",
        value: ratio("record.tinyWindow", "record.bare"),
        vs: "bare fail",
        target: { op: "<=", limit: 3 }
      },
      { label: "record: floor `Effect.exit(Effect.failSync(() => err))`", ns: "record.failSync" },
      {
        label: "record: maxFailures 5 ÷ failSync floor",
        value: ratio("record.tinyWindow", "record.failSync"),
        vs: "failSync floor",
        target: { op: "<=", limit: 3, source: "performance.md" }
      },
      {
        label: `record: maxFailures MAX_SAFE, 60 s window, 0→${growCalls} in window`,
        ns: "record.growingWindow",
        value: ratio("record.growingWindow", "record.bare"),
        vs: "bare fail",
        target: { op: "<=", limit: 3 }
      }
    ]
  }
}

/** Row 6: wrapping a promise. Our breaker around `Effect.tryPromise`, and cockatiel and opossum for context. */
export const promise = (settings: Settings): Bench => {
  const set = makeSet({ maxFailures: 5, idleTimeToLive: forever })
  const fn = () => Promise.resolve(1)
  const tryPromise = Effect.tryPromise(fn)
  const cockatiel = circuitBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) })
  const opossum = new Opossum(fn, { timeout: 10_000 })
  const opossumNoTimeout = new Opossum(fn, { timeout: false })
  const scope = { fn, tryPromise, guarded: set.withBreaker(PEER)(tryPromise), cockatiel, opossum, opossumNoTimeout }
  const cases: Array<Case> = [
    { name: "promise.bare", async: true, run: effectLoop(Effect, "yield* tryPromise", scope, { async: true }) },
    {
      name: "promise.ours",
      async: true,
      run: effectLoop(Effect, "yield* guarded", scope, { async: true }),
      verify: () => expectState(set, PEER, "Closed")
    },
    { name: "promise.await", async: true, run: asyncLoop("await fn()", scope) },
    { name: "promise.cockatiel", async: true, run: asyncLoop("await cockatiel.execute(fn)", scope) },
    { name: "promise.opossum", async: true, run: asyncLoop("await opossum.fire()", scope) },
    { name: "promise.opossumNoTimeout", async: true, run: asyncLoop("await opossumNoTimeout.fire()", scope) }
  ]
  return {
    group: { name: "promise", cases, ...settings },
    rows: [
      { label: "promise: bare `yield* Effect.tryPromise(f)`", ns: "promise.bare" },
      {
        label: "promise: set.withBreaker(peer)(tryPromise)",
        ns: "promise.ours",
        value: ratio("promise.ours", "promise.bare"),
        vs: "bare tryPromise",
        target: { op: "<=", limit: 1.8 }
      },
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
  const set = makeSet({ maxFailures: 5, idleTimeToLive: forever })
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
