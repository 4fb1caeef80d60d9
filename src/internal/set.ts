/**
 * The service of a `CircuitBreakerSet` layer: a registry of breakers keyed by peer, and the service's members
 * around it.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import type { Service } from "../CircuitBreakerSet.ts"
import type { PeerSnapshot } from "../CircuitSnapshot.ts"
import type { CircuitStateChange, Reason } from "../CircuitStateChange.ts"
import { isIdle, PeerBreaker, type Shared } from "./breaker.ts"
import { applyOperatorChange, guardPeer, type PeerRegistry } from "./guard.ts"
import * as machine from "./machine.ts"
import { Registry } from "./registry.ts"
import { clockOf, monotonicMillis } from "./time.ts"
import { readState, toCircuitState, toPeerSnapshot } from "./view.ts"

/** The defect of a call given a peer that is not a string. */
export const invalidPeer = (peer: unknown): Effect.Effect<never> =>
  Effect.die(new TypeError(`CircuitBreakerSet: a peer must be a string, got ${peer === null ? "null" : typeof peer}`))

/** The service `CircuitBreakerSet.make` builds. The top-level `withBreaker` recognises it, to reach `registry`. */
export class SetService implements Service {
  readonly registry: PeerRegistry
  readonly changes: Stream.Stream<CircuitStateChange>
  readonly options: Service["options"]
  readonly #shared: Shared

  constructor(
    shared: Shared,
    changes: PubSub.PubSub<CircuitStateChange>,
    idleTimeToLive: Duration.Duration,
    metricRetention: Duration.Duration,
    origin: number
  ) {
    this.#shared = shared
    this.registry = new Registry<PeerBreaker, Context.Context<never>>({
      timeToLive: Duration.toMillis(idleTimeToLive),
      origin,
      now: (context) => monotonicMillis(Context.get(context, Clock.Clock)),
      create: (peer, now) => new PeerBreaker(peer, shared, now),
      isIdle,
      // Per-peer series are kept for a while, then released: an unbounded population of peers must not grow the
      // metric registry without bound.
      onDrop: (breaker, now) => shared.series.drop(breaker.name, breaker.series, now)
    })
    this.changes = Stream.fromPubSub(changes)
    this.options = { ...shared.options, idleTimeToLive, metricRetention }
  }

  readonly withBreaker: Service["withBreaker"] = (peer) =>
    typeof peer === "string" ? (self) => guardPeer(this.registry, peer, self) : () => invalidPeer(peer)

  readonly state: Service["state"] = (peer) =>
    typeof peer === "string" ? readState(this.registry.get(peer)?.state, this.#shared.limits) : invalidPeer(peer)

  readonly snapshot: Service["snapshot"] = Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = monotonicMillis(clock)
      const at = clock.currentTimeMillisUnsafe()
      const peers: Array<PeerSnapshot> = []
      for (const [peer, breaker] of this.registry.entries(now)) {
        const state = toCircuitState(Ref.getUnsafe(breaker.state), now, at, this.#shared.limits)
        peers.push(toPeerSnapshot(peer, state, at))
      }
      return { at, peers }
    })
  )

  // A peer the set does not hold is closed with nothing in its window: resetting it changes nothing, and must not
  // create a breaker.
  readonly reset: Service["reset"] = (peer) =>
    typeof peer === "string" && this.registry.get(peer) === undefined
      ? Effect.void
      : this.#operate(peer, machine.reset, "reset")

  readonly isolate: Service["isolate"] = (peer) =>
    Effect.acquireRelease(
      this.#operate(peer, machine.isolate, "isolated"),
      () => this.#operate(peer, machine.release, "released")
    )

  /** Applies an operator's change to `peer`'s breaker, creating it if the set does not hold it. */
  #operate(
    peer: string,
    change: (state: machine.State, now: number, wall: machine.WallClock, limits: machine.Limits) => machine.State,
    reason: Reason
  ): Effect.Effect<void> {
    if (typeof peer !== "string") return invalidPeer(peer)
    return Effect.uninterruptible(Effect.withFiber((fiber) => {
      const clock = clockOf(fiber)
      const breaker = this.registry.getOrCreate(peer, monotonicMillis(clock))
      // Pinned until the change is applied, a step later, so that the set cannot drop it meanwhile.
      breaker.pins++
      return applyOperatorChange(breaker, change, reason, clock)
    }))
  }
}
