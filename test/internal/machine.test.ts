import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import * as machine from "../../src/internal/machine.ts"

const policy: machine.Limits = { maxFailures: 2, windowMillis: 60_000, resetTimeoutMillis: 10_000 }

/** A wall clock that reads `millis`. */
const wallAt = (millis: number): machine.WallClock => ({ currentTimeMillisUnsafe: () => millis })

const admitTicket = (state: machine.State, now: number, p = policy) => {
  const [admission, next] = machine.admit(state, now, p)
  if (typeof admission !== "number") throw new Error(`rejected, retry after ${admission.retryAfterMillis}`)
  return [admission, next] as const
}

/** Admits a call at `now` and records `outcome` for it at the same instant. */
const call = (state: machine.State, now: number, outcome: machine.Outcome, p = policy): machine.State => {
  const [ticket, admitted] = admitTicket(state, now, p)
  return machine.record(admitted, ticket, outcome, now, wallAt(now), p)
}

describe("machine: transitions", () => {
  it("a fresh breaker is Closed and admitting a call changes nothing", () => {
    const [ticket, next] = admitTicket(machine.initial, 0)
    assert.strictEqual(ticket, 0)
    assert.strictEqual(next, machine.initial)
  })

  it("opens on the (maxFailures + 1)-th counted failure inside the window", () => {
    let state: machine.State = machine.initial
    state = call(state, 0, "failure")
    state = call(state, 1, "failure")
    assert.strictEqual(state._tag, "Closed")
    state = call(state, 2, "failure")
    assert.deepStrictEqual(state, { _tag: "Open", generation: 1, openedAt: 2, openedAtWall: 2 })
  })

  it("rejects while open with the time left, then admits exactly one probe", () => {
    const open: machine.State = { _tag: "Open", generation: 1, openedAt: 0, openedAtWall: 0 }
    assert.deepStrictEqual(machine.admit(open, 4_000, policy)[0], { retryAfterMillis: 6_000 })
    const [ticket, probing] = admitTicket(open, 10_000)
    assert.strictEqual(ticket, 2)
    assert.strictEqual(probing._tag, "HalfOpen")
    assert.deepStrictEqual(machine.admit(probing, 12_000, policy)[0], { retryAfterMillis: 8_000 })
  })

  it("a probe still running when its lease ends has failed: the circuit reopened at the lease's end", () => {
    const open: machine.State = { _tag: "Open", generation: 1, openedAt: 0, openedAtWall: 0 }
    const [ticket, probing] = admitTicket(open, 10_000)
    assert.strictEqual(machine.expireProbe(probing, 19_999, wallAt(19_999), policy), probing)
    const expired = machine.expireProbe(probing, 25_000, wallAt(25_000), policy)
    assert.deepStrictEqual(expired, { _tag: "Open", generation: 3, openedAt: 20_000, openedAtWall: 20_000 })
    // A result at or after the lease's end is the same timeout, whatever the outcome.
    assert.deepStrictEqual(machine.record(probing, ticket, "success", 20_000, wallAt(20_000), policy), {
      _tag: "Open",
      generation: 3,
      openedAt: 20_000,
      openedAtWall: 20_000
    })
    // The late result of the expired probe decides nothing.
    assert.strictEqual(machine.record(expired, ticket, "success", 25_000, wallAt(25_000), policy), expired)
    // Rejected until a whole resetTimeout after the lease's end, then the next call probes.
    assert.deepStrictEqual(machine.admit(expired, 29_999, policy)[0], { retryAfterMillis: 1 })
    assert.strictEqual(typeof machine.admit(expired, 30_000, policy)[0], "number")
  })

  it("an ignored probe gives its slot back without restarting the open period", () => {
    const open: machine.State = { _tag: "Open", generation: 1, openedAt: 0, openedAtWall: 0 }
    const [ticket, probing] = admitTicket(open, 10_000)
    const released = machine.record(probing, ticket, "ignored", 15_000, wallAt(15_000), policy)
    assert.deepStrictEqual(released, {
      _tag: "HalfOpen",
      generation: 3,
      openedAt: 0,
      openedAtWall: 0,
      probeInFlight: false,
      probeStartedAt: 10_000
    })
    assert.strictEqual(typeof machine.admit(released, 15_000, policy)[0], "number")
  })

  it("a failed probe opens for a full resetTimeout from now", () => {
    const open: machine.State = { _tag: "Open", generation: 1, openedAt: 0, openedAtWall: 0 }
    const [ticket, probing] = admitTicket(open, 50_000)
    const reopened = machine.record(probing, ticket, "failure", 51_000, wallAt(99), policy)
    assert.deepStrictEqual(reopened, { _tag: "Open", generation: 3, openedAt: 51_000, openedAtWall: 99 })
  })
})

/** A reference count: every counted failure ever recorded while closed, kept in full. */
const naiveOpens = (times: ReadonlyArray<number>, p: machine.Limits): number | undefined => {
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
        const times: Array<number> = []
        let now = 0
        for (const gap of steps) times.push(now += gap)
        let state: machine.State = machine.initial
        let openedAt: number | undefined
        times.forEach((t, i) => {
          if (state._tag === "Closed") {
            state = call(state, t, "failure", p)
            if (state._tag === "Open") openedAt = i
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
        let state: machine.State = machine.initial
        let now = 0
        for (const [gap, outcome] of steps) {
          now += gap
          const [admission, admitted] = machine.admit(state, now, p)
          assert.isAtLeast(admitted.generation, state.generation)
          if (typeof admission === "number") {
            const next = machine.record(admitted, admission, outcome, now, wallAt(now), p)
            assert.isAtLeast(next.generation, admitted.generation)
            // A stale ticket never changes anything.
            assert.strictEqual(machine.record(next, admission - 1, "failure", now, wallAt(now), p), next)
            state = next
          } else {
            assert.isAbove(admission.retryAfterMillis, 0)
            assert.isAtMost(admission.retryAfterMillis, p.resetTimeoutMillis)
            state = admitted
          }
          if (state._tag === "Closed") assert.isAtMost(state.failures.size, p.maxFailures)
        }
      }),
      { seed: 7, numRuns: 2_000 }
    )
  })
})

describe("machine: failure times", () => {
  it("states that share one array never see each other's appends, however they branch", () => {
    const p: machine.Limits = { maxFailures: 1_000, windowMillis: 50, resetTimeoutMillis: 1 }
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 30 })), { maxLength: 200 }),
        (steps) => {
          const states: Array<{ state: machine.Closed; expected: ReadonlyArray<number> }> = [
            { state: machine.initial, expected: [] }
          ]
          let now = 0
          for (const [pick, gap] of steps) {
            now += gap
            // Extend any earlier state, not only the newest: that is when the shared array must not be reused.
            const from = states[pick % states.length]!
            const next = machine.record(from.state, from.state.generation, "failure", now, wallAt(now), p)
            assert.strictEqual(next._tag, "Closed")
            const expected = [...from.expected.filter((at) => now - at < p.windowMillis), now]
            states.push({ state: next as machine.Closed, expected })
            for (const { state, expected } of states) assert.deepStrictEqual(state.failures.toJSON(), expected)
          }
        }
      ),
      { seed: 11, numRuns: 300 }
    )
  })
})
