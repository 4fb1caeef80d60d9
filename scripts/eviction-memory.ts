/**
 * Bounded memory, shown: drives 1,000,000 distinct peers through one CircuitBreakerSet (one call each), then moves
 * the TestClock past idleTimeToLive twice, calling one peer while the set sweeps the idle breakers away. Prints the
 * heap used per peer while they are held and after eviction.
 *
 * Run: npm run memory (node --expose-gc). Metric peer labels are off (`metricPeerLabel: "none"`): per-peer series
 * outlive their breakers for `metricRetention`, and this measures the breakers themselves.
 */
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreakerSet } from "../src/index.ts"

const peers = Number(process.argv[2] ?? 1_000_000)

declare const gc: () => void
if (typeof gc !== "function") {
  console.error("run with --expose-gc (npm run memory)")
  process.exit(1)
}

const heapUsed = () => {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`

const program = Effect.gen(function*() {
  const set = yield* CircuitBreakerSet
  const names = Array.from({ length: peers }, (_, i) => `peer-${i}`)
  const start = heapUsed()

  for (const name of names) yield* set.withBreaker(name)(Effect.void)
  const heldSize = (yield* set.snapshot).peers.length
  const held = heapUsed()

  // The set reads the clock on every 64th call and then sweeps up to 64 breakers: the sweeps of one TTL clear the
  // breakers' call flags, those of the next drop the breakers. One peer's calls drive them all.
  let calls = 0
  for (const wait of ["2 minutes", "2 minutes"] as const) {
    yield* TestClock.adjust(wait)
    for (let i = 0; i < peers + 64; i++) yield* set.withBreaker("sweeper")(Effect.void)
    calls += peers + 64
  }
  const remaining = (yield* set.snapshot).peers.length
  const after = heapUsed()
  // Keep the names alive to the end, so every reading includes them.
  if (names.length !== peers) throw new Error("unreachable")

  console.log(`peers driven:             ${peers.toLocaleString("en")} (${heldSize.toLocaleString("en")} held)`)
  console.log(`heap at start:            ${mb(start)} (peer names allocated)`)
  console.log(`heap while held:          ${mb(held)}  = ${((held - start) / peers).toFixed(0)} bytes per peer`)
  console.log(`calls that swept them:    ${calls.toLocaleString("en")} on one peer (${remaining} breaker left)`)
  console.log(`heap after eviction:      ${mb(after)}  = ${((after - start) / peers).toFixed(1)} bytes per peer`)
  console.log(`after / start:            ${(after / start).toFixed(3)} (must be within 1.10)`)
  if (after > start * 1.1) process.exitCode = 1
}).pipe(
  Effect.provide(CircuitBreakerSet.layer({ metricPeerLabel: "none", idleTimeToLive: "1 minute" })),
  Effect.provide(TestClock.layer())
)

Effect.runPromise(program)
