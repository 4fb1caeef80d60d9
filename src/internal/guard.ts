/**
 * The call protocol: admit a call, run it, classify how it ended, record that in the breaker's `Ref`, and report
 * any change of state.
 *
 * Layout of the primitives, and why:
 * - A call to a closed circuit changes no state, so it is decided in the step that finds the breaker, on a
 *   `Ref.getUnsafe` read: admitted with the circuit's generation as its ticket, it runs under an exit handler and
 *   nothing else. Two primitives per call, because this is the path nearly every call takes. If the fiber is
 *   interrupted before the handler is in place, nothing was taken, so nothing is lost.
 * - A call the circuit rejects is rejected in that same step: a rejection changes nothing, so it needs no handler.
 * - A probe takes a slot, which must be given back whatever happens, so its exit handler is put in place first and
 *   a second step decides again (the state may have changed at a scheduler yield in between) and takes the slot in
 *   one `Ref.modify`.
 * - Every record is one `Ref.modify`, run uninterruptibly as the exit handler's effect.
 * - A set may drop an idle breaker while a call admitted on it still runs (a call longer than the set's time to
 *   live): its result is then recorded in the breaker the set holds for that peer by then.
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
): Effect.Effect<A, E | CircuitOpenError, R> => Effect.withFiber((fiber) => run(fiber, breaker, self, undefined))

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
): Effect.Effect<A, E | CircuitOpenError, R> => run(fiber, registry.lookup(peer, fiber.context), self, registry)

const run = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  breaker: Breaker,
  self: Effect.Effect<A, E, R>,
  registry: PeerRegistry | undefined
): Effect.Effect<A, E | CircuitOpenError, R> => {
  const current = Ref.getUnsafe(breaker.state)
  if (current._tag === "Closed") {
    // machine.admit admits every call to a closed circuit with its generation, and needs no clock for it: inlined.
    const ticket = current.generation
    const drops = registry?.drops
    annotateSpan(fiber, breaker.name, "Closed")
    return Effect.onExitPrimitive(self, (exit) => settle(breaker, ticket, exit, fiber, registry, drops))
  }
  const [admission] = machine.admit(current, monotonicMillis(clockOf(fiber)), breaker.shared.limits)
  if (typeof admission !== "number") return reject(breaker, current, admission.retryAfterMillis, fiber)
  return runProbe(fiber, breaker, self, registry, registry?.drops)
}

/** A call the first step would admit as the probe: its handler goes in place before the slot is taken. */
const runProbe = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  found: Breaker,
  self: Effect.Effect<A, E, R>,
  registry: PeerRegistry | undefined,
  drops: number | undefined
): Effect.Effect<A, E | CircuitOpenError, R> => {
  let admitted: Breaker | undefined
  let ticket = 0
  return Effect.onExitPrimitive(
    Effect.withFiber((): Effect.Effect<A, E | CircuitOpenError, R> => {
      const breaker = current(found, fiber, registry, drops)
      const clock = clockOf(fiber)
      return Effect.flatten(
        Ref.modify(breaker.state, (before): readonly [Effect.Effect<A, E | CircuitOpenError, R>, machine.State] => {
          const [admission, after] = machine.admit(before, monotonicMillis(clock), breaker.shared.limits)
          if (typeof admission !== "number") {
            return [reject(breaker, before, admission.retryAfterMillis, fiber), after]
          }
          // Taken in the same step as the slot, so that the handler gives back exactly what was taken.
          admitted = breaker
          ticket = admission
          drops = registry?.drops
          if (before._tag === "Closed") {
            annotateSpan(fiber, breaker.name, "Closed")
            return [self, after]
          }
          breaker.series.probe()
          annotateSpan(fiber, breaker.name, "HalfOpen")
          const report = before._tag === "HalfOpen"
            ? self
            : Effect.andThen(reportChange(breaker, before, after, "probe", clock), self)
          return [report, after]
        })
      )
    }),
    (exit) => admitted === undefined ? undefined : settle(admitted, ticket, exit, fiber, registry, drops)
  )
}

/** The breaker `registry` holds for `breaker`'s peer, if it dropped `breaker` since it counted `drops`. */
const current = (
  breaker: Breaker,
  fiber: Fiber.Fiber<unknown, unknown>,
  registry: PeerRegistry | undefined,
  drops: number | undefined
): Breaker =>
  registry === undefined || registry.drops === drops || registry.get(breaker.name) === breaker
    ? breaker
    : registry.lookup(breaker.name, fiber.context)

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
  admitted: Breaker,
  ticket: number,
  exit: Exit.Exit<unknown, unknown>,
  fiber: Fiber.Fiber<unknown, unknown>,
  registry: PeerRegistry | undefined,
  drops: number | undefined
): Effect.Effect<void> | undefined => {
  const breaker = current(admitted, fiber, registry, drops)
  // The common case, a call that succeeded on a closed circuit, changes nothing but a counter: no classifying, no
  // clock, no write.
  if (exit._tag === "Success" && Ref.getUnsafe(breaker.state)._tag === "Closed") {
    breaker.series.success()
    return undefined
  }
  const outcome = exit._tag === "Success" ? "success" : classify(exit, breaker.shared.options.isFailure)
  if (outcome === "success") breaker.series.success()
  else breaker.series.count(outcome)
  if (outcome !== "failure" && Ref.getUnsafe(breaker.state)._tag === "Closed") return undefined
  const clock = clockOf(fiber)
  return Effect.flatten(Ref.modify(breaker.state, (before) => {
    const after = machine.record(before, ticket, outcome, monotonicMillis(clock), clock, breaker.shared.limits)
    if (before._tag === after._tag) return [Effect.void, after]
    const reason: Reason = before._tag === "Closed"
      ? "failures"
      : outcome === "success"
      ? "probe-succeeded"
      : "probe-failed"
    return [reportChange(breaker, before, after, reason, clock), after]
  }))
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
 * Applies an operator's change (reset, isolate, release) in one `Ref.modify`, to a breaker the caller pinned. A reset is reported unless the circuit is isolated (a reset does not end an isolation); isolating and
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
      // Releases the pin the caller took on the breaker when it looked it up.
      breaker.pins--
      const after = change(before, monotonicMillis(clock), clock)
      return [{ before, after }, after]
    }),
    ({ after, before }) => {
      const reported = (reason === "reset" && after !== before) ||
        (before._tag === "Isolated") !== (after._tag === "Isolated")
      return reported ? reportChange(breaker, before, after, reason, clock) : Effect.void
    }
  )
