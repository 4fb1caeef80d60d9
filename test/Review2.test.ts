/**
 * A bug found by a second review (of the fixes since 3ac75c8), pinned by the test that showed it; fixed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber } from "effect"
import { CircuitBreakerSet, OpenDuration, Policy, withBreaker } from "../src/index.ts"
import { failing, forkAdmitted, provideSet, state } from "./utils.ts"

/**
 * A `Clock` moved by hand. Sleeps that end at the same instant wake latest-registered first (a clock promises no
 * order between timers of different lengths that end together, and Node's timers do not keep one), each woken fiber
 * running until it suspends before the next wakes.
 */
const manualClock = () => {
  let millis = 0
  let registered = 0
  const sleeps: Array<{ readonly end: number; readonly order: number; readonly wake: () => void }> = []
  const clock: Clock.Clock = {
    currentTimeMillisUnsafe: () => millis,
    currentTimeMillis: Effect.sync(() => millis),
    currentTimeNanosUnsafe: () => BigInt(millis) * 1_000_000n,
    currentTimeNanos: Effect.sync(() => BigInt(millis) * 1_000_000n),
    monotonicTimeNanosUnsafe: () => BigInt(millis) * 1_000_000n,
    monotonicTimeNanos: Effect.sync(() => BigInt(millis) * 1_000_000n),
    sleep: (duration) =>
      Duration.toMillis(duration) <= 0 ? Effect.void : Effect.callback<void>((resume) => {
        const entry = {
          end: millis + Duration.toMillis(duration),
          order: registered++,
          wake: () => resume(Effect.void)
        }
        sleeps.push(entry)
        return Effect.sync(() => {
          const index = sleeps.indexOf(entry)
          if (index !== -1) sleeps.splice(index, 1)
        })
      })
  }
  const settle = Effect.gen(function*() {
    for (let i = 0; i < 200; i++) yield* Effect.yieldNow
  })
  const adjust = (input: Duration.Input) =>
    Effect.gen(function*() {
      yield* settle // fibers already running register their sleeps at the time they were started at
      const target = millis + Duration.toMillis(Duration.fromInputUnsafe(input))
      while (true) {
        const due = sleeps.filter((entry) => entry.end <= target)
          .sort((a, b) => a.end - b.end || b.order - a.order)[0]
        if (due === undefined) break
        sleeps.splice(sleeps.indexOf(due), 1)
        millis = due.end
        due.wake()
        yield* settle
      }
      millis = target
      yield* settle
    })
  return { clock, adjust, settle }
}

describe("Review 2: holdsSlot", () => {
  // src/internal/guard.ts holdsSlot: "its lease ending is what reopened the circuit" is judged by
  // `state.reason === "probe-timeout" && state.openedAt === lease.end`, which is also true of a LATER half-open
  // period's probe whose lease ends at the same instant. P1 lost its slot to a reset; the circuit tripped again and
  // P3, leased for the shorter first opening, hangs; both leases end at t = 11 s. If P3's watcher applies the
  // reopening first, P1's watcher takes it for its own: P1 is interrupted, its caller rejected, and one more failure
  // counted. Under TestClock the watchers wake in registration order (P1's first, which sees P3 in the slot), so the
  // test uses a clock that wakes them the other way round.
  it.effect("a probe that lost its slot is not interrupted when a later probe's lease ends at the same instant", () => {
    const { adjust, clock } = manualClock()
    return Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.exit(failing.pipe(withBreaker("api"))) // t=0: opening 1 (1 s)
      yield* adjust("1 second")
      yield* Effect.exit(failing.pipe(withBreaker("api"))) // t=1: the probe fails: opening 2 (2 s)
      yield* adjust("2 seconds")
      yield* Effect.exit(failing.pipe(withBreaker("api"))) // t=3: opening 3 (4 s)
      yield* adjust("4 seconds")
      // t=7: P1, leased for 4 s (the opening before): its lease ends at t=11.
      const p1 = yield* forkAdmitted(Effect.as(Effect.sleep("10 seconds"), "p1 done"), withBreaker("api"))
      yield* set.reset("api") // P1 loses its slot: an ordinary call from here on
      yield* adjust("2 seconds")
      yield* Effect.exit(failing.pipe(withBreaker("api"))) // t=9: opening 1 again (the reset forgot the backoff)
      yield* adjust("1 second")
      // t=10: P3, leased for 1 s (opening 1's length): its lease ends at t=11 too. It hangs.
      yield* forkAdmitted(Effect.never, withBreaker("api"))
      yield* adjust("1 second") // t=11: P3's lease ends; the circuit reopens (probe-timeout, opened at 11 s)
      const at11 = yield* state("api")
      assert.deepStrictEqual([at11._tag, at11._tag === "Open" && at11.reason], ["Open", "probe-timeout"])
      yield* adjust("6 seconds") // t=17: P1 ends
      // expected Success("p1 done"), got Failure(CircuitOpenError "admitted again in 2s"), at t = 11 s
      assert.deepStrictEqual(yield* Fiber.await(p1), Exit.succeed("p1 done"))
    }).pipe(
      provideSet({
        policy: Policy.consecutive(1),
        openDuration: OpenDuration.exponential({ base: "1 second", max: "1 minute", jitter: false })
      }),
      Effect.provideService(Clock.Clock, clock)
    )
  })
})
