// Fleet mode across real processes, rule 8: Redis killed and hung: see processes.ts for the harness. Real time, short durations,
// generous bounds; speeds are measured and printed (FLEET_* lines), never asserted tightly.
import { assert, it } from "vitest"
import {
  count,
  describeProcesses,
  DETECT_BOUND_MS,
  detections,
  failuresInRedis,
  field,
  fleetOptions,
  ms,
  oneCall,
  Replica,
  type Reply,
  server,
  SLACK_MS,
  sleep,
  startFleet,
  startReplica,
  TEST_TIMEOUT_MS,
  waitForState,
  waitUntil
} from "./processes.ts"

describeProcesses("fleet mode across processes: rule 8: Redis killed and hung", () => {
  it(
    "rule 8: redis-server SIGKILLed: local in bounds, calls unharmed, failures replayed; a process booted then joins",
    async () => {
      const options = fleetOptions({ maxFailures: 5 })
      const replicas = await startFleet(3, options)
      const [a, b, c] = replicas as [Replica, Replica, Replica]

      // Successful calls on a closed circuit, every 10 ms in each process, across the outage.
      const loads = replicas.map((replica) =>
        replica.send({ op: "load", peer: "steady", durationMs: 3_500, intervalMs: 10, delayMs: 5 })
      )
      await sleep(200)
      const killedAt = Date.now()
      await server.kill()
      // One failure in each process during the outage: not shared now, kept for replay.
      for (const replica of replicas) {
        assert.deepInclude(await replica.send({ op: "fail", peer: "outage", n: 1 }), { failed: 1 })
      }
      const detected: Array<number> = []
      for (const replica of replicas) {
        const { status } = await replica.send({ op: "waitStatus", tag: "Local", timeoutMs: 10_000 })
        assert.strictEqual(status._tag, "Local", replica.name)
        detected.push(status.since - killedAt)
      }
      for (const [i, delay] of detected.entries()) {
        assert.isBelow(
          delay,
          DETECT_BOUND_MS + SLACK_MS,
          `${replicas[i]!.name} went local ${delay} ms after the kill`
        )
      }
      for (const replica of replicas) {
        await waitUntil(
          `${replica.name} holds its failure for replay`,
          2_000,
          async () => (await replica.status()).pendingFailures === 1
        )
      }

      // A process started while Redis is down starts, in local mode.
      const d = await startReplica("D", options)
      const booted = await d.status()
      assert.strictEqual(booted._tag, "Local")
      assert.strictEqual(booted.pendingFailures, 0)

      const loaded = await Promise.all(loads)
      for (const [i, load] of loaded.entries()) {
        assert.deepInclude(load, { rejected: 0, failed: 0 }, replicas[i]!.name)
        assert.isAbove(load["ok"], 50)
        assert.isBelow(load["longestOverheadMs"], 1_000, `${replicas[i]!.name}: a call waited`)
      }

      // Redis comes back (empty, on the same port): every process rejoins, D included.
      const restartedAt = Date.now()
      await server.restart()
      const rejoined: Array<number> = []
      for (const replica of [...replicas, d]) {
        const { status } = await replica.send({ op: "waitStatus", tag: "Connected", timeoutMs: 15_000 })
        assert.strictEqual(status._tag, "Connected", `${replica.name} did not rejoin`)
        rejoined.push(status.since - restartedAt)
      }
      for (const delay of rejoined) assert.isBelow(delay, 10_000)

      // The three failures kept are replayed: Redis holds them, and with 3 more (6 > 5) the fleet opens.
      await waitUntil(
        "3 replayed failures in Redis",
        5_000,
        async () => (await failuresInRedis(options.prefix, "outage")) === 3
      )
      await sleep(300)
      for (const replica of [...replicas, d]) {
        assert.strictEqual(await replica.state("outage"), "Closed", replica.name)
      }
      assert.deepInclude(await d.send({ op: "fail", peer: "outage", n: 2 }), { failed: 2 })
      await waitUntil(
        "5 failures in Redis",
        3_000,
        async () => (await failuresInRedis(options.prefix, "outage")) === 5
      )
      await sleep(300)
      assert.strictEqual(await field(options.prefix, "outage", "s"), "C")
      assert.deepInclude(await d.send({ op: "fail", peer: "outage", n: 1 }), { failed: 1 })
      await waitForState([...replicas, d], "outage", "Open")
      for (const replica of [a, b, c]) assert.strictEqual(await oneCall(replica, "outage"), "rejected")

      // One Warning going local, one Info coming back, per process (not one per reconnection attempt).
      for (const replica of replicas) {
        assert.strictEqual(
          count(replica.logs, /Fleet store (lost|unreachable)/),
          1,
          `${replica.name}:\n${replica.logs}`
        )
        assert.strictEqual(count(replica.logs, /Fleet store reachable again/), 1, `${replica.name}:\n${replica.logs}`)
      }
      assert.strictEqual(count(d.logs, /Fleet store (lost|unreachable)/), 1, d.logs)
      assert.strictEqual(count(d.logs, /Fleet store reachable again/), 1, d.logs)

      detections.kill = detected
      console.log(
        `FLEET_DETECT kill=${detected.map(ms).join(",")} ` +
          `(A, B, C: Local since − SIGKILL; bound ${DETECT_BOUND_MS}ms)`
      )
      console.log(
        `FLEET_REJOIN kill: ${rejoined.map(ms).join(",")} (A, B, C, D-booted-while-down: Connected since − restart; ` +
          `longest call overhead during the outage: ${loaded.map((l) => ms(l["longestOverheadMs"])).join(",")})`
      )
    },
    TEST_TIMEOUT_MS
  )

  it(
    "rule 8: redis-server SIGSTOPped: local in bounds, no call waits longer than the timeout, rejoins after SIGCONT",
    async () => {
      const resetMs = 500
      const options = fleetOptions({ maxFailures: 5, resetTimeout: `${resetMs} millis` })
      const replicas = await startFleet(3, options)
      const [a, b, c] = replicas as [Replica, Replica, Replica]

      // A peer open for the fleet, past its deadline: the next call to it asks Redis for the probe slot.
      for (const replica of replicas) await replica.send({ op: "fail", peer: "held", n: 2 })
      await waitForState(replicas, "held", "Open")
      await sleep(resetMs + 200)

      const loads = replicas.map((replica) =>
        replica.send({ op: "load", peer: "steady", durationMs: 3_500, intervalMs: 10, delayMs: 5 })
      )
      await sleep(200)
      const pausedAt = Date.now()
      server.pause()
      let detected: Array<number> = []
      let asked: Reply
      let loaded: Array<Reply>
      try {
        // A, at once, makes a call that needs Redis: it must not wait longer than the timeout.
        asked = await a.send({ op: "call", peer: "held", n: 1, concurrency: 1, delayMs: 5 })
        assert.isBelow(asked["longestMs"], 1_000, "a call waited on the hung Redis")
        // B and C do nothing that needs Redis: only their health check finds it hung.
        for (const replica of replicas) {
          const { status } = await replica.send({ op: "waitStatus", tag: "Local", timeoutMs: 10_000 })
          assert.strictEqual(status._tag, "Local", replica.name)
          detected.push(status.since - pausedAt)
        }
        for (const [i, delay] of detected.entries()) {
          assert.isBelow(
            delay,
            DETECT_BOUND_MS + SLACK_MS,
            `${replicas[i]!.name} went local ${delay} ms after SIGSTOP`
          )
        }
        // One failure in each process while local: kept for replay.
        for (const replica of replicas) {
          assert.deepInclude(await replica.send({ op: "fail", peer: "hung", n: 1 }), { failed: 1 })
        }
        for (const replica of replicas) {
          await waitUntil(
            `${replica.name} holds its failure for replay`,
            2_000,
            async () => (await replica.status()).pendingFailures === 1
          )
        }
        loaded = await Promise.all(loads)
        for (const [i, load] of loaded.entries()) {
          assert.deepInclude(load, { rejected: 0, failed: 0 }, replicas[i]!.name)
          assert.isBelow(load["longestOverheadMs"], 1_000, `${replicas[i]!.name}: a call waited`)
        }
      } finally {
        server.resume()
      }
      const resumedAt = Date.now()
      const rejoined: Array<number> = []
      for (const replica of replicas) {
        const { status } = await replica.send({ op: "waitStatus", tag: "Connected", timeoutMs: 15_000 })
        assert.strictEqual(status._tag, "Connected", `${replica.name} did not rejoin`)
        rejoined.push(status.since - resumedAt)
      }
      for (const delay of rejoined) assert.isBelow(delay, 10_000)
      console.log(
        `FLEET_DETECT stop=${detected.map(ms).join(",")} (A, B, C: Local since − SIGSTOP; A made a call ` +
          `that needed Redis, B and C had only their health check; bound ${DETECT_BOUND_MS}ms) ` +
          `kill=${(detections.kill ?? []).map(ms).join(",")}`
      )
      console.log(
        `FLEET_REJOIN stop: ${rejoined.map(ms).join(",")} (Connected since − SIGCONT; the call needing the hung ` +
          `Redis took ${ms(asked["longestMs"])}; longest closed-path call overhead during the outage: ` +
          `${loaded.map((l) => ms(l["longestOverheadMs"])).join(",")})`
      )

      // The three failures of the outage are replayed: 3 in Redis, 2 more (5) keep it closed, 1 more opens it.
      await waitUntil(
        "3 replayed failures in Redis",
        5_000,
        async () => (await failuresInRedis(options.prefix, "hung")) === 3
      )
      assert.deepInclude(await b.send({ op: "fail", peer: "hung", n: 2 }), { failed: 2 })
      await waitUntil("5 failures in Redis", 3_000, async () => (await failuresInRedis(options.prefix, "hung")) === 5)
      await sleep(300)
      assert.strictEqual(await field(options.prefix, "hung", "s"), "C")
      assert.deepInclude(await c.send({ op: "fail", peer: "hung", n: 1 }), { failed: 1 })
      await waitForState(replicas, "hung", "Open")
    },
    TEST_TIMEOUT_MS
  )

  // A regression: the failure's script reached the hung Redis and timed out in the process, which kept the failure
  // for replay; Redis ran the script when it resumed, and the replay recorded the failure a second time. A failure
  // whose script timed out is not kept (Redis may still run it); one whose script failed outright is.
  it(
    "rule 8: a failure whose script timed out on a hung Redis counts once (not on resume and again on replay)",
    async () => {
      const options = fleetOptions({ maxFailures: 5 })
      const [a] = (await startFleet(1, options)) as [Replica]
      // A failure first, on another peer: the connection has sent the script before (EVALSHA), as in any process
      // that has run for a while.
      assert.deepInclude(await a.send({ op: "fail", peer: "warm-up", n: 1 }), { failed: 1 })
      await waitUntil(
        "the warm-up failure in Redis",
        3_000,
        async () => (await failuresInRedis(options.prefix, "warm-up")) === 1
      )
      server.pause()
      try {
        assert.deepInclude(await a.send({ op: "fail", peer: "once", n: 1 }), { failed: 1 })
        const { status } = await a.send({ op: "waitStatus", tag: "Local", timeoutMs: 10_000 })
        assert.deepInclude(status, { _tag: "Local", pendingFailures: 0 })
      } finally {
        server.resume()
      }
      const { status } = await a.send({ op: "waitStatus", tag: "Connected", timeoutMs: 15_000 })
      assert.strictEqual(status._tag, "Connected")
      await waitUntil("the failure in Redis", 5_000, async () => (await failuresInRedis(options.prefix, "once")) > 0)
      await sleep(500)
      assert.strictEqual(await failuresInRedis(options.prefix, "once"), 1, "one failure, counted twice")
    },
    TEST_TIMEOUT_MS
  )
})
