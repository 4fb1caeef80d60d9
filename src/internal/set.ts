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
import type { CircuitState } from "../CircuitState.ts"
import type { CircuitStateChange, Reason } from "../CircuitStateChange.ts"
import { isIdle, PeerBreaker, pin, type Shared, unpin } from "./breaker.ts"
import type { Fleet } from "./fleet.ts"
import { applyOperatorChange, guardPeer, type PeerRegistry } from "./guard.ts"
import * as machine from "./machine.ts"
import { Registry } from "./registry.ts"
import { clockOf, monotonicMillis } from "./time.ts"
import { readState, toCircuitState, toPeerSnapshot } from "./view.ts"

/** The defect of a call given a peer that is not a string. */
export const invalidPeer = (peer: unknown): Effect.Effect<never> =>
  Effect.die(new TypeError(`CircuitBreakerSet: a peer must be a string, got ${peer === null ? "null" : typeof peer}`))

/** The most dropped breakers whose generation a set remembers; the oldest are forgotten first. */
const maxDroppedGenerations = 10_000

/**
 * Generations of dropped breakers, by peer, bounded. A breaker dropped at the first generation needs no entry. A
 * forgotten entry costs precision only for a call that outlived its breaker: it then decides nothing, unless the
 * recreated breaker has gone through as many changes of state since as the dropped one had.
 */
class DroppedGenerations {
  readonly #byPeer = new Map<string, number>()

  keep(peer: string, generation: number): void {
    this.#byPeer.delete(peer)
    if (generation === machine.initial.generation) return
    this.#byPeer.set(peer, generation)
    if (this.#byPeer.size > maxDroppedGenerations) {
      for (const oldest of this.#byPeer.keys()) {
        this.#byPeer.delete(oldest)
        break
      }
    }
  }

  take(peer: string): number | undefined {
    const generation = this.#byPeer.get(peer)
    if (generation !== undefined) this.#byPeer.delete(peer)
    return generation
  }
}

/** The service `CircuitBreakerSet.make` builds. The top-level `withBreaker` recognises it, to reach `registry`. */
export class SetService implements Service {
  readonly registry: PeerRegistry
  readonly changes: Stream.Stream<CircuitStateChange>
  readonly options: Service["options"]
  /** In fleet mode, the fleet's half of the set; the top-level `withBreaker` guards through it. */
  readonly fleetMode: Fleet | undefined
  readonly fleet: Service["fleet"]
  readonly #shared: Shared
  /**
   * The generation each recently dropped breaker was at. A breaker recreated for its peer goes on from it, so that a
   * call admitted on the dropped one and still running decides exactly as if the breaker had been kept: its ticket
   * still matches while the closed period it was admitted in goes on, and no longer once it has ended.
   */
  readonly #dropped = new DroppedGenerations()

  constructor(
    shared: Shared,
    changes: PubSub.PubSub<CircuitStateChange>,
    idleTimeToLive: Duration.Duration,
    metricRetention: Duration.Duration,
    origin: number,
    builtAt: number,
    fleet: Fleet | undefined
  ) {
    this.#shared = shared
    this.fleetMode = fleet
    this.fleet = fleet === undefined
      ? Effect.sync(() => ({
        _tag: "Local",
        since: builtAt,
        process: "in-memory",
        reason: "in-memory set",
        pendingFailures: 0
      }))
      : Effect.sync(() => fleet.status())
    this.registry = new Registry<PeerBreaker, Context.Context<never>>({
      timeToLive: Duration.toMillis(idleTimeToLive),
      origin,
      now: (context) => monotonicMillis(Context.get(context, Clock.Clock)),
      create: (peer, now) => new PeerBreaker(peer, shared, now, this.#dropped.take(peer)),
      isIdle,
      // Per-peer series are kept for a while, then released: an unbounded population of peers must not grow the
      // metric registry without bound.
      onDrop: (breaker, now) => {
        shared.series.drop(breaker.name, breaker.series, now)
        this.#dropped.keep(breaker.name, Ref.getUnsafe(breaker.state).generation)
      }
    })
    this.changes = Stream.fromPubSub(changes)
    this.options = {
      ...shared.settings.options,
      idleTimeToLive,
      metricRetention,
      peers: Object.fromEntries([...shared.peers].map(([peer, settings]) => [peer, settings.options]))
    }
  }

  readonly withBreaker: Service["withBreaker"] = (peer) =>
    typeof peer !== "string"
      ? () => invalidPeer(peer)
      : this.fleetMode === undefined
      ? (self) => guardPeer(this.registry, peer, self)
      : (self) => this.fleetMode!.guard(peer, self)

  readonly state: Service["state"] = (peer) =>
    typeof peer === "string"
      // Looked up when the effect runs, not when it is built: a health check built once reads the circuit of now.
      ? Effect.flatMap(
        Effect.suspend(() =>
          readState(this.registry.get(peer)?.state, (this.#shared.peers.get(peer) ?? this.#shared.settings).limits)
        ),
        (local) =>
          this.fleetMode === undefined ?
            Effect.succeed(local) :
            Effect.clockWith((clock) =>
              Effect.sync(() =>
                stricter(local, this.fleetMode!.stateOf(peer, monotonicMillis(clock), clock.currentTimeMillisUnsafe()))
              )
            )
      )
      : invalidPeer(peer)

  readonly snapshot: Service["snapshot"] = Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = monotonicMillis(clock)
      const at = clock.currentTimeMillisUnsafe()
      const peers: Array<PeerSnapshot> = []
      const fleet = this.fleetMode
      for (const [peer, breaker] of this.registry.entries(now)) {
        const local = toCircuitState(Ref.getUnsafe(breaker.state), now, at, breaker.settings.limits)
        const state = fleet === undefined ? local : stricter(local, fleet.stateOf(peer, now, at))
        peers.push(toPeerSnapshot(peer, state, at))
      }
      // Peers the fleet holds open that this process has not called (or has dropped).
      if (fleet !== undefined) {
        for (const peer of fleet.peersNotClosed()) {
          if (this.registry.get(peer) !== undefined) continue
          const state = fleet.stateOf(peer, now, at)
          if (state !== undefined) peers.push(toPeerSnapshot(peer, state, at))
        }
      }
      return { at, peers }
    })
  )

  // A peer the set does not hold is closed with nothing in its window: resetting it changes nothing, and must not
  // create a breaker.
  readonly reset: Service["reset"] = (peer) =>
    typeof peer !== "string" ?
      invalidPeer(peer) :
      Effect.suspend(() => {
        const local = this.registry.get(peer) === undefined ? Effect.void : this.#operate(peer, machine.reset, "reset")
        const fleet = this.fleetMode
        if (fleet === undefined) return local
        return Effect.andThen(local, this.#withBreaker(peer, (breaker) => fleet.reset(breaker)))
      })

  /** Resets this process's breaker of `peer` only (a fleet-wide reset made by another process). */
  readonly resetLocal = (peer: string): Effect.Effect<void> =>
    Effect.suspend(() =>
      this.registry.get(peer) === undefined ? Effect.void : this.#operate(peer, machine.reset, "reset")
    )

  readonly isolate: Service["isolate"] = (peer) => {
    const fleet = this.fleetMode
    if (fleet === undefined || typeof peer !== "string") {
      return Effect.acquireRelease(
        this.#operate(peer, machine.isolate, "isolated"),
        () => this.#operate(peer, machine.release, "released")
      )
    }
    return Effect.acquireRelease(
      Effect.andThen(
        this.#operate(peer, machine.isolate, "isolated"),
        this.#withBreaker(peer, (breaker) => fleet.isolate(breaker, true))
      ),
      () =>
        Effect.andThen(
          this.#operate(peer, machine.release, "released"),
          this.#withBreaker(peer, (breaker) => fleet.isolate(breaker, false))
        )
    )
  }

  /** Runs `f` with `peer`'s breaker (for its settings), pinned meanwhile so that the set cannot drop it. */
  #withBreaker(peer: string, f: (breaker: PeerBreaker) => Effect.Effect<void>): Effect.Effect<void> {
    return Effect.uninterruptible(Effect.withFiber((fiber) => {
      const breaker = this.registry.getOrCreate(peer, monotonicMillis(clockOf(fiber)))
      pin(breaker)
      return Effect.ensuring(f(breaker), Effect.sync(() => unpin(breaker)))
    }))
  }

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
      pin(breaker)
      return applyOperatorChange(breaker, change, reason, clock)
    }))
  }
}

const strictness = { Closed: 0, HalfOpen: 1, Open: 2 } as const

/** The stricter of a peer's local state and its fleet view (Open beats HalfOpen beats Closed): what a call meets. */
const stricter = (local: CircuitState, fleet: CircuitState | undefined): CircuitState =>
  fleet !== undefined && strictness[fleet._tag] > strictness[local._tag] ? fleet : local
