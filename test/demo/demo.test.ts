/**
 * Runs the demo's program (`npm run demo`) with a shortened script, in real time against the real loopback HTTP
 * peer, and checks its summary against what the peer saw. Timings vary from run to run, so the assertions are about
 * counts and order, never exact durations.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type Phase, requestsWhileOpen, runDemo } from "../../demo/demo.ts"

const phases: ReadonlyArray<Phase> = [
  { name: "healthy", durationMs: 800 },
  { name: "failing", durationMs: 1200 },
  { name: "recovering", durationMs: 1000 }
]

const maxFailures = 3

const run = Effect.gen(function*() {
  const written: Array<string> = []
  const result = yield* runDemo({
    phases,
    rate: 40,
    output: { isTTY: false, write: (text) => written.push(text) },
    timeoutMs: 250,
    slowMs: 700,
    // Enough 404s in the healthy phase to open the circuit several times over, if they counted.
    unknownSkuRate: 0.25,
    breaker: { maxFailures, window: "2 seconds", resetTimeout: "400 millis" }
  })
  return { result, text: written.join("") }
})

const isFailure = (outcome: string | undefined) => outcome === "server-error" || outcome === "timeout"

describe("npm run demo, with a shortened script", () => {
  it.live("its summary agrees with what the peer saw", () =>
    Effect.gen(function*() {
      const { result, text } = yield* run
      const { calls, changes, failingAt, recoveringAt, requests } = result
      assert.isDefined(failingAt)
      assert.isDefined(recoveringAt)

      // The output: plain lines (no TTY), the summary as printed, then the Prometheus text.
      assert.notInclude(text, "\x1b")
      for (const line of result.summary) assert.include(text, `${line}\n`)
      assert.include(text, `summary: calls sent: ${result.callsSent} `)
      assert.include(text, "# TYPE circuit_breaker_calls_total counter")
      assert.include(text, `circuit_breaker_calls_total{peer="inventory-api",outcome="rejected"} ${result.rejected}`)

      // Calls sent = requests the peer received + rejections; every admitted call reached the peer exactly once and
      // no rejected call reached it.
      assert.strictEqual(result.callsSent, calls.length)
      assert.isAbove(result.callsSent, 80)
      assert.isAbove(result.rejected, 0)
      assert.strictEqual(result.callsSent, requests.length + result.rejected)
      const admitted = calls.filter((call) => call.outcome !== "rejected").map((call) => call.seq)
      assert.deepStrictEqual(requests.map((request) => request.callId).sort((a, b) => a - b), admitted)

      // Each call's outcome is what the peer answered.
      for (const request of requests) {
        const call = calls[request.callId]!
        const expected = request.status === 404
          ? "not-found"
          : request.status === 500
          ? "server-error"
          : request.delayMs > 0
          ? "timeout"
          : "ok"
        assert.strictEqual(call.outcome, expected, `call ${call.seq}`)
      }

      // The library's metrics agree: 404s were successes, 5xx and timeouts failures.
      const count = (outcome: string) => calls.filter((call) => call.outcome === outcome).length
      assert.strictEqual(result.metrics.rejected, result.rejected)
      assert.strictEqual(result.metrics.success, count("ok") + count("not-found"))
      assert.strictEqual(result.metrics.failure, count("server-error") + count("timeout"))
      assert.strictEqual(result.metrics.success + result.metrics.failure, requests.length)
      assert.strictEqual(result.metrics.ignored, 0)
      assert.strictEqual(result.metrics.transitions, changes.length)
      assert.strictEqual(result.metrics.probes, changes.filter((change) => change.to === "HalfOpen").length)

      // While the circuit was open, nothing reached the peer but the probes: in each episode from an opening to the
      // next closing, the requests of calls started after the opening are at most one per probe, and are probes.
      assert.strictEqual(requestsWhileOpen(changes, calls, requests), 0)
      for (let i = 0; i < changes.length; i++) {
        if (changes[i]!.from !== "Closed") continue
        const openedAt = changes[i]!.at
        const closing = changes.slice(i + 1).find((change) => change.to === "Closed")
        const until = closing?.at ?? Number.POSITIVE_INFINITY
        const probes = changes.filter((change) => change.to === "HalfOpen" && change.at > openedAt && change.at < until)
        const reached = requests.filter((request) =>
          request.at > openedAt && request.at <= until && calls[request.callId]!.startedAt > openedAt
        )
        assert.isAtMost(reached.length, probes.length)
        for (const request of reached) assert.strictEqual(calls[request.callId]!.state, "HalfOpen")
      }

      // 404s never opened it: the healthy phase had more than maxFailures 404s within the window, and no change.
      const healthy404s = requests.filter((request) => request.phase === "healthy" && request.status === 404)
      assert.isAbove(healthy404s.length, maxFailures)
      assert.isTrue(changes.every((change) => change.at >= failingAt!))
      // Every opening followed more than maxFailures counted failures (5xx, timeouts) since the last closing.
      for (const [i, change] of changes.entries()) {
        if (change.from !== "Closed") continue
        const since = changes.slice(0, i).filter((earlier) => earlier.to === "Closed").pop()?.at ?? 0
        const failures = calls.filter((call) =>
          isFailure(call.outcome) && call.endedAt! >= since && call.endedAt! <= change.at + 50
        )
        assert.isAbove(failures.length, maxFailures)
      }

      // It opened after the peer started failing, before it recovered; it closed after the peer recovered.
      assert.isDefined(result.openedAt)
      assert.isAtLeast(result.openedAt!, failingAt!)
      assert.isBelow(result.openedAt!, recoveringAt!)
      assert.isAtLeast(result.openLagMs!, 0)
      const last = changes[changes.length - 1]!
      assert.strictEqual(last.to, "Closed")
      assert.strictEqual(last.reason, "probe-succeeded")
      assert.isAtLeast(last.at, recoveringAt!)
      if (result.stateAtRecovery === "Closed") {
        assert.isUndefined(result.closedAt)
      } else {
        assert.isDefined(result.closedAt)
        assert.isAtLeast(result.closedAt!, recoveringAt!)
        assert.strictEqual(result.closeLagMs, result.closedAt! - recoveringAt!)
        assert.include(text, `circuit closed at `)
      }
      // Once closed again, the rest of the calls went through and succeeded.
      for (const call of calls.filter((call) => call.startedAt > last.at)) {
        assert.include(["ok", "not-found"], call.outcome)
      }
    }), 20_000)
})
