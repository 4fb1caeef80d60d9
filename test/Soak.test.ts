import { assert, describe, it } from "@effect/vitest"
import { Cause, Clock, Duration, Effect, Exit, Fiber, Metric, Option } from "effect"
import { TestClock } from "effect/testing"
import type { CircuitState } from "../src/CircuitState.ts"
import { CircuitBreakerMetrics, CircuitBreakerSet, CircuitOpenError } from "../src/index.ts"
import { Boom, count, failing, provideSet, random } from "./utils.ts"

const peers = 1_000
const day = 24 * 3_600_000
const step = 5_000
const resetTimeout = 10_000
const idleTimeToLive = 60_000

/** The `CircuitOpenError` that `exit` failed with, if any. */
const openErrorOf = (exit: Exit.Exit<unknown, unknown>): CircuitOpenError | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = Cause.findErrorOption(exit.cause)
  return Option.isSome(error) && error.value instanceof CircuitOpenError ? error.value : undefined
}

/** What one call's own effect did, filled in as it runs and ends. */
interface Outcome {
  readonly name: string
  /** Whether the breaker ran the effect at all. */
  ran: boolean
  /** Whether it ran as the probe of a half-open circuit. */
  probe: boolean
  /** Set just before the effect interrupts itself (the call was cancelled by the effect itself). */
  cancelled: boolean
  end: "success" | "failure" | "interrupted" | undefined
}

describe("soak", () => {
  it.effect("24 hours of mixed traffic on 1,000 peers keeps every invariant", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const next = random(20261127)
      // Each peer is down during random outages; a call fails iff its peer is down when it ends.
      const downUntil = new Float64Array(peers)
      const lastCalled = new Float64Array(peers)
      /** The start of the probe running on each peer, if one is. */
      const probes = new Map<number, number>()
      /** The peers whose last probe interrupted itself, so gave its slot back: their next probe starts half-open. */
      const slotGivenBack = new Set<number>()
      const violations: Array<string> = []
      let now = 0
      let calls = 0
      let maxHeld = 0
      // What the calls' own effects did, and what their callers saw: compared with the metrics at the end.
      const seen = {
        /** Calls rejected at admission, without running. */
        rejected: 0,
        /** Probes whose effect ran (every probe's effect runs, even once its caller is gone). */
        probes: 0,
        /** Probes let through by a circuit half-open since an earlier probe gave its slot back. */
        probesAfterGivenBack: 0,
        probeSucceeded: 0,
        probeFailed: 0,
        /** Probes whose own effect interrupted itself: they decide nothing and give their slot back. */
        probeCancelled: 0,
        /** Probes still running when their lease ended: interrupted then, and the circuit reopened. */
        probeTimedOut: 0,
        /** Callers of such probes that were still waiting, and failed with `CircuitOpenError` at the lease's end. */
        timedOutCallers: 0,
        /** Probes whose caller was interrupted: they ran on, detached, and still decided. */
        probeCallersInterrupted: 0,
        succeeded: 0,
        failed: 0,
        /** Effects that interrupted themselves, closed calls and probes. */
        cancelled: 0,
        /** Calls admitted while closed, interrupted with their caller. */
        closedInterrupted: 0,
        callersInterrupted: 0
      }
      const running = new Set<Fiber.Fiber<unknown, unknown>>()
      /** Checked once every call has ended (a probe may end after its caller is released, or start after it). */
      const timedOut: Array<{ readonly outcome: Outcome; readonly at: number }> = []
      const interruptedCallers: Array<{ readonly outcome: Outcome; readonly at: number }> = []

      /** Sleeps `duration`, then fails if the peer is down then, or interrupts itself if it `cancels`. */
      const answer = (peer: number, duration: number, cancels: boolean, outcome: Outcome) =>
        Effect.gen(function*() {
          yield* Effect.sleep(Duration.millis(duration))
          if (cancels) {
            outcome.cancelled = true
            return yield* Effect.interrupt
          }
          if (downUntil[peer]! > (yield* Clock.currentTimeMillis)) return yield* failing
        })

      /** The effect a call runs once admitted. */
      const work = (peer: number, duration: number, cancels: boolean, outcome: Outcome) =>
        Effect.gen(function*() {
          const name = outcome.name
          outcome.ran = true
          const during = yield* set.state(name)
          const started = yield* Clock.currentTimeMillis
          if (during._tag !== "HalfOpen") return yield* answer(peer, duration, cancels, outcome)
          // A probe: it holds the slot, no other probe of its peer runs, and it ends by its lease's end.
          outcome.probe = true
          seen.probes++
          if (slotGivenBack.delete(peer)) seen.probesAfterGivenBack++
          if (!during.probeInFlight) violations.push(`${name} ran a probe that holds no slot at ${started}`)
          const other = probes.get(peer)
          if (other !== undefined) violations.push(`two live probes on ${name} at ${started} (one since ${other})`)
          probes.set(peer, started)
          const leaseEnd = started + Duration.toMillis(during.retryAfter)
          return yield* answer(peer, duration, cancels, outcome).pipe(
            Effect.onExit((exit) =>
              Effect.gen(function*() {
                const ended = yield* Clock.currentTimeMillis
                probes.delete(peer)
                if (Exit.isSuccess(exit)) return void (seen.probeSucceeded++)
                if (!Cause.hasInterruptsOnly(exit.cause)) return void (seen.probeFailed++)
                if (outcome.cancelled) {
                  seen.probeCancelled++
                  slotGivenBack.add(peer)
                  return
                }
                // Nothing else interrupts a probe (not its caller's interruption) but its lease's end, at that
                // instant, and the circuit reopened then.
                seen.probeTimedOut++
                if (ended !== leaseEnd || started + duration <= leaseEnd) {
                  violations.push(`${name}'s probe (${started}+${duration}) interrupted at ${ended}, lease ${leaseEnd}`)
                }
                const after = yield* set.state(name)
                if (after._tag !== "Open" || after.openedAt !== leaseEnd) {
                  violations.push(`${name} not reopened at its probe's lease's end ${leaseEnd}: ${after._tag}`)
                }
              })
            )
          )
        }).pipe(Effect.onExit((exit) =>
          Effect.sync(() => {
            if (Exit.isSuccess(exit)) {
              outcome.end = "success"
              seen.succeeded++
            } else if (Cause.hasInterruptsOnly(exit.cause)) {
              outcome.end = "interrupted"
              if (outcome.cancelled) seen.cancelled++
              else if (!outcome.probe) seen.closedInterrupted++
            } else if (Option.getOrUndefined(Cause.findErrorOption(exit.cause)) instanceof Boom) {
              outcome.end = "failure"
              seen.failed++
            } else {
              violations.push(`${outcome.name}: an effect ended with ${String(exit)}`)
            }
          })
        ))

      /** One call; its caller is interrupted after `interruptAfter` ms, if given and if it is still waiting then. */
      const call = (peer: number, duration: number, cancels: boolean, interruptAfter: number | undefined) =>
        Effect.gen(function*() {
          const name = `peer-${peer}`
          const outcome: Outcome = { name, ran: false, probe: false, cancelled: false, end: undefined }
          let before: CircuitState | undefined
          const attempt = set.state(name).pipe(
            Effect.tap((state) => Effect.sync(() => (before = state))),
            Effect.andThen(work(peer, duration, cancels, outcome).pipe(set.withBreaker(name)))
          )
          let exit: Exit.Exit<unknown, unknown>
          let interrupted = false
          if (interruptAfter === undefined) {
            exit = yield* Effect.exit(attempt)
          } else {
            const caller = yield* Effect.forkChild(attempt)
            const ended = yield* Effect.timeoutOption(Fiber.await(caller), Duration.millis(interruptAfter))
            if (Option.isSome(ended)) {
              exit = ended.value
            } else {
              // The caller is released at once, whether it waits for a call admitted while closed (interrupted with
              // it) or for a probe (which runs on).
              const at = yield* Clock.currentTimeMillis
              yield* Fiber.interrupt(caller)
              exit = yield* Fiber.await(caller)
              interrupted = true
              const released = yield* Clock.currentTimeMillis
              if (released !== at) violations.push(`${name}'s caller interrupted at ${at} released at ${released}`)
            }
          }
          calls++
          const error = openErrorOf(exit)
          if (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)) {
            // Its own interruption, or (waiting for its effect to the end) the effect's own.
            if (interrupted) {
              seen.callersInterrupted++
              interruptedCallers.push({ outcome, at: now })
            } else if (!outcome.cancelled) {
              violations.push(`${name}'s caller saw an interruption nobody sent at ${now}`)
            }
          } else if (error !== undefined && outcome.ran) {
            // The caller of a probe whose lease ended while it still waited fails with CircuitOpenError then.
            seen.timedOutCallers++
            timedOut.push({ outcome, at: now })
            if (Duration.toMillis(error.retryAfter) !== resetTimeout) {
              violations.push(`${name}'s expired probe's caller told to retry after ${error.retryAfter}`)
            }
          } else if (error !== undefined) {
            seen.rejected++
            if (before === undefined) violations.push(`${name} rejected a call before it read the state`)
            else if (before._tag === "HalfOpen" && !before.probeInFlight) {
              violations.push(`${name} rejected a call with a free probe slot at ${now}`)
            } else if (before._tag === "Closed") violations.push(`${name} rejected a call while closed at ${now}`)
          } else if (!outcome.ran) {
            violations.push(`${name} ended a call it never ran with ${String(exit)}`)
          }
        })

      while (now < day) {
        for (let i = 0; i < 16; i++) {
          // Skewed popularity: a few hot peers take most calls, the long tail is seen now and then.
          const peer = Math.floor(next() ** 3 * peers)
          lastCalled[peer] = now
          if (next() < 0.02) downUntil[peer] = now + next() * 120_000
          // Mostly quick calls; some slower than resetTimeout, standing in for a hung peer.
          const duration = next() < 0.05 ? 15_000 : Math.floor(next() * 3_000)
          // A few calls are cancelled by their own effect, which interrupts itself once it has slept.
          const cancels = next() < 0.01
          // Some callers give up: interrupted at a random point of the call, or not at all if it ends first.
          const interruptAfter = next() < 0.1 ? 1 + Math.floor(next() * (duration + 1_000)) : undefined
          const fiber = yield* Effect.forkChild(call(peer, duration, cancels, interruptAfter))
          running.add(fiber)
          fiber.addObserver(() => running.delete(fiber))
        }
        yield* TestClock.adjust(Duration.millis(step))
        now += step
        if (now % 600_000 === 0) {
          // Memory stays bounded: a closed breaker with an empty window is held only while recently used. Its last
          // call may run 15 s and leave a failure in the window for 30 s; a sweep that finds a breaker still in use
          // looks at it again a TTL later, and a call moves a breaker at most every half TTL.
          const held = (yield* set.snapshot).peers
          maxHeld = Math.max(maxHeld, held.length)
          for (const p of held) {
            const recent = now - lastCalled[Number(p.peer.slice(5))]! <= 15_000 + 30_000 + 2 * idleTimeToLive + step
            if (!recent && p.state === "Closed" && p.failures === 0) violations.push(`${p.peer} held idle at ${now}`)
          }
        }
      }
      yield* TestClock.adjust("1 minute")
      yield* Effect.forEach([...running], Fiber.await, { discard: true })
      // Every probe has ended (by its lease's end at the latest), including those whose callers were interrupted.
      assert.deepStrictEqual([...probes], [])
      for (const { at, outcome: { end, name, probe } } of timedOut) {
        // Only the caller of a probe interrupted at its lease's end fails with CircuitOpenError after its effect ran.
        if (!probe || end !== "interrupted") {
          violations.push(`${name} failed an admitted call with a rejection at ${at}`)
        }
      }
      for (const { at, outcome: { end, name, probe, ran } } of interruptedCallers) {
        // An interrupted caller had been admitted (a rejection is immediate). A call admitted while closed was
        // interrupted with its caller; a probe ran on (interrupted, if at all, only at its lease's end).
        if (!ran) violations.push(`${name}'s interrupted caller at ${at} was never admitted`)
        else if (probe) seen.probeCallersInterrupted++
        else if (end !== "interrupted") violations.push(`${name}'s closed call outlived its caller at ${at}`)
      }
      // After a quiet spell, sweeps (here run by snapshots, 64 breakers each) drop every idle breaker: the sweeps of
      // one TTL clear the call flags, those of the next drop. Only circuits that are not closed stay.
      for (const wait of ["10 minutes", "2 minutes"] as const) {
        yield* TestClock.adjust(wait)
        for (let i = 0; i < 20; i++) yield* set.snapshot
      }
      const held = (yield* set.snapshot).peers

      assert.deepStrictEqual(violations.slice(0, 10), [])
      assert.isAbove(calls, 200_000)
      assert.isAbove(seen.rejected, 0)
      assert.isBelow(maxHeld, peers / 2)
      assert.deepStrictEqual(held.filter((p) => p.state === "Closed"), [])
      // Every kind of ending happened, to probes and to their callers.
      for (const kind of ["probeSucceeded", "probeFailed", "probeCancelled", "probeTimedOut"] as const) {
        assert.isAbove(seen[kind], 0, kind)
      }
      assert.isAbove(seen.probesAfterGivenBack, 0)
      assert.isAbove(seen.timedOutCallers, 0)
      assert.isAbove(seen.probeCallersInterrupted, 0)
      assert.isAbove(seen.closedInterrupted, 0)
      // A call admitted while closed is interrupted only with its caller (or by itself).
      assert.strictEqual(seen.callersInterrupted, seen.closedInterrupted + seen.probeCallersInterrupted)

      // Exact counts. Every probe ended once: succeeded, failed, cancelled itself, or ran out its lease, whether or not
      // its caller still waited. Each success closed the circuit, each failure and each lease's end reopened it, and
      // each cancelled probe gave its slot back without a change of state, so the next probe of that circuit was let
      // through half-open; every other probe was let through from Open.
      assert.strictEqual(seen.probes, seen.probeSucceeded + seen.probeFailed + seen.probeCancelled + seen.probeTimedOut)
      const transitions = (from: string, to: string, reason: string) =>
        count(CircuitBreakerMetrics.transitions, { from, to, reason })
      assert.strictEqual(yield* transitions("Open", "HalfOpen", "probe"), seen.probes - seen.probesAfterGivenBack)
      assert.strictEqual(yield* transitions("HalfOpen", "Closed", "probe-succeeded"), seen.probeSucceeded)
      assert.strictEqual(yield* transitions("HalfOpen", "Open", "probe-failed"), seen.probeFailed)
      assert.strictEqual(yield* transitions("HalfOpen", "Open", "probe-timeout"), seen.probeTimedOut)
      // No other change of state happened: trips by the window policy, and the probes' changes above.
      const registry = yield* Metric.MetricRegistry
      const series = [...registry.values()].filter((m) => m.id === "circuit_breaker_transitions_total")
      assert.deepStrictEqual(
        series.map((m) => `${m.attributes?.from}>${m.attributes?.to}>${m.attributes?.reason}`).sort(),
        [
          "Closed>Open>window",
          "HalfOpen>Closed>probe-succeeded",
          "HalfOpen>Open>probe-failed",
          "HalfOpen>Open>probe-timeout",
          "Open>HalfOpen>probe"
        ]
      )
      assert.strictEqual(yield* count(CircuitBreakerMetrics.probes, {}), seen.probes)
      const outcomes = (outcome: string) => count(CircuitBreakerMetrics.calls, { outcome })
      assert.strictEqual(yield* outcomes("rejected"), seen.rejected)
      assert.strictEqual(yield* outcomes("success"), seen.succeeded)
      // A probe still running at its lease's end is a failed probe.
      assert.strictEqual(yield* outcomes("failure"), seen.failed + seen.probeTimedOut)
      // Interrupted calls count as neither; a probe interrupted at its lease's end counts once, as a failure.
      assert.strictEqual(yield* outcomes("ignored"), seen.closedInterrupted + seen.cancelled)
    }).pipe(provideSet({
      maxFailures: 2,
      window: "30 seconds",
      resetTimeout: Duration.millis(resetTimeout),
      idleTimeToLive: Duration.millis(idleTimeToLive),
      metricPeerLabel: "none"
    })), { timeout: 60_000 })
})
