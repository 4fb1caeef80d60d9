// Fleet mode across real processes, rule 4: one probe fleet-wide: see processes.ts for the harness. Real time, short durations,
// generous bounds; speeds are measured and printed (FLEET_* lines), never asserted tightly.
import { it } from "vitest"
import { describeProcesses, probeRounds, REDIS_TIMEOUT_MS, TEST_TIMEOUT_MS } from "./processes.ts"

describeProcesses("fleet mode across processes: rule 4: one probe fleet-wide", () => {
  it(
    "rule 4: 3 processes × 1,000 concurrent callers at half-open: exactly one call admitted fleet-wide, every round",
    () => probeRounds("timeout=100ms", 20, `${REDIS_TIMEOUT_MS} millis`, 400),
    TEST_TIMEOUT_MS
  )
})
