/**
 * Open durations from a `Schedule`: the n-th opening lasts the schedule's n-th delay, found by stepping it n times
 * from zero on a simulated clock that advances by each delay (so `upTo({ duration })` measures time spent open).
 * Once the schedule ends its last delay repeats; every delay is capped at `maxOpenDuration`.
 *
 * Each breaker steps its own copy, synchronously, in the context of the call that needs the delay (so jitter draws
 * from that fiber's `Random`, and `Random.withSeed` makes it repeatable). A delay is kept for its opening number, so
 * asking twice for the same opening gives the same answer; consecutive openings cost one step each.
 */
import type * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Pull from "effect/Pull"
import * as Schedule from "effect/Schedule"
import type { Openings } from "./machine.ts"

type Step = (now: number, input: number) => Pull.Pull<[unknown, Duration.Duration], unknown, unknown>

/** The outcome of one step: a delay in milliseconds, the schedule's end, or a message saying why it failed. */
const step = (run: Step, now: number, input: number, context: Context.Context<never>): number | "done" | string => {
  const exit = Effect.runSyncExitWith(context)(run(now, input))
  if (Exit.isSuccess(exit)) return Duration.toMillis(exit.value[1])
  if (Pull.isDoneCause(exit.cause)) return "done"
  return `the schedule failed when stepped (${describeCause(exit.cause)}): it must run synchronously, without failing`
}

/** A cause as one line: its first defect's or error's message. */
const describeCause = (cause: Cause.Cause<unknown>): string => {
  for (const reason of cause.reasons) {
    const error = reason._tag === "Die" ? reason.defect : reason._tag === "Fail" ? reason.error : undefined
    if (error !== undefined) return error instanceof Error ? error.message : String(error)
  }
  return "interrupted, or run asynchronously"
}

const makeStep = (schedule: Schedule.Schedule<unknown, number>, context: Context.Context<never>): Step | string => {
  const exit = Effect.runSyncExitWith(context)(Schedule.toStep(schedule) as Effect.Effect<Step>)
  return Exit.isSuccess(exit) ? exit.value : `the schedule could not be started (${describeCause(exit.cause)})`
}

/**
 * The first delay of `schedule` in milliseconds, or why it has none: a schedule that ends before its first delay,
 * runs asynchronously or fails cannot time an opening.
 */
export const firstDelay = (
  schedule: Schedule.Schedule<unknown, number>,
  context: Context.Context<never>
): number | string => {
  const run = makeStep(schedule, context)
  if (typeof run === "string") return run
  let first: number | undefined
  let clock = 0
  // The first openings are stepped now, so that a schedule that would give a zero opening later (and with it a
  // zero probe lease) is reported when the breaker is built rather than found in production.
  for (let opening = 1; opening <= checkedOpenings; opening++) {
    const delay = step(run, clock, opening, context)
    if (delay === "done") {
      if (opening === 1) return "Expected a schedule that yields at least one delay: this one ends before its first"
      break
    }
    if (typeof delay === "string") return delay
    if (!(delay > 0) || !Number.isFinite(delay)) {
      return `Expected a schedule whose delays are finite and longer than zero, got ${delay} ms for opening ${opening}`
    }
    first ??= delay
    clock += delay
  }
  return first!
}

/** How many openings of a schedule are checked when a breaker is built. */
const checkedOpenings = 64

/** One breaker's openings from a schedule. `context` is set by the caller before each use. */
export class ScheduleOpenings implements Openings {
  context: Context.Context<never>
  readonly #schedule: Schedule.Schedule<unknown, number>
  readonly #maxMillis: number
  #run: Step | undefined = undefined
  #stepped = 0
  #delay = 0
  #clock = 0
  #ended = false

  constructor(schedule: Schedule.Schedule<unknown, number>, maxMillis: number, context: Context.Context<never>) {
    this.#schedule = schedule
    this.#maxMillis = maxMillis
    this.context = context
  }

  delay(opening: number): number {
    if (opening !== this.#stepped) {
      if (opening < this.#stepped || this.#run === undefined) this.#restart()
      while (this.#stepped < opening) this.#next()
    }
    return this.#delay
  }

  #restart(): void {
    const run = makeStep(this.#schedule, this.context)
    this.#run = typeof run === "string" ? undefined : run
    this.#stepped = 0
    this.#delay = this.#maxMillis
    this.#clock = 0
    this.#ended = this.#run === undefined
  }

  #next(): void {
    this.#stepped++
    if (this.#ended) return
    const delay = step(this.#run!, this.#clock, this.#stepped, this.context)
    if (typeof delay === "number") {
      // A delay that is zero or not finite (a random schedule past the openings checked at build): the longest
      // opening is the safe one, and never a zero-length probe lease.
      this.#delay = Number.isFinite(delay) && delay > 0 ? Math.min(delay, this.#maxMillis) : this.#maxMillis
      this.#clock += this.#delay
      return
    }
    // Ended: the last delay repeats. Failed after it was validated: the longest opening is the safe one.
    this.#ended = true
    if (delay !== "done") this.#delay = this.#maxMillis
  }
}

/** Openings of a fixed duration, shared by every breaker that uses it. */
export const fixedOpenings = (millis: number): Openings => ({ delay: () => millis })
