/**
 * The breaker's state machine as functions of (state, event, now), with no runtime: each function returns the next
 * state (the same object when nothing changes), in the `[decision, next]` shape `Ref.modify` takes, so the effectful
 * shell applies every decision to the breaker's `Ref` in one atomic step.
 *
 * States are immutable values, with two exceptions that no caller can observe: opening a circuit reads the wall
 * clock once (to show users when it opened), and a closed state's policy counts (see `policy.ts`) are updated in
 * place by `record`; they belong to that closed period (its generation) and are dropped when it ends.
 *
 * Times are monotonic milliseconds (`Clock.monotonicTimeNanos` / 1e6); only `openedAtWall` is wall-clock time.
 *
 * Every transition increments `generation`, and so does every probe's admission. A call is admitted with a ticket:
 * a closed call's is the generation it was admitted under, and its result is applied only while the generation is
 * unchanged; a probe's is the generation its admission made, and its result is applied only while it holds a probe
 * slot. So results of calls admitted under an earlier state (before a trip, before a close, a probe whose lease
 * ended) decide nothing.
 *
 * Open durations come from `Openings`: the n-th opening lasts `delay(n)`. The shell computes them (a `Schedule` may
 * draw jitter); the machine asks for a delay only when it enters a state that needs one, and keeps it in the state.
 *
 * A probe holds a lease of `probeTimeout` from its start. A probe still running when its lease ends is a failed
 * probe: the circuit reopens at the instant the lease ended. Nothing runs at that instant; `expireProbe` computes it
 * from the time, and the shell applies it before every decision and every read.
 */
import { type Figures, type Tracker, Trip, type TripReason } from "./policy.ts"

/** The limits the machine enforces, with durations in milliseconds. */
export interface Limits {
  readonly tracker: Tracker
  /** Probes that may run at once while half-open. */
  readonly probes: number
  /** Probe successes that close the circuit. */
  readonly successThreshold: number
  /** A probe's lease; `undefined`: the duration of the opening that preceded the half-open period. */
  readonly probeTimeoutMillis: number | undefined
  /** How long an isolated circuit tells readers to wait before they look again (it promises nothing). */
  readonly pollMillis: number
}

/** The duration of each opening, in milliseconds, capped: the n-th opening (n ≥ 1) lasts `delay(n)`. */
export interface Openings {
  delay(opening: number): number
}

/** Why a circuit is open: the policy that tripped, or a probe that failed or ran out its lease. */
export type OpenReason = TripReason | "probe-failed" | "probe-timeout"

/**
 * What a closed circuit remembers of its last opening, to tell a relapse from a new outage: a trip within
 * `lastOpenMillis` of `closedAt` continues the backoff (`opening` + 1), a later one starts again at 1.
 */
export interface Backoff {
  readonly opening: number
  readonly closedAt: number
  readonly lastOpenMillis: number
}

/** Closed: calls pass; `counts` are the policy's figures (`undefined` until an outcome needs them). */
export interface Closed {
  readonly _tag: "Closed"
  readonly generation: number
  readonly counts: unknown
  readonly backoff: Backoff | undefined
}

/** Open: calls are rejected until `openMillis` after `openedAt`, then the next calls are probes. */
export interface Open {
  readonly _tag: "Open"
  readonly generation: number
  readonly openedAt: number
  readonly openedAtWall: number
  /** 1 for the first opening after a healthy period, n + 1 after opening n failed. */
  readonly opening: number
  readonly reason: OpenReason
  /** For a trip, what its rule says (see `Trip.text`); empty otherwise. */
  readonly detail: string
  /** For `probe-timeout`, the tickets of the probes whose lease ended and reopened it; empty otherwise. */
  readonly timedOut: ReadonlyArray<number>
  readonly openMillis: number
}

/** A probe in flight: its ticket and when its lease started. */
export interface Probe {
  readonly ticket: number
  readonly startedAt: number
}

/**
 * Half-open: up to `probes` calls run as probes at once; `successThreshold` successes close the circuit, any
 * failure (or a lease that ends) reopens it as opening `opening` + 1, for `nextOpenMillis`.
 */
export interface HalfOpen {
  readonly _tag: "HalfOpen"
  readonly generation: number
  readonly openedAt: number
  readonly openedAtWall: number
  readonly opening: number
  readonly reason: OpenReason
  /** How long the opening that preceded lasted. */
  readonly openMillis: number
  readonly nextOpenMillis: number
  readonly probeTimeoutMillis: number
  /** The probes in flight, oldest first. */
  readonly probes: ReadonlyArray<Probe>
  readonly successes: number
}

/** Held open by an operator: every call is rejected until the last of `isolations` is released. */
export interface Isolated {
  readonly _tag: "Isolated"
  readonly generation: number
  readonly isolations: number
  readonly openedAt: number
  readonly openedAtWall: number
}

export type State = Closed | Open | HalfOpen | Isolated

/** Wall-clock time, read only when a circuit opens (to show users when). The `Clock` service satisfies it. */
export interface WallClock {
  currentTimeMillisUnsafe(): number
}

/** How an admitted call ended, as far as the breaker is concerned. */
export type Outcome = "success" | "failure" | "ignored"

/** A rejection and how long until the breaker will admit a call again. */
export interface Rejected {
  readonly retryAfterMillis: number
}

/** A ticket, or a rejection. */
export type Admission = number | Rejected

/** The state of a breaker that has seen nothing. Shared by every fresh breaker. */
export const initial: Closed = Object.freeze({ _tag: "Closed", generation: 0, counts: undefined, backoff: undefined })

/** A closed state with empty counts at `generation`: how a breaker recreated for a peer goes on from its last. */
export const closedAt = (generation: number): Closed =>
  generation === initial.generation ? initial : emptyClosed(generation, undefined)

const emptyClosed = (generation: number, backoff: Backoff | undefined): Closed => ({
  _tag: "Closed",
  generation,
  counts: undefined,
  backoff
})

/** When the lease of the oldest probe in flight ends (`Infinity` with none). */
export const leaseEnd = (state: HalfOpen): number =>
  state.probes.length === 0 ? Infinity : state.probes[0]!.startedAt + state.probeTimeoutMillis

/**
 * The state at `now` once a probe whose lease has ended is counted as failed: the circuit reopened at the lease's
 * end, as the next opening. The same state otherwise.
 */
export const expireProbe = (state: State, now: number, wall: WallClock): State => {
  if (state._tag !== "HalfOpen") return state
  const end = leaseEnd(state)
  if (now < end) return state
  const timedOut = state.probes.filter((probe) => probe.startedAt + state.probeTimeoutMillis <= end).map((probe) =>
    probe.ticket
  )
  return reopen(state, "probe-timeout", end, wall.currentTimeMillisUnsafe() - (now - end), timedOut)
}

const reopen = (
  state: HalfOpen,
  reason: OpenReason,
  at: number,
  atWall: number,
  timedOut: ReadonlyArray<number>
): Open => ({
  _tag: "Open",
  generation: state.generation + 1,
  openedAt: at,
  openedAtWall: atWall,
  opening: state.opening + 1,
  reason,
  detail: "",
  timedOut,
  openMillis: state.nextOpenMillis
})

const none: ReadonlyArray<number> = Object.freeze([])

/**
 * Decides whether a call starting at `now` may run, and the state after that decision. `state` is one that
 * `expireProbe` has already been applied to at `now`.
 */
export const admit = (
  state: State,
  now: number,
  limits: Limits,
  openings: Openings
): readonly [Admission, State] => {
  switch (state._tag) {
    case "Closed":
      return [state.generation, state]
    case "Open": {
      const waited = now - state.openedAt
      if (waited < state.openMillis) return [{ retryAfterMillis: state.openMillis - waited }, state]
      return startProbe({
        _tag: "HalfOpen",
        generation: state.generation,
        openedAt: state.openedAt,
        openedAtWall: state.openedAtWall,
        opening: state.opening,
        reason: state.reason,
        openMillis: state.openMillis,
        nextOpenMillis: openings.delay(state.opening + 1),
        probeTimeoutMillis: limits.probeTimeoutMillis ?? state.openMillis,
        probes: [],
        successes: 0
      }, now)
    }
    case "Isolated":
      // An isolation lasts until an operator releases it: no time can be promised.
      return [{ retryAfterMillis: Infinity }, state]
    case "HalfOpen":
      return state.probes.length < limits.probes && state.successes + state.probes.length < limits.successThreshold
        ? startProbe(state, now)
        : [{ retryAfterMillis: leaseEnd(state) - now }, state]
  }
}

const startProbe = (state: HalfOpen, now: number): readonly [Admission, State] => {
  const ticket = state.generation + 1
  return [ticket, { ...state, generation: ticket, probes: [...state.probes, { ticket, startedAt: now }] }]
}

/** Whether `state` holds a probe slot for `ticket`. */
const probeOf = (state: HalfOpen, ticket: number): Probe | undefined => {
  for (const probe of state.probes) if (probe.ticket === ticket) return probe
  return undefined
}

/**
 * Applies the outcome of the call admitted with `ticket`, ending at monotonic time `now` after running for
 * `durationMillis` (`NaN` when the policy does not time calls).
 */
export const record = (
  state: State,
  ticket: number,
  outcome: Outcome,
  now: number,
  durationMillis: number,
  wall: WallClock,
  limits: Limits,
  openings: Openings
): State => {
  switch (state._tag) {
    case "Closed": {
      if (state.generation !== ticket || outcome === "ignored") return state
      const counts = limits.tracker.record(state.counts, outcome === "failure", durationMillis, now)
      if (counts instanceof Trip) return trip(state, counts, now, wall, openings)
      return counts === state.counts ? state : { ...state, counts }
    }
    case "HalfOpen": {
      const probe = probeOf(state, ticket)
      if (probe === undefined) return state
      // A result that arrives once a lease has ended comes too late: the probe has failed.
      if (now >= leaseEnd(state)) return expireProbe(state, now, wall)
      const slow = now - probe.startedAt >= limits.tracker.slowMillis
      if (outcome === "failure" || (outcome === "success" && slow)) {
        return reopen(state, "probe-failed", now, wall.currentTimeMillisUnsafe(), none)
      }
      const probes = state.probes.filter((running) => running !== probe)
      // A probe whose own effect was interrupted tells nothing about the peer: its slot is free again.
      if (outcome === "ignored") return { ...state, probes }
      const successes = state.successes + 1
      return successes >= limits.successThreshold
        ? emptyClosed(state.generation + 1, { opening: state.opening, closedAt: now, lastOpenMillis: state.openMillis })
        : { ...state, probes, successes }
    }
    // No call is ever admitted under an Open or Isolated generation.
    case "Open":
    case "Isolated":
      return state
  }
}

/**
 * Records the success of the closed call admitted with `ticket` by updating the closed state's counts in place, when
 * that is all `record` would do (no new counts, no trip): the state stays the same value, so the shell needs no write.
 * Returns whether it did; when not, the shell goes through `record`.
 */
export const recordSuccessInPlace = (
  state: State,
  ticket: number,
  durationMillis: number,
  now: number,
  limits: Limits
): boolean => {
  if (state._tag !== "Closed" || state.generation !== ticket) return false
  if (!limits.tracker.successInPlace(state.counts, durationMillis)) return false
  limits.tracker.record(state.counts, false, durationMillis, now)
  return true
}

/** Opens a closed circuit: as the next opening if it relapsed within its last opening's length, else as the first. */
const trip = (state: Closed, cause: Trip, now: number, wall: WallClock, openings: Openings): Open => {
  const backoff = state.backoff
  const opening = backoff !== undefined && now - backoff.closedAt < backoff.lastOpenMillis ? backoff.opening + 1 : 1
  return {
    _tag: "Open",
    generation: state.generation + 1,
    openedAt: now,
    openedAtWall: wall.currentTimeMillisUnsafe(),
    opening,
    reason: cause.reason,
    detail: cause.text,
    timedOut: none,
    openMillis: openings.delay(opening)
  }
}

/**
 * Closes the circuit with empty counts and forgets its openings; calls in flight decide nothing. An isolation is not
 * ended by a reset, and a circuit that is closed with nothing to forget is left as it is.
 */
export const reset = (state: State, now: number, _wall: WallClock, limits: Limits): State =>
  state._tag === "Isolated" || (state._tag === "Closed" && limits.tracker.isClear(state.counts, now) &&
      backoffOver(state, now))
    ? state
    : emptyClosed(state.generation + 1, undefined)

/** Whether a trip of the closed `state` at `now` would start again at opening 1. */
const backoffOver = (state: Closed, now: number): boolean =>
  state.backoff === undefined || now - state.backoff.closedAt >= state.backoff.lastOpenMillis

/** Holds the circuit open, on top of any isolation already in force. */
export const isolate = (state: State, now: number, wall: WallClock): Isolated =>
  state._tag === "Isolated"
    ? { ...state, isolations: state.isolations + 1 }
    : {
      _tag: "Isolated",
      generation: state.generation + 1,
      isolations: 1,
      openedAt: now,
      openedAtWall: wall.currentTimeMillisUnsafe()
    }

/** Releases one isolation; the last release closes the circuit with empty counts and forgets its openings. */
export const release = (state: State): State => {
  if (state._tag !== "Isolated") return state
  return state.isolations > 1
    ? { ...state, isolations: state.isolations - 1 }
    : emptyClosed(state.generation + 1, undefined)
}

/** What a closed circuit's policy holds at `now`. */
export const figures = (state: Closed, now: number, limits: Limits): Figures =>
  limits.tracker.figures(state.counts, now)

/**
 * Whether the state is indistinguishable from a fresh breaker's at `now` (so the set may drop it): closed, with
 * empty counts, and past the time a trip would continue its last backoff.
 */
export const isIdle = (state: State, now: number, limits: Limits): boolean =>
  state._tag === "Closed" && limits.tracker.isEmpty(state.counts, now) && backoffOver(state, now)
