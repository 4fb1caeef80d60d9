// The fleet tests' way to a real redis-server: `describeRedis` skips (or, under REQUIRE_REDIS=1, fails) a block when
// redis-server is not on PATH. Starting and stopping servers is scripts/redisServer.ts's, shared with bench and demo.
import { describe, it } from "vitest"
import { markWarned, redisAvailable } from "../../scripts/redisServer.ts"

export { redisAvailable, redisCommand, type RedisServer, startRedis } from "../../scripts/redisServer.ts"

/** `REQUIRE_REDIS=1` (CI sets it): a missing redis-server fails the fleet tests instead of skipping them. */
export const requireRedis: boolean = process.env["REQUIRE_REDIS"] === "1"

const missingMessage = "[effect-circuit] redis-server not found on PATH: the fleet tests are skipped. "
  + "Install it (apt-get install -y redis-server) or run with REQUIRE_REDIS=1 to make this a failure."

const requiredMessage = "[effect-circuit] redis-server not found on PATH and REQUIRE_REDIS=1: "
  + "install it (apt-get install -y redis-server) to run the fleet tests."

const warnOnce = (): void => {
  if (markWarned()) process.stderr.write(`\n${missingMessage}\n\n`)
}

/**
 * vitest's `describe` for tests that need a real redis-server: runs `fn` when redis-server is on PATH; otherwise
 * skips the block with one loud line on stderr, or, under `REQUIRE_REDIS=1`, fails it.
 */
export const describeRedis = (name: string, fn: () => void): void => {
  if (redisAvailable) {
    describe(name, fn)
  } else if (requireRedis) {
    describe(name, () => {
      it("needs redis-server on PATH (REQUIRE_REDIS=1)", () => {
        throw new Error(requiredMessage)
      })
    })
  } else {
    warnOnce()
    describe.skip(name, fn)
  }
}
