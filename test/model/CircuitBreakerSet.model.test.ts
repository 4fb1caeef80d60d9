/**
 * Model-based property test: random options and random command sequences run against the real `CircuitBreakerSet`
 * under `TestClock`, every observation compared with the reference model in `./model.ts`: each call's admission (or
 * its rejection, with `state` and `retryAfter`), each caller's exit, `state(peer)` of every peer after every command,
 * and the records of `changes`.
 *
 * The options are random too: every trip policy (window, consecutive, rate over a time or a count window, slow calls,
 * `any` of 2–3 of them), a fixed open duration or a backoff schedule (`OpenDuration.exponential` without jitter,
 * `Schedule.exponential` with `upTo`, `fibonacci`, `spaced`), `maxOpenDuration`, `halfOpen` (`probes`,
 * `successThreshold`, `probeTimeout`), observe mode, and sometimes a peer with options of its own (`peers`).
 *
 * A probe runs in a fiber of its own, detached from its caller: interrupting a probe's caller (`interruptFromOutside`)
 * releases the caller at once and leaves the probe in flight, to be ended by a later `Finish` through its latch. A
 * probe still holding its slot when its lease ends is interrupted then, and its caller, if it still waits, fails with
 * `CircuitOpenError` (in observe mode nothing is interrupted: the caller waits for the call's own result); one that
 * lost its slot before (a reset, say) runs on, and its caller gets its own result.
 *
 * The real set may drop an idle breaker, which forgets a count window's successes (documented); the model gives every
 * state the set may be in (`Model.evictions`) and the test keeps the candidates that agree with every observation.
 *
 * Environment:
 * - `MODEL_RUNS`: sequences to run (default 500; `npm run test:model-long` runs 100,000).
 * - `MODEL_SEED`: the fast-check seed (default fixed, so CI runs the same sequences each time).
 * - `MODEL_PATH`: with the seed, replays one failure as fast-check printed it (`{ seed, path }`).
 * - `MODEL_STATS=1`: prints how often each situation of interest came up (to check the generators reach them).
 */
import { describe, it } from "@effect/vitest"
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  References,
  Schedule,
  Scope,
  Stream
} from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { CircuitBreakerSet, OpenDuration, Policy } from "../../src/index.ts"
import type { BreakerOptions, CircuitState, CircuitStateChange, PeerOptions, SetOptions } from "../../src/index.ts"
import * as Model from "./model.ts"

const numRuns = Number(process.env.MODEL_RUNS ?? 500)
const seed = Number(process.env.MODEL_SEED ?? 20_240_604)
const path = process.env.MODEL_PATH
const stats = process.env.MODEL_STATS ? new Map<string, number>() : undefined
const note = (label: string): void => {
  if (stats !== undefined) stats.set(label, (stats.get(label) ?? 0) + 1)
}

// --- options ----------------------------------------------------------------------------------------------------

/** Any string is a peer: the empty string and `__proto__` included. */
const peers = ["a", "__proto__", ""] as const
type Peer = typeof peers[number]

/** How a policy is given: `policy`, the `maxFailures` / `window` shorthand (a window only), left out (the default). */
type PolicyForm = "policy" | "nested" | "shorthand" | "default"

/** Breaker options as generated: the model's data, and how to spell them to the real set. */
interface GenOptions {
  readonly policy: Model.Policy
  readonly policyForm: PolicyForm
  readonly openDuration: Model.OpenDuration
  /** The name a fixed open duration is given under. */
  readonly fixedAs: "openDuration" | "resetTimeout"
  readonly maxOpenDuration: number | undefined
  readonly halfOpen:
    | {
      readonly probes: number | undefined
      readonly successThreshold: number | undefined
      readonly probeTimeout: number | undefined
    }
    | undefined
  readonly mode: "enforce" | "observe" | undefined
}

/** A peer's own entry in `peers`: any field left `undefined` is the set's. */
interface GenPeerOptions {
  readonly policy: { readonly policy: Model.Policy; readonly policyForm: PolicyForm } | undefined
  readonly openDuration:
    | { readonly openDuration: Model.OpenDuration; readonly fixedAs: GenOptions["fixedAs"] }
    | undefined
  readonly maxOpenDuration: number | undefined
  readonly halfOpen: GenOptions["halfOpen"]
  readonly mode: GenOptions["mode"]
}

const defaultPolicy: Model.Policy = { _tag: "Window", maxFailures: 3, window: 60_000 }

const toPolicy = (policy: Model.Policy): Policy.Policy => {
  switch (policy._tag) {
    case "Window":
      return Policy.window({ maxFailures: policy.maxFailures, window: policy.window })
    case "Consecutive":
      return Policy.consecutive(policy.failures)
    case "Rate":
    case "SlowCalls": {
      const window = policy.window._tag === "Time"
        ? { window: policy.window.millis, buckets: policy.window.buckets }
        : { calls: policy.window.calls }
      const common = { threshold: policy.threshold, minimumCalls: policy.minimumCalls, ...window }
      return policy._tag === "Rate" ? Policy.rate(common) : Policy.slowCalls({ duration: policy.duration, ...common })
    }
    case "Any": {
      const [first, ...rest] = policy.members.map(toPolicy)
      return Policy.any(first!, ...rest)
    }
  }
}

/** The policy options of a breaker's options. */
const policyOptions = (policy: Model.Policy, form: PolicyForm): BreakerOptions => {
  switch (form) {
    case "default":
      return {}
    case "shorthand":
      return policy._tag === "Window" ? { maxFailures: policy.maxFailures, window: policy.window } : {}
    case "policy":
      return { policy: toPolicy(policy) }
    case "nested": {
      // any(m0, any(m1, …)): flattened by Policy.any.
      if (policy._tag !== "Any") return { policy: toPolicy(policy) }
      const [first, ...rest] = policy.members
      return { policy: Policy.any(toPolicy(first!), toPolicy({ _tag: "Any", members: rest })) }
    }
  }
}

const toOpenDuration = (spec: Model.OpenDuration): Schedule.Schedule<unknown, number> | number => {
  switch (spec._tag) {
    case "Fixed":
      return spec.millis
    case "Exponential":
      return OpenDuration.exponential({ base: spec.base, max: spec.max, factor: spec.factor, jitter: false })
    case "ExponentialUpTo":
      return Schedule.exponential(spec.base, spec.factor).pipe(Schedule.upTo({ times: spec.times }))
    case "Fibonacci":
      return Schedule.fibonacci(spec.one)
    case "Spaced":
      return Schedule.spaced(spec.millis)
  }
}

const openDurationOptions = (spec: Model.OpenDuration, fixedAs: GenOptions["fixedAs"]): BreakerOptions =>
  spec._tag === "Fixed" && fixedAs === "resetTimeout"
    ? { resetTimeout: spec.millis }
    : { openDuration: toOpenDuration(spec) }

const halfOpenOptions = (halfOpen: GenOptions["halfOpen"]): BreakerOptions =>
  halfOpen === undefined ? {} : {
    halfOpen: {
      ...(halfOpen.probes === undefined ? {} : { probes: halfOpen.probes }),
      ...(halfOpen.successThreshold === undefined ? {} : { successThreshold: halfOpen.successThreshold }),
      ...(halfOpen.probeTimeout === undefined ? {} : { probeTimeout: halfOpen.probeTimeout })
    }
  }

const breakerOptions = (gen: GenOptions): BreakerOptions => ({
  ...policyOptions(gen.policy, gen.policyForm),
  ...openDurationOptions(gen.openDuration, gen.fixedAs),
  ...(gen.maxOpenDuration === undefined ? {} : { maxOpenDuration: gen.maxOpenDuration }),
  ...halfOpenOptions(gen.halfOpen),
  ...(gen.mode === undefined ? {} : { mode: gen.mode })
})

const peerOptions = (gen: GenPeerOptions): PeerOptions => ({
  ...(gen.policy === undefined ? {} : policyOptions(gen.policy.policy, gen.policy.policyForm)),
  ...(gen.openDuration === undefined
    ? {}
    : openDurationOptions(gen.openDuration.openDuration, gen.openDuration.fixedAs)),
  ...(gen.maxOpenDuration === undefined ? {} : { maxOpenDuration: gen.maxOpenDuration }),
  ...halfOpenOptions(gen.halfOpen),
  ...(gen.mode === undefined ? {} : { mode: gen.mode })
})

/** A peer's entry over the set's options, field by field (`halfOpen` whole). */
const merge = (set: GenOptions, peer: GenPeerOptions): GenOptions => ({
  ...set,
  ...(peer.policy === undefined ? {} : peer.policy),
  ...(peer.openDuration === undefined ? {} : peer.openDuration),
  ...(peer.maxOpenDuration === undefined ? {} : { maxOpenDuration: peer.maxOpenDuration }),
  ...(peer.halfOpen === undefined ? {} : { halfOpen: peer.halfOpen }),
  ...(peer.mode === undefined ? {} : { mode: peer.mode })
})

/** The model's options: defaults filled in, from the specification. */
const modelOptions = (gen: GenOptions): Model.Options => {
  const probes = gen.halfOpen?.probes ?? 1
  return {
    policy: gen.policyForm === "default" ? defaultPolicy : gen.policy,
    openDuration: gen.openDuration,
    maxOpenDuration: gen.maxOpenDuration,
    probes,
    successThreshold: gen.halfOpen?.successThreshold ?? probes,
    probeTimeout: gen.halfOpen?.probeTimeout,
    observe: gen.mode === "observe"
  }
}

/** Whether generated options are valid: a fixed open duration may not be longer than `maxOpenDuration`. */
const isValid = (gen: GenOptions): boolean =>
  gen.openDuration._tag !== "Fixed" || gen.maxOpenDuration === undefined ||
  gen.openDuration.millis <= gen.maxOpenDuration

// --- commands -------------------------------------------------------------------------------------------------

/** How the wrapped effect ends. */
const endings = [
  "succeed",
  "failCounted", // a typed failure that isFailure accepts
  "failRejected", // a typed failure that isFailure rejects: the peer answered
  "die",
  "interruptSelf", // interruption alone
  "failRejectedAndInterrupt", // a rejected failure and an interruption: the peer answered
  "failCountedAndRejected",
  "failRejectedAndCounted",
  "dieAndFailRejected",
  "failRejectedAndDie"
] as const
type Ending = typeof endings[number]

/**
 * A duration, worked out when the command runs: a number of milliseconds, or one of these, or 1 ms either side:
 * - `window`: the first time window of peer "a"'s policy; `bucketEdge`: the time to its next bucket boundary;
 * - `openDuration`: peer "a"'s first opening; `retryAfter`: until peer "a" admits a call;
 * - `lease`: until the earliest lease of a probe in flight ends; `slow`: peer "a"'s first slow-call duration;
 * - `probeLease`: the lease a probe on peer "a" admitted now would hold (0 if a call would not be one);
 * - `backoff`: until peer "a"'s backoff stops being in force; `idleTimeToLive`: the set's.
 */
const namedSteps = [
  "probeLease",
  "window",
  "bucketEdge",
  "openDuration",
  "retryAfter",
  "lease",
  "slow",
  "backoff",
  "idleTimeToLive"
] as const
type Step = number | `${typeof namedSteps[number]}${"" | "-1" | "+1"}`

type Command =
  | { readonly _tag: "Advance"; readonly by: Step }
  /** A call that starts now and ends `took` later (the clock moves on meanwhile). */
  | { readonly _tag: "Call"; readonly peer: Peer; readonly ending: Ending; readonly took: Step }
  /** A call that starts now and stays in flight until a later `Finish` (or forever). */
  | { readonly _tag: "Start"; readonly peer: Peer }
  /**
   * Ends the `pick`-th call in flight (modulo their number), or interrupts its caller from outside (which ends a call
   * admitted while closed, but only detaches a probe from its caller: the probe stays in flight).
   */
  | { readonly _tag: "Finish"; readonly pick: number; readonly ending: Ending | "interruptFromOutside" }
  /**
   * Concurrent calls: all start now, each in its own fiber, and are all admitted before any ends; then they end in
   * order, one after the other, or `together` (released by one latch).
   */
  | {
    readonly _tag: "Batch"
    readonly calls: ReadonlyArray<{ readonly peer: Peer; readonly ending: Ending }>
    readonly together: boolean
  }
  | { readonly _tag: "Read"; readonly peer: Peer }
  | { readonly _tag: "Reset"; readonly peer: Peer }
  /** Isolates the peer in a scope of its own, until a `Release` closes it. */
  | { readonly _tag: "Isolate"; readonly peer: Peer }
  | { readonly _tag: "Release"; readonly pick: number }
  /** Steps the wall clock back (the monotonic clock does not move). Skipped while a probe's lease is pending. */
  | { readonly _tag: "StepWallBack"; readonly by: number }

interface Scenario {
  readonly options: GenOptions
  /** A peer with options of its own. */
  readonly peer: { readonly peer: Peer; readonly options: GenPeerOptions } | undefined
  readonly idleTimeToLive: number
  readonly commands: ReadonlyArray<Command>
}

const durationArb = fc.oneof(
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 5 }) },
  { weight: 6, arbitrary: fc.integer({ min: 500, max: 5000 }) }
)
const baseArb = fc.oneof(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 100, max: 1500 }))
const thresholdArb = fc.constantFrom(0.2, 0.25, 1 / 3, 0.5, 0.6, 0.75, 1)
const rateWindowArb: fc.Arbitrary<Model.RateWindow> = fc.oneof(
  fc.record({
    _tag: fc.constant("Time" as const),
    millis: durationArb,
    buckets: fc.oneof(fc.integer({ min: 1, max: 5 }), fc.constant(10), fc.integer({ min: 6, max: 13 }))
  }).map((window) => ({ ...window, buckets: Math.min(window.buckets, window.millis) })),
  fc.record({ _tag: fc.constant("Count" as const), calls: fc.integer({ min: 1, max: 8 }) })
)
const rateFields = fc.record({
  threshold: thresholdArb,
  minimumCalls: fc.integer({ min: 1, max: 6 }),
  window: rateWindowArb
}).map((rate) =>
  rate.window._tag === "Count" ? { ...rate, minimumCalls: Math.min(rate.minimumCalls, rate.window.calls) } : rate
)
const memberArb: fc.Arbitrary<Model.Member> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("Window" as const),
      maxFailures: fc.integer({ min: 0, max: 3 }),
      window: durationArb
    })
  },
  {
    weight: 2,
    arbitrary: fc.record({ _tag: fc.constant("Consecutive" as const), failures: fc.integer({ min: 1, max: 4 }) })
  },
  { weight: 3, arbitrary: rateFields.map((rate) => ({ _tag: "Rate" as const, ...rate })) },
  {
    weight: 2,
    arbitrary: fc.tuple(rateFields, durationArb).map(([rate, duration]) => ({
      _tag: "SlowCalls" as const,
      duration,
      ...rate
    }))
  }
)
const policyArb: fc.Arbitrary<{ readonly policy: Model.Policy; readonly policyForm: PolicyForm }> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.tuple(memberArb, fc.constantFrom<PolicyForm>("policy", "shorthand", "default")).map((
      [policy, form]
    ) => ({ policy, policyForm: form === "shorthand" && policy._tag !== "Window" ? "policy" as const : form }))
  },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.array(memberArb, { minLength: 2, maxLength: 3 }), fc.boolean()).map((
      [members, nested]
    ) => ({ policy: { _tag: "Any" as const, members }, policyForm: nested ? "nested" as const : "policy" as const }))
  }
)
const openDurationArb: fc.Arbitrary<Model.OpenDuration> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ _tag: fc.constant("Fixed" as const), millis: durationArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("Exponential" as const),
      base: baseArb,
      max: durationArb,
      factor: fc.constantFrom(2, 3)
    })
  },
  {
    weight: 1,
    arbitrary: fc.record({
      _tag: fc.constant("ExponentialUpTo" as const),
      base: baseArb,
      factor: fc.constantFrom(2, 3),
      times: fc.integer({ min: 1, max: 3 })
    })
  },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Fibonacci" as const), one: baseArb }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Spaced" as const), millis: durationArb }) }
)
const maybe = <A>(arb: fc.Arbitrary<A>, weight = 1): fc.Arbitrary<A | undefined> =>
  fc.oneof({ weight, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb })
const halfOpenArb: fc.Arbitrary<GenOptions["halfOpen"]> = maybe(
  fc.record({
    probes: maybe(fc.integer({ min: 1, max: 3 }), 1),
    successThreshold: maybe(fc.integer({ min: 0, max: 2 }), 1),
    probeTimeout: maybe(durationArb, 1)
  }).map((halfOpen) => ({
    ...halfOpen,
    // Given as a number of successes beyond the probes: never fewer successes than probes.
    successThreshold: halfOpen.successThreshold === undefined
      ? undefined
      : (halfOpen.probes ?? 1) + halfOpen.successThreshold
  })),
  1
)
const modeArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constant("enforce" as const) },
  { weight: 1, arbitrary: fc.constant("observe" as const) }
)
const optionsArb: fc.Arbitrary<GenOptions> = fc.record({
  policy: policyArb,
  openDuration: openDurationArb,
  fixedAs: fc.constantFrom("openDuration" as const, "resetTimeout" as const),
  maxOpenDuration: maybe(durationArb, 4),
  halfOpen: halfOpenArb,
  mode: modeArb
}).map(({ policy, ...rest }) => ({ ...rest, ...policy }))
const peerOptionsArb: fc.Arbitrary<GenPeerOptions> = fc.record({
  policy: maybe(policyArb.map((policy) => ({ ...policy, policyForm: "policy" as const })), 1),
  openDuration: maybe(
    fc.record({
      openDuration: openDurationArb,
      fixedAs: fc.constantFrom("openDuration" as const, "resetTimeout" as const)
    }),
    1
  ),
  maxOpenDuration: maybe(durationArb, 4),
  halfOpen: halfOpenArb,
  mode: modeArb
})

/** Mostly one peer, so that its circuit goes through every state; the others check independence. */
const peerArb = fc.oneof(
  { weight: 5, arbitrary: fc.constant(peers[0]) },
  { weight: 2, arbitrary: fc.constant(peers[1]) },
  { weight: 1, arbitrary: fc.constant(peers[2]) }
)
/** Endings: plain successes and counted failures more often than the others. */
const endingArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant<Ending>("succeed") },
  { weight: 3, arbitrary: fc.constant<Ending>("failCounted") },
  { weight: 1, arbitrary: fc.constant<Ending>("failRejected") },
  { weight: 2, arbitrary: fc.constantFrom(...endings) }
)
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.tuple(fc.constantFrom(...namedSteps), fc.constantFrom("", "-1", "+1")).map(([name, delta]) =>
      `${name}${delta}` as Step
    )
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 6000 }) }
)

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 16, arbitrary: fc.record({ _tag: fc.constant("Advance" as const), by: stepArb }) },
  {
    weight: 20,
    arbitrary: fc.record({
      _tag: fc.constant("Call" as const),
      peer: peerArb,
      ending: endingArb,
      took: fc.oneof({ weight: 2, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: stepArb })
    })
  },
  { weight: 8, arbitrary: fc.record({ _tag: fc.constant("Start" as const), peer: peerArb }) },
  {
    weight: 8,
    arbitrary: fc.record({
      _tag: fc.constant("Finish" as const),
      pick: fc.nat({ max: 7 }),
      ending: fc.oneof(endingArb, fc.constant("interruptFromOutside" as const))
    })
  },
  {
    weight: 4,
    arbitrary: fc.record({
      _tag: fc.constant("Batch" as const),
      calls: fc.array(fc.record({ peer: peerArb, ending: endingArb }), { minLength: 2, maxLength: 6 }),
      together: fc.boolean()
    })
  },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Read" as const), peer: peerArb }) },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Reset" as const), peer: peerArb }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Isolate" as const), peer: peerArb }) },
  { weight: 3, arbitrary: fc.record({ _tag: fc.constant("Release" as const), pick: fc.nat({ max: 3 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({ _tag: fc.constant("StepWallBack" as const), by: fc.integer({ min: 1, max: 3_600_000 }) })
  }
)

/** Every peer's options in a scenario. */
const optionsIn = (scenario: Scenario): ReadonlyArray<GenOptions> =>
  scenario.peer === undefined ? [scenario.options] : [scenario.options, merge(scenario.options, scenario.peer.options)]

const generatedArb: fc.Arbitrary<Scenario> = fc.record({
  options: optionsArb,
  peer: maybe(fc.record({ peer: fc.constantFrom(peers[1], peers[2]), options: peerOptionsArb }), 4),
  idleTimeToLive: durationArb,
  commands: fc.array(commandArb, { maxLength: 60, size: "max" })
})
const scenarioArb: fc.Arbitrary<Scenario> = generatedArb.filter((scenario) => optionsIn(scenario).every(isValid))

// --- the wrapped effects ------------------------------------------------------------------------------------

/** The typed error of the wrapped effects; `isFailure` counts it when `counted` is true. */
interface PeerError {
  readonly counted: boolean
}
const counted: PeerError = { counted: true }
const rejected: PeerError = { counted: false }
const isFailure = (error: unknown): boolean => (error as PeerError).counted === true

const effectOf = (ending: Ending): Effect.Effect<string, PeerError> => {
  switch (ending) {
    case "succeed":
      return Effect.succeed("ok")
    case "failCounted":
      return Effect.fail(counted)
    case "failRejected":
      return Effect.fail(rejected)
    case "die":
      return Effect.die("boom")
    case "interruptSelf":
      return Effect.interrupt
    case "failRejectedAndInterrupt":
      return Effect.failCause(Cause.fromReasons([Cause.makeFailReason(rejected), Cause.makeInterruptReason()]))
    case "failCountedAndRejected":
      return Effect.failCause(Cause.fromReasons([Cause.makeFailReason(counted), Cause.makeFailReason(rejected)]))
    case "failRejectedAndCounted":
      return Effect.failCause(Cause.fromReasons([Cause.makeFailReason(rejected), Cause.makeFailReason(counted)]))
    case "dieAndFailRejected":
      return Effect.failCause(Cause.fromReasons([Cause.makeDieReason("boom"), Cause.makeFailReason(rejected)]))
    case "failRejectedAndDie":
      return Effect.failCause(Cause.fromReasons([Cause.makeFailReason(rejected), Cause.makeDieReason("boom")]))
  }
}

/** What the breaker must make of an ending: the rules of "what counts" in `../CircuitBreakerSet.test.ts`. */
const verdictOf = (ending: Ending | "interruptFromOutside"): Model.Verdict => {
  switch (ending) {
    case "succeed":
    case "failRejected":
    case "failRejectedAndInterrupt":
      return "success"
    case "failCounted":
    case "die":
    case "failCountedAndRejected":
    case "failRejectedAndCounted":
    case "dieAndFailRejected":
    case "failRejectedAndDie":
      return "failure"
    case "interruptSelf":
    case "interruptFromOutside":
      return "neither"
  }
}

const isCircuitOpenError = (error: unknown): error is {
  readonly peer: string
  readonly state: string
  readonly retryAfter: Duration.Duration
} => error instanceof Error && error.name === "CircuitOpenError"

/** A rejection as comparable text. */
const showRejection = (peer: string, state: string, retryAfter: number): string =>
  `CircuitOpenError ${JSON.stringify({ peer, state, retryAfter })}`

/** An exit as comparable text; interruptions without their fiber ids. */
const showExit = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return `success(${String(exit.value)})`
  const reasons = exit.cause.reasons.map((reason) => {
    if (Cause.isFailReason(reason)) {
      const error = reason.error
      if (error === counted) return "fail(counted)"
      if (error === rejected) return "fail(rejected)"
      if (isCircuitOpenError(error)) {
        return `fail(${showRejection(error.peer, error.state, Duration.toMillis(error.retryAfter))})`
      }
      return `fail(${String(error)})`
    }
    if (Cause.isDieReason(reason)) return `die(${String(reason.defect)})`
    return "interrupt"
  })
  return `failure(${reasons.sort().join(", ")})`
}

/** The exit a caller must see when the call ran and ended with `ending`. */
const expectedExit = (ending: Ending | "interruptFromOutside"): string => {
  switch (ending) {
    case "succeed":
      return "success(ok)"
    case "failCounted":
      return "failure(fail(counted))"
    case "failRejected":
      return "failure(fail(rejected))"
    case "die":
      return "failure(die(boom))"
    case "interruptSelf":
    case "interruptFromOutside":
      return "failure(interrupt)"
    case "failRejectedAndInterrupt":
      return "failure(fail(rejected), interrupt)"
    case "failCountedAndRejected":
    case "failRejectedAndCounted":
      return "failure(fail(counted), fail(rejected))"
    case "dieAndFailRejected":
    case "failRejectedAndDie":
      return "failure(die(boom), fail(rejected))"
  }
}

/** An object as JSON with its keys sorted, so that key order does not matter. */
const canonical = (value: object): string => JSON.stringify(value, Object.keys(value).sort())

/** The state view as comparable text, durations in milliseconds. */
const showState = (state: CircuitState.CircuitState): string =>
  canonical(state._tag === "Closed" ? state : { ...state, retryAfter: Duration.toMillis(state.retryAfter) })

/** Changes as comparable text: each peer's in order (the order between peers is not specified). */
const showChanges = (changes: ReadonlyArray<Model.Change | CircuitStateChange.CircuitStateChange>): string =>
  peers.map((peer) =>
    `${JSON.stringify(peer)}: [${
      changes.filter((change) => change.peer === peer).map((change) => canonical({ ...change, peer: undefined })).join(
        ", "
      )
    }]`
  ).join("; ")

// --- running a scenario -------------------------------------------------------------------------------------

/** A call started by `Start`, running (admitted, or run in observe mode). */
interface InFlight {
  readonly id: number
  readonly peer: Peer
  readonly release: Deferred.Deferred<Ending>
  /** The caller's fiber. */
  readonly fiber: Fiber.Fiber<string, unknown>
  /** A probe whose caller was interrupted: the probe runs on, and nobody waits for its result. */
  readonly detached: boolean
  /** The exit its caller got when its lease ended (once it has). */
  leaseExit: string | undefined
}

/** A call forked in its own fiber; `started` tells whether the wrapped effect began (the call was admitted). */
interface Forked {
  readonly fiber: Fiber.Fiber<string, unknown>
  readonly started: () => boolean
}

class Mismatch extends Error {}

const maxCandidates = 1024

const runScenario = (scenario: Scenario) =>
  Effect.gen(function*() {
    const set = yield* CircuitBreakerSet
    const clock = yield* Clock.Clock
    const monotonicAtStart = Number(clock.monotonicTimeNanosUnsafe()) / 1e6
    const peerEntry = scenario.peer
    let models: ReadonlyArray<Model.Model> = [Model.make({
      options: modelOptions(scenario.options),
      peers: new Map(
        peerEntry === undefined ? [] : [[peerEntry.peer, modelOptions(merge(scenario.options, peerEntry.options))]]
      ),
      idleTimeToLive: scenario.idleTimeToLive,
      wallAtZero: clock.currentTimeMillisUnsafe(),
      monotonicAtZero: monotonicAtStart
    })]
    /** The first candidate: the one the test asks about what it cannot observe (they agree on it). */
    const model = (): Model.Model => models[0]!
    let now = 0
    let nextId = 1
    const inFlight: Array<InFlight> = []
    const isolations: Array<{ readonly peer: Peer; readonly scope: Scope.Closeable }> = []
    const trace: Array<string> = []
    const observed: Array<CircuitStateChange.CircuitStateChange> = []
    yield* Effect.forkChild(
      Stream.runForEach(set.changes, (change) => Effect.sync(() => observed.push(change))),
      { startImmediately: true }
    )

    const fail = (message: string): never => {
      throw new Mismatch(`${message}\ntrace (t = ms since start):\n${trace.join("\n")}`)
    }
    const dedupe = (candidates: ReadonlyArray<Model.Model>): ReadonlyArray<Model.Model> => {
      const byKey = new Map<string, Model.Model>()
      for (const candidate of candidates) {
        const key = Model.keyOf(candidate)
        if (!byKey.has(key)) byKey.set(key, candidate)
      }
      if (byKey.size > maxCandidates) fail(`more than ${maxCandidates} candidate models`)
      return [...byKey.values()]
    }
    const update = (f: (model: Model.Model) => Model.Model): void => {
      models = models.length === 1 ? [f(models[0]!)] : dedupe(models.map(f))
    }
    /** Keeps the candidates that expect what was observed; fails if none does. */
    const expect = (what: string, expected: (model: Model.Model) => string, actual: string): void => {
      const kept = models.filter((candidate) => expected(candidate) === actual)
      if (kept.length === 0) fail(`${what}: expected ${expected(model())}, got ${actual}`)
      if (kept.length < models.length) note("candidates told apart")
      models = kept
    }
    const isObserving = (peer: Peer): boolean => Model.optionsOf(model(), peer).observe

    /** Forks `peer`'s call of `body`; it starts when the scheduler runs it, or at once with `startImmediately`. */
    const fork = (peer: Peer, body: Effect.Effect<string, PeerError>, startImmediately: boolean) =>
      Effect.gen(function*() {
        let started = false
        const fiber = yield* Effect.forkChild(
          set.withBreaker(peer)(Effect.suspend(() => {
            started = true
            return body
          })),
          { startImmediately }
        )
        return { fiber, started: () => started } satisfies Forked
      })
    const settleDown = (calls: ReadonlyArray<Forked>) =>
      Effect.gen(function*() {
        for (let i = 0; i < 100 && calls.some((call) => !call.started() && !call.fiber.pollUnsafe()); i++) {
          yield* Effect.yieldNow
        }
      })

    /** What the model says of the admission of call `id`: it runs, or the rejection its caller gets. */
    const expectedAdmission = (candidate: Model.Model, id: number, peer: Peer): string => {
      const admission = Model.admissionOf(candidate, id)!
      return admission._tag === "Rejected" && !Model.optionsOf(candidate, peer).observe
        ? showRejection(peer, admission.by, admission.retryAfter)
        : "runs"
    }
    /** Compares the admission of a call that has had the chance to start: it runs iff the wrapped effect began. */
    const checkAdmission = (what: string, id: number, peer: Peer, call: Forked): void => {
      const exit = call.fiber.pollUnsafe()
      let actual: string
      if (call.started()) actual = "runs"
      else if (exit === undefined) actual = "pending"
      else {
        const error = Exit.isFailure(exit) && exit.cause.reasons.length === 1 &&
            Cause.isFailReason(exit.cause.reasons[0]!)
          ? exit.cause.reasons[0].error
          : undefined
        actual = isCircuitOpenError(error)
          ? showRejection(error.peer, error.state, Duration.toMillis(error.retryAfter))
          : showExit(exit)
      }
      expect(what, (candidate) => expectedAdmission(candidate, id, peer), actual)
      if (stats === undefined) return
      const admission = Model.admissionOf(model(), id)!
      if (admission._tag === "Rejected") {
        note(isObserving(peer) ? `observe: would reject (${admission.by}), runs` : `rejected (${admission.by})`)
      } else note(`admitted (${admission._tag})`)
      const after = Model.view(model(), peer, now)
      if (admission._tag === "Probe" && after._tag === "HalfOpen" && after.probesInFlight > 1) {
        note("probe admitted beside another")
      }
    }
    /**
     * The exit of the caller of call `id` when its probe's lease ended at `end`: the circuit's rejection at that
     * instant (in observe mode the caller waits for the call instead).
     */
    const leaseEndedExit = (candidate: Model.Model, peer: Peer, end: number): string =>
      `failure(fail(${showRejection(peer, "Open", Model.retryAfter(candidate, peer, end))}))`
    /** Whether call `id` is a probe whose caller was failed at its lease's end, by `to`. */
    const leaseEndsBy = (candidate: Model.Model, id: number, peer: Peer, to: number): number | undefined => {
      const end = Model.leaseEndOf(candidate, id)
      return end !== undefined && end <= to && !Model.optionsOf(candidate, peer).observe &&
          Model.leaseReopened(candidate, peer, end)
        ? end
        : undefined
    }
    /**
     * Checks the callers of the probes in flight whose lease ended by `to` (since the last check): failed then, with
     * the rejection of that instant. The others still wait.
     */
    const checkLeaseEnds = (what: string, to: number): void => {
      for (const call of inFlight) {
        if (call.detached || call.leaseExit !== undefined) continue
        const exit = call.fiber.pollUnsafe()
        const actual = exit ? showExit(exit) : "pending"
        expect(`${what}: exit of the caller of call ${call.id}`, (candidate) => {
          const end = leaseEndsBy(candidate, call.id, call.peer, to)
          return end === undefined ? "pending" : leaseEndedExit(candidate, call.peer, end)
        }, actual)
        if (exit !== undefined) {
          call.leaseExit = actual
          note("probe's caller failed at its lease's end")
        }
      }
    }

    const checkStates = (what: string) =>
      Effect.gen(function*() {
        for (const peer of peers) {
          const actual = showState(yield* set.state(peer))
          expect(
            `${what}: state(${JSON.stringify(peer)})`,
            (candidate) => canonical(Model.view(candidate, peer, now)),
            actual
          )
        }
      })
    const checkChanges = (what: string) =>
      Effect.gen(function*() {
        const expected = model().changes.length
        for (let i = 0; i < 20 && observed.length < expected; i++) yield* Effect.yieldNow
        for (let i = 0; i < 2; i++) yield* Effect.yieldNow
        const actual = showChanges(observed.splice(0))
        expect(`${what}: changes`, (candidate) => showChanges(candidate.changes), actual)
        for (const change of model().changes) {
          if (
            change.reason === "probe-succeeded" && Model.optionsOf(model(), change.peer as Peer).successThreshold > 1
          ) {
            note("closed by several probe successes")
          }
          note(`change ${change.from} -> ${change.to} (${change.reason})${change.opening > 1 ? " opening > 1" : ""}`)
        }
        update((candidate) => Model.takeChanges(candidate)[1])
      })

    const stepMillis = (step: Step): number => {
      if (typeof step === "number") return step
      const match = /^([a-zA-Z]+)([+-]1)?$/.exec(step)!
      const options = Model.optionsOf(model(), "a")
      const members = Model.membersOf(options.policy)
      let base = 0
      switch (match[1] as typeof namedSteps[number]) {
        case "window": {
          for (const member of members) {
            if (member._tag === "Window") base = member.window
            else if (member._tag !== "Consecutive" && member.window._tag === "Time") base = member.window.millis
            else continue
            break
          }
          break
        }
        case "bucketEdge": {
          for (const member of members) {
            if (member._tag !== "Rate" && member._tag !== "SlowCalls") continue
            if (member.window._tag !== "Time") continue
            const { buckets, millis } = member.window
            const t = monotonicAtStart + now
            base = Math.ceil((Math.floor(t * buckets / millis) + 1) * millis / buckets) - t
            break
          }
          break
        }
        case "openDuration":
          base = Model.openingMillis(options, 1)
          break
        case "retryAfter": {
          const retryAfter = Model.retryAfter(model(), "a", now)
          base = Number.isFinite(retryAfter) ? retryAfter : 0
          break
        }
        case "lease": {
          const ends = inFlight.map((call) => Model.leaseEndOf(model(), call.id) ?? -Infinity).filter((end) =>
            end > now
          )
          base = ends.length === 0 ? 0 : Math.min(...ends) - now
          break
        }
        case "probeLease": {
          const admission = Model.admissionOf(Model.admit(model(), "a", -1, now), -1)!
          base = admission._tag === "Probe" ? admission.leaseEnd - now : 0
          break
        }
        case "slow":
          base = members.find((member) => member._tag === "SlowCalls")?.duration ?? 0
          break
        case "backoff": {
          const end = Model.backoffEnd(model(), "a", now)
          base = end === undefined ? 0 : end - now
          break
        }
        case "idleTimeToLive":
          base = scenario.idleTimeToLive
          break
      }
      return Math.max(0, base + Number(match[2] ?? 0))
    }

    /** Moves both clocks on by `millis`; probes whose lease ends meanwhile are interrupted then. */
    const advance = (what: string, millis: number) =>
      Effect.gen(function*() {
        if (millis > 0) yield* TestClock.adjust(millis)
        now += millis
        const elapsed = Number(clock.monotonicTimeNanosUnsafe()) / 1e6 - monotonicAtStart
        if (elapsed !== now) fail(`${what}: monotonic clock: expected ${now}, got ${elapsed}`)
        checkLeaseEnds(what, now)
      })

    for (const [index, command] of scenario.commands.entries()) {
      const what = `command #${index} ${JSON.stringify(command)} at t=${now}`
      trace.push(`#${index} t=${now} ${JSON.stringify(command)}`)
      // The set may have dropped idle breakers since the last command.
      const before = models.length
      models = dedupe(models.flatMap((candidate) => Model.evictions(candidate, now)))
      if (models.length > before) note("a drop would forget a count window's successes")
      switch (command._tag) {
        case "Advance": {
          yield* advance(what, stepMillis(command.by))
          update((candidate) => Model.materialize(candidate, now))
          break
        }
        case "Read":
          break
        case "Call": {
          const id = nextId++
          const { peer } = command
          let took = stepMillis(command.took)
          update((candidate) => Model.admit(candidate, peer, id, now))
          const body = took > 0
            ? Effect.andThen(Effect.sleep(took), effectOf(command.ending))
            : effectOf(command.ending)
          const call = yield* fork(peer, body, true)
          if (took > 0) {
            // The call (a probe in a fiber of its own) starts, and sleeps, before the clock moves.
            yield* settleDown([call])
            checkAdmission(what, id, peer, call)
            yield* advance(what, took)
          }
          const exit = yield* Fiber.await(call.fiber)
          if (took === 0) checkAdmission(what, id, peer, call)
          expect(`${what}: exit`, (candidate) => {
            const admission = Model.admissionOf(candidate, id)!
            if (admission._tag === "Rejected" && !Model.optionsOf(candidate, peer).observe) {
              return `failure(fail(${showRejection(peer, admission.by, admission.retryAfter)}))`
            }
            const end = leaseEndsBy(candidate, id, peer, now)
            return end === undefined ? expectedExit(command.ending) : leaseEndedExit(candidate, peer, end)
          }, showExit(exit))
          if (took > 0) note(`call that took some time: ${Model.admissionOf(model(), id)!._tag}`)
          if (leaseEndsBy(model(), id, peer, now) !== undefined) note("probe's own call outlived its lease")
          update((candidate) => Model.settle(candidate, id, verdictOf(command.ending), now))
          break
        }
        case "Start": {
          const id = nextId++
          const { peer } = command
          update((candidate) => Model.admit(candidate, peer, id, now))
          const release = yield* Deferred.make<Ending>()
          const call = yield* fork(peer, Effect.flatMap(Deferred.await(release), effectOf), true)
          // A probe starts in a fiber of its own, which the scheduler runs.
          yield* settleDown([call])
          checkAdmission(what, id, peer, call)
          if (call.started()) {
            inFlight.push({ id, peer, release, fiber: call.fiber, detached: false, leaseExit: undefined })
          }
          break
        }
        case "Finish": {
          if (inFlight.length === 0) break
          const index = command.pick % inFlight.length
          const [call] = inFlight.splice(index, 1)
          const { id, peer } = call!
          const admission = Model.admissionOf(model(), id)!
          trace.push(
            `   finishes the ${call!.detached ? "detached " : ""}call ${id} on ${JSON.stringify(peer)} admitted as ${
              JSON.stringify(admission)
            }`
          )
          if (command.ending === "interruptFromOutside") {
            yield* Fiber.interrupt(call!.fiber)
            if (admission._tag === "Probe") {
              // The caller is released at once; the probe runs on, detached, and decides when it ends. The model does
              // not change.
              if (!call!.detached) {
                note(call!.leaseExit !== undefined ? "caller of a timed-out probe interrupted" : "probe detached")
                const exit = yield* Fiber.await(call!.fiber)
                const actual = showExit(exit)
                if (actual !== (call!.leaseExit ?? "failure(interrupt)")) {
                  fail(`${what}: exit: expected ${call!.leaseExit ?? "failure(interrupt)"}, got ${actual}`)
                }
              }
              inFlight.splice(index, 0, { ...call!, detached: true })
              break
            }
            const exit = yield* Fiber.await(call!.fiber)
            if (showExit(exit) !== "failure(interrupt)") {
              fail(`${what}: exit: expected failure(interrupt), got ${showExit(exit)}`)
            }
            update((candidate) => Model.settle(candidate, id, "neither", now))
            break
          }
          // Ended through its latch. After its lease, the probe has been interrupted already: this does nothing.
          yield* Deferred.succeed(call!.release, command.ending)
          if (call!.detached) {
            // Nobody waits for a detached probe: let its fibers run to the end.
            for (let i = 0; i < 10; i++) yield* Effect.yieldNow
            note(`detached probe ended: ${verdictOf(command.ending)}`)
          } else {
            const exit = yield* Fiber.await(call!.fiber)
            const expected = call!.leaseExit ?? expectedExit(command.ending)
            if (showExit(exit) !== expected) fail(`${what}: exit: expected ${expected}, got ${showExit(exit)}`)
          }
          update((candidate) => Model.settle(candidate, id, verdictOf(command.ending), now))
          break
        }
        case "Batch": {
          // Every call is forked first and started by the scheduler in order; the admitted ones wait on a latch, so
          // all admissions happen before any call ends. Then they end in order (one latch each, each awaited before
          // the next), or together (one latch), and the model records them in order.
          const together = yield* Deferred.make<void>()
          const latches: Array<Deferred.Deferred<void>> = []
          const calls: Array<Forked> = []
          const ids: Array<number> = []
          for (const { ending, peer } of command.calls) {
            const latch = command.together ? together : yield* Deferred.make<void>()
            latches.push(latch)
            ids.push(nextId++)
            calls.push(yield* fork(peer, Effect.andThen(Deferred.await(latch), effectOf(ending)), false))
          }
          yield* settleDown(calls)
          for (const [i, { peer }] of command.calls.entries()) {
            update((candidate) => Model.admit(candidate, peer, ids[i]!, now))
            checkAdmission(`${what}: call ${i}`, ids[i]!, peer, calls[i]!)
          }
          if (command.together) yield* Deferred.succeed(together, undefined)
          for (const [i, { ending, peer }] of command.calls.entries()) {
            if (!command.together) yield* Deferred.succeed(latches[i]!, undefined)
            const exit = yield* Fiber.await(calls[i]!.fiber)
            expect(`${what}: call ${i} exit`, (candidate) => {
              const admission = Model.admissionOf(candidate, ids[i]!)!
              return admission._tag === "Rejected" && !Model.optionsOf(candidate, peer).observe
                ? `failure(fail(${showRejection(peer, admission.by, admission.retryAfter)}))`
                : expectedExit(ending)
            }, showExit(exit))
            update((candidate) => Model.settle(candidate, ids[i]!, verdictOf(ending), now))
          }
          break
        }
        case "Reset": {
          yield* set.reset(command.peer)
          update((candidate) => Model.reset(candidate, command.peer, now))
          break
        }
        case "Isolate": {
          const scope = yield* Scope.make()
          yield* Scope.provide(scope)(set.isolate(command.peer))
          isolations.push({ peer: command.peer, scope })
          update((candidate) => Model.isolate(candidate, command.peer, now))
          break
        }
        case "Release": {
          if (isolations.length === 0) break
          const [isolation] = isolations.splice(command.pick % isolations.length, 1)
          trace.push(`   releases an isolation of ${JSON.stringify(isolation!.peer)}`)
          yield* Scope.close(isolation!.scope, Exit.void)
          update((candidate) => Model.release(candidate, isolation!.peer, now))
          break
        }
        case "StepWallBack": {
          // The test clock times its sleeps on the wall clock: a step back would delay the timers of the leases
          // already running (a real timer would not move). So only while none is pending.
          if (Model.probesRunning(model(), now)) {
            trace.push("   skipped: a probe's lease is pending")
            break
          }
          yield* TestClock.setTime(clock.currentTimeMillisUnsafe() - command.by)
          update((candidate) => Model.stepWall(candidate, -command.by))
          note("wall clock stepped back")
          break
        }
      }
      yield* checkChanges(what)
      yield* checkStates(what)
      if (models.length > 1) note(`${models.length} candidate models after a command`)
    }
  })

const runOnce = async (scenario: Scenario): Promise<void> => {
  const options: SetOptions = {
    ...breakerOptions(scenario.options),
    idleTimeToLive: scenario.idleTimeToLive,
    isFailure,
    ...(scenario.peer === undefined
      ? {}
      : { peers: Object.fromEntries([[scenario.peer.peer, peerOptions(scenario.peer.options)]]) })
  }
  const layer = Layer.merge(CircuitBreakerSet.layer(options), TestClock.layer())
  const exit = await Effect.runPromiseExit(
    runScenario(scenario).pipe(
      Effect.scoped,
      Effect.provide(layer),
      Effect.provideService(References.MinimumLogLevel, "None")
    )
  )
  if (Exit.isFailure(exit)) {
    const mismatch = exit.cause.reasons.find(Cause.isDieReason)?.defect
    throw mismatch instanceof Mismatch ? mismatch : new Error(Cause.pretty(exit.cause))
  }
}

describe("CircuitBreakerSet against the reference model", () => {
  it(
    `agrees on ${numRuns} random option sets and command sequences (seed ${seed})`,
    async () => {
      await fc.assert(fc.asyncProperty(scenarioArb, runOnce), {
        numRuns,
        seed,
        ...(path === undefined ? {} : { path }),
        endOnFailure: false
      })
      if (stats !== undefined) {
        console.log([...stats].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}: ${v}`).join("\n"))
      }
    },
    Math.max(60_000, numRuns * 20)
  )
})
