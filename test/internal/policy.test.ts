import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { timeRateTracker, Trip } from "../../src/internal/policy.ts"

/** Outcomes: after `advance` ms, a call that was bad or not. */
const steps = fc.array(
  fc.record({
    advance: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 400 })),
    bad: fc.boolean()
  }),
  { maxLength: 300 }
)

const params = fc.record({
  threshold: fc.constantFrom(0.25, 0.5, 1),
  minimumCalls: fc.integer({ min: 1, max: 20 }),
  windowMillis: fc.integer({ min: 1, max: 300 }),
  buckets: fc.integer({ min: 1, max: 12 })
}).filter((p) => p.windowMillis >= p.buckets)

describe("a rate over a time window", () => {
  it("counts what a list of every call would count, packed or widened", () => {
    fc.assert(
      fc.property(params, fc.integer({ min: 2, max: 5 }), steps, (p, widenAt, steps) => {
        const packed = timeRateTracker("rate", p.threshold, p.minimumCalls, p.windowMillis, p.buckets, Infinity)
        const widened = timeRateTracker(
          "rate",
          p.threshold,
          p.minimumCalls,
          p.windowMillis,
          p.buckets,
          Infinity,
          widenAt
        )
        const indexAt = (now: number) => Math.floor((now * p.buckets) / p.windowMillis)
        let calls: Array<{ readonly index: number; readonly bad: boolean }> = []
        let packedCounts: unknown
        let widenedCounts: unknown
        let now = 1_000
        for (const step of steps) {
          now += step.advance
          const live = calls.filter((call) => call.index > indexAt(now) - p.buckets)
          live.push({ index: indexAt(now), bad: step.bad })
          const bad = live.filter((call) => call.bad).length
          const trips = step.bad && live.length >= p.minimumCalls && bad / live.length >= p.threshold
          packedCounts = packed.record(packedCounts, step.bad, NaN, now)
          widenedCounts = widened.record(widenedCounts, step.bad, NaN, now)
          assert.strictEqual(packedCounts instanceof Trip, trips)
          assert.strictEqual(widenedCounts instanceof Trip, trips)
          if (trips) {
            // The machine drops the counts when the circuit opens.
            calls = []
            packedCounts = widenedCounts = undefined
            continue
          }
          calls = live
          const expected = { failures: bad, calls: live.length, slowCalls: undefined }
          assert.deepStrictEqual(packed.figures(packedCounts, now), expected)
          assert.deepStrictEqual(widened.figures(widenedCounts, now), expected)
        }
      }),
      { numRuns: 300 }
    )
  })

  it("packs a bucket into one number and widens it in place, without losing a call, when it fills up", () => {
    const tracker = timeRateTracker("rate", 1, 1_000, 1_000, 10, Infinity, 3)
    const counts = tracker.record(undefined, false, NaN, 0) as Array<number>
    assert.strictEqual(counts.length, 3 + 10)
    assert.strictEqual(tracker.record(counts, true, NaN, 50), counts)
    assert.strictEqual(counts.length, 3 + 10)
    assert.strictEqual(tracker.record(counts, true, NaN, 60), counts) // the third call of bucket 0: widened
    assert.strictEqual(counts.length, 3 + 2 * 10)
    assert.strictEqual(tracker.record(counts, false, NaN, 150), counts)
    assert.deepStrictEqual(tracker.figures(counts, 199), { failures: 2, calls: 4, slowCalls: undefined })
    assert.deepStrictEqual(tracker.figures(counts, 1_050), { failures: 0, calls: 1, slowCalls: undefined })
  })
})
