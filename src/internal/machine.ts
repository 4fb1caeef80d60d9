/**
 * The breaker's state machine as functions of (state, event, now), with no runtime: each function returns the next
 * state (the same object when nothing changes), in the `[decision, next]` shape `Ref.modify` takes, so the effectful
 * shell applies every decision to the breaker's `Ref` in one atomic step.
 *
 * States are immutable values, with two exceptions that no caller can observe: opening a circuit reads the wall
 * clock once (to show users when it opened), and `FailureTimes.append` may extend a shared array past the end of the
 * slice the old state sees.
 *
 * Times are monotonic milliseconds (`Clock.monotonicTimeNanos` / 1e6); only `openedAtWall` is wall-clock time.
 *
 * Every transition increments `generation`. A call is admitted with a ticket equal to the generation it was admitted
 * under; its result is applied only while the generation is unchanged, so results of calls admitted under an
 * earlier state (before a trip, before a close, a probe whose lease ended) decide nothing.
 *
 * A probe holds a lease of `resetTimeout` from its start. A probe still running when its lease ends is a failed probe:
 * the circuit reopens at the instant the lease ended. Nothing runs at that instant; `expireProbe` computes it from the
 * time, and the shell applies it before every decision and every read.
 */

/** The limits the machine enforces, with durations in milliseconds. */
export interface Limits {
  readonly maxFailures: number
  readonly windowMillis: number
  readonly resetTimeoutMillis: number
}

/**
 * The times of the most recent counted failures, oldest first: the entries `start` to `end` of `times`.
 *
 * Appending must not copy the whole window (with a large `maxFailures` that would make a burst of failures
 * quadratic), so successive states share one append-only array and each sees only its own slice. A state is
 * extended in place only while it is the array's newest view; otherwise, or once most of the array has aged out,
 * its live part is copied.
 */
export class FailureTimes {
  readonly times: Array<number>
  readonly start: number
  readonly end: number

  constructor(times: Array<number>, start: number, end: number) {
    this.times = times
    this.start = start
    this.end = end
  }

  get size(): number {
    return this.end - this.start
  }

  /** The first entry at or after `start` that is inside the window at `now` (times are in ascending order). */
  firstInWindow(now: number, limits: Limits): number {
    let low = this.start
    let high = this.end
    while (low < high) {
      const mid = (low + high) >>> 1
      if (inWindow(this.times[mid]!, now, limits)) high = mid
      else low = mid + 1
    }
    return low
  }

  /** The failures in the window at `now`, then one more at `now`. */
  append(now: number, limits: Limits): FailureTimes {
    const start = this.firstInWindow(now, limits)
    const live = this.end - start
    if (this.end === this.times.length && this.times !== noTimes && start * 2 < this.times.length) {
      this.times.push(now)
      return new FailureTimes(this.times, start, this.end + 1)
    }
    const times = this.times.slice(start, this.end)
    times.push(now)
    return new FailureTimes(times, 0, live + 1)
  }

  toJSON(): ReadonlyArray<number> {
    return this.times.slice(this.start, this.end)
  }
}

const noTimes: Array<number> = []
const noFailures = new FailureTimes(noTimes, 0, 0)

/** Closed: calls pass; `failures` holds the times of the most recent counted failures, at most `maxFailures`. */
export interface Closed {
  readonly _tag: "Closed"
  readonly generation: number
  readonly failures: FailureTimes
}

/** Open: calls are rejected until `resetTimeoutMillis` after `openedAt`, then the next call is the probe. */
export interface Open {
  readonly _tag: "Open"
  readonly generation: number
  readonly openedAt: number
  readonly openedAtWall: number
}

/**
 * Half-open. With a probe in flight (since `probeStartedAt`) other calls are rejected until it decides or its lease
 * ends; without one (its probe's own effect was interrupted) the next call is the probe.
 */
export interface HalfOpen {
  readonly _tag: "HalfOpen"
  readonly generation: number
  readonly openedAt: number
  readonly openedAtWall: number
  readonly probeInFlight: boolean
  readonly probeStartedAt: number
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

/** A ticket (the generation the call was admitted under), or a rejection. */
export type Admission = number | Rejected

/** The state of a breaker that has seen nothing. Shared by every fresh breaker: states are immutable. */
export const initial: Closed = Object.freeze({ _tag: "Closed", generation: 0, failures: noFailures })

/** A closed state with an empty window at `generation`: how a breaker recreated for a peer goes on from its last. */
export const closedAt = (generation: number): Closed =>
  generation === initial.generation ? initial : { _tag: "Closed", generation, failures: noFailures }

const emptyClosed = (generation: number): Closed => ({ _tag: "Closed", generation, failures: noFailures })

/** Whether a failure recorded at `at` is still inside the window at `now`. */
const inWindow = (at: number, now: number, limits: Limits): boolean => now - at < limits.windowMillis

/** When the lease of the probe that `state` holds ends. */
export const leaseEnd = (state: HalfOpen, limits: Limits): number => state.probeStartedAt + limits.resetTimeoutMillis

/**
 * The state at `now` once a probe whose lease has ended is counted as failed: the circuit reopened at the lease's
 * end, for a whole `resetTimeout` from then. The same state otherwise.
 */
export const expireProbe = (state: State, now: number, wall: WallClock, limits: Limits): State => {
  if (state._tag !== "HalfOpen" || !state.probeInFlight) return state
  const end = leaseEnd(state, limits)
  if (now < end) return state
  return {
    _tag: "Open",
    generation: state.generation + 1,
    openedAt: end,
    openedAtWall: wall.currentTimeMillisUnsafe() - (now - end)
  }
}

/**
 * Decides whether a call starting at `now` may run, and the state after that decision. `state` is one that
 * `expireProbe` has already been applied to at `now`.
 */
export const admit = (state: State, now: number, limits: Limits): readonly [Admission, State] => {
  switch (state._tag) {
    case "Closed":
      return [state.generation, state]
    case "Open": {
      const waited = now - state.openedAt
      return waited < limits.resetTimeoutMillis
        ? [{ retryAfterMillis: limits.resetTimeoutMillis - waited }, state]
        : startProbe(state, now)
    }
    case "Isolated":
      // An isolation lasts until an operator releases it: no time can be promised.
      return [{ retryAfterMillis: Infinity }, state]
    case "HalfOpen":
      return state.probeInFlight
        ? [{ retryAfterMillis: leaseEnd(state, limits) - now }, state]
        : startProbe(state, now)
  }
}

const startProbe = (state: Open | HalfOpen, now: number): readonly [Admission, State] => {
  const generation = state.generation + 1
  return [generation, {
    _tag: "HalfOpen",
    generation,
    openedAt: state.openedAt,
    openedAtWall: state.openedAtWall,
    probeInFlight: true,
    probeStartedAt: now
  }]
}

/** Applies the outcome of the call admitted with `ticket`, ending at monotonic time `now`. */
export const record = (
  state: State,
  ticket: number,
  outcome: Outcome,
  now: number,
  wall: WallClock,
  limits: Limits
): State => {
  if (state.generation !== ticket) return state
  switch (state._tag) {
    case "Closed":
      return outcome === "failure" ? recordClosedFailure(state, now, wall, limits) : state
    case "HalfOpen":
      // A result that arrives once the lease has ended comes too late: the probe has failed.
      if (now >= leaseEnd(state, limits)) return expireProbe(state, now, wall, limits)
      switch (outcome) {
        case "success":
          return emptyClosed(state.generation + 1)
        case "failure":
          return open(state.generation, now, wall)
        case "ignored":
          // A probe whose own effect was interrupted tells nothing about the peer: the next call probes.
          return { ...state, generation: state.generation + 1, probeInFlight: false }
      }
    // No call is ever admitted under an Open or Isolated generation.
    case "Open":
    case "Isolated":
      return state
  }
}

/**
 * Closes the circuit with an empty window; calls in flight decide nothing. An isolation is not ended by a reset, and
 * a circuit that is closed with no failure in its window is left as it is.
 */
export const reset = (state: State, now: number, _wall: WallClock, limits: Limits): State =>
  state._tag === "Isolated" || isIdle(state, now, limits) ? state : emptyClosed(state.generation + 1)

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

/** Releases one isolation; the last release closes the circuit with an empty window. */
export const release = (state: State): State => {
  if (state._tag !== "Isolated") return state
  return state.isolations > 1 ? { ...state, isolations: state.isolations - 1 } : emptyClosed(state.generation + 1)
}

const open = (generation: number, now: number, wall: WallClock): Open => ({
  _tag: "Open",
  generation: generation + 1,
  openedAt: now,
  openedAtWall: wall.currentTimeMillisUnsafe()
})

const recordClosedFailure = (state: Closed, now: number, wall: WallClock, limits: Limits): State => {
  // Only the newest `maxFailures` failures can matter: a new one opens the circuit iff all of them are in the window.
  const failures = state.failures
  if (failures.end - failures.firstInWindow(now, limits) >= limits.maxFailures) {
    return open(state.generation, now, wall)
  }
  return { _tag: "Closed", generation: state.generation, failures: failures.append(now, limits) }
}

/** The number of counted failures inside the window at `now`. */
export const failuresInWindow = (state: Closed, now: number, limits: Limits): number =>
  state.failures.end - state.failures.firstInWindow(now, limits)

/** Whether the state is indistinguishable from a fresh breaker's at `now` (so the set may drop it). */
export const isIdle = (state: State, now: number, limits: Limits): boolean =>
  state._tag === "Closed" && failuresInWindow(state, now, limits) === 0
