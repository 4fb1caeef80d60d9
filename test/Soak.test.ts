import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerSet } from "../src/index.ts"
import { failing, isRejection, provideSet, random } from "./utils.ts"

const peers = 1_000
const day = 24 * 3_600_000
const step = 5_000
const resetTimeout = 10_000
const idleTimeToLive = 60_000

describe("soak", () => {
  it.effect("24 hours of mixed traffic on 1,000 peers keeps every invariant", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const next = random(20261127)
      // Each peer is down during random outages; a call fails iff its peer is down when it ends.
      const downUntil = new Float64Array(peers)
      const lastCalled = new Float64Array(peers)
      /** Probes running per peer, with their start times. */
      const probes = new Map<number, Array<number>>()
      const violations: Array<string> = []
      let now = 0
      let calls = 0
      let rejected = 0
      let probesSeen = 0
      let maxHeld = 0
      const running = new Set<Fiber.Fiber<unknown, unknown>>()

      const call = (peer: number, duration: number) =>
        Effect.gen(function*() {
          const name = `peer-${peer}`
          const before = yield* set.state(name)
          const exit = yield* Effect.exit(
            Effect.gen(function*() {
              const during = yield* set.state(name)
              const started = yield* Clock.currentTimeMillis
              const isProbe = during._tag === "HalfOpen"
              if (isProbe) {
                probesSeen++
                // A probe older than resetTimeout has lost its slot; any other running probe is a second probe.
                const live = (probes.get(peer) ?? []).filter((start) => started - start < resetTimeout)
                if (live.length > 0) violations.push(`two live probes on ${name} at ${started}`)
                probes.set(peer, [...live, started])
              }
              yield* Effect.sleep(Duration.millis(duration))
              if (isProbe) probes.set(peer, (probes.get(peer) ?? []).filter((start) => start !== started))
              if (downUntil[peer]! > (yield* Clock.currentTimeMillis)) return yield* failing
            }).pipe(set.withBreaker(name))
          )
          calls++
          if (isRejection(exit)) {
            rejected++
            if (before._tag === "HalfOpen" && !before.probeInFlight) {
              violations.push(`${name} rejected a call with a free probe slot at ${now}`)
            }
            if (before._tag === "Closed") violations.push(`${name} rejected a call while closed at ${now}`)
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
          const fiber = yield* Effect.forkChild(call(peer, duration))
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
      // After a quiet spell, sweeps (here run by snapshots, 64 breakers each) drop every idle breaker: the sweeps of
      // one TTL clear the call flags, those of the next drop. Only circuits that are not closed stay.
      for (const wait of ["10 minutes", "2 minutes"] as const) {
        yield* TestClock.adjust(wait)
        for (let i = 0; i < 20; i++) yield* set.snapshot
      }
      const held = (yield* set.snapshot).peers

      assert.deepStrictEqual(violations.slice(0, 10), [])
      assert.isAbove(calls, 200_000)
      assert.isAbove(rejected, 0)
      assert.isAbove(probesSeen, 0)
      assert.isBelow(maxHeld, peers / 2)
      assert.deepStrictEqual(held.filter((p) => p.state === "Closed"), [])
    }).pipe(provideSet({
      maxFailures: 2,
      window: "30 seconds",
      resetTimeout: Duration.millis(resetTimeout),
      idleTimeToLive: Duration.millis(idleTimeToLive),
      metricPeerLabel: "none"
    })), { timeout: 60_000 })
})
