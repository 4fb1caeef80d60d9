// Fleet mode across real processes, rules 2, 3 and 6, and an isolation released (rule 11): see processes.ts for the harness. Real time, short durations,
// generous bounds; speeds are measured and printed (FLEET_* lines), never asserted tightly.
import { assert, it } from "vitest"
import {
  describeProcesses,
  failuresInRedis,
  field,
  firstAdmission,
  fleetOptions,
  ms,
  oneCall,
  oneCallBy,
  percentile,
  Replica,
  sleep,
  startFleet,
  TEST_TIMEOUT_MS,
  waitForState,
  waitUntil
} from "./processes.ts"

describeProcesses("fleet mode across processes: rules 2, 3 and 6, and an isolation released (rule 11)", () => {
  it("rule 2: failures add up across processes: 2 + 2 + 2 open for all three, 2 + 2 + 1 do not", async () => {
    const options = fleetOptions({ maxFailures: 5 })
    const replicas = await startFleet(3, options)
    const [a, b, c] = replicas as [Replica, Replica, Replica]

    // 5 failures in all: not more than maxFailures.
    for (const [replica, n] of [[a, 2], [b, 2], [c, 1]] as const) {
      const result = await replica.send({ op: "fail", peer: "five", n })
      assert.deepInclude(result, { failed: n, rejected: 0 })
    }
    await waitUntil(
      "5 failures recorded in Redis",
      3_000,
      async () => (await failuresInRedis(options.prefix, "five")) === 5
    )
    await sleep(300)
    assert.strictEqual(await field(options.prefix, "five", "s"), "C")
    for (const replica of replicas) {
      assert.strictEqual(await replica.state("five"), "Closed", replica.name)
      assert.strictEqual(await oneCall(replica, "five"), "admitted", replica.name)
    }

    // 6 failures: two from each process open the circuit for the fleet (no local breaker saw more than 2).
    for (const replica of replicas) {
      const result = await replica.send({ op: "fail", peer: "six", n: 2 })
      assert.deepInclude(result, { failed: 2, rejected: 0 })
    }
    await waitForState(replicas, "six", "Open")
    assert.strictEqual(await field(options.prefix, "six", "s"), "O")
    for (const replica of replicas) assert.strictEqual(await oneCall(replica, "six"), "rejected", replica.name)
  }, TEST_TIMEOUT_MS)

  it(
    "rule 3: an opening reaches every process: delay from the tripping call's return to Open elsewhere",
    async () => {
      const replicas = await startFleet(3, fleetOptions({ maxFailures: 2 }))
      const rounds = 30
      const elsewhere: Array<number> = []
      const own: Array<number> = []
      for (let round = 0; round < rounds; round++) {
        const peer = `fan-out-${round}`
        const tripper = replicas[round % 3]!
        const others = replicas.filter((replica) => replica !== tripper)
        // Two failures first (not enough), one per other process; the tripper's failure is the third.
        for (const replica of others) await replica.send({ op: "fail", peer, n: 1 })
        const watches = replicas.map((replica) => replica.send({ op: "watch", peer, timeoutMs: 5_000 }))
        const trip = await tripper.send({ op: "fail", peer, n: 1 })
        assert.deepInclude(trip, { failed: 1, rejected: 0 })
        const seen = await Promise.all(watches)
        replicas.forEach((replica, i) => {
          const { rejected, seenAt } = seen[i]!
          assert.isDefined(seenAt, `round ${round}: ${replica.name} never saw ${peer} open`)
          assert.isTrue(rejected, `round ${round}: ${replica.name} saw ${peer} open but admitted a call`)
          const delay = seenAt - trip["at"]
          assert.isBelow(delay, 2_000, `round ${round}: ${replica.name} saw the opening ${delay} ms late`)
          ;(replica === tripper ? own : elsewhere).push(delay)
        })
      }
      elsewhere.sort((x, y) => x - y)
      own.sort((x, y) => x - y)
      console.log(
        `FLEET_FANOUT median=${ms(percentile(elsewhere, 50))} p99=${ms(percentile(elsewhere, 99))} ` +
          `max=${ms(elsewhere.at(-1)!)} n=${elsewhere.length} (other processes; from the return of the tripping ` +
          `call to the change in each other process) tripping-process median=${ms(percentile(own, 50))} ` +
          `max=${ms(own.at(-1)!)}`
      )
    },
    TEST_TIMEOUT_MS
  )

  it(
    "rule 6: with minProcesses 2, one process's failures trip only its local breaker; two processes trip the fleet",
    async () => {
      const options = fleetOptions({ maxFailures: 3, minProcesses: 2 })
      const replicas = await startFleet(3, options)
      const [a, b, c] = replicas as [Replica, Replica, Replica]

      // A alone: its 4th failure opens its local breaker (its 6 later calls are rejected locally); not the fleet.
      assert.deepInclude(await a.send({ op: "fail", peer: "solo", n: 10 }), { failed: 4, rejected: 6 })
      await waitUntil(
        "A's failures recorded",
        3_000,
        async () => (await failuresInRedis(options.prefix, "solo")) === 3
      )
      await sleep(500)
      assert.strictEqual(await field(options.prefix, "solo", "s"), "C")
      assert.strictEqual(await a.state("solo"), "Open")
      assert.strictEqual(await oneCall(a, "solo"), "rejected")
      for (const replica of [b, c]) {
        assert.strictEqual(await replica.state("solo"), "Closed", replica.name)
        assert.strictEqual(await oneCall(replica, "solo"), "admitted", replica.name)
      }

      // One failure from B: the window holds more than 3 failures from 2 processes: open for the fleet, C included.
      assert.deepInclude(await b.send({ op: "fail", peer: "solo", n: 1 }), { failed: 1 })
      await waitForState([b, c], "solo", "Open")
      assert.strictEqual(await field(options.prefix, "solo", "s"), "O")
      for (const replica of [b, c]) {
        assert.strictEqual(await oneCall(replica, "solo"), "rejected", replica.name)
      }
    },
    TEST_TIMEOUT_MS
  )

  it("rule 6: with the default minProcesses 1, one process's failures open the circuit for all", async () => {
    const options = fleetOptions({ maxFailures: 3 })
    const replicas = await startFleet(3, options)
    const [a, b, c] = replicas as [Replica, Replica, Replica]
    assert.deepInclude(await a.send({ op: "fail", peer: "solo", n: 4 }), { failed: 4, rejected: 0 })
    await waitForState(replicas, "solo", "Open")
    assert.strictEqual(await field(options.prefix, "solo", "s"), "O")
    for (const replica of [b, c]) assert.strictEqual(await oneCall(replica, "solo"), "rejected", replica.name)
  }, TEST_TIMEOUT_MS)

  it(
    "rule 11: an isolation held by one process rejects calls everywhere as Isolated; released, all admit within 2 s",
    async () => {
      const replicas = await startFleet(3, fleetOptions())
      const [a, b, c] = replicas as [Replica, Replica, Replica]
      const peer = "held"
      const isolated = await a.send({ op: "isolate", peer })
      assert.deepInclude(await oneCallBy(a, peer), { by: "Isolated" })
      const reached: Array<number> = []
      for (const replica of [b, c]) {
        await waitUntil(
          `${replica.name} rejects ${peer} as isolated`,
          2_000,
          async () => (await oneCallBy(replica, peer)).by === "Isolated"
        )
        reached.push(Date.now() - isolated["at"])
        assert.strictEqual(await replica.state(peer), "Open", replica.name)
      }
      // Another peer is not affected.
      for (const replica of replicas) assert.strictEqual(await oneCall(replica, "other"), "admitted", replica.name)

      const released = await a.send({ op: "release", peer })
      assert.isTrue(released["released"])
      const admitted = await Promise.all(
        replicas.map(async (replica) => (await firstAdmission(replica, peer, 2_000)) - released["at"])
      )
      admitted.forEach((delay, i) => assert.isBelow(delay, 2_000, `${replicas[i]!.name} admitted ${delay} ms late`))
      assert.deepInclude(await a.send({ op: "release", peer }), { released: false })
      console.log(
        `FLEET_ISOLATION_RELEASE ${admitted.map(ms).join(",")} (A, B, C: first admitted call − release in A; ` +
          `bound 2000ms) isolation reached B, C within ${reached.map(ms).join(",")}`
      )
    },
    TEST_TIMEOUT_MS
  )
})
