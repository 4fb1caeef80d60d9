/**
 * A breaker as the engine sees it: its peer, the settings it shares with the other breakers of its set, its state
 * in a `Ref`, and its metric series.
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import type * as Fiber from "effect/Fiber"
import * as Formatter from "effect/Formatter"
import { identity } from "effect/Function"
import * as Hash from "effect/Hash"
import * as Inspectable from "effect/Inspectable"
import type * as MutableRef from "effect/MutableRef"
import * as Pipeable from "effect/Pipeable"
import type * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import type { CircuitBreaker } from "../CircuitBreaker.ts"
import type { ResolvedOptions } from "../CircuitBreakerOptions.ts"
import type { CircuitStateChange } from "../CircuitStateChange.ts"
import { displayPeer } from "./display.ts"
import * as machine from "./machine.ts"
import { makeSeriesSource, type Series, type SeriesSource } from "./metrics.ts"
import { ScheduleOpenings } from "./openings.ts"
import type { Settings } from "./options.ts"
import type { Entry } from "./registry.ts"
import { RejectionCache } from "./rejection.ts"

/** The type id of `CircuitBreaker`. */
export const TypeId = "~effect-circuit/CircuitBreaker" as const

// The type ids of `Ref` and `MutableRef`, which Effect does not export; a breaker carries them (see `Breaker`).
const RefTypeId = "~effect/Ref" as const
const MutableRefTypeId = "~effect/MutableRef" as const

/** What every breaker of a set shares (a single breaker has its own). */
export interface Shared {
  /** The settings of the set (or single breaker): those of every peer that has no entry of its own. */
  readonly settings: Settings
  /** The settings of the peers that have an entry of their own in the set's `peers` option. */
  readonly peers: ReadonlyMap<string, Settings>
  readonly series: SeriesSource
  /** Where state changes are published; only a set has one. */
  readonly changes: PubSub.PubSub<CircuitStateChange> | undefined
  readonly rejections: RejectionCache
  /** In fleet mode, where the outcomes the fleet shares go (see `fleet.ts`). */
  fleet: FleetHook | undefined
  /** Where probes run: a set's scope, which interrupts them when it closes; a single breaker has none. */
  readonly probes: Scope.Scope | undefined
  /** A warning to log in the next call's fiber (a `metricPeerLabel` that threw); logged once per set. */
  pendingWarning: Effect.Effect<void> | undefined
  /** Whether `pendingWarning` has been set once already. */
  warnedLabel: boolean
  /** The breakers for which a throwing `isFailure` has been logged: it is logged once per breaker. */
  readonly warnedIsFailure: WeakSet<Breaker>
  /**
   * Each breaker's openings, when the open duration is a schedule: made when a decision first asks for them (see
   * `Breaker.openings`), and the map with the first of them.
   */
  openings: WeakMap<Breaker, ScheduleOpenings> | undefined
  /**
   * Operator actions under way, per breaker: while a breaker has any, the set keeps it. Calls need no pin: a probe
   * keeps its circuit half-open, and a closed call's result goes to whichever breaker the set holds for the peer by
   * then. Kept here rather than on each breaker, which it would cost a field while almost never in use; made with the
   * first pin.
   */
  pins: Map<Breaker, number> | undefined
  /** The context a call to `breaker` from `base` last ran in (see `guard.ts`); a cache, one entry per set. */
  lastMarked: LastMarked | undefined
}

/** What the call path tells a fleet: an outcome the local breaker recorded, once the call's result is settled. */
export interface FleetHook {
  outcome(breaker: Breaker, fiber: Fiber.Fiber<unknown, unknown>, failure: boolean, durationMillis: number): void
}

/** The breakers whose guard the current call runs under, innermost first (inherited by the fibers it forks). */
export interface Guarded {
  readonly breaker: Breaker
  readonly outer: Guarded | undefined
}

/**
 * The last caller's context seen by a set (`base`), the breakers it ran under (`guarded`), and, once a call to a
 * closed circuit ran in it, that context marked with that call's `breaker`.
 */
export type LastMarked =
  | {
    readonly base: Context.Context<never>
    readonly guarded: Guarded | undefined
    readonly breaker: Breaker
    readonly marked: Context.Context<never>
  }
  | {
    readonly base: Context.Context<never>
    readonly guarded: Guarded | undefined
    readonly breaker: undefined
    readonly marked: undefined
  }

/** The shared settings of a breaker or a set, with its metrics registered in `context`'s registry. */
export const makeShared = (
  settings: Settings,
  peers: ReadonlyMap<string, Settings>,
  context: Context.Context<never>,
  changes: PubSub.PubSub<CircuitStateChange> | undefined,
  probes: Scope.Scope | undefined,
  metricRetentionMillis: number
): Shared => {
  const shared: Shared = {
    settings,
    peers,
    series: makeSeriesSource(settings.options.metricPeerLabel, context, metricRetentionMillis, (peer, error) => {
      if (shared.warnedLabel) return
      shared.warnedLabel = true
      shared.pendingWarning = Effect.ignoreCause(Effect.logWarning(
        `metricPeerLabel threw for peer ${
          JSON.stringify(displayPeer(peer))
        }; its metrics are labelled "unlabelled". This is logged once.`,
        error
      ))
    }),
    changes,
    fleet: undefined,
    rejections: new RejectionCache(),
    probes,
    pendingWarning: undefined,
    warnedLabel: false,
    warnedIsFailure: new WeakSet(),
    openings: undefined,
    pins: undefined,
    lastMarked: undefined
  }
  return shared
}

/**
 * One peer's breaker, which is also the `Ref` of its circuit: `Ref.modify(breaker.state, …)` makes every change of
 * the circuit, so each decision is one atomic step, and the call path reads it with `Ref.getUnsafe` in the same
 * synchronous step as the decision it makes.
 *
 * A `Ref` is an object whose `ref` holds the value in `current` (the shape `Ref.Ref` and `MutableRef.MutableRef`
 * declare, and the one the `Ref` functions use). The breaker is that object itself: with a set holding a million
 * peers, a separate `Ref` and `MutableRef` would be two more objects per peer, 112 bytes, about half of a breaker.
 * Nothing writes `current` but the `Ref` functions (a test checks the sources).
 */
export class Breaker implements CircuitBreaker, Ref.Ref<machine.State>, MutableRef.MutableRef<machine.State> {
  declare readonly [TypeId]: typeof TypeId
  declare readonly [RefTypeId]: Ref.Ref.Variance<machine.State>[typeof RefTypeId]
  declare readonly [MutableRefTypeId]: typeof MutableRefTypeId
  readonly name: string
  readonly shared: Shared
  readonly settings: Settings
  readonly series: Series
  /** The circuit's state: the value of the breaker's `Ref`. */
  current: machine.State

  /**
   * `now` is the monotonic time in milliseconds, when a set's retained series may have expired; `generation` is the
   * generation a breaker recreated for a peer goes on from.
   */
  constructor(name: string, shared: Shared, now: number, generation = machine.initial.generation) {
    this.name = name
    this.shared = shared
    this.settings = shared.peers.get(name) ?? shared.settings
    this.series = shared.series.acquire(name, now)
    this.current = machine.closedAt(generation)
  }

  /** The `Ref` that holds the circuit: the breaker itself. */
  get state(): Ref.Ref<machine.State> {
    return this
  }

  /** Where the `Ref`'s value is held: the breaker itself (see the class's comment). */
  get ref(): MutableRef.MutableRef<machine.State> {
    return this
  }

  get options(): ResolvedOptions {
    return this.settings.options
  }

  get limits(): machine.Limits {
    return this.settings.limits
  }

  /** The durations of this breaker's openings, for a decision taken in `context` (whose `Random` jitters them). */
  openings(context: Context.Context<never>): machine.Openings {
    const settings = this.settings
    if (settings.fixedOpenings !== undefined) return settings.fixedOpenings
    const all = this.shared.openings ??= new WeakMap()
    let openings = all.get(this)
    if (openings === undefined) {
      openings = new ScheduleOpenings(settings.schedule!, settings.maxOpenMillis, context)
      all.set(this, openings)
    }
    openings.context = context
    return openings
  }

  pipe() {
    return Pipeable.pipeArguments(this, arguments)
  }

  // A breaker's state depends on the time (an opening ends without a write): `CircuitBreaker.state` reads it.
  toJSON(): unknown {
    return { _id: "CircuitBreaker", name: this.name }
  }

  toString(): string {
    return Formatter.format(this.toJSON())
  }

  [Inspectable.NodeInspectSymbol](): unknown {
    return this.toJSON()
  }

  // By identity, as Effect's own `Ref`: two breakers of one peer are two Refs, and a breaker's fields change.
  [Equal.symbol](that: unknown): boolean {
    return this === that
  }

  [Hash.symbol](): number {
    return Hash.random(this)
  }
}
Object.defineProperty(Breaker.prototype, TypeId, { value: TypeId })
Object.defineProperty(Breaker.prototype, RefTypeId, { value: { _A: identity } })
Object.defineProperty(Breaker.prototype, MutableRefTypeId, { value: MutableRefTypeId })

/** A breaker held by a set's registry, with the registry's bookkeeping for idle eviction. */
export class PeerBreaker extends Breaker implements Entry {
  touched = false
  movedAt = 0
}

/** Pins the breaker for an operator action: its set keeps it until as many `unpin`s. */
export const pin = (breaker: Breaker): void => {
  const pins = breaker.shared.pins ??= new Map()
  pins.set(breaker, (pins.get(breaker) ?? 0) + 1)
}

/** Ends one operator action's pin on the breaker. */
export const unpin = (breaker: Breaker): void => {
  const pins = breaker.shared.pins
  const held = pins?.get(breaker)
  // A bug, if ever: an unmatched unpin would otherwise leave the breaker pinned for good.
  if (held === undefined) throw new Error(`unpin without a pin on ${JSON.stringify(breaker.name)}`)
  if (held === 1) pins!.delete(breaker)
  else pins!.set(breaker, held - 1)
}

/** Whether the breaker can be dropped at `now` without anyone noticing: no pin, a fresh breaker's state. */
export const isIdle = (breaker: Breaker, now: number): boolean =>
  breaker.shared.pins?.has(breaker) !== true &&
  machine.isIdle(Ref.getUnsafe(breaker.state), now, breaker.settings.limits)
