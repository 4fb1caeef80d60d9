/**
 * `npm run demo -- --fleet`: three replica processes against a real redis-server, in real time. The assertions are
 * about what the fleet must do whatever the timing (counts, order, who saw what), never about exact durations.
 */
import { execFile } from "node:child_process"
import * as path from "node:path"
import { assert, describe, it } from "vitest"
import { parseArgs } from "../../demo/cli.ts"
import { runFleetDemo } from "../../demo/fleet.ts"
import { describeRedis } from "../fleet/redisServer.ts"

const root = path.resolve(import.meta.dirname, "..", "..")

const maxFailures = 5

describe("npm run demo -- --fleet, its flag", () => {
  it("--fleet picks the fleet demo, which runs the window policy only", () => {
    assert.deepStrictEqual(parseArgs(["--fleet"]), { _tag: "Fleet" })
    assert.deepStrictEqual(parseArgs(["--fleet", "--policy", "window"]), { _tag: "Fleet" })
    const command = parseArgs(["--fleet", "--policy", "rate"])
    assert.strictEqual(command._tag, "Invalid")
    if (command._tag === "Invalid") assert.include(command.message, "--fleet runs the window policy")
  })

  it("without redis-server on PATH it says how to install it, and exits with code 1", async () => {
    const { code, stderr, stdout } = await new Promise<
      { code: number | string | null; stdout: string; stderr: string }
    >(
      (resolve) => {
        execFile(
          process.execPath,
          ["demo/main.ts", "--fleet"],
          { cwd: root, timeout: 15_000, env: { ...process.env, PATH: "" } },
          (error, stdout, stderr) => {
            const code = error === null ? 0 : typeof error.code === "number" ? error.code : error.signal ?? null
            resolve({ code, stdout, stderr })
          }
        )
      }
    )
    assert.strictEqual(code, 1, stderr)
    assert.include(stderr, "redis-server is not on PATH")
    assert.include(stderr, "apt-get install -y redis-server")
    assert.strictEqual(stdout, "")
  }, 20_000)
})

describeRedis("npm run demo -- --fleet", () => {
  it("the fleet trips together, sends one probe, closes for all, and stops everything it started", async () => {
    const written: Array<string> = []
    const result = await runFleetDemo({ write: (text) => written.push(text) })
    const text = written.join("")
    const { probes, replicas, requests, requestsWhileOpen } = result
    assert.lengthOf(replicas, 3)
    for (const line of result.summary) assert.include(text, `${line}\n`)
    assert.match(text, /done in [\d.]+ s: the replicas exited, redis-server and the peer stopped\n$/)

    const names = replicas.map((replica) => replica.name)
    const nameOf = (process: string | undefined) => replicas.find((replica) => replica.process === process)?.name
    for (const replica of replicas) {
      assert.strictEqual(replica.exitCode, 0, replica.name)
      assert.strictEqual(replica.finalState, "Closed", replica.name)
      // Every replica saw the fleet's circuit go Closed -> Open -> HalfOpen -> Closed, once each.
      const fleet = replica.changes.filter((change) => change.process !== undefined)
      assert.deepStrictEqual(
        fleet.map((change) => `${change.from}->${change.to}`),
        ["Closed->Open", "Open->HalfOpen", "HalfOpen->Closed"],
        replica.name
      )
      // Its local breaker never opened: the fleet's circuit did.
      assert.isTrue(replica.changes.every((change) => change.process !== undefined), replica.name)
      // It rejected calls, some while Open, and none of them reached the peer.
      const rejected = replica.calls.filter((call) => call.outcome === "rejected")
      assert.isTrue(rejected.some((call) => call.rejectedBy === "Open"), replica.name)
      assert.strictEqual(
        requests.filter((request) => request.replica === replica.name).length,
        replica.calls.length - rejected.length,
        replica.name
      )
    }
    // The three replicas agree on who opened it and who probed.
    const changes = replicas.flatMap((replica) => replica.changes)
    const opener = new Set(changes.filter((change) => change.to === "Open").map((change) => nameOf(change.process)))
    const prober = new Set(changes.filter((change) => change.to === "HalfOpen").map((change) => nameOf(change.process)))
    assert.strictEqual(opener.size, 1)
    assert.strictEqual(prober.size, 1)
    assert.include(names, [...opener][0])

    // It opened on the fleet's failures, none of the replicas having seen more than maxFailures alone.
    assert.isDefined(result.openedAt)
    const failuresBefore = replicas.map((replica) =>
      replica.calls.filter((call) => call.outcome === "failed" && call.startedAt <= result.openedAt!).length
    )
    assert.isAbove(failuresBefore.reduce((a, b) => a + b, 0), maxFailures)
    for (const failures of failuresBefore) assert.isAtMost(failures, maxFailures)
    assert.isAtLeast(result.openedAt!, result.failingAt)

    // Exactly one probe in the whole fleet, by the replica every other one named, and the only request the peer
    // received while the circuit was not closed; it succeeded, after the peer recovered.
    assert.lengthOf(probes, 1)
    assert.strictEqual(probes[0]!.name, [...prober][0])
    assert.strictEqual(probes[0]!.outcome, "ok")
    assert.lengthOf(requestsWhileOpen, 1)
    assert.strictEqual(requestsWhileOpen[0]!.replica, probes[0]!.name)
    assert.isDefined(result.closedAt)
    assert.isAtLeast(result.closedAt!, result.recoveringAt)
    // Once closed, every call went through and succeeded.
    for (const replica of replicas) {
      const later = replica.calls.filter((call) => call.startedAt > result.closedAt! + 50)
      assert.isAbove(later.length, 0, replica.name)
      for (const call of later) assert.strictEqual(call.outcome, "ok", `${replica.name} call ${call.seq}`)
    }
    assert.isBelow(result.elapsedMs, 60_000)
  }, 60_000)
})
