/**
 * The call protocol: admit a call, run it, classify how it ended, record that in the breaker's `Ref`, and report
 * any change of state.
 *
 * Layout of the primitives, and why:
 * - The outer `withFiber` finds the breaker. A call the circuit rejects is rejected right there: a rejection changes
 *   nothing, so it needs no exit handler.
 * - Otherwise `onExitPrimitive` is put in place before admission, so whatever happens after admission (including an
 *   interruption that lands before the effect starts, at a scheduler yield) reaches `settle`, which runs
 *   uninterruptibly. The inner `withFiber` decides again, as the state may have changed at that yield. A call
 *   interrupted before admission records nothing.
 * - A call to a closed circuit changes no state: it is admitted on a `Ref.getUnsafe` read, in one synchronous step.
 *   Every change (a probe taking its slot, a result recorded) is one `Ref.modify`, and the call's own bookkeeping
 *   (its ticket, the in-flight count) is updated inside it, so that no interruption can separate the two.
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Ref from "effect/Ref"
import { CircuitOpenError } from "../CircuitOpenError.ts"
import type { Reason } from "../CircuitStateChange.ts"
import type { Breaker, PeerBreaker } from "./breaker.ts"
import * as machine from "./machine.ts"
import type { Registry } from "./registry.ts"
import { annotateSpan, reportChange } from "./report.ts"
import { clockOf, monotonicMillis } from "./time.ts"

/** The breakers of a set, keyed by peer. */
export type PeerRegistry = Registry<PeerBreaker, Context.Context<never>>

/** Guards `self` with a known breaker. */
export const guard = <A, E, R>(
  breaker: Breaker,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | CircuitOpenError, R> => Effect.withFiber((fiber) => run(fiber, breaker, self, undefined, 0))

/** Guards `self` with the breaker of `peer`, found in (or added to) `registry` when the call starts. */
export const guardPeer = <A, E, R>(
  registry: PeerRegistry,
  peer: string,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | CircuitOpenError, R> => Effect.withFiber((fiber) => runPeer(fiber, registry, peer, self))

/** `guardPeer`'s first step, for a caller that is already running in `fiber`. */
export const runPeer = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  registry: PeerRegistry,
  peer: string,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | CircuitOpenError, R> =>
  run(fiber, registry.lookup(peer, fiber.context), self, registry, registry.drops)

const run = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  found: Breaker,
  self: Effect.Effect<A, E, R>,
  registry: PeerRegistry | undefined,
  drops: number
): Effect.Effect<A, E | CircuitOpenError, R> => {
  const current = Ref.getUnsafe(found.state)
  if (current._tag !== "Closed") {
    const [admission] = machine.admit(current, monotonicMillis(clockOf(fiber)), found.shared.limits)
    if (typeof admission !== "number") return reject(found, current, admission.retryAfterMillis, fiber)
  }
  let admitted: Breaker | undefined
  let ticket = 0
  return Effect.onExitPrimitive(
    Effect.withFiber((): Effect.Effect<A, E | CircuitOpenError, R> => {
      // The registry may have dropped the breaker at a yield since it was found.
      const breaker = registry === undefined || registry.drops === drops
        ? found
        : registry.lookup(found.name, fiber.context)
      const before = Ref.getUnsafe(breaker.state)
      if (before._tag === "Closed") {
        // machine.admit admits every call to a closed circuit with its generation, and needs no clock for it:
        // inlined, because this is the path nearly every call takes.
        admitted = breaker
        ticket = before.generation
        breaker.inFlight++
        annotateSpan(fiber, breaker.name, "Closed")
        return self
      }
      const clock = clockOf(fiber)
      return Effect.flatMap(
        Ref.modify(breaker.state, (state) => {
          const [admission, next] = machine.admit(state, monotonicMillis(clock), breaker.shared.limits)
          if (typeof admission === "number") {
            admitted = breaker
            ticket = admission
            breaker.inFlight++
            breaker.series.probe()
          }
          return [{ admission, before: state, after: next }, next]
        }),
        ({ admission, after, before }): Effect.Effect<A, E | CircuitOpenError, R> => {
          if (typeof admission !== "number") return reject(breaker, before, admission.retryAfterMillis, fiber)
          annotateSpan(fiber, breaker.name, "HalfOpen")
          if (before._tag === "HalfOpen") return self
          return Effect.andThen(reportChange(breaker, before, after, "probe", clock), self)
        }
      )
    }),
    (exit) => admitted === undefined ? undefined : settle(admitted, ticket, exit, fiber)
  )
}

const reject = (
  breaker: Breaker,
  state: machine.State,
  retryAfterMillis: number,
  fiber: Fiber.Fiber<unknown, unknown>
): Exit.Exit<never, CircuitOpenError> => {
  breaker.series.count("rejected")
  annotateSpan(fiber, breaker.name, state._tag === "HalfOpen" ? "HalfOpen" : "Open")
  return breaker.shared.rejections.get(breaker, breaker.name, retryAfterMillis)
}

/** Records how the call admitted with `ticket` ended; runs uninterruptibly, as the exit handler of the call. */
const settle = (
  breaker: Breaker,
  ticket: number,
  exit: Exit.Exit<unknown, unknown>,
  fiber: Fiber.Fiber<unknown, unknown>
): Effect.Effect<void> | undefined => {
  // The common case, a call that succeeded on a closed circuit, changes nothing but counters: no classifying, no
  // clock, no write.
  if (exit._tag === "Success" && Ref.getUnsafe(breaker.state)._tag === "Closed") {
    breaker.inFlight--
    breaker.series.success()
    return undefined
  }
  const outcome = exit._tag === "Success" ? "success" : classify(exit, breaker.shared.options.isFailure)
  if (outcome === "success") breaker.series.success()
  else breaker.series.count(outcome)
  if (outcome !== "failure" && Ref.getUnsafe(breaker.state)._tag === "Closed") {
    breaker.inFlight--
    return undefined
  }
  const clock = clockOf(fiber)
  return Effect.flatMap(
    Ref.modify(breaker.state, (before) => {
      // In the same step as the record, so that the set never drops a breaker with a result still to record.
      breaker.inFlight--
      const after = machine.record(before, ticket, outcome, monotonicMillis(clock), clock, breaker.shared.limits)
      return [{ before, after }, after]
    }),
    ({ after, before }) => {
      if (before._tag === after._tag) return Effect.void
      const reason: Reason = before._tag === "Closed"
        ? "failures"
        : outcome === "success"
        ? "probe-succeeded"
        : "probe-failed"
      return reportChange(breaker, before, after, reason, clock)
    }
  )
}

/** How a call ended, as far as the breaker is concerned. */
const classify = (exit: Exit.Exit<unknown, unknown>, isFailure: (error: unknown) => boolean): machine.Outcome => {
  if (Exit.isSuccess(exit)) return "success"
  let answered = false
  for (const reason of exit.cause.reasons) {
    if (Cause.isDieReason(reason)) return "failure"
    if (Cause.isFailReason(reason)) {
      // Another breaker rejected a call inside this one: this peer was not asked, so it says nothing about it.
      if (reason.error instanceof CircuitOpenError) continue
      let counts: unknown
      try {
        counts = isFailure(reason.error)
      } catch {
        // A predicate that throws cannot tell us the peer is fine: count the call.
        counts = true
      }
      if (counts) return "failure"
      answered = true
    }
  }
  // A typed failure that isFailure rejects means the peer answered; a cause of interruptions alone says nothing.
  return answered ? "success" : "ignored"
}

/**
 * Applies an operator's change (reset, isolate, release) in one `Ref.modify`, to a breaker the caller counted as in
 * flight. A reset is reported unless the circuit is isolated (a reset does not end an isolation); isolating and
 * releasing are reported when an isolation begins or ends (stacked isolations change only a count).
 */
export const applyOperatorChange = (
  breaker: Breaker,
  change: (state: machine.State, now: number, wall: machine.WallClock) => machine.State,
  reason: Reason,
  clock: Clock.Clock
): Effect.Effect<void> =>
  Effect.flatMap(
    Ref.modify(breaker.state, (before) => {
      // Releases the hold the caller took on the breaker when it looked it up.
      breaker.inFlight--
      const after = change(before, monotonicMillis(clock), clock)
      return [{ before, after }, after]
    }),
    ({ after, before }) => {
      const reported = (reason === "reset" && after !== before) ||
        (before._tag === "Isolated") !== (after._tag === "Isolated")
      return reported ? reportChange(breaker, before, after, reason, clock) : Effect.void
    }
  )
