import { assert, describe, it } from "@effect/vitest"
import { Duration } from "effect"
import fc from "fast-check"
import * as machine from "../../src/internal/machine.ts"
import { fixedOpenings } from "../../src/internal/openings.ts"
import { compile } from "../../src/internal/policy.ts"

/** The seed's rule, durations in milliseconds: more than `maxFailures` in `windowMillis`, open `resetTimeoutMillis`. */
interface Params {
  readonly maxFailures: number
  readonly windowMillis: number
  readonly resetTimeoutMillis: number
}

/** What the machine runs `p` with: the window policy compiled, one probe whose lease is the opening before it. */
interface Setup {
  readonly limits: machine.Limits
  readonly openings: machine.Openings
}

const setup = (p: Params): Setup => ({
  limits: {
    tracker: compile({ _tag: "Window", maxFailures: p.maxFailures, windowMillis: p.windowMillis }),
    probes: 1,
    successThreshold: 1,
    probeTimeoutMillis: undefined,
    pollMillis: p.resetTimeoutMillis
  },
  openings: fixedOpenings(p.resetTimeoutMillis)
})

const policy = setup({ maxFailures: 2, windowMillis: 60_000, resetTimeoutMillis: 10_000 })

/** A wall clock that reads `millis`. */
const wallAt = (millis: number): machine.WallClock => ({ currentTimeMillisUnsafe: () => millis })

const admit = (state: machine.State, now: number, s = policy) => machine.admit(state, now, s.limits, s.openings)

const admitTicket = (state: machine.State, now: number, s = policy) => {
  const [admission, next] = admit(state, now, s)
  if (typeof admission !== "number") throw new Error(`rejected, retry after ${admission.retryAfterMillis}`)
  return [admission, next] as const
}

/** Records `outcome` for `ticket` at `now` (the window policy times no call), with the wall clock at `wall`. */
const record = (
  state: machine.State,
  ticket: number,
  outcome: machine.Outcome,
  now: number,
  wall = now,
  s = policy
): machine.State => machine.record(state, ticket, outcome, now, NaN, wallAt(wall), s.limits, s.openings)

/** Admits a call at `now` and records `outcome` for it at the same instant. */
const call = (state: machine.State, now: number, outcome: machine.Outcome, s = policy): machine.State => {
  const [ticket, admitted] = admitTicket(state, now, s)
  return record(admitted, ticket, outcome, now, now, s)
}

/** The first opening of the circuit, at 0 (generation 1), by the window policy: 10 s. */
const opened: machine.Open = {
  _tag: "Open",
  generation: 1,
  openedAt: 0,
  openedAtWall: 0,
  opening: 1,
  reason: "window",
  detail: ": more than 2 failures within 1m",
  timedOut: [],
  openMillis: 10_000
}

/** The failure times a closed state's window policy keeps (its ring), however many are still inside the window. */
/** How many failure times the window policy keeps: a bare time for one, a ring for more. */
const kept = (state: machine.Closed): number =>
  typeof state.counts === "number"
    ? 1
    : (state.counts as { readonly times: ReadonlyArray<number> } | undefined)?.times.length ?? 0

describe("machine: transitions", () => {
  it("a fresh breaker is Closed and admitting a call changes nothing", () => {
    const [ticket, next] = admitTicket(machine.initial, 0)
    assert.strictEqual(ticket, 0)
    assert.strictEqual(next, machine.initial)
    assert.deepStrictEqual(machine.figures(machine.initial, 0, policy.limits), {
      failures: 0,
      calls: undefined,
      slowCalls: undefined
    })
  })

  it("opens on the (maxFailures + 1)-th counted failure inside the window", () => {
    let state: machine.State = machine.initial
    state = call(state, 0, "failure")
    state = call(state, 1, "failure")
    assert.strictEqual(state._tag, "Closed")
    assert.strictEqual(machine.figures(state as machine.Closed, 1, policy.limits).failures, 2)
    state = call(state, 2, "failure")
    assert.deepStrictEqual(state, { ...opened, openedAt: 2, openedAtWall: 2 })
  })

  it("rejects while open with the time left, then admits exactly one probe", () => {
    assert.deepStrictEqual(admit(opened, 4_000)[0], { retryAfterMillis: 6_000 })
    const [ticket, probing] = admitTicket(opened, 10_000)
    assert.strictEqual(ticket, 2)
    // The probe's lease is the opening before it (10 s); a second failed probe would open for 10 s again.
    assert.deepStrictEqual(probing, {
      _tag: "HalfOpen",
      generation: 2,
      openedAt: 0,
      openedAtWall: 0,
      opening: 1,
      reason: "window",
      openMillis: 10_000,
      nextOpenMillis: 10_000,
      probeTimeoutMillis: 10_000,
      probes: [{ ticket: 2, startedAt: 10_000 }],
      successes: 0
    })
    assert.deepStrictEqual(admit(probing, 12_000)[0], { retryAfterMillis: 8_000 })
  })

  it("a probe still running when its lease ends has failed: the circuit reopened at the lease's end", () => {
    const [ticket, probing] = admitTicket(opened, 10_000)
    assert.strictEqual(machine.expireProbe(probing, 19_999, wallAt(19_999)), probing)
    const expired = machine.expireProbe(probing, 25_000, wallAt(25_000))
    const reopened: machine.Open = {
      _tag: "Open",
      generation: 3,
      openedAt: 20_000,
      openedAtWall: 20_000,
      opening: 2,
      reason: "probe-timeout",
      detail: "",
      timedOut: [ticket],
      openMillis: 10_000
    }
    assert.deepStrictEqual(expired, reopened)
    // A result at or after the lease's end is the same timeout, whatever the outcome.
    assert.deepStrictEqual(record(probing, ticket, "success", 20_000), reopened)
    // The late result of the expired probe decides nothing.
    assert.strictEqual(record(expired, ticket, "success", 25_000), expired)
    // Rejected until a whole resetTimeout after the lease's end, then the next call probes.
    assert.deepStrictEqual(admit(expired, 29_999)[0], { retryAfterMillis: 1 })
    assert.strictEqual(typeof admit(expired, 30_000)[0], "number")
  })

  it("an ignored probe gives its slot back without restarting the open period", () => {
    const [ticket, probing] = admitTicket(opened, 10_000)
    const released = record(probing, ticket, "ignored", 15_000)
    assert.deepStrictEqual(released, {
      _tag: "HalfOpen",
      generation: 2,
      openedAt: 0,
      openedAtWall: 0,
      opening: 1,
      reason: "window",
      openMillis: 10_000,
      nextOpenMillis: 10_000,
      probeTimeoutMillis: 10_000,
      probes: [],
      successes: 0
    })
    // Its result, were it to come again, decides nothing: it holds no slot.
    assert.strictEqual(record(released, ticket, "failure", 15_000), released)
    const [next, probingAgain] = admitTicket(released, 15_000)
    assert.notStrictEqual(next, ticket)
    assert.deepStrictEqual((probingAgain as machine.HalfOpen).probes, [{ ticket: next, startedAt: 15_000 }])
  })

  it("a failed probe opens for a full resetTimeout from now", () => {
    const [ticket, probing] = admitTicket(opened, 50_000)
    const reopened = record(probing, ticket, "failure", 51_000, 99)
    assert.deepStrictEqual(reopened, {
      _tag: "Open",
      generation: 3,
      openedAt: 51_000,
      openedAtWall: 99,
      opening: 2,
      reason: "probe-failed",
      detail: "",
      timedOut: [],
      openMillis: 10_000
    })
  })
})

/** A reference count: every counted failure ever recorded while closed, kept in full. */
const naiveOpens = (times: ReadonlyArray<number>, p: Params): number | undefined => {
  for (let i = 0; i < times.length; i++) {
    const now = times[i]!
    const inWindow = times.slice(0, i + 1).filter((t) => now - t < p.windowMillis).length
    if (inWindow > p.maxFailures) return i
  }
  return undefined
}

describe("machine: properties", () => {
  const policies = fc.record({
    maxFailures: fc.integer({ min: 0, max: 6 }),
    windowMillis: fc.integer({ min: 1, max: 1_000 }),
    resetTimeoutMillis: fc.integer({ min: 1, max: 1_000 })
  })
  const gaps = fc.array(fc.integer({ min: 0, max: 400 }), { maxLength: 40 })

  it("a run of counted failures opens the circuit at exactly the failure a naive count says", () => {
    fc.assert(
      fc.property(policies, gaps, (p, steps) => {
        const s = setup(p)
        const times: Array<number> = []
        let now = 0
        for (const gap of steps) times.push(now += gap)
        let state: machine.State = machine.initial
        let openedAt: number | undefined
        times.forEach((t, i) => {
          if (state._tag === "Closed") {
            state = call(state, t, "failure", s)
            if (state._tag === "Open") {
              openedAt = i
              assert.deepStrictEqual(state, {
                _tag: "Open",
                generation: 1,
                openedAt: t,
                openedAtWall: t,
                opening: 1,
                reason: "window",
                detail: p.maxFailures === 0
                  ? " on the first failure"
                  : `: more than ${p.maxFailures} failures within ${Duration.format(Duration.millis(p.windowMillis))}`,
                timedOut: [],
                openMillis: p.resetTimeoutMillis
              })
            }
          }
        })
        assert.strictEqual(openedAt, naiveOpens(times, p))
      }),
      { seed: 42, numRuns: 2_000 }
    )
  })

  it("while closed at most maxFailures timestamps are kept; generations never decrease", () => {
    const outcomes = fc.array(
      fc.tuple(fc.integer({ min: 0, max: 500 }), fc.constantFrom<machine.Outcome>("success", "failure", "ignored")),
      { maxLength: 60 }
    )
    fc.assert(
      fc.property(policies, outcomes, (p, steps) => {
        const s = setup(p)
        let state: machine.State = machine.initial
        let now = 0
        // The counted failures of the current closed period, and when the circuit last closed after a probe.
        let failures: Array<number> = []
        let closedAt: number | undefined
        for (const [gap, outcome] of steps) {
          now += gap
          // As the shell does: a probe whose lease has ended is applied first (none here: every probe decides at once).
          const live = machine.expireProbe(state, now, wallAt(now))
          assert.strictEqual(live, state)
          const [admission, admitted] = machine.admit(live, now, s.limits, s.openings)
          assert.isAtLeast(admitted.generation, state.generation)
          if (typeof admission === "number") {
            const next = record(admitted, admission, outcome, now, now, s)
            assert.isAtLeast(next.generation, admitted.generation)
            // A stale ticket never changes anything.
            assert.strictEqual(record(next, admission - 1, "failure", now, now, s), next)
            if (admitted._tag === "Closed" && outcome === "failure") failures.push(now)
            if (next._tag !== "Closed") failures = []
            if (admitted._tag === "HalfOpen" && next._tag === "Closed") closedAt = now
            state = next
          } else {
            assert.isAbove(admission.retryAfterMillis, 0)
            assert.isAtMost(admission.retryAfterMillis, p.resetTimeoutMillis)
            state = admitted
          }
          if (state._tag === "Closed") {
            assert.isAtMost(kept(state), p.maxFailures)
            // The window holds exactly the failures of this closed period that are inside it.
            const inWindow = failures.filter((t) => now - t < p.windowMillis).length
            assert.strictEqual(machine.figures(state, now, s.limits).failures, inWindow)
            // Idle (droppable) exactly when nothing is in the window and a relapse would no longer continue the backoff.
            const relapsing = closedAt !== undefined && now - closedAt < p.resetTimeoutMillis
            assert.strictEqual(machine.isIdle(state, now, s.limits), inWindow === 0 && !relapsing)
          } else {
            assert.isFalse(machine.isIdle(state, now, s.limits))
          }
          if (state._tag === "Open") assert.strictEqual(state.openMillis, p.resetTimeoutMillis)
          if (state._tag === "HalfOpen") assert.isAtMost(state.probes.length, 1)
        }
      }),
      { seed: 7, numRuns: 2_000 }
    )
  })
})

describe("machine: failure times", () => {
  // A closed state's counts are updated in place (see machine.ts): the shell only ever records into the newest state
  // of each breaker. What must hold is that a breaker's counts are its own: breakers that start from one shared
  // state (the frozen `initial`, or `closedAt`) never see each other's failures, however their calls interleave.
  it("breakers that start from one shared state never see each other's failures, however they interleave", () => {
    const s = setup({ maxFailures: 1_000, windowMillis: 50, resetTimeoutMillis: 1 })
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.nat(),
            fc.integer({ min: 0, max: 30 }),
            fc.constantFrom<machine.Outcome>("failure", "failure", "success", "ignored")
          ),
          { maxLength: 200 }
        ),
        (steps) => {
          const breakers: Array<{ state: machine.Closed; expected: ReadonlyArray<number> }> = [
            { state: machine.initial, expected: [] },
            { state: machine.initial, expected: [] },
            { state: machine.closedAt(0), expected: [] },
            { state: machine.closedAt(5), expected: [] }
          ]
          let now = 0
          for (const [pick, gap, outcome] of steps) {
            now += gap
            const breaker = breakers[pick % breakers.length]!
            const next = record(breaker.state, breaker.state.generation, outcome, now, now, s)
            assert.strictEqual(next._tag, "Closed")
            breaker.state = next as machine.Closed
            if (outcome === "failure") breaker.expected = [...breaker.expected, now]
            for (const { state, expected } of breakers) {
              const inWindow = expected.filter((at) => now - at < 50).length
              assert.strictEqual(machine.figures(state, now, s.limits).failures, inWindow)
            }
          }
          // The shared starting state is never written to.
          assert.strictEqual(machine.initial.counts, undefined)
          assert.isTrue(Object.isFrozen(machine.initial))
        }
      ),
      { seed: 11, numRuns: 300 }
    )
  })
})
