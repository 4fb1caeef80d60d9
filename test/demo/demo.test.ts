/**
 * Runs the demo's program (`npm run demo`) with a shortened script, in real time against the real loopback HTTP
 * peer, and checks its summary against what the peer saw. Timings vary from run to run, so the assertions are about
 * counts and order, never exact durations.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { breakerFor, parseArgs, policies } from "../../demo/cli.ts"
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
    // Room for a fast answer on a busy machine, and under the probe's lease (the 400 ms opening): a probe that ran
    // past its lease would fail with CircuitOpenError, which the demo reports as a rejection.
    timeoutMs: 350,
    slowMs: 700,
    // Enough 404s in the healthy phase to open the circuit several times over, if they counted.
    unknownSkuRate: 0.25,
    breaker: { maxFailures, window: "2 seconds", resetTimeout: "400 millis" }
  })
  return { result, text: written.join("") }
})

const isFailure = (outcome: string | undefined) => outcome === "server-error" || outcome === "timeout"

/**
 * The circuit's last closing, at `closedAt`, came from a probe the peer answered: after it recovered, or, before,
 * with a 404. An unknown SKU gets a quick 404 in every phase, and a 404 is an answer, so a probe can close the
 * circuit while the peer still fails the other calls; the circuit is then closed when the peer recovers, if too few
 * failures follow to open it again.
 */
const closedByAnAnswer = (
  closedAt: number,
  stateAtRecovery: string | undefined,
  recoveringAt: number,
  requests: ReadonlyArray<{ readonly phase: string; readonly status: number; readonly at: number }>
) => {
  if (closedAt >= recoveringAt) return
  assert.strictEqual(stateAtRecovery, "Closed")
  assert.isTrue(
    requests.some((request) => request.phase === "failing" && request.status === 404 && request.at <= closedAt),
    "a probe answered with a 404 while the peer failed"
  )
}

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
        // Each reached the peer after a probe was let through. (Not checked on the call's record: the demo reads the
        // state a moment before it starts the call, which may be the opening's last millisecond.)
        for (const request of reached) {
          assert.isTrue(probes.some((probe) => probe.at <= request.at), `${request.callId}`)
        }
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
      closedByAnAnswer(last.at, result.stateAtRecovery, recoveringAt!, requests)
      if (result.stateAtRecovery === "Closed") {
        assert.isUndefined(result.closedAt)
      } else {
        assert.isDefined(result.closedAt)
        assert.isAtLeast(result.closedAt!, recoveringAt!)
        assert.strictEqual(result.closeLagMs, result.closedAt! - recoveringAt!)
        assert.include(text, `circuit closed at `)
      }
      // Once closed again, the rest of the calls went through (and, once the peer had recovered, succeeded).
      for (const call of calls.filter((call) => call.startedAt > last.at)) {
        assert.notStrictEqual(call.outcome, "rejected", `call ${call.seq}`)
        if (call.startedAt >= recoveringAt!) assert.include(["ok", "not-found"], call.outcome, `call ${call.seq}`)
      }
    }), 20_000)
})

// After the shortened run, not beside it: two real-time runs at once would slow each other's calls past their timeout.
describe("npm run demo -- --policy rate", { concurrent: false }, () => {
  // Long enough a failing phase for the rate to reach its minimum of calls and its threshold, at 40 calls a second.
  const ratePhases: ReadonlyArray<Phase> = [
    { name: "healthy", durationMs: 500 },
    { name: "failing", durationMs: 2000 },
    { name: "recovering", durationMs: 1000 }
  ]
  const rate = policies.rate

  it("the flag picks the policy; a bad value names the flag", () => {
    assert.deepStrictEqual(parseArgs([]), { _tag: "Run", policy: "window" })
    assert.deepStrictEqual(parseArgs(["--policy", "rate"]), { _tag: "Run", policy: "rate" })
    assert.deepStrictEqual(parseArgs(["--policy=slow-calls"]), { _tag: "Run", policy: "slow-calls" })
    assert.strictEqual(breakerFor("rate").policy, rate)
    for (const args of [["--policy", "fast"], ["--policy"], ["--policy="], ["--polcy", "rate"]]) {
      const command = parseArgs(args)
      assert.strictEqual(command._tag, "Invalid", args.join(" "))
      if (command._tag === "Invalid") assert.include(command.message, "--pol", args.join(" "))
    }
  })

  it.live("the program runs to its end, and the rate policy opens the circuit", () =>
    Effect.gen(function*() {
      const command = parseArgs(["--policy", "rate"])
      assert.strictEqual(command._tag, "Run")
      if (command._tag !== "Run") return
      const written: Array<string> = []
      const result = yield* runDemo({
        phases: ratePhases,
        rate: 40,
        output: { isTTY: false, write: (text) => written.push(text) },
        timeoutMs: 250,
        slowMs: 700,
        breaker: { ...breakerFor(command.policy), resetTimeout: "400 millis" }
      })
      const text = written.join("")
      const { calls, changes, failingAt, recoveringAt, requests } = result

      // The header names the policy, and the run printed its summary and metrics to the end.
      assert.include(text, "breaker policy: rate: failures reach 50% of the calls within 2s, once there are 20\n")
      for (const line of result.summary) assert.include(text, `${line}\n`)
      assert.include(text, "# TYPE circuit_breaker_calls_total counter")
      assert.include(
        text,
        `circuit_breaker_transitions_total{peer="inventory-api",from="Closed",to="Open",reason="rate"}`
      )
      assert.strictEqual(result.callsSent, requests.length + result.rejected)
      assert.strictEqual(result.metrics.transitions, changes.length)
      assert.strictEqual(requestsWhileOpen(changes, calls, requests), 0)

      // It opened on the rate, while the peer failed: each opening from Closed came after at least minimumCalls
      // calls since the last closing (the policy forgets its calls on every change), failures at least half of them.
      const openings = changes.filter((change) => change.from === "Closed")
      assert.isAbove(openings.length, 0)
      for (const [i, change] of changes.entries()) {
        if (change.from !== "Closed") continue
        assert.strictEqual(change.reason, "rate")
        assert.include(text, ` circuit Closed -> Open (rate)`)
        assert.isAtLeast(change.at, failingAt!)
        assert.isBelow(change.at, recoveringAt!)
        const since = changes.slice(0, i).filter((earlier) => earlier.to === "Closed").pop()?.at ?? 0
        const ended = calls.filter((call) =>
          call.outcome !== "rejected" && call.endedAt! >= since && call.endedAt! <= change.at + 50
        )
        const failed = ended.filter((call) => isFailure(call.outcome))
        assert.isAtLeast(ended.length, rate.minimumCalls)
        assert.isAtLeast(failed.length, rate.minimumCalls * rate.threshold)
      }
      // And it closed again.
      const last = changes[changes.length - 1]!
      assert.strictEqual(last.to, "Closed")
      closedByAnAnswer(last.at, result.stateAtRecovery, recoveringAt!, requests)
    }), 20_000)

  it.live("a bad value stops it before it starts, naming the flag, with exit code 2", () =>
    Effect.gen(function*() {
      const root = path.resolve(import.meta.dirname, "..", "..")
      const { code, stderr, stdout } = yield* Effect.callback<
        { code: number | string | null; stdout: string; stderr: string }
      >((resume, signal) => {
        execFile(
          process.execPath,
          ["demo/main.ts", "--policy", "fastest"],
          { cwd: root, signal, timeout: 15_000 },
          (error, stdout, stderr) => {
            const code = error === null ? 0 : typeof error.code === "number" ? error.code : error.signal ?? null
            resume(Effect.succeed({ code, stdout, stderr }))
          }
        )
      })
      assert.strictEqual(code, 2, stderr)
      assert.include(stderr, "--policy: unknown policy \"fastest\"")
      assert.include(stderr, "window, consecutive, rate, slow-calls")
      assert.strictEqual(stdout, "")
    }), 20_000)
})
