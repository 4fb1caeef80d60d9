// Fleet mode across real processes, rule 11: an isolation whose holder dies: see processes.ts for the harness. Real time, short durations,
// generous bounds; speeds are measured and printed (FLEET_* lines), never asserted tightly.
import { assert, it } from "vitest"
import {
  describeProcesses,
  firstAdmission,
  fleetOptions,
  ISOLATION_LEASE_MS,
  LAPSE_BOUND_MS,
  ms,
  oneCallBy,
  Replica,
  sleep,
  startFleet,
  TEST_TIMEOUT_MS,
  waitUntil
} from "./processes.ts"

describeProcesses("fleet mode across processes: rule 11: an isolation whose holder dies", () => {
  it(
    "rule 11: an isolation whose holder is SIGKILLed lapses with its lease: the others admit again, in bounds",
    async () => {
      const replicas = await startFleet(3, fleetOptions())
      const [a, b, c] = replicas as [Replica, Replica, Replica]
      const peer = "orphaned"
      const isolated = await a.send({ op: "isolate", peer })
      for (const replica of [b, c]) {
        await waitUntil(
          `${replica.name} rejects ${peer} as isolated`,
          2_000,
          async () => (await oneCallBy(replica, peer)).by === "Isolated"
        )
      }
      // A holds it for a while (renewing its lease every second), then dies without releasing it.
      await sleep(isolated["at"] + 4_000 - Date.now())
      const killedAt = Date.now()
      await a.kill()
      // Past the first lease's end: the renewals kept it, and B and C still reject.
      await sleep(isolated["at"] + ISOLATION_LEASE_MS + 1_000 - Date.now())
      for (const replica of [b, c]) {
        assert.deepInclude(
          await oneCallBy(replica, peer),
          { by: "Isolated" },
          `${replica.name}: the isolation ended with its first lease, though A renewed it`
        )
      }
      // The last renewal's lease ends: B and C admit calls again, each finding it out on its own.
      const lapses = await Promise.all(
        [b, c].map(async (replica) => (await firstAdmission(replica, peer, LAPSE_BOUND_MS)) - killedAt)
      )
      lapses.forEach((lapse, i) => assert.isBelow(lapse, LAPSE_BOUND_MS, `${[b, c][i]!.name}: ${lapse} ms`))
      console.log(
        `FLEET_ISOLATION_LAPSE ${lapses.map(ms).join(",")} (B, C: first admitted call − SIGKILL of the holder, ` +
          `which held it ${ms(killedAt - isolated["at"])}; lease ${ISOLATION_LEASE_MS}ms renewed every 1s; ` +
          `bound ${LAPSE_BOUND_MS}ms)`
      )
    },
    TEST_TIMEOUT_MS
  )
})
