/**
 * The call protocol: admit a call, run it, classify how it ended, record that in the breaker's `Ref`, and report
 * any change of state.
 *
 * Layout of the primitives, and why:
 * - A call to a closed circuit changes no state, so it is decided in the step that finds the breaker, on a
 *   `Ref.getUnsafe` read: admitted with the circuit's generation as its ticket, it runs under an exit handler and
 *   nothing else. Two primitives per call, because this is the path nearly every call takes. If the fiber is
 *   interrupted before the handler is in place, nothing was taken, so nothing is lost; and when the next step may
 *   yield (where an interruption can land), the call is marked after the handler is in place, one step later.
 * - A call the circuit rejects is rejected in that same step: a rejection changes nothing, so it needs no handler.
 * - A probe takes the slot and runs detached from its caller (see `runProbe` and `forkProbe`), so that no caller
 *   pattern can keep a recovered peer from closing its circuit.
 * - Every record is one `Ref.modify`, run uninterruptibly (an exit handler's effect, or the probe's own fiber).
 * - A set may drop an idle breaker while a call admitted on it still runs (a call longer than the set's time to
 *   live): its result is then recorded in the breaker the set holds for that peer by then.
 * - A call marks the breakers it runs under in its fiber's context, so that a guard of the same peer inside it is
 *   transparent (see `CurrentlyGuarded`).
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Scheduler from "effect/Scheduler"
import { CircuitOpenError } from "../CircuitOpenError.ts"
import type { Reason } from "../CircuitStateChange.ts"
import { type Breaker, type Guarded, type PeerBreaker, unpin } from "./breaker.ts"
import * as machine from "./machine.ts"
import type { Registry } from "./registry.ts"
import { annotateSpan, reportChange, warn } from "./report.ts"
import { clockOf, monotonicMillis } from "./time.ts"
import { tagOf } from "./view.ts"

/** The breakers of a set, keyed by peer. */
export type PeerRegistry = Registry<PeerBreaker, Context.Context<never>>

const CurrentlyGuarded = Context.Reference<Guarded | undefined>("effect-circuit/CurrentlyGuarded", {
  defaultValue: () => undefined
})

/**
 * `context` with `breaker` added to the breakers the call runs under (`guarded`, read from `context`). The last one
 * made is kept per set (or single breaker): consecutive calls to one peer from one context, the common case, then
 * share it, and need not read `guarded` again.
 */
const markedContext = (
  breaker: Breaker,
  context: Context.Context<never>,
  guarded: Guarded | undefined
): Context.Context<never> => {
  const marked = Context.add(context, CurrentlyGuarded, { breaker, outer: guarded })
  breaker.shared.lastMarked = { base: context, guarded, breaker, marked }
  return marked
}

/** `self`, run under `breaker`'s mark: the slow paths' way of marking, one runtime step more than a closed call's. */
const markedCall = <A, E, R>(breaker: Breaker, self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) =>
    Effect.provideService(self, CurrentlyGuarded, { breaker, outer: fiber.getRef(CurrentlyGuarded) })
  )

/**
 * Whether the call already runs under a guard of `breaker`'s peer in the same set (or of the same breaker). Such an
 * inner guard is transparent: one call is one admission and one result.
 */
const isGuardedBy = (guarded: Guarded | undefined, breaker: Breaker): boolean => {
  for (let mark = guarded; mark !== undefined; mark = mark.outer) {
    if (mark.breaker.shared === breaker.shared && mark.breaker.name === breaker.name) return true
  }
  return false
}

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
  if (breaker.shared.pendingWarning !== undefined) return warnFirst(breaker, self, registry)
  const current = Ref.getUnsafe(breaker.state)
  const context = fiber.context
  let last = breaker.shared.lastMarked
  if (last === undefined || last.base !== context) {
    last = { base: context, guarded: fiber.getRef(CurrentlyGuarded), breaker: undefined, marked: undefined }
    breaker.shared.lastMarked = last
  }
  const guarded = last.guarded
  if (guarded !== undefined && isGuardedBy(guarded, breaker)) return self
  if (current._tag === "Closed") {
    // machine.admit admits every call to a closed circuit with its generation, and needs no clock for it: inlined.
    const ticket = current.generation
    const drops = registry?.drops
    // Only a slow-call policy times its calls: the others read no clock here.
    const startedAt = breaker.settings.limits.tracker.slowMillis === Infinity ? NaN : monotonicMillis(clockOf(fiber))
    annotateSpan(fiber, breaker.name, "Closed")
    const marked = last.breaker === breaker ? last.marked : markedContext(breaker, context, guarded)
    const handler = (exit: Exit.Exit<A, E>) => {
      fiber.setContext(context)
      return settle(breaker, ticket, startedAt, exit, fiber, registry, drops)
    }
    if (mayYieldNext(fiber)) {
      // The fiber may yield before the handler is in place, and an interruption there would leave the mark behind
      // (its finalizers would then pass this peer's guard unchecked): marked once the handler is in place instead.
      return Effect.onExitPrimitive(
        Effect.withFiber((inner) => {
          inner.setContext(marked)
          return self
        }),
        handler
      )
    }
    // Marks the call as guarded by this breaker for its own duration, in the same step as its admission; the exit
    // handler puts the caller's context back before anything else.
    fiber.setContext(marked)
    return Effect.onExitPrimitive(self, handler)
  }
  return runNotClosed(fiber, breaker, current, self, registry)
}

const standardShouldYield = Scheduler.MixedScheduler.prototype.shouldYield

/**
 * Whether the fiber's next step may yield to the scheduler (where an interruption can land). Effect's own scheduler
 * yields once a fiber has taken `maxOpsBeforeYield` steps; any other scheduler may yield at any step.
 */
const mayYieldNext = (fiber: Fiber.Fiber<unknown, unknown>): boolean => {
  const cache = fiber.cache
  if (cache.preventYield) return false
  return cache.scheduler.shouldYield !== standardShouldYield || fiber.currentOpCount + 1 >= cache.maxOpsBeforeYield
}

/** Logs the set's pending warning in this call's fiber, then runs the call. */
const warnFirst = <A, E, R>(
  breaker: Breaker,
  self: Effect.Effect<A, E, R>,
  registry: PeerRegistry | undefined
): Effect.Effect<A, E | CircuitOpenError, R> => {
  const warning = breaker.shared.pendingWarning ?? Effect.void
  breaker.shared.pendingWarning = undefined
  return Effect.andThen(warning, Effect.withFiber((fiber) => run(fiber, breaker, self, registry)))
}

/** `run` for a circuit that is not closed: a rejection, or the probe. Apart, so that `run` stays small. */
const runNotClosed = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  breaker: Breaker,
  current: machine.State,
  self: Effect.Effect<A, E, R>,
  registry: PeerRegistry | undefined
): Effect.Effect<A, E | CircuitOpenError, R> => {
  const clock = clockOf(fiber)
  const now = monotonicMillis(clock)
  if (current._tag === "Open") {
    // machine.admit's rejection by an open circuit, inlined: the path every call takes while a peer is down.
    const waited = now - current.openedAt
    if (waited < current.openMillis) return reject(breaker, current, current.openMillis - waited, fiber, self)
  }
  const live = machine.expireProbe(current, now, clock)
  const [admission] = machine.admit(live, now, breaker.settings.limits, breaker.openings(fiber.context))
  if (typeof admission !== "number") return reject(breaker, live, admission.retryAfterMillis, fiber, self)
  return runProbe(fiber, breaker, self, registry, registry?.drops)
}

/**
 * A call the first step would admit as the probe. Uninterruptibly up to the wait for its result: decide again (the
 * state may have changed at a yield since), take the slot in one `Ref.modify`, and start the probe in a fiber of its
 * own, so that an interruption can neither come between taking the slot and starting the probe nor stop the probe.
 */
const runProbe = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  found: Breaker,
  self: Effect.Effect<A, E, R>,
  registry: PeerRegistry | undefined,
  drops: number | undefined
): Effect.Effect<A, E | CircuitOpenError, R> =>
  Effect.uninterruptibleMask((restore) => {
    const breaker = current(found, fiber, registry, drops)
    const clock = clockOf(fiber)
    const limits = breaker.settings.limits
    const openings = breaker.openings(fiber.context)
    return Effect.flatten(
      Ref.modify(breaker.state, (stored): readonly [Effect.Effect<A, E | CircuitOpenError, R>, machine.State] => {
        const now = monotonicMillis(clock)
        const before = machine.expireProbe(stored, now, clock)
        const [admission, after] = machine.admit(before, now, limits, openings)
        let next: Effect.Effect<A, E | CircuitOpenError, R>
        if (typeof admission !== "number") {
          next = restore(reject(breaker, before, admission.retryAfterMillis, fiber, self))
        } else if (before._tag === "Closed") {
          // Closed by the probe of another call meanwhile: an ordinary closed call.
          annotateSpan(fiber, breaker.name, "Closed")
          const dropsNow = registry?.drops
          const startedAt = limits.tracker.slowMillis === Infinity ? NaN : now
          next = restore(
            Effect.onExitPrimitive(
              markedCall(breaker, self),
              (exit) => settle(breaker, admission, startedAt, exit, fiber, registry, dropsNow)
            )
          )
        } else {
          breaker.series.probe()
          annotateSpan(fiber, breaker.name, "HalfOpen")
          const lease = { ticket: admission, end: now + (after as machine.HalfOpen).probeTimeoutMillis }
          const started = Effect.flatMap(
            forkProbe(breaker, lease, self, registry),
            (probe) => restore(Fiber.join(probe))
          )
          next = before._tag === "HalfOpen"
            ? started
            : Effect.andThen(reportChange(breaker, before, after, "probe", clock), started)
        }
        const expired = before === stored
          ? next
          : Effect.andThen(reportChange(breaker, stored, before, "probe-timeout", clock), next)
        return [expired, after]
      })
    )
  })

/**
 * Starts the probe admitted with `lease.ticket`, detached from its caller, which may stop waiting for it: the probe
 * runs on, and its result decides the circuit as if the caller had waited. Two fibers, forked by the caller in this
 * order, in the set's scope (closing the set interrupts them) or detached for a single breaker: one runs the call and
 * records its result if it ends within the lease; the other, whose result the caller waits for, waits for it until
 * the lease ends. A call still running then is interrupted without waiting for it (an uninterruptible effect cannot
 * hold the circuit); the circuit reopens at the lease's end, counted once as a failure, and the caller fails with
 * `CircuitOpenError`. A call that ends after its lease, however it ends, decides nothing more.
 */
const forkProbe = <A, E, R>(
  breaker: Breaker,
  lease: { readonly ticket: number; readonly end: number },
  self: Effect.Effect<A, E, R>,
  registry: PeerRegistry | undefined
): Effect.Effect<Fiber.Fiber<A, E | CircuitOpenError>, never, R> => {
  const scope = breaker.shared.probes
  const fork = <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) =>
    scope === undefined ? Effect.forkDetach(effect) : Effect.forkIn(effect, scope)
  const call = Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(
      Effect.exit(restore(markedCall(breaker, self))),
      (exit) =>
        Effect.withFiber((fiber): Effect.Effect<ProbeEnd<A, E>> => {
          // Past its lease, the probe has failed already (or is about to be counted so): nothing more to record.
          if (monotonicMillis(clockOf(fiber)) >= lease.end) return Effect.succeed({ recorded: false, exit })
          const recorded = settle(breaker, lease.ticket, NaN, exit, fiber, registry, registry?.drops)
          const end = Effect.succeed({ recorded: true, exit })
          return recorded === undefined ? end : Effect.andThen(recorded, end)
        })
    )
  )
  const watch = (running: Fiber.Fiber<ProbeEnd<A, E>>) =>
    Effect.flatMap(
      // The lease runs from the probe's admission, not from when this fiber got to run.
      Effect.clockWith((clock) =>
        Effect.timeoutOption(Fiber.await(running), Duration.millis(Math.max(0, lease.end - monotonicMillis(clock))))
      ),
      (ended) =>
        Effect.withFiber((fiber): Effect.Effect<A, E | CircuitOpenError> => {
          let endedAtLease: Exit.Exit<A, E> | undefined
          if (Option.isSome(ended)) {
            const result = ended.value
            if (result._tag === "Failure") return Exit.failCause(result.cause)
            if (result.value.recorded) return result.value.exit
            endedAtLease = result.value.exit
          }
          // Its lease has ended: it runs past it, or ended at that very instant, too late to decide.
          const callResult = endedAtLease ?? Effect.flatMap(
            Fiber.await(running),
            (result) => result._tag === "Failure" ? Exit.failCause(result.cause) : result.value.exit
          )
          // The half-open period it probed is over (a reset, another probe's result or lease): it is an ordinary call
          // by then, whose result decides nothing, and it runs to its end.
          if (!holdsSlot(breaker, lease.ticket)) return callResult
          // A dry run interrupts nothing: the circuit reopens as it would, and the caller gets the call's result.
          if (breaker.settings.observe) return Effect.andThen(leaseEnded(breaker, fiber), callResult)
          if (Option.isNone(ended)) running.interruptUnsafe(fiber.id)
          return Effect.flatMap(
            leaseEnded(breaker, fiber),
            (retryAfter) => breaker.shared.rejections.get(breaker, breaker.name, "Open", retryAfter)
          )
        })
    )
  return Effect.flatMap(fork(call), (running) => fork(watch(running)))
}

/**
 * Whether the probe admitted with `ticket` is still the circuit's business at its lease's end: it holds its slot, or its lease
 * ending is what reopened the circuit (another fiber at that same instant may have applied it first).
 */
const holdsSlot = (breaker: Breaker, ticket: number): boolean => {
  const state = Ref.getUnsafe(breaker.state)
  if (state._tag === "HalfOpen") return state.probes.some((probe) => probe.ticket === ticket)
  return state._tag === "Open" && state.timedOut.includes(ticket)
}

/** How a probe's call ended, and whether its result was recorded (it was not if it ended past its lease). */
interface ProbeEnd<A, E> {
  readonly recorded: boolean
  readonly exit: Exit.Exit<A, E>
}

/**
 * The probe's lease ended while it ran (it has been interrupted, unless in observe mode): the circuit reopens at the
 * lease's end. Gives how long until the circuit admits a call again.
 */
const leaseEnded = (breaker: Breaker, fiber: Fiber.Fiber<unknown, unknown>): Effect.Effect<number> => {
  const clock = clockOf(fiber)
  const limits = breaker.settings.limits
  const openings = breaker.openings(fiber.context)
  breaker.series.count("failure")
  return Effect.flatten(Ref.modify(breaker.state, (stored) => {
    const now = monotonicMillis(clock)
    const after = machine.expireProbe(stored, now, clock)
    const [admission] = machine.admit(after, now, limits, openings)
    const retryAfter = Effect.succeed(typeof admission === "number" ? 0 : admission.retryAfterMillis)
    return [
      after === stored
        ? retryAfter
        : Effect.andThen(reportChange(breaker, stored, after, "probe-timeout", clock), retryAfter),
      after
    ]
  }))
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

/**
 * A call the circuit rejects: it fails with `CircuitOpenError` without running. In observe mode it runs instead,
 * counted as `would_reject`, and its result decides nothing.
 */
const reject = <A, E, R>(
  breaker: Breaker,
  state: machine.State,
  retryAfterMillis: number,
  fiber: Fiber.Fiber<unknown, unknown>,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | CircuitOpenError, R> => {
  annotateSpan(fiber, breaker.name, tagOf(state))
  if (breaker.settings.observe) {
    breaker.series.count("would_reject")
    return markedCall(breaker, self)
  }
  breaker.series.count("rejected")
  const by = state._tag === "HalfOpen" || state._tag === "Isolated" ? state._tag : "Open"
  return breaker.shared.rejections.get(breaker, breaker.name, by, retryAfterMillis)
}

/**
 * Records how the call admitted with `ticket` at `startedAt` (`NaN` when not timed) ended; runs uninterruptibly, as
 * the exit handler of the call.
 */
const settle = (
  admitted: Breaker,
  ticket: number,
  startedAt: number,
  exit: Exit.Exit<unknown, unknown>,
  fiber: Fiber.Fiber<unknown, unknown>,
  registry: PeerRegistry | undefined,
  drops: number | undefined
): Effect.Effect<void> | undefined => {
  // The set may have dropped the breaker the call was admitted on (idle, closed with an empty window): the breaker it
  // holds for the peer now went on from the dropped one's generation, so the ticket decides there as it would have.
  const breaker = current(admitted, fiber, registry, drops)
  // The common case, a call that succeeded on a closed circuit whose policy a success cannot change (the default's),
  // changes nothing but a counter: no classifying, no clock, no write.
  if (exit._tag === "Success") {
    const state = Ref.getUnsafe(breaker.state)
    if (state._tag === "Closed") {
      const limits = breaker.settings.limits
      if (!limits.tracker.recordsSuccess(state.counts)) {
        breaker.series.success()
        return undefined
      }
      // A success that only adds to counts a rate already keeps changes no state: recorded in this synchronous,
      // uninterruptible step, as `Ref.modify` would, without its runtime step.
      const now = monotonicMillis(clockOf(fiber))
      if (machine.recordSuccessInPlace(state, ticket, now - startedAt, now, limits)) {
        breaker.series.success()
        breaker.shared.fleet?.outcome(breaker, fiber, false, now - startedAt)
        return undefined
      }
    }
  }
  return settleOutcome(breaker, ticket, startedAt, exit, fiber)
}

/** `settle` past its common case; apart, so that the common case allocates nothing. */
const settleOutcome = (
  breaker: Breaker,
  ticket: number,
  startedAt: number,
  exit: Exit.Exit<unknown, unknown>,
  fiber: Fiber.Fiber<unknown, unknown>
): Effect.Effect<void> | undefined => {
  let thrown: { readonly error: unknown } | undefined
  const outcome = exit._tag === "Success"
    ? "success"
    : classify(exit, breaker.settings.options.isFailure, (error) => (thrown ??= { error }))
  if (outcome === "success") breaker.series.success()
  else breaker.series.count(outcome)
  if (outcome !== "ignored" && breaker.shared.fleet !== undefined) {
    const durationMillis = Number.isNaN(startedAt) ? NaN : monotonicMillis(clockOf(fiber)) - startedAt
    breaker.shared.fleet.outcome(breaker, fiber, outcome === "failure", durationMillis)
  }
  const limits = breaker.settings.limits
  const stored = Ref.getUnsafe(breaker.state)
  if (
    stored._tag === "Closed" &&
    (outcome === "ignored" || (outcome === "success" && !limits.tracker.recordsSuccess(stored.counts)))
  ) return undefined
  const clock = clockOf(fiber)
  const openings = breaker.openings(fiber.context)
  const recorded = Effect.flatten(Ref.modify(breaker.state, (before) => {
    const now = monotonicMillis(clock)
    const after = machine.record(before, ticket, outcome, now, now - startedAt, clock, limits, openings)
    if (before._tag === after._tag) return [Effect.void, after]
    const reason: Reason = after._tag === "Open" ? after.reason : "probe-succeeded"
    return [reportChange(breaker, before, after, reason, clock), after]
  }))
  if (thrown === undefined || breaker.shared.warnedIsFailure.has(breaker)) return recorded
  // Once per breaker: a predicate that throws throws on every failure.
  breaker.shared.warnedIsFailure.add(breaker)
  return Effect.andThen(
    warn(breaker, "isFailure threw; the call was counted as a failure. This is logged once per peer.", thrown.error),
    recorded
  )
}

/** How a call ended, as far as the breaker is concerned. */
export const classify = (
  exit: Exit.Exit<unknown, unknown>,
  isFailure: (error: unknown) => boolean,
  onThrow: (error: unknown) => void
): machine.Outcome => {
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
      } catch (error) {
        // A predicate that throws cannot tell us the peer is fine: count the call.
        onThrow(error)
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
  change: (state: machine.State, now: number, wall: machine.WallClock, limits: machine.Limits) => machine.State,
  reason: Reason,
  clock: Clock.Clock
): Effect.Effect<void> =>
  Effect.flatMap(
    Ref.modify(breaker.state, (before) => {
      // Releases the pin the caller took on the breaker when it looked it up.
      unpin(breaker)
      const after = change(before, monotonicMillis(clock), clock, breaker.settings.limits)
      return [{ before, after }, after]
    }),
    ({ after, before }) => {
      const reported = (reason === "reset" && after !== before) ||
        (before._tag === "Isolated") !== (after._tag === "Isolated")
      return reported ? reportChange(breaker, before, after, reason, clock) : Effect.void
    }
  )
