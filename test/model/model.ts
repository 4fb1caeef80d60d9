/**
 * A reference model of the breaker's specified behaviour, for the model-based tests: the rules the `describe` blocks of
 * `../CircuitBreakerSet.test.ts` and `../CircuitBreakerSet.recovery.test.ts` check one by one (failures in a sliding
 * window, open, half-open, the probe decides, what counts, the probe's lease, stale results).
 *
 * It is written from those rules, not from `src/internal/machine.ts`, and is meant to be obviously correct rather than
 * fast: it keeps every counted failure of the current closed period in a plain list and counts those inside the
 * window when asked; each admitted call carries a ticket saying what it was admitted as (a call of one closed
 * period, or one particular probe), and its result is applied only while that is still what the circuit is.
 *
 * The probe's lease: a probe holds its slot for `resetTimeout` from its start. A probe still holding it when the lease
 * ends has failed: the circuit reopened at the lease's end, for a whole `resetTimeout` from then, and the probe's
 * result, whenever it comes, decides nothing. Nothing happens at that instant in the model: `circuitAt` works it out
 * from the time, and every function looks at the circuit through it.
 *
 * A probe runs detached from its caller: interrupting the caller changes nothing here (the probe's own result still
 * decides). That is the test harness's business, not the model's.
 *
 * Times are milliseconds since the start of the run (the test clock's monotonic time). Everything is pure: every
 * function returns a new model.
 */

/** The options the model follows, durations in milliseconds. */
export interface Options {
  readonly maxFailures: number
  readonly window: number
  readonly resetTimeout: number
}

/** How a call ended, as the breaker must see it (after `isFailure` has been applied). */
export type Verdict = "success" | "failure" | "neither"

/** A probe: the call let through to test the peer after the open period. */
interface Probe {
  readonly id: number
  readonly startedAt: number
}

/** One peer's circuit. */
type Circuit =
  | {
    readonly _tag: "Closed"
    /** Identifies this closed period: a call admitted in an earlier one decides nothing. */
    readonly period: number
    /** Every counted failure recorded in this closed period, in the order recorded. */
    readonly failures: ReadonlyArray<number>
  }
  | {
    /** Open or half-open: which one is a matter of time, decided when asked. */
    readonly _tag: "Tripped"
    readonly openedAt: number
    /** The probe that holds the slot, if any (its lease may have ended since: see `circuitAt`). */
    readonly probe: Probe | undefined
  }

/** What an admitted call was admitted as. */
export type Ticket =
  | { readonly _tag: "ClosedCall"; readonly peer: string; readonly period: number }
  | ProbeTicket

export interface ProbeTicket {
  readonly _tag: "ProbeCall"
  readonly peer: string
  readonly probeId: number
  readonly startedAt: number
}

export type Admission =
  | { readonly admitted: true; readonly ticket: Ticket }
  | { readonly admitted: false; readonly retryAfter: number }

/** The public state view (`CircuitState`), with durations in milliseconds and times in wall milliseconds. */
export type View =
  | { readonly _tag: "Closed"; readonly failures: number }
  | { readonly _tag: "Open"; readonly openedAt: number; readonly probeAt: number; readonly retryAfter: number }
  | {
    readonly _tag: "HalfOpen"
    readonly openedAt: number
    readonly probeInFlight: boolean
    readonly retryAfter: number
  }

export interface Model {
  readonly options: Options
  /** Wall-clock milliseconds at monotonic time 0. */
  readonly wallAtZero: number
  readonly circuits: ReadonlyMap<string, Circuit>
  /** Source of fresh closed-period and probe ids. */
  readonly nextId: number
}

export const make = (options: Options, wallAtZero: number): Model => ({
  options,
  wallAtZero,
  circuits: new Map(),
  nextId: 1
})

const withCircuit = (model: Model, peer: string, circuit: Circuit, nextId = model.nextId): Model => {
  const circuits = new Map(model.circuits)
  circuits.set(peer, circuit)
  return { ...model, circuits, nextId }
}

/** When the lease of the probe admitted with `ticket` ends: `resetTimeout` after it started. */
export const leaseEnd = (model: Model, ticket: ProbeTicket): number => ticket.startedAt + model.options.resetTimeout

/**
 * `peer`'s circuit at `now`. An unseen peer is closed with nothing recorded, in closed period 0 (no call is ever
 * admitted in another 0). A probe that still holds the slot when its lease ends has failed then: from that instant
 * the circuit is open again, opened at the lease's end, with no probe.
 */
const circuitAt = (model: Model, peer: string, now: number): Circuit => {
  const circuit = model.circuits.get(peer) ?? { _tag: "Closed", period: 0, failures: [] }
  if (circuit._tag === "Tripped" && circuit.probe !== undefined) {
    const end = circuit.probe.startedAt + model.options.resetTimeout
    if (now >= end) return { _tag: "Tripped", openedAt: end, probe: undefined }
  }
  return circuit
}

/** The failures inside the window at `now`: recorded at t, inside iff now − t < window. */
const failuresInWindow = (model: Model, failures: ReadonlyArray<number>, now: number): number =>
  failures.filter((t) => now - t < model.options.window).length

/** Decides whether a call on `peer` starting at `now` runs. */
export const admit = (model: Model, peer: string, now: number): readonly [Admission, Model] => {
  const circuit = circuitAt(model, peer, now)
  const { resetTimeout } = model.options
  if (circuit._tag === "Closed") {
    return [{ admitted: true, ticket: { _tag: "ClosedCall", peer, period: circuit.period } }, model]
  }
  if (circuit.probe !== undefined) {
    return [{ admitted: false, retryAfter: circuit.probe.startedAt + resetTimeout - now }, model]
  }
  if (now - circuit.openedAt < resetTimeout) {
    return [{ admitted: false, retryAfter: resetTimeout - (now - circuit.openedAt) }, model]
  }
  const probe: Probe = { id: model.nextId, startedAt: now }
  return [
    { admitted: true, ticket: { _tag: "ProbeCall", peer, probeId: probe.id, startedAt: now } },
    withCircuit(model, peer, { ...circuit, probe }, model.nextId + 1)
  ]
}

/** Records the end, at `now`, of the call admitted with `ticket`. */
export const settle = (model: Model, ticket: Ticket, verdict: Verdict, now: number): Model => {
  const { peer } = ticket
  const circuit = circuitAt(model, peer, now)
  if (ticket._tag === "ClosedCall") {
    // Decides something only if the circuit is still in the closed period the call was admitted in.
    if (circuit._tag !== "Closed" || circuit.period !== ticket.period || verdict !== "failure") return model
    const failures = [...circuit.failures, now]
    if (failuresInWindow(model, failures, now) > model.options.maxFailures) {
      return withCircuit(model, peer, { _tag: "Tripped", openedAt: now, probe: undefined })
    }
    return withCircuit(model, peer, { ...circuit, failures })
  }
  // A probe decides something only while it holds the slot: not once its lease has ended (at or after the lease's end
  // the circuit has already reopened, in `circuitAt`), nor after the circuit closed since.
  if (circuit._tag !== "Tripped" || circuit.probe?.id !== ticket.probeId) return model
  switch (verdict) {
    case "success":
      return withCircuit(model, peer, { _tag: "Closed", period: model.nextId, failures: [] }, model.nextId + 1)
    case "failure":
      return withCircuit(model, peer, { _tag: "Tripped", openedAt: now, probe: undefined })
    case "neither":
      // A probe whose own effect was interrupted gives its slot back: the next call probes.
      return withCircuit(model, peer, { ...circuit, probe: undefined })
  }
}

/** The state view of `peer` at `now`. */
export const view = (model: Model, peer: string, now: number): View => {
  const circuit = circuitAt(model, peer, now)
  const { resetTimeout } = model.options
  if (circuit._tag === "Closed") return { _tag: "Closed", failures: failuresInWindow(model, circuit.failures, now) }
  const openedAt = model.wallAtZero + circuit.openedAt
  if (circuit.probe !== undefined) {
    const retryAfter = circuit.probe.startedAt + resetTimeout - now
    return { _tag: "HalfOpen", openedAt, probeInFlight: true, retryAfter }
  }
  const waited = now - circuit.openedAt
  if (waited < resetTimeout) {
    return { _tag: "Open", openedAt, probeAt: openedAt + resetTimeout, retryAfter: resetTimeout - waited }
  }
  return { _tag: "HalfOpen", openedAt, probeInFlight: false, retryAfter: 0 }
}
