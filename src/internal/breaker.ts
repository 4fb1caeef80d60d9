/**
 * A breaker as the engine sees it: its peer, the settings it shares with the other breakers of its set, its state
 * in a `Ref`, and its metric series.
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
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
    lastMarked: undefined
  }
  return shared
}

/**
 * One peer's breaker. Every change of its circuit goes through `Ref.modify` on `state`, so each decision is one
 * atomic step; the call path reads it with `Ref.getUnsafe` in the same synchronous step as the decision it makes.
 */
export class Breaker implements CircuitBreaker {
  declare readonly [TypeId]: typeof TypeId
  readonly name: string
  readonly shared: Shared
  readonly settings: Settings
  readonly state: Ref.Ref<machine.State>
  readonly series: Series
  /** The breaker's openings, when its open duration is a schedule: made on its first opening. */
  #openings: ScheduleOpenings | undefined = undefined
  /**
   * Operator actions under way on the breaker: while any, the set keeps it. Calls need no pin: a probe keeps its
   * circuit half-open, and a closed call's result goes to whichever breaker the set holds for the peer by then.
   */
  pins = 0

  /**
   * `now` is the monotonic time in milliseconds, when a set's retained series may have expired; `generation` is the
   * generation a breaker recreated for a peer goes on from.
   */
  constructor(name: string, shared: Shared, now: number, generation = machine.initial.generation) {
    this.name = name
    this.shared = shared
    this.settings = shared.peers.get(name) ?? shared.settings
    this.state = Ref.makeUnsafe<machine.State>(machine.closedAt(generation))
    this.series = shared.series.acquire(name, now)
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
    this.#openings ??= new ScheduleOpenings(settings.schedule!, settings.maxOpenMillis, context)
    this.#openings.context = context
    return this.#openings
  }

  pipe() {
    return Pipeable.pipeArguments(this, arguments)
  }
}
Object.defineProperty(Breaker.prototype, TypeId, { value: TypeId })

/** A breaker held by a set's registry, with the registry's bookkeeping for idle eviction. */
export class PeerBreaker extends Breaker implements Entry {
  touched = false
  movedAt = 0
}

/** Whether the breaker can be dropped at `now` without anyone noticing: no pin, a fresh breaker's state. */
export const isIdle = (breaker: Breaker, now: number): boolean =>
  breaker.pins === 0 && machine.isIdle(Ref.getUnsafe(breaker.state), now, breaker.settings.limits)
