/**
 * The things under test, built once, outside the timed loops: this library's set, effect's `effect/persistence`
 * breaker, and the checks that each is in the state a case claims.
 *
 * The library comes as an argument: the working tree's (`current`) or a `--baseline` build of it, both built by the
 * same functions, so their cases differ in nothing but the library.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { CircuitBreaker as Persistence } from "effect/persistence"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as library from "../src/index.ts"
import type { CircuitBreakerSetService, SetOptions } from "../src/index.ts"
import type { Library } from "./baseline.ts"

export type { Library }

/** The working tree's library. */
export const current: Library = library

export type SetService = CircuitBreakerSetService

/** A typed failure, allocated once: the loops measure the breaker, not `new Error`. */
export const failure = new Error("peer failed")

/** Long enough that nothing times out, closes or is evicted during a run. */
export const forever = "1 day"

/** Builds a set's service from the public layer. */
/**
 * The set of a layer built with `options`, in a scope left open for the rest of the process, as an application's
 * set would be (a set used after its scope closed has released its metric series); its metrics go to `registry` if
 * given, to the default registry if not.
 */
export const makeSet = (lib: Library, options: SetOptions, registry?: Metric.MetricRegistry): SetService => {
  const scope = Effect.runSync(Scope.make())
  const build = Layer.buildWithScope(lib.CircuitBreakerSet.layer(options), scope).pipe(
    Effect.map((context) => Context.get(context, lib.CircuitBreakerSet))
  )
  return Effect.runSync(
    registry === undefined ? build : build.pipe(Effect.provideService(Metric.MetricRegistry, registry))
  )
}

/**
 * Runs `effect` with `set` as the `CircuitBreakerSet` in context (for the top-level `withBreaker`). Both builds of
 * the library use the same service key: `set` must come from `lib`.
 */
export const providing = (lib: Library, set: SetService) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, lib.CircuitBreakerSet, set)

/** A set whose breaker for `peer` is open, and stays open for a day. */
export const openSet = (lib: Library, peer: string): SetService => {
  const set = makeSet(lib, { maxFailures: 5, resetTimeout: forever, idleTimeToLive: forever })
  const failing = set.withBreaker(peer)(Effect.fail(failure))
  // Opening logs a warning: keep it out of the table.
  for (let i = 0; i < 6; i++) {
    Effect.runSync(Effect.exit(failing).pipe(Effect.provideService(References.MinimumLogLevel, "None")))
  }
  expectState(set, peer, "Open")
  return set
}

export const expectState = (set: SetService, peer: string, tag: "Closed" | "Open" | "HalfOpen"): void => {
  const state = Effect.runSync(set.state(peer))
  if (state._tag !== tag) throw new Error(`bench: expected ${peer} to be ${tag}, found ${state._tag}`)
}

/** Runs one call and checks that it fails with a typed error tagged `tag`. */
export const expectFailureTagged = (effect: Effect.Effect<unknown, unknown>, tag: string): void => {
  const exit = Effect.runSync(Effect.exit(effect))
  const reason = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
  const error: unknown = reason?._tag === "Fail" ? reason.error : undefined
  const found = typeof error === "object" && error !== null && "_tag" in error ? error._tag : undefined
  if (found !== tag) throw new Error(`bench: expected a failure tagged ${tag}, got ${String(exit)}`)
}

/** effect's own breaker (`effect/persistence`, memory store), opening after 5 consecutive failures. */
export const makePersistence = (): Persistence.CircuitBreaker =>
  Effect.runSync(
    Persistence.make({
      tripPolicy: Persistence.consecutive(5),
      openDuration: forever,
      maxOpenDuration: forever
    }).pipe(Scope.provide(Scope.makeUnsafe()), Effect.provide(Persistence.layerStoreMemory()))
  )

/** Opens `key` on a persistence breaker. */
export const openPersistence = (breaker: Persistence.CircuitBreaker, key: string): void => {
  const failing = Effect.fail(failure).pipe(breaker.execute({ key }))
  for (let i = 0; i < 5; i++) Effect.runSync(Effect.exit(failing))
  const state = Effect.runSync(breaker.state(key))
  if (state._tag !== "Open") throw new Error(`bench: expected persistence ${key} to be Open, found ${state._tag}`)
}
