/**
 * Model-based property test: random command sequences run against the real `CircuitBreakerSet` under `TestClock`,
 * every outcome compared with the reference model in `./model.ts`.
 *
 * A probe runs in a fiber of its own, detached from its caller: interrupting a probe's caller (`interruptFromOutside`)
 * releases the caller at once and leaves the probe in flight, to be ended by a later `Finish` through its latch. A
 * probe still in flight when its lease ends (during an `Advance`) is interrupted then, and its caller, if it still
 * waits, fails with `CircuitOpenError`.
 *
 * Environment:
 * - `MODEL_RUNS`: sequences to run (default 1000; `npm run test:model-long` runs 100,000).
 * - `MODEL_SEED`: the fast-check seed (default fixed, so CI runs the same sequences each time).
 * - `MODEL_PATH`: with the seed, replays one failure as fast-check printed it (`{ seed, path }`).
 */
import { describe, it } from "@effect/vitest"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Layer, References } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { CircuitBreakerSet } from "../../src/index.ts"
import type { CircuitState } from "../../src/index.ts"
import * as Model from "./model.ts"

const numRuns = Number(process.env.MODEL_RUNS ?? 1000)
const seed = Number(process.env.MODEL_SEED ?? 20_240_604)
const path = process.env.MODEL_PATH
/** With `MODEL_STATS=1`, prints how often each situation of interest came up (to check the generators reach them). */
const stats = process.env.MODEL_STATS ? new Map<string, number>() : undefined
const note = (label: string): void => {
  if (stats !== undefined) stats.set(label, (stats.get(label) ?? 0) + 1)
}

// --- commands -------------------------------------------------------------------------------------------------

/** Any string is a peer: the empty string and `__proto__` included. */
const peers = ["a", "__proto__", ""] as const
type Peer = typeof peers[number]

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

/** A time step: a number of milliseconds, or one of the options' durations, or 1 ms either side of it. */
type Step = number | `${"window" | "resetTimeout" | "idleTimeToLive"}${"" | "-1" | "+1"}`

type Command =
  | { readonly _tag: "Advance"; readonly by: Step }
  /** A call that starts and ends now. */
  | { readonly _tag: "Call"; readonly peer: Peer; readonly ending: Ending }
  /** A call that starts now and stays in flight until a later `Finish` (or forever). */
  | { readonly _tag: "Start"; readonly peer: Peer }
  /**
   * Ends the `pick`-th call in flight (modulo their number), or interrupts its caller from outside (which ends a call
   * admitted while closed, but only detaches a probe from its caller: the probe stays in flight).
   */
  | { readonly _tag: "Finish"; readonly pick: number; readonly ending: Ending | "interruptFromOutside" }
  /** Concurrent calls: all start now, each in its own fiber; the admitted ones end together. */
  | { readonly _tag: "Batch"; readonly calls: ReadonlyArray<{ readonly peer: Peer; readonly ending: Ending }> }
  | { readonly _tag: "Read"; readonly peer: Peer }

interface Scenario {
  readonly maxFailures: number
  readonly window: number
  readonly resetTimeout: number
  readonly idleTimeToLive: number
  readonly commands: ReadonlyArray<Command>
}

const durationArb = fc.oneof(
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 5 }) },
  { weight: 6, arbitrary: fc.integer({ min: 500, max: 5000 }) }
)
/** Mostly one peer, so that its circuit goes through every state; the others check independence. */
const peerArb = fc.oneof(
  { weight: 5, arbitrary: fc.constant(peers[0]) },
  { weight: 2, arbitrary: fc.constant(peers[1]) },
  { weight: 1, arbitrary: fc.constant(peers[2]) }
)
const endingArb = fc.constantFrom(...endings)
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.constantFrom<Step>(
    "window",
    "window-1",
    "window+1",
    "resetTimeout",
    "resetTimeout-1",
    "resetTimeout+1",
    "idleTimeToLive",
    "idleTimeToLive-1",
    "idleTimeToLive+1"
  ),
  fc.integer({ min: 0, max: 3 }),
  fc.integer({ min: 1, max: 6000 })
)

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ _tag: fc.constant("Advance" as const), by: stepArb }) },
  { weight: 5, arbitrary: fc.record({ _tag: fc.constant("Call" as const), peer: peerArb, ending: endingArb }) },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Start" as const), peer: peerArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      _tag: fc.constant("Finish" as const),
      pick: fc.nat({ max: 7 }),
      ending: fc.oneof(endingArb, fc.constant("interruptFromOutside" as const))
    })
  },
  {
    weight: 1,
    arbitrary: fc.record({
      _tag: fc.constant("Batch" as const),
      calls: fc.array(fc.record({ peer: peerArb, ending: endingArb }), { minLength: 2, maxLength: 6 })
    })
  },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Read" as const), peer: peerArb }) }
)

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  maxFailures: fc.integer({ min: 0, max: 3 }),
  window: durationArb,
  resetTimeout: durationArb,
  idleTimeToLive: durationArb,
  commands: fc.array(commandArb, { maxLength: 60, size: "max" })
})

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

/** An exit as comparable text; interruptions without their fiber ids. */
const showExit = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return `success(${String(exit.value)})`
  const reasons = exit.cause.reasons.map((reason) => {
    if (Cause.isFailReason(reason)) {
      const error = reason.error
      if (error === counted) return "fail(counted)"
      if (error === rejected) return "fail(rejected)"
      if (error instanceof Error && error.name === "CircuitOpenError") {
        const retryAfter = Duration.toMillis((error as unknown as { retryAfter: Duration.Duration }).retryAfter)
        return `fail(CircuitOpenError, retryAfter ${retryAfter})`
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

// --- running a scenario -------------------------------------------------------------------------------------

/** A call started by `Start`, admitted and still running. */
interface InFlight {
  readonly peer: Peer
  readonly ticket: Model.Ticket
  readonly release: Deferred.Deferred<Ending>
  /** The caller's fiber. */
  readonly fiber: Fiber.Fiber<string, unknown>
  /** A probe whose caller was interrupted: the probe runs on, and nobody waits for its result. */
  readonly detached: boolean
}

/** A call forked in its own fiber; `started` tells whether the wrapped effect began (the call was admitted). */
interface Forked {
  readonly fiber: Fiber.Fiber<string, unknown>
  readonly started: () => boolean
}

class Mismatch extends Error {}

/**
 * The state view as comparable text: the fields the model knows, durations in milliseconds. Fields added later for
 * features the model leaves out are checked to be at rest (an Open circuit is never `isolated` here).
 */
const showState = (state: CircuitState.CircuitState): string => {
  switch (state._tag) {
    case "Closed":
      return JSON.stringify({ _tag: state._tag, failures: state.failures })
    case "Open": {
      const { isolated } = state as { readonly isolated?: unknown }
      return JSON.stringify({
        _tag: state._tag,
        openedAt: state.openedAt,
        probeAt: state.probeAt,
        retryAfter: Duration.toMillis(state.retryAfter),
        ...(isolated === undefined || isolated === false ? {} : { isolated })
      })
    }
    case "HalfOpen":
      return JSON.stringify({
        _tag: state._tag,
        openedAt: state.openedAt,
        probeInFlight: state.probeInFlight,
        retryAfter: Duration.toMillis(state.retryAfter)
      })
  }
}

const runScenario = (scenario: Scenario) =>
  Effect.gen(function*() {
    const set = yield* CircuitBreakerSet
    const clock = yield* Clock.Clock
    const monotonicAtStart = Number(clock.monotonicTimeNanosUnsafe()) / 1e6
    let model = Model.make(scenario, clock.currentTimeMillisUnsafe())
    let now = 0
    const inFlight: Array<InFlight> = []
    const trace: Array<string> = []
    const admit = (peer: Peer): Model.Admission => {
      const before = Model.view(model, peer, now)
      const [admission, next] = Model.admit(model, peer, now)
      model = next
      if (admission.admitted) note(admission.ticket._tag === "ProbeCall" ? "probe admitted" : "closed call admitted")
      else note(before._tag === "Open" ? "rejected while open" : "rejected while a probe is in flight")
      if (admission.admitted && admission.ticket._tag === "ProbeCall" && inFlight.some((call) => call.peer === peer)) {
        note("probe admitted while an earlier call on the peer is in flight")
      }
      return admission
    }
    const settle = (ticket: Model.Ticket, verdict: Model.Verdict): void => {
      const before = Model.view(model, ticket.peer, now)
      const next = Model.settle(model, ticket, verdict, now)
      const after = Model.view(next, ticket.peer, now)
      if (next === model) note(`${ticket._tag} ${verdict}: decided nothing`)
      else note(`${ticket._tag} ${verdict}: ${before._tag} -> ${after._tag}`)
      model = next
    }

    /** Whether the lease of the probe admitted with `ticket` has ended by now. */
    const leaseEnded = (ticket: Model.Ticket): boolean =>
      ticket._tag === "ProbeCall" && now >= Model.leaseEnd(model, ticket)
    /**
     * The exit of a probe's caller that still waited when the probe's lease ended: it failed then, at the lease's end
     * (the test clock wakes the probe's timer at that instant), when the circuit had just reopened for a whole
     * resetTimeout.
     */
    const leaseEndedExit = `failure(fail(CircuitOpenError, retryAfter ${scenario.resetTimeout}))`

    const fail = (message: string): never => {
      throw new Mismatch(`${message}\ntrace (t = ms since start):\n${trace.join("\n")}`)
    }
    const check = (what: string, expected: string, actual: string): void => {
      if (expected !== actual) fail(`${what}: expected ${expected}, got ${actual}`)
    }

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

    /**
     * Compares the admission decision of a call that has had the chance to start: admitted iff the wrapped effect
     * began; a rejection must have ended the call at once with the model's `CircuitOpenError`.
     */
    const checkAdmission = (what: string, peer: Peer, call: Forked, admission: Model.Admission): void => {
      const exit = call.fiber.pollUnsafe()
      if (admission.admitted) {
        if (!call.started()) fail(`${what}: expected the call to be admitted, got ${exit ? showExit(exit) : "pending"}`)
        return
      }
      if (call.started()) fail(`${what}: expected a rejection (retryAfter ${admission.retryAfter} ms), but it ran`)
      if (exit === undefined) return fail(`${what}: expected a rejection, but the call is still pending`)
      const error = Exit.isFailure(exit) && exit.cause.reasons.length === 1 && Cause.isFailReason(exit.cause.reasons[0])
        ? exit.cause.reasons[0].error
        : undefined
      const actual = error instanceof Error && error.name === "CircuitOpenError"
        ? JSON.stringify({
          peer: (error as unknown as { peer: string }).peer,
          retryAfter: Duration.toMillis((error as unknown as { retryAfter: Duration.Duration }).retryAfter)
        })
        : showExit(exit)
      check(what, JSON.stringify({ peer, retryAfter: admission.retryAfter }), actual)
    }

    const checkStates = (what: string) =>
      Effect.gen(function*() {
        for (const peer of peers) {
          const actual = yield* set.state(peer)
          const expected = Model.view(model, peer, now)
          check(`${what}: state(${JSON.stringify(peer)})`, JSON.stringify(expected), showState(actual))
        }
      })

    const stepMillis = (step: Step): number => {
      if (typeof step === "number") return step
      const match = /^(window|resetTimeout|idleTimeToLive)([+-]1)?$/.exec(step)!
      return scenario[match[1] as "window" | "resetTimeout" | "idleTimeToLive"] + Number(match[2] ?? 0)
    }

    for (const [index, command] of scenario.commands.entries()) {
      const what = `command #${index} ${JSON.stringify(command)} at t=${now}`
      trace.push(`#${index} t=${now} ${JSON.stringify(command)}`)
      switch (command._tag) {
        case "Advance": {
          const millis = stepMillis(command.by)
          if (millis > 0) yield* TestClock.adjust(millis)
          now += Math.max(0, millis)
          const elapsed = Number(clock.monotonicTimeNanosUnsafe()) / 1e6 - monotonicAtStart
          check(`${what}: monotonic clock`, String(now), String(elapsed))
          // A probe whose lease has ended was interrupted then; its caller, if it still waited, was failed then.
          for (const call of inFlight) {
            if (!leaseEnded(call.ticket)) continue
            note("probe in flight when its lease ended")
            if (call.detached) continue
            const exit = call.fiber.pollUnsafe()
            check(
              `${what}: exit of the caller of ${JSON.stringify(call.ticket)}`,
              leaseEndedExit,
              exit ? showExit(exit) : "pending"
            )
          }
          break
        }
        case "Read":
          break
        case "Call": {
          const admission = admit(command.peer)
          const call = yield* fork(command.peer, effectOf(command.ending), true)
          const exit = yield* Fiber.await(call.fiber)
          checkAdmission(what, command.peer, call, admission)
          if (admission.admitted) {
            check(`${what}: exit`, expectedExit(command.ending), showExit(exit))
            settle(admission.ticket, verdictOf(command.ending))
          }
          break
        }
        case "Start": {
          const admission = admit(command.peer)
          const release = yield* Deferred.make<Ending>()
          const call = yield* fork(
            command.peer,
            Effect.flatMap(Deferred.await(release), effectOf),
            true
          )
          // A probe starts in a fiber of its own, which the scheduler runs.
          for (let i = 0; i < 100 && !call.started() && !call.fiber.pollUnsafe(); i++) yield* Effect.yieldNow
          checkAdmission(what, command.peer, call, admission)
          if (admission.admitted) {
            inFlight.push({ peer: command.peer, ticket: admission.ticket, release, fiber: call.fiber, detached: false })
          }
          break
        }
        case "Finish": {
          if (inFlight.length === 0) break
          const index = command.pick % inFlight.length
          const [call] = inFlight.splice(index, 1)
          const { ticket } = call
          trace.push(
            `   finishes the ${call.detached ? "detached " : ""}call on ${JSON.stringify(call.peer)} admitted as ${
              JSON.stringify(ticket)
            }`
          )
          if (command.ending === "interruptFromOutside") {
            yield* Fiber.interrupt(call.fiber)
            if (ticket._tag === "ProbeCall") {
              // The caller is released at once; the probe runs on, detached, and decides when it ends. The model does
              // not change.
              if (!call.detached) {
                note(leaseEnded(ticket) ? "caller of a timed-out probe interrupted" : "probe detached from its caller")
                const exit = yield* Fiber.await(call.fiber)
                check(`${what}: exit`, leaseEnded(ticket) ? leaseEndedExit : "failure(interrupt)", showExit(exit))
              }
              inFlight.splice(index, 0, { ...call, detached: true })
              break
            }
            const exit = yield* Fiber.await(call.fiber)
            check(`${what}: exit`, expectedExit(command.ending), showExit(exit))
            settle(ticket, verdictOf(command.ending))
            break
          }
          // Ended through its latch. After its lease, the probe has been interrupted already: this does nothing.
          const timedOut = leaseEnded(ticket)
          yield* Deferred.succeed(call.release, command.ending)
          if (call.detached) {
            // Nobody waits for a detached probe: let its fibers run to the end.
            for (let i = 0; i < 10; i++) yield* Effect.yieldNow
          } else {
            const exit = yield* Fiber.await(call.fiber)
            check(`${what}: exit`, timedOut ? leaseEndedExit : expectedExit(command.ending), showExit(exit))
          }
          if (call.detached && !timedOut) note(`detached probe ended: ${verdictOf(command.ending)}`)
          settle(ticket, verdictOf(command.ending))
          break
        }
        case "Batch": {
          // Every call is forked first and started by the scheduler in order; the admitted ones wait on the latch,
          // so all admissions happen before any call ends (the model's results do not depend on the order in which
          // calls ending at the same instant are recorded).
          const latch = yield* Deferred.make<void>()
          const calls: Array<Forked> = []
          for (const { ending, peer } of command.calls) {
            calls.push(yield* fork(peer, Effect.andThen(Deferred.await(latch), effectOf(ending)), false))
          }
          for (let i = 0; i < 100 && calls.some((call) => !call.started() && !call.fiber.pollUnsafe()); i++) {
            yield* Effect.yieldNow
          }
          const admissions: Array<Model.Admission> = []
          for (const [i, { peer }] of command.calls.entries()) {
            const admission = admit(peer)
            admissions.push(admission)
            checkAdmission(`${what}: call ${i}`, peer, calls[i], admission)
          }
          yield* Deferred.succeed(latch, undefined)
          for (const [i, { ending }] of command.calls.entries()) {
            const exit = yield* Fiber.await(calls[i].fiber)
            const admission = admissions[i]
            if (admission.admitted) {
              check(`${what}: call ${i} exit`, expectedExit(ending), showExit(exit))
              settle(admission.ticket, verdictOf(ending))
            }
          }
          break
        }
      }
      yield* checkStates(what)
    }
  })

const runOnce = async (scenario: Scenario): Promise<void> => {
  const layer = Layer.merge(
    CircuitBreakerSet.layer({
      maxFailures: scenario.maxFailures,
      window: scenario.window,
      resetTimeout: scenario.resetTimeout,
      idleTimeToLive: scenario.idleTimeToLive,
      isFailure
    }),
    TestClock.layer()
  )
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
    `agrees on ${numRuns} random command sequences (seed ${seed})`,
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
