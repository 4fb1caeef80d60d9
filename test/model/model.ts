/**
 * A reference model of the breaker's specified behaviour, for the model-based tests. It follows the specification
 * (issue 10, and `policies.md` §3–§4 where the issue does not change it) and the rules the `describe` blocks of
 * `../CircuitBreakerSet.test.ts` and `../CircuitBreakerSet.recovery.test.ts` check one by one: the trip policies
 * (window, consecutive, a failure rate over a time or a count window, slow calls, any of them), the open durations
 * (fixed, or a backoff by opening number), half-open with several probes and their leases, observe mode, reset and
 * isolation, and what counts.
 *
 * It is written from those rules, not from `src/internal`, and is meant to be obviously correct rather than fast:
 * - A closed circuit keeps the outcomes recorded in its closed period (time, failure or not, how long the call took)
 *   in a plain list, and every policy is evaluated on that list when asked: a time window filters it by time (or by
 *   bucket number, ⌊t · buckets / window⌋ in exact arithmetic), a count window takes its last entries, a streak counts
 *   the failures at its end. Outcomes no policy can look at any more are dropped from the list (`stillSeen`), only so
 *   that candidates that cannot be told apart compare equal.
 * - A closed circuit shows each figure (`failures`, `calls`, `slowCalls`) from the first member of its policy, in
 *   declaration order, that keeps it (the specification says which figures a policy holds, not which member of an
 *   `any` shows them).
 * - Each admitted call is known by the id the test gives it, with what it was admitted as (a call of one closed
 *   period, or a probe); its result is applied only while that is still what the circuit is.
 * - Nothing happens at an instant by itself: a probe still running when its lease ends has failed, and `circuitAt`
 *   works out from the time that the circuit reopened then. Every function looks at the circuit through it, and
 *   every function that changes the model first writes such reopenings down (`materialize`), with their changes.
 *
 * The model is deterministic but for one documented liberty of the real set: a set may drop a breaker that has been
 * idle for `idleTimeToLive`, and a dropped breaker forgets the successes a count window holds. `evictions` gives
 * every model the set may be in after such drops; the test keeps every candidate that agrees with what it observes.
 *
 * Times are milliseconds since the start of the run (the test clock's monotonic time). Everything is pure: every
 * function returns a new model.
 */

// --- options -------------------------------------------------------------------------------------------------

/** A time window cut into `buckets`, or a count window of the last `calls` calls; durations in milliseconds. */
export type RateWindow =
  | { readonly _tag: "Time"; readonly millis: number; readonly buckets: number }
  | { readonly _tag: "Count"; readonly calls: number }

/** A trip policy, durations in milliseconds. An `Any` has been flattened: none of its members is an `Any`. */
export type Policy =
  | { readonly _tag: "Window"; readonly maxFailures: number; readonly window: number }
  | { readonly _tag: "Consecutive"; readonly failures: number }
  | {
    readonly _tag: "Rate"
    readonly threshold: number
    readonly minimumCalls: number
    readonly window: RateWindow
  }
  | {
    readonly _tag: "SlowCalls"
    readonly duration: number
    readonly threshold: number
    readonly minimumCalls: number
    readonly window: RateWindow
  }
  | { readonly _tag: "Any"; readonly members: ReadonlyArray<Policy> }

/** A policy other than `Any`. */
export type Member = Exclude<Policy, { readonly _tag: "Any" }>

/**
 * How long the n-th opening lasts, before the cap, in milliseconds:
 * - `Fixed`: always `millis`;
 * - `Exponential`: `OpenDuration.exponential({ base, max, factor, jitter: false })`: base · factor^(n−1), at most max;
 * - `ExponentialUpTo`: `Schedule.exponential(base, factor).pipe(Schedule.upTo({ times }))`: the schedule ends after
 *   `times` delays, and its last delay repeats;
 * - `Fibonacci`: `Schedule.fibonacci(one)`: one, one, 2·one, 3·one, 5·one, …;
 * - `Spaced`: `Schedule.spaced(millis)`: always `millis`, as a schedule.
 */
export type OpenDuration =
  | { readonly _tag: "Fixed"; readonly millis: number }
  | { readonly _tag: "Exponential"; readonly base: number; readonly max: number; readonly factor: number }
  | { readonly _tag: "ExponentialUpTo"; readonly base: number; readonly factor: number; readonly times: number }
  | { readonly _tag: "Fibonacci"; readonly one: number }
  | { readonly _tag: "Spaced"; readonly millis: number }

/** One breaker's options, with every default filled in, durations in milliseconds. */
export interface Options {
  readonly policy: Policy
  readonly openDuration: OpenDuration
  /** `undefined`: 1 hour, or a fixed open duration if that is longer. */
  readonly maxOpenDuration: number | undefined
  readonly probes: number
  readonly successThreshold: number
  /** `undefined`: the duration of the opening that preceded the half-open period. */
  readonly probeTimeout: number | undefined
  /** Observe mode: calls the circuit would reject run, and their results decide nothing. */
  readonly observe: boolean
}

export interface Config {
  /** The options of every peer without options of its own. */
  readonly options: Options
  /** The options of the peers that have their own (already merged over the set's). */
  readonly peers: ReadonlyMap<string, Options>
  readonly idleTimeToLive: number
  /** Wall-clock milliseconds at time 0. */
  readonly wallAtZero: number
  /** Monotonic milliseconds at time 0: time buckets are aligned on the monotonic clock, not on the run's start. */
  readonly monotonicAtZero: number
}

const hour = 3_600_000

/** The members of a policy, in declaration order. */
export const membersOf = (policy: Policy): ReadonlyArray<Member> =>
  policy._tag === "Any" ? policy.members.flatMap(membersOf) : [policy]

/** The duration of the n-th opening (n ≥ 1), capped at `maxOpenDuration`. */
export const openingMillis = (options: Options, n: number): number => {
  const spec = options.openDuration
  let raw: number
  switch (spec._tag) {
    case "Fixed":
    case "Spaced":
      raw = spec.millis
      break
    case "Exponential":
      raw = Math.min(spec.base * spec.factor ** (n - 1), spec.max)
      break
    case "ExponentialUpTo":
      raw = spec.base * spec.factor ** (Math.min(n, spec.times) - 1)
      break
    case "Fibonacci": {
      let [a, b] = [spec.one, spec.one]
      for (let i = 1; i < n; i++) [a, b] = [b, a + b]
      raw = a
      break
    }
  }
  const cap = options.maxOpenDuration ?? (spec._tag === "Fixed" ? Math.max(spec.millis, hour) : hour)
  return Math.min(raw, cap)
}

// --- the model -----------------------------------------------------------------------------------------------

/** How a call ended, as the breaker must see it (after `isFailure` has been applied). */
export type Verdict = "success" | "failure" | "neither"

/** Why a circuit opened. */
export type Reason = "window" | "consecutive" | "rate" | "slow-calls" | "probe-failed" | "probe-timeout"

/** A success or a counted failure recorded while closed: when it ended, and how long it ran from its admission. */
interface Outcome {
  readonly at: number
  readonly failure: boolean
  readonly duration: number
}

/** What a circuit closed by its probes remembers of its last opening. */
interface Backoff {
  readonly opening: number
  readonly closedAt: number
  readonly lastOpening: number
}

interface Probe {
  readonly id: number
  readonly startedAt: number
}

/** One peer's circuit. */
type Circuit =
  | {
    readonly _tag: "Closed"
    /** Identifies this closed period: a call admitted in another one decides nothing. */
    readonly period: number
    /** Every outcome recorded in this closed period, in the order recorded. */
    readonly outcomes: ReadonlyArray<Outcome>
    readonly backoff: Backoff | undefined
  }
  | {
    /** Open or half-open: which one is a matter of time, decided when asked. */
    readonly _tag: "Tripped"
    readonly openedAt: number
    readonly openedAtWall: number
    readonly opening: number
    readonly reason: Reason
    /** How long this opening lasts. */
    readonly duration: number
    /** Whether a probe has been admitted since it opened (the change to HalfOpen has been published). */
    readonly halfOpened: boolean
    /** The probes running, oldest first (a lease that has ended is seen to by `circuitAt`). */
    readonly probes: ReadonlyArray<Probe>
    readonly successes: number
  }
  | { readonly _tag: "Isolated"; readonly isolations: number; readonly openedAtWall: number }

/** What an admitted call was admitted as, or why it was not. */
export type Admission =
  | { readonly _tag: "Closed" }
  | { readonly _tag: "Probe"; readonly leaseEnd: number }
  | { readonly _tag: "Rejected"; readonly retryAfter: number; readonly by: "Open" | "HalfOpen" | "Isolated" }

/** A call admitted and not yet settled. */
type Admitted =
  | { readonly _tag: "Closed"; readonly peer: string; readonly period: number; readonly startedAt: number }
  | { readonly _tag: "Probe"; readonly peer: string; readonly startedAt: number }

/** A record of the `changes` stream. */
export interface Change {
  readonly peer: string
  readonly from: "Closed" | "Open" | "HalfOpen"
  readonly to: "Closed" | "Open" | "HalfOpen"
  readonly at: number
  readonly reason: string
  readonly opening: number
}

/** The public state view (`CircuitState`), with durations in milliseconds and times in wall milliseconds. */
export type View =
  | { readonly _tag: "Closed"; readonly failures: number; readonly calls?: number; readonly slowCalls?: number }
  | {
    readonly _tag: "Open"
    readonly openedAt: number
    readonly probeAt: number
    readonly retryAfter: number
    readonly isolated: boolean
    readonly opening: number
    readonly reason: Reason | "isolated"
  }
  | {
    readonly _tag: "HalfOpen"
    readonly openedAt: number
    readonly probeInFlight: boolean
    readonly probesInFlight: number
    readonly successes: number
    readonly retryAfter: number
    readonly opening: number
    readonly reason: Reason
  }

export interface Model {
  readonly config: Config
  readonly circuits: ReadonlyMap<string, Circuit>
  /** Calls admitted and not settled yet, by id. */
  readonly calls: ReadonlyMap<number, Admitted>
  /** How each call was admitted (or rejected), by id. */
  readonly admissions: ReadonlyMap<number, Admission>
  /** When each peer last had a call (a call looks its breaker up, so a set never drops it sooner than a ttl after). */
  readonly lastCall: ReadonlyMap<string, number>
  /** Added to the wall clock by steps of the wall clock alone (the monotonic clock never steps). */
  readonly wallOffset: number
  /** Source of fresh closed-period ids. */
  readonly nextPeriod: number
  /** The changes published since the test last took them (`takeChanges`). */
  readonly changes: ReadonlyArray<Change>
}

export const make = (config: Config): Model => ({
  config,
  circuits: new Map(),
  calls: new Map(),
  admissions: new Map(),
  lastCall: new Map(),
  wallOffset: 0,
  nextPeriod: 1,
  changes: []
})

/** The options of `peer`'s breaker. */
export const optionsOf = (model: Model, peer: string): Options => model.config.peers.get(peer) ?? model.config.options

const wallAt = (model: Model, now: number): number => model.config.wallAtZero + now + model.wallOffset

const withCircuit = (model: Model, peer: string, circuit: Circuit): Model => {
  const circuits = new Map(model.circuits)
  circuits.set(peer, circuit)
  return { ...model, circuits }
}

const publish = (model: Model, change: Change): Model => ({ ...model, changes: [...model.changes, change] })

/** The tag a circuit's change is published under: a tripped circuit is HalfOpen once a probe has been admitted. */
const tagOf = (circuit: Circuit): Change["from"] =>
  circuit._tag === "Closed" ? "Closed" : circuit._tag === "Tripped" && circuit.halfOpened ? "HalfOpen" : "Open"

/** An unseen peer: closed with nothing recorded, in closed period 0. */
const fresh: Circuit = { _tag: "Closed", period: 0, outcomes: [], backoff: undefined }

/** A probe's lease: `probeTimeout`, or the duration of the opening that preceded the half-open period. */
const leaseMillis = (options: Options, circuit: Circuit & { readonly _tag: "Tripped" }): number =>
  options.probeTimeout ?? circuit.duration

/** When the earliest lease of the probes running ends (`Infinity` with none). */
const earliestLeaseEnd = (options: Options, circuit: Circuit & { readonly _tag: "Tripped" }): number =>
  circuit.probes.length === 0
    ? Infinity
    : Math.min(...circuit.probes.map((probe) => probe.startedAt)) + leaseMillis(options, circuit)

/** A tripped circuit opening at `at` as opening `opening`, for `reason`. */
const opened = (model: Model, peer: string, at: number, opening: number, reason: Reason): Circuit => ({
  _tag: "Tripped",
  openedAt: at,
  openedAtWall: wallAt(model, at),
  opening,
  reason,
  duration: openingMillis(optionsOf(model, peer), opening),
  halfOpened: false,
  probes: [],
  successes: 0
})

/**
 * `peer`'s circuit at `now`, and the instant its probe's lease ended if that is what happened since it was stored:
 * a probe that still holds its slot when its lease ends has failed then, and from that instant the circuit is open
 * again as the next opening, with no probe.
 */
const expired = (model: Model, peer: string, now: number): readonly [Circuit, number | undefined] => {
  const circuit = model.circuits.get(peer) ?? fresh
  if (circuit._tag !== "Tripped") return [circuit, undefined]
  const end = earliestLeaseEnd(optionsOf(model, peer), circuit)
  if (now < end) return [circuit, undefined]
  return [opened(model, peer, end, circuit.opening + 1, "probe-timeout"), end]
}

const circuitAt = (model: Model, peer: string, now: number): Circuit => expired(model, peer, now)[0]

/**
 * Writes down every reopening at the end of a lease up to `now`, with its change, and forgets the outcomes no policy
 * can look at any more (so that two models that can no longer be told apart are equal).
 */
export const materialize = (model: Model, now: number): Model => {
  let next = model
  for (const peer of model.circuits.keys()) {
    const [circuit, end] = expired(next, peer, now)
    if (end === undefined) {
      if (circuit._tag !== "Closed") continue
      const outcomes = stillSeen(next, membersOf(optionsOf(next, peer).policy), circuit.outcomes, now)
      if (outcomes.length < circuit.outcomes.length) next = withCircuit(next, peer, { ...circuit, outcomes })
      continue
    }
    next = publish(withCircuit(next, peer, circuit), {
      peer,
      from: "HalfOpen",
      to: "Open",
      at: wallAt(next, end),
      reason: "probe-timeout",
      opening: (circuit as { readonly opening: number }).opening
    })
  }
  return next
}

// --- policies ------------------------------------------------------------------------------------------------

/** The index of the time bucket an instant falls in: ⌊t / (window / buckets)⌋ on the monotonic clock, exactly. */
const bucketOf = (model: Model, window: { readonly millis: number; readonly buckets: number }, t: number): number =>
  Math.floor((model.config.monotonicAtZero + t) * window.buckets / window.millis)

/**
 * The outcomes a rate's window holds at `now`: those of the last `buckets` buckets (the bucket of `now` and the
 * `buckets − 1` before it), or the last `calls` outcomes.
 */
const inRateWindow = (
  model: Model,
  window: RateWindow,
  outcomes: ReadonlyArray<Outcome>,
  now: number
): ReadonlyArray<Outcome> => {
  if (window._tag === "Count") return outcomes.slice(-window.calls)
  const current = bucketOf(model, window, now)
  return outcomes.filter((outcome) => bucketOf(model, window, outcome.at) > current - window.buckets)
}

/** Counted failures inside a sliding time window at `now`: recorded at t, inside iff now − t < window. */
const failuresInWindow = (outcomes: ReadonlyArray<Outcome>, window: number, now: number): number =>
  outcomes.filter((outcome) => outcome.failure && now - outcome.at < window).length

/** The failures at the end of the list, after its last success. */
const streak = (outcomes: ReadonlyArray<Outcome>): number => {
  let count = 0
  for (let i = outcomes.length - 1; i >= 0 && outcomes[i]!.failure; i--) count++
  return count
}

/** Whether an outcome is bad for a rate member: a counted failure for `rate`, a slow call for `slowCalls`. */
const isBad = (member: Member & { readonly _tag: "Rate" | "SlowCalls" }, outcome: Outcome): boolean =>
  member._tag === "Rate" ? outcome.failure : outcome.duration >= member.duration

/** The calls and bad outcomes a rate member's window holds at `now`. */
const rateCounts = (
  model: Model,
  member: Member & { readonly _tag: "Rate" | "SlowCalls" },
  outcomes: ReadonlyArray<Outcome>,
  now: number
): readonly [number, number] => {
  const held = inRateWindow(model, member.window, outcomes, now)
  return [held.length, held.filter((outcome) => isBad(member, outcome)).length]
}

/**
 * Whether `member` opens the circuit right after recording `last` (the last of `outcomes`) at `now`. A member is
 * evaluated only after an outcome that is bad for it.
 */
const trips = (model: Model, member: Member, outcomes: ReadonlyArray<Outcome>, last: Outcome, now: number): boolean => {
  switch (member._tag) {
    case "Window":
      // The window already held maxFailures failures: with this one, more than maxFailures.
      return last.failure && failuresInWindow(outcomes, member.window, now) > member.maxFailures
    case "Consecutive":
      return last.failure && streak(outcomes) >= member.failures
    case "Rate":
    case "SlowCalls": {
      if (!isBad(member, last)) return false
      const [calls, bad] = rateCounts(model, member, outcomes, now)
      return calls >= member.minimumCalls && bad / calls >= member.threshold
    }
  }
}

const reasonOf = (member: Member): Reason => {
  switch (member._tag) {
    case "Window":
      return "window"
    case "Consecutive":
      return "consecutive"
    case "Rate":
      return "rate"
    case "SlowCalls":
      return "slow-calls"
  }
}

/** What a closed circuit shows: each figure from the first member, in declaration order, that keeps it. */
const figures = (
  model: Model,
  members: ReadonlyArray<Member>,
  outcomes: ReadonlyArray<Outcome>,
  now: number
): { failures: number; calls?: number; slowCalls?: number } => {
  const shown: { failures?: number; calls?: number; slowCalls?: number } = {}
  for (const member of members) {
    switch (member._tag) {
      case "Window":
        shown.failures ??= failuresInWindow(outcomes, member.window, now)
        break
      case "Consecutive":
        shown.failures ??= streak(outcomes)
        break
      case "Rate":
      case "SlowCalls": {
        const [calls, bad] = rateCounts(model, member, outcomes, now)
        if (member._tag === "Rate") shown.failures ??= bad
        else shown.slowCalls ??= bad
        shown.calls ??= calls
      }
    }
  }
  return { ...shown, failures: shown.failures ?? 0 }
}

/**
 * Whether a member holds nothing a caller could tell at `now`: no failure in its window, no streak, no call in its
 * time window, no call in its count window — or, with `forgetsSuccesses`, no bad outcome in its count window (what a
 * set checks before it drops a breaker, which forgets the successes of count windows: documented).
 */
const holdsNothing = (
  model: Model,
  member: Member,
  outcomes: ReadonlyArray<Outcome>,
  now: number,
  forgetsSuccesses: boolean
): boolean => {
  switch (member._tag) {
    case "Window":
      return failuresInWindow(outcomes, member.window, now) === 0
    case "Consecutive":
      return streak(outcomes) === 0
    case "Rate":
    case "SlowCalls": {
      const [calls, bad] = rateCounts(model, member, outcomes, now)
      return forgetsSuccesses && member.window._tag === "Count" ? bad === 0 : calls === 0
    }
  }
}

/**
 * The outcomes some member can still look at, at `now` or later: the failures inside a window, the streak and the
 * success before it, the outcomes of a time window's buckets, the last outcomes of a count window. Forgetting the
 * others changes no figure and no decision, now or later (time only moves on, and new outcomes go at the end).
 */
const stillSeen = (
  model: Model,
  members: ReadonlyArray<Member>,
  outcomes: ReadonlyArray<Outcome>,
  now: number
): ReadonlyArray<Outcome> => {
  const seen = new Set<number>()
  for (const member of members) {
    switch (member._tag) {
      case "Window":
        outcomes.forEach((outcome, i) => {
          if (outcome.failure && now - outcome.at < member.window) seen.add(i)
        })
        break
      case "Consecutive": {
        let i = outcomes.length - 1
        for (; i >= 0 && outcomes[i]!.failure; i--) seen.add(i)
        if (i >= 0) seen.add(i)
        break
      }
      case "Rate":
      case "SlowCalls": {
        const window = member.window
        if (window._tag === "Count") {
          for (let i = Math.max(0, outcomes.length - window.calls); i < outcomes.length; i++) seen.add(i)
        } else {
          const current = bucketOf(model, window, now)
          outcomes.forEach((outcome, i) => {
            if (bucketOf(model, window, outcome.at) > current - window.buckets) seen.add(i)
          })
        }
      }
    }
  }
  return outcomes.filter((_, i) => seen.has(i))
}

/** Whether a closed circuit's backoff is still in force: a trip now would continue it. */
const backoffInForce = (circuit: Circuit & { readonly _tag: "Closed" }, now: number): boolean =>
  circuit.backoff !== undefined && now - circuit.backoff.closedAt < circuit.backoff.lastOpening

/** Whether a slow probe is a failed one: under a `slowCalls` member, one that took at least its duration. */
const isSlowProbe = (options: Options, duration: number): boolean =>
  membersOf(options.policy).some((member) => member._tag === "SlowCalls" && duration >= member.duration)

// --- calls ---------------------------------------------------------------------------------------------------

/** Decides whether the call `id` on `peer`, starting at `now`, runs. In observe mode a rejected call runs too. */
export const admit = (model: Model, peer: string, id: number, now: number): Model => {
  const before = materialize(model, now)
  const lastCall = new Map(before.lastCall)
  lastCall.set(peer, now)
  const next: Model = { ...before, lastCall }
  const decide = (admission: Admission, admitted?: Admitted): Model => {
    const admissions = new Map(next.admissions)
    admissions.set(id, admission)
    if (admitted === undefined) return { ...next, admissions }
    const calls = new Map(next.calls)
    calls.set(id, admitted)
    return { ...next, admissions, calls }
  }
  const circuit = circuitAt(next, peer, now)
  const options = optionsOf(next, peer)
  switch (circuit._tag) {
    case "Closed":
      return decide({ _tag: "Closed" }, { _tag: "Closed", peer, period: circuit.period, startedAt: now })
    case "Isolated":
      return decide({ _tag: "Rejected", retryAfter: Infinity, by: "Isolated" })
    case "Tripped": {
      const waited = now - circuit.openedAt
      if (waited < circuit.duration) {
        return decide({ _tag: "Rejected", retryAfter: circuit.duration - waited, by: "Open" })
      }
      const running = circuit.probes.length
      if (running >= options.probes || circuit.successes + running >= options.successThreshold) {
        return decide({ _tag: "Rejected", retryAfter: earliestLeaseEnd(options, circuit) - now, by: "HalfOpen" })
      }
      const probing: Circuit = { ...circuit, halfOpened: true, probes: [...circuit.probes, { id, startedAt: now }] }
      const admitted = withCircuit(
        decide({ _tag: "Probe", leaseEnd: now + leaseMillis(options, circuit) }, {
          _tag: "Probe",
          peer,
          startedAt: now
        }),
        peer,
        probing
      )
      return circuit.halfOpened ? admitted : publish(admitted, {
        peer,
        from: "Open",
        to: "HalfOpen",
        at: wallAt(next, now),
        reason: "probe",
        opening: circuit.opening
      })
    }
  }
}

/** How the call `id` was admitted (or rejected). */
export const admissionOf = (model: Model, id: number): Admission | undefined => model.admissions.get(id)

/** Records the end, at `now`, of the call `id`. A call never admitted (rejected, or run in observe mode) does nothing. */
export const settle = (model: Model, id: number, verdict: Verdict, now: number): Model => {
  const before = materialize(model, now)
  const call = before.calls.get(id)
  if (call === undefined) return before
  const calls = new Map(before.calls)
  calls.delete(id)
  const next: Model = { ...before, calls }
  const { peer } = call
  const circuit = circuitAt(next, peer, now)
  const options = optionsOf(next, peer)
  if (call._tag === "Closed") {
    // Decides something only if the circuit is still in the closed period the call was admitted in.
    if (circuit._tag !== "Closed" || circuit.period !== call.period || verdict === "neither") return next
    const last: Outcome = { at: now, failure: verdict === "failure", duration: now - call.startedAt }
    const outcomes = [...circuit.outcomes, last]
    const tripped = membersOf(options.policy).find((member) => trips(next, member, outcomes, last, now))
    if (tripped === undefined) return withCircuit(next, peer, { ...circuit, outcomes })
    // The next opening if the circuit relapsed within its last opening's length after its probes closed it.
    const opening = backoffInForce(circuit, now) ? circuit.backoff!.opening + 1 : 1
    const reason = reasonOf(tripped)
    return publish(withCircuit(next, peer, opened(next, peer, now, opening, reason)), {
      peer,
      from: "Closed",
      to: "Open",
      at: wallAt(next, now),
      reason,
      opening
    })
  }
  // A probe decides something only while it holds its slot: not once a lease has ended (the circuit has reopened, in
  // `circuitAt`), nor once another probe has decided.
  if (circuit._tag !== "Tripped" || !circuit.probes.some((probe) => probe.id === id)) return next
  const probes = circuit.probes.filter((probe) => probe.id !== id)
  if (verdict === "neither") {
    // A probe whose own effect was interrupted gives its slot back.
    return withCircuit(next, peer, { ...circuit, probes })
  }
  if (verdict === "failure" || isSlowProbe(options, now - call.startedAt)) {
    const opening = circuit.opening + 1
    return publish(withCircuit(next, peer, opened(next, peer, now, opening, "probe-failed")), {
      peer,
      from: "HalfOpen",
      to: "Open",
      at: wallAt(next, now),
      reason: "probe-failed",
      opening
    })
  }
  const successes = circuit.successes + 1
  if (successes < options.successThreshold) return withCircuit(next, peer, { ...circuit, probes, successes })
  const closed: Circuit = {
    _tag: "Closed",
    period: next.nextPeriod,
    outcomes: [],
    backoff: { opening: circuit.opening, closedAt: now, lastOpening: circuit.duration }
  }
  return publish(withCircuit({ ...next, nextPeriod: next.nextPeriod + 1 }, peer, closed), {
    peer,
    from: "HalfOpen",
    to: "Closed",
    at: wallAt(next, now),
    reason: "probe-succeeded",
    opening: 0
  })
}

// --- operators -----------------------------------------------------------------------------------------------

const closedAfresh = (model: Model, peer: string): Model =>
  withCircuit({ ...model, nextPeriod: model.nextPeriod + 1 }, peer, {
    _tag: "Closed",
    period: model.nextPeriod,
    outcomes: [],
    backoff: undefined
  })

/**
 * `reset(peer)`: closes the circuit with nothing recorded and forgets its openings; calls in flight decide nothing.
 * It does not end an isolation, and on a circuit that is closed with nothing recorded and no backoff in force it does
 * nothing at all (no change is published, calls in flight still count).
 */
export const reset = (model: Model, peer: string, now: number): Model => {
  const next = materialize(model, now)
  const circuit = circuitAt(next, peer, now)
  if (circuit._tag === "Isolated") return next
  if (
    circuit._tag === "Closed" && !backoffInForce(circuit, now) &&
    membersOf(optionsOf(next, peer).policy).every((member) => holdsNothing(next, member, circuit.outcomes, now, false))
  ) return next
  return publish(closedAfresh(next, peer), {
    peer,
    from: tagOf(circuit),
    to: "Closed",
    at: wallAt(next, now),
    reason: "reset",
    opening: 0
  })
}

/** `isolate(peer)`: holds the circuit open until released; isolations stack. */
export const isolate = (model: Model, peer: string, now: number): Model => {
  const next = materialize(model, now)
  const circuit = circuitAt(next, peer, now)
  if (circuit._tag === "Isolated") return withCircuit(next, peer, { ...circuit, isolations: circuit.isolations + 1 })
  return publish(withCircuit(next, peer, { _tag: "Isolated", isolations: 1, openedAtWall: wallAt(next, now) }), {
    peer,
    from: tagOf(circuit),
    to: "Open",
    at: wallAt(next, now),
    reason: "isolated",
    opening: 0
  })
}

/** Releases one isolation of `peer`; the last release closes the circuit with nothing recorded and no backoff. */
export const release = (model: Model, peer: string, now: number): Model => {
  const next = materialize(model, now)
  const circuit = circuitAt(next, peer, now)
  if (circuit._tag !== "Isolated") throw new Error(`release: ${JSON.stringify(peer)} is not isolated`)
  if (circuit.isolations > 1) return withCircuit(next, peer, { ...circuit, isolations: circuit.isolations - 1 })
  return publish(closedAfresh(next, peer), {
    peer,
    from: "Open",
    to: "Closed",
    at: wallAt(next, now),
    reason: "released",
    opening: 0
  })
}

/** The wall clock steps by `millis` (back, when negative); the monotonic clock does not move. */
export const stepWall = (model: Model, millis: number): Model => ({ ...model, wallOffset: model.wallOffset + millis })

/** The changes published since the last call, and the model without them. */
export const takeChanges = (model: Model): readonly [ReadonlyArray<Change>, Model] => [
  model.changes,
  { ...model, changes: [] }
]

/**
 * Every model the set may be in at `now` once it has dropped any of its idle breakers. A set drops a breaker only
 * when it is closed, its policy holds nothing (a count window may hold successes, which are forgotten), no backoff is
 * in force, and its peer has had no call for `idleTimeToLive`. Dropping is observable only when it forgets a count
 * window's successes, so only then does it make a second candidate.
 */
export const evictions = (given: Model, now: number): ReadonlyArray<Model> => {
  const model = materialize(given, now)
  let candidates: ReadonlyArray<Model> = [model]
  for (const [peer, circuit] of model.circuits) {
    const lastCall = model.lastCall.get(peer)
    if (circuit._tag !== "Closed" || circuit.outcomes.length === 0 || lastCall === undefined) continue
    if (now - lastCall < model.config.idleTimeToLive || backoffInForce(circuit, now)) continue
    const members = membersOf(optionsOf(model, peer).policy)
    if (
      !members.some((member) =>
        member._tag !== "Window" && member._tag !== "Consecutive" && member.window._tag === "Count"
      )
    ) {
      continue
    }
    if (!members.every((member) => holdsNothing(model, member, circuit.outcomes, now, true))) continue
    const dropped: Circuit = { ...circuit, outcomes: [], backoff: undefined }
    candidates = candidates.flatMap((candidate) => [candidate, withCircuit(candidate, peer, dropped)])
  }
  return candidates
}

// --- views ---------------------------------------------------------------------------------------------------

/** The state view of `peer` at `now`. */
export const view = (model: Model, peer: string, now: number): View => {
  const circuit = circuitAt(model, peer, now)
  const options = optionsOf(model, peer)
  switch (circuit._tag) {
    case "Closed":
      return { _tag: "Closed", ...figures(model, membersOf(options.policy), circuit.outcomes, now) }
    case "Isolated": {
      // No time can be promised: the view tells readers to look again after one first opening.
      const poll = openingMillis(options, 1)
      return {
        _tag: "Open",
        openedAt: circuit.openedAtWall,
        probeAt: wallAt(model, now) + poll,
        retryAfter: poll,
        isolated: true,
        opening: 0,
        reason: "isolated"
      }
    }
    case "Tripped": {
      const remaining = circuit.duration - (now - circuit.openedAt)
      if (remaining > 0) {
        return {
          _tag: "Open",
          openedAt: circuit.openedAtWall,
          probeAt: wallAt(model, now) + remaining,
          retryAfter: remaining,
          isolated: false,
          opening: circuit.opening,
          reason: circuit.reason
        }
      }
      return {
        _tag: "HalfOpen",
        openedAt: circuit.openedAtWall,
        probeInFlight: circuit.probes.length > 0,
        probesInFlight: circuit.probes.length,
        successes: circuit.successes,
        retryAfter: retryAfter(model, peer, now),
        opening: circuit.opening,
        reason: circuit.reason
      }
    }
  }
}

/** How long until `peer`'s circuit would admit a call at `now` (0 if it would now; `Infinity` while isolated). */
export const retryAfter = (model: Model, peer: string, now: number): number => {
  const admission = admissionOf(admit(model, peer, -1, now), -1)!
  return admission._tag === "Rejected" ? admission.retryAfter : 0
}

/** When the lease of the probe `id` ends, if it was admitted as a probe. */
export const leaseEndOf = (model: Model, id: number): number | undefined => {
  const admission = admissionOf(model, id)
  return admission?._tag === "Probe" ? admission.leaseEnd : undefined
}

/**
 * Whether a probe on `peer` whose lease ended at `end` still held its slot then: its lease's end reopened the circuit at
 * that instant. A probe that had lost its slot before (a reset, an isolation, another probe's result or lease) is an
 * ordinary call by then: it runs on, and its caller gets its own result.
 */
export const leaseReopened = (model: Model, peer: string, end: number): boolean => {
  const circuit = circuitAt(model, peer, end)
  return circuit._tag === "Tripped" && circuit.reason === "probe-timeout" && circuit.openedAt === end
}

/** When `peer`'s backoff stops being in force (`undefined` without one in force): a trip from then is opening 1. */
export const backoffEnd = (model: Model, peer: string, now: number): number | undefined => {
  const circuit = circuitAt(model, peer, now)
  return circuit._tag === "Closed" && backoffInForce(circuit, now)
    ? circuit.backoff!.closedAt + circuit.backoff!.lastOpening
    : undefined
}

/**
 * Whether a probe admitted earlier may still be running at `now` with its lease to come (its lease's timer pending):
 * one not settled yet whose lease ends after `now`, whether or not it still holds a slot.
 */
export const probesRunning = (model: Model, now: number): boolean =>
  [...model.calls.keys()].some((id) => (leaseEndOf(model, id) ?? -Infinity) > now)

/** A key identifying the model, to drop duplicate candidates. */
export const keyOf = (model: Model): string =>
  JSON.stringify([
    [...model.circuits],
    [...model.calls],
    [...model.admissions],
    [...model.lastCall],
    model.wallOffset,
    model.nextPeriod,
    model.changes
  ])
