/**
 * Trip policies as the state machine runs them: each validated `Policy` becomes a `Tracker`, a set of functions over
 * the policy's counts (the figures it keeps while the circuit is closed).
 *
 * Counts are allocated on the first outcome that needs them (`undefined` before), belong to one closed period (the
 * machine drops them when the circuit opens), and may be updated in place: recording is O(1) amortised for every
 * policy, with no per-call timestamps and no array shifting. Times are monotonic milliseconds.
 */
import { displayMillis } from "./display.ts"

/** Why a closed circuit opened: the policy (or the member of an `any`) that tripped. */
export type TripReason = "window" | "consecutive" | "rate" | "slow-calls"

/** What a closed circuit reports about its counts at some instant. */
export interface Figures {
  /** Counted failures: in the window, in the streak, or in the rate's window (the first member that counts them). */
  readonly failures: number
  /** Calls in a rate's window, for rate and slow-call policies. */
  readonly calls: number | undefined
  /** Slow calls in the window, for slow-call policies. */
  readonly slowCalls: number | undefined
}

/** A tracker's verdict that the circuit opens: why, and what its rule says, for the log line. One per tracker. */
export class Trip {
  readonly reason: TripReason
  /** What follows "Circuit opened" in the log line: ": more than 3 failures within 1m", " on the first failure". */
  readonly text: string
  constructor(reason: TripReason, text: string) {
    this.reason = reason
    this.text = text
  }
}

const percent = (ratio: number): string => `${Math.round(ratio * 10_000) / 100}%`

/** A policy, compiled. `counts` is whatever the tracker keeps, `undefined` while it keeps nothing. */
export interface Tracker {
  /**
   * Records a success or a counted failure that ended at `now` after running for `durationMillis` (`NaN` when calls
   * are not timed) and returns the counts after it, or a `Trip` when the circuit opens.
   */
  readonly record: (counts: unknown, failure: boolean, durationMillis: number, now: number) => unknown
  /** Whether a success with these counts can change them; when not, the call path skips recording it. */
  readonly recordsSuccess: (counts: unknown) => boolean
  /**
   * Whether `record` would take a success of `durationMillis` by updating these counts in place, with neither new
   * counts nor a trip: the call path then records it without a change of state.
   */
  readonly successInPlace: (counts: unknown, durationMillis: number) => boolean
  /** What the counts hold at `now`. */
  readonly figures: (counts: unknown, now: number) => Figures
  /**
   * Whether the counts at `now` hold nothing that a set must keep its breaker for: nothing at all, or (for a count
   * window) successes alone, which an idle breaker may forget.
   */
  readonly isEmpty: (counts: unknown, now: number) => boolean
  /** Whether the counts at `now` hold nothing at all (so that a reset would change nothing). */
  readonly isClear: (counts: unknown, now: number) => boolean
  /** Whether `figures` reports counted failures (every policy but `slowCalls`). */
  readonly countsFailures: boolean
  /** The slow-call duration of the shortest `slowCalls` member, or `Infinity` when there is none. */
  readonly slowMillis: number
}

/** Validated parameters of a policy, durations in milliseconds. */
export type Compiled =
  | { readonly _tag: "Window"; readonly maxFailures: number; readonly windowMillis: number }
  | { readonly _tag: "Consecutive"; readonly failures: number }
  | {
    readonly _tag: "Rate" | "SlowCalls"
    readonly threshold: number
    readonly minimumCalls: number
    readonly window: { readonly millis: number; readonly buckets: number } | { readonly calls: number }
    readonly slowMillis: number
  }
  | { readonly _tag: "Any"; readonly members: ReadonlyArray<Compiled> }

/** The tracker that runs a validated policy. */
export const compile = (policy: Compiled): Tracker => {
  switch (policy._tag) {
    case "Window":
      return windowTracker(policy.maxFailures, policy.windowMillis)
    case "Consecutive":
      return consecutiveTracker(policy.failures)
    case "Rate":
    case "SlowCalls": {
      const reason = policy._tag === "Rate" ? "rate" : "slow-calls"
      const window = policy.window
      return "calls" in window
        ? countRateTracker(reason, policy.threshold, policy.minimumCalls, window.calls, policy.slowMillis)
        : timeRateTracker(
          reason,
          policy.threshold,
          policy.minimumCalls,
          window.millis,
          window.buckets,
          policy.slowMillis
        )
    }
    case "Any":
      return anyTracker(policy.members.map(compile))
  }
}

// Window: the newest `maxFailures` failure times, in a ring once full. The circuit opens on a failure that finds all
// of them inside the window. Successes never remove failures. A single failure is kept as its bare time (no ring):
// the common case of a peer that failed once, at a third of the memory.

interface WindowCounts {
  readonly times: Array<number>
  head: number
}

const windowTracker = (maxFailures: number, windowMillis: number): Tracker => {
  const trip = new Trip(
    "window",
    maxFailures === 0
      ? " on the first failure"
      : `: more than ${maxFailures} failures within ${displayMillis(windowMillis)}`
  )
  const newest = (counts: number | WindowCounts): number =>
    typeof counts === "number"
      ? counts
      : counts.times[(counts.head + counts.times.length - 1) % counts.times.length]!
  const isEmpty = (raw: unknown, now: number): boolean =>
    raw === undefined || now - newest(raw as number | WindowCounts) >= windowMillis
  return {
    record: (raw, failure, _durationMillis, now) => {
      if (!failure) return raw
      if (maxFailures === 0) return trip
      const counts = raw as number | WindowCounts | undefined
      // Nothing kept, or everything kept has aged out: this failure alone (which also gives back a long ring).
      if (counts === undefined || now - newest(counts) >= windowMillis) return now
      if (typeof counts === "number") return maxFailures === 1 ? trip : { times: [counts, now], head: 0 }
      const times = counts.times
      if (times.length < maxFailures) {
        times.push(now)
        return counts
      }
      if (now - times[counts.head]! < windowMillis) return trip
      times[counts.head] = now
      counts.head = (counts.head + 1) % times.length
      return counts
    },
    recordsSuccess: () => false,
    successInPlace: () => true,
    figures: (raw, now) => {
      const counts = raw as number | WindowCounts | undefined
      let failures = 0
      if (typeof counts === "number") failures = now - counts < windowMillis ? 1 : 0
      else if (counts !== undefined) { for (const time of counts.times) if (now - time < windowMillis) failures++ }
      return { failures, calls: undefined, slowCalls: undefined }
    },
    isEmpty,
    isClear: isEmpty,
    countsFailures: true,
    slowMillis: Infinity
  }
}

// Consecutive: the streak itself (a small integer), `undefined` at zero.

const consecutiveTracker = (failures: number): Tracker => {
  const trip = new Trip("consecutive", failures === 1 ? " on the first failure" : `: ${failures} consecutive failures`)
  return {
    record: (raw, failure) => {
      if (!failure) return undefined
      const streak = ((raw as number | undefined) ?? 0) + 1
      return streak >= failures ? trip : streak
    },
    recordsSuccess: (raw) => raw !== undefined,
    successInPlace: (raw) => raw === undefined,
    figures: (raw) => ({ failures: (raw as number | undefined) ?? 0, calls: undefined, slowCalls: undefined }),
    isEmpty: (raw) => raw === undefined,
    isClear: (raw) => raw === undefined,
    countsFailures: true,
    slowMillis: Infinity
  }
}

// Rates. `bad` is a counted failure for `rate` and a slow call for `slowCalls`. The circuit opens only right after a
// bad outcome, when the window holds at least `minimumCalls` calls and bad / calls >= threshold (division, not
// multiplication: 7 / 100 >= 0.07 holds, 7 >= 100 * 0.07 does not).

/** What a rate counts as bad: a counted failure, or (for slow calls) a call that ran at least `slowMillis`. */
const badOutcome = (reason: TripReason, slowMillis: number) =>
  reason === "rate"
    ? (failure: boolean, _durationMillis: number) => failure
    : (_failure: boolean, durationMillis: number) => durationMillis >= slowMillis

const rateTrip = (reason: TripReason, threshold: number, slowMillis: number, window: string): Trip =>
  new Trip(
    reason,
    reason === "rate"
      ? `: failures reached ${percent(threshold)} ${window}`
      : `: calls taking ${displayMillis(slowMillis)} or longer reached ${percent(threshold)} ${window}`
  )

const reached = (bad: number, calls: number, threshold: number, minimumCalls: number): boolean =>
  calls >= minimumCalls && bad / calls >= threshold

const rateFigures = (reason: TripReason, calls: number, bad: number): Figures =>
  reason === "rate"
    ? { failures: bad, calls, slowCalls: undefined }
    : { failures: 0, calls, slowCalls: bad }

// Time window: `buckets` buckets of width window / buckets, aligned to multiples of the width on the monotonic
// clock. The counts are one array: [head bucket index, calls, bad, bucket₀, bucket₁, …]. Recording at bucket index K
// first clears the buckets after the head up to K (all of them when K is a window or more ahead), so a quiet period
// leaves no stale bucket behind.
//
// Each bucket packs its calls and bad outcomes in one number, calls × 2²⁶ + bad (exact, below 2⁵²): 13 numbers for
// 10 buckets instead of 23, which is most of a rate's memory per peer. A bucket about to hold 2²⁶ calls (67 million)
// widens the array in place to two numbers per bucket, [head, calls, bad, calls₀, bad₀, calls₁, bad₁, …]: nothing is
// capped, and the layout is told by the array's length.

const HEAD = 0
const CALLS = 1
const BAD = 2
const FIRST = 3

/** The multiplier of a packed bucket's calls, and the most calls a packed bucket holds plus one. */
const PACKED = 2 ** 26

/**
 * `widenAt` is the number of calls a packed bucket widens at (2²⁶; smaller only in tests, which exercise the widening
 * without recording 67 million calls).
 */
export const timeRateTracker = (
  reason: TripReason,
  threshold: number,
  minimumCalls: number,
  windowMillis: number,
  buckets: number,
  slowMillis: number,
  widenAt = PACKED
): Tracker => {
  // Bucket index of time t: ⌊t / (window / buckets)⌋, computed as ⌊t × buckets / window⌋ so that a width that is not
  // a whole number of milliseconds puts no time in the wrong bucket.
  const indexAt = (now: number): number => Math.floor((now * buckets) / windowMillis)
  const trip = rateTrip(
    reason,
    threshold,
    slowMillis,
    `of at least ${minimumCalls} calls within ${displayMillis(windowMillis)}`
  )
  const isBad = badOutcome(reason, slowMillis)
  const packedLength = FIRST + buckets
  const packedLimit = widenAt * PACKED
  const callsIn = (counts: Array<number>, bucket: number): number =>
    counts.length === packedLength ? Math.floor(counts[FIRST + bucket]! / PACKED) : counts[FIRST + 2 * bucket]!
  const badIn = (counts: Array<number>, bucket: number): number =>
    counts.length === packedLength ? counts[FIRST + bucket]! % PACKED : counts[FIRST + 2 * bucket + 1]!
  const widen = (counts: Array<number>): void => {
    counts.length = FIRST + 2 * buckets
    // From the last bucket down: bucket i moves to 2i and 2i + 1, after every bucket above it has moved.
    for (let bucket = buckets - 1; bucket >= 0; bucket--) {
      const packed = counts[FIRST + bucket]!
      counts[FIRST + 2 * bucket] = Math.floor(packed / PACKED)
      counts[FIRST + 2 * bucket + 1] = packed % PACKED
    }
  }
  const add = (counts: Array<number>, bucket: number, bad: boolean): void => {
    if (counts.length === packedLength) {
      const packed = counts[FIRST + bucket]! + PACKED
      if (packed < packedLimit) {
        counts[FIRST + bucket] = bad ? packed + 1 : packed
        return
      }
      widen(counts)
    }
    counts[FIRST + 2 * bucket]!++
    if (bad) counts[FIRST + 2 * bucket + 1]!++
  }
  const clear = (counts: Array<number>, bucket: number): void => {
    counts[CALLS]! -= callsIn(counts, bucket)
    counts[BAD]! -= badIn(counts, bucket)
    if (counts.length === packedLength) counts[FIRST + bucket] = 0
    else counts[FIRST + 2 * bucket] = counts[FIRST + 2 * bucket + 1] = 0
  }
  /** The calls and bad outcomes of the window at bucket index `index`, read without changing the counts. */
  const live = (counts: Array<number>, index: number): readonly [number, number] => {
    const head = counts[HEAD]!
    if (index - head >= buckets) return [0, 0]
    let calls = counts[CALLS]!
    let bad = counts[BAD]!
    for (let step = 1; step <= index - head; step++) {
      const bucket = (head + step) % buckets
      calls -= callsIn(counts, bucket)
      bad -= badIn(counts, bucket)
    }
    return [calls, bad]
  }
  return {
    record: (raw, failure, durationMillis, now) => {
      const index = indexAt(now)
      let counts = raw as Array<number> | undefined
      if (counts === undefined) {
        counts = new Array<number>(packedLength).fill(0)
        counts[HEAD] = index
      }
      const head = counts[HEAD]!
      if (index > head) {
        const cleared = Math.min(index - head, buckets)
        for (let step = 1; step <= cleared; step++) clear(counts, (head + step) % buckets)
        counts[HEAD] = index
      }
      const bad = isBad(failure, durationMillis)
      add(counts, counts[HEAD]! % buckets, bad)
      counts[CALLS]!++
      if (!bad) return counts
      counts[BAD]!++
      return reached(counts[BAD]!, counts[CALLS]!, threshold, minimumCalls) ? trip : counts
    },
    recordsSuccess: () => true,
    successInPlace: (raw, durationMillis) => raw !== undefined && !isBad(false, durationMillis),
    figures: (raw, now) => {
      if (raw === undefined) return rateFigures(reason, 0, 0)
      const [calls, bad] = live(raw as Array<number>, indexAt(now))
      return rateFigures(reason, calls, bad)
    },
    isEmpty: (raw, now) => raw === undefined || live(raw as Array<number>, indexAt(now))[0] === 0,
    isClear: (raw, now) => raw === undefined || live(raw as Array<number>, indexAt(now))[0] === 0,
    countsFailures: reason === "rate",
    slowMillis
  }
}

// Count window: the last `size` outcomes as a ring of bits, 30 to a word (small integers), in one array:
// [next position, recorded, bad, word₀, word₁, …].

const NEXT = 0
const RECORDED = 1
const WORDS = 3
const BITS = 30

const countRateTracker = (
  reason: TripReason,
  threshold: number,
  minimumCalls: number,
  size: number,
  slowMillis: number
): Tracker => {
  const isBad = badOutcome(reason, slowMillis)
  const trip = rateTrip(reason, threshold, slowMillis, `of the last ${size} calls`)
  return {
    record: (raw, failure, durationMillis) => {
      let counts = raw as Array<number> | undefined
      if (counts === undefined) counts = new Array<number>(WORDS + Math.ceil(size / BITS)).fill(0)
      const position = counts[NEXT]!
      const word = WORDS + Math.floor(position / BITS)
      const bit = 1 << (position % BITS)
      if (counts[RECORDED] === size) {
        if ((counts[word]! & bit) !== 0) counts[BAD]!--
      } else {
        counts[RECORDED]!++
      }
      counts[NEXT] = position + 1 === size ? 0 : position + 1
      if (!isBad(failure, durationMillis)) {
        counts[word] = counts[word]! & ~bit
        return counts
      }
      counts[word] = counts[word]! | bit
      counts[BAD]!++
      return reached(counts[BAD]!, counts[RECORDED]!, threshold, minimumCalls) ? trip : counts
    },
    recordsSuccess: () => true,
    successInPlace: (raw, durationMillis) => raw !== undefined && !isBad(false, durationMillis),
    figures: (raw) => {
      const counts = raw as Array<number> | undefined
      return counts === undefined ? rateFigures(reason, 0, 0) : rateFigures(reason, counts[RECORDED]!, counts[BAD]!)
    },
    // Successes alone are forgotten when a set drops the breaker as idle (documented): only bad outcomes pin it.
    isEmpty: (raw) => raw === undefined || (raw as Array<number>)[BAD] === 0,
    isClear: (raw) => raw === undefined || (raw as Array<number>)[RECORDED] === 0,
    countsFailures: reason === "rate",
    slowMillis
  }
}

// Any: one counts slot per member, in an array allocated on the first outcome some member keeps.

const anyTracker = (members: ReadonlyArray<Tracker>): Tracker => {
  const slowMillis = Math.min(...members.map((member) => member.slowMillis))
  return {
    record: (raw, failure, durationMillis, now) => {
      const counts = raw as Array<unknown> | undefined
      let next = counts
      let trip: Trip | undefined
      for (let i = 0; i < members.length; i++) {
        const before = counts?.[i]
        const after = members[i]!.record(before, failure, durationMillis, now)
        if (after instanceof Trip) {
          trip ??= after
          continue
        }
        if (after !== before) {
          next ??= new Array<unknown>(members.length).fill(undefined)
          next[i] = after
        }
      }
      return trip ?? next
    },
    recordsSuccess: (raw) => {
      const counts = raw as Array<unknown> | undefined
      return members.some((member, i) => member.recordsSuccess(counts?.[i]))
    },
    successInPlace: (raw, durationMillis) => {
      const counts = raw as Array<unknown> | undefined
      return members.every((member, i) => member.successInPlace(counts?.[i], durationMillis))
    },
    figures: (raw, now) => {
      // Each figure from the first member that keeps it, in declaration order.
      const counts = raw as Array<unknown> | undefined
      let failures: number | undefined
      let calls: number | undefined
      let slowCalls: number | undefined
      members.forEach((member, i) => {
        const own = member.figures(counts?.[i], now)
        if (failures === undefined && member.countsFailures) failures = own.failures
        calls ??= own.calls
        slowCalls ??= own.slowCalls
      })
      return { failures: failures ?? 0, calls, slowCalls }
    },
    isEmpty: (raw, now) => {
      const counts = raw as Array<unknown> | undefined
      return members.every((member, i) => member.isEmpty(counts?.[i], now))
    },
    isClear: (raw, now) => {
      const counts = raw as Array<unknown> | undefined
      return members.every((member, i) => member.isClear(counts?.[i], now))
    },
    countsFailures: members.some((member) => member.countsFailures),
    slowMillis
  }
}
