// Helpers of the in-process fleet tests: sets built on a real redis-server, waited on in real time, with bounds.
import { NodeRedis } from "@effect/platform-node"
import { assert } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { type CircuitBreakerSetService, FleetStatus } from "../../src/index.ts"

/**
 * The Redis timeout of test sets whose test is not about timeouts: the test files run side by side on a busy
 * machine, where a 100 ms timeout (the default) would now and then take a set local.
 */
export const patient = "1 second"

/** The Redis layer a fleet set builds: a dead Redis fails commands at once instead of queueing them. */
export const redisLayer = (url: string) => NodeRedis.layer({ url, disableOfflineQueue: true })

/** Waits (bounded) until `set`'s fleet status satisfies `predicate`; fails the test otherwise. */
export const until = (
  set: CircuitBreakerSetService,
  predicate: (status: FleetStatus.FleetStatus) => boolean,
  what: string,
  millis = 8_000
) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (Date.now() < deadline) {
      if (predicate(yield* set.fleet)) return
      yield* Effect.sleep("20 millis")
    }
    assert.fail(`${what} within ${millis} ms; status: ${JSON.stringify(yield* set.fleet)}`)
  })

/** Waits (bounded) until `set` has joined its fleet. */
export const connected = (set: CircuitBreakerSetService) => until(set, FleetStatus.isConnected, "connected")

/** Waits (bounded) until `peer`'s state in `set` has the tag `tag`. */
export const untilState = (set: CircuitBreakerSetService, peer: string, tag: string, millis = 3_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (Date.now() < deadline) {
      if ((yield* set.state(peer))._tag === tag) return
      yield* Effect.sleep("5 millis")
    }
    assert.fail(`${peer} did not become ${tag} within ${millis} ms: ${JSON.stringify(yield* set.state(peer))}`)
  })

/** A call to `peer` that fails, as a counted failure. */
export const fail = (set: CircuitBreakerSetService, peer: string) =>
  Effect.exit(Effect.fail("down").pipe(set.withBreaker(peer)))

/** A call to `peer` that succeeds, if admitted. */
export const call = (set: CircuitBreakerSetService, peer: string) =>
  Effect.exit(Effect.succeed("ok").pipe(set.withBreaker(peer)))

/** The `state` of the call's `CircuitOpenError`, or `undefined` if it was admitted. */
export const rejection = (exit: Exit.Exit<unknown, unknown>): string | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = Cause.squash(exit.cause) as { _tag?: string; state?: string }
  return error._tag === "CircuitOpenError" ? error.state : undefined
}
