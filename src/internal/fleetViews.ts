/**
 * What a process knows of its fleet's circuits: a view per peer that the fleet holds open, half-open or isolated
 * (a peer with no view is closed for the fleet), built from script replies and the change messages, and reported in
 * `changes` and the logs when it changes.
 *
 * Replies and messages may arrive in any order: each carries the circuit's generation, which only grows, and what is
 * older than what a view (or a recently closed circuit) holds is dropped.
 */
import type * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import { OpenReason as OpenReasonSchema } from "../CircuitSnapshot.ts"
import type { CircuitState, OpenReason } from "../CircuitState.ts"
import type { CircuitStateChange, Reason, StateTag } from "../CircuitStateChange.ts"
import { displayPeer } from "./display.ts"
import type { Reply } from "./fleetScripts.ts"

/** Generations of fleet circuits seen closing, kept to tell a late reply from news; the oldest are forgotten first. */
const maxClosedGenerations = 10_000

export type ViewTag = "Open" | "HalfOpen" | "Isolated"

/** This process's view of a peer's fleet circuit that is not closed. */
export interface View {
  readonly tag: ViewTag
  readonly generation: number
  /** Monotonic time at which a call should ask Redis again (or, while local, probe alone). */
  deadline: number
  readonly opening: number
  readonly reason: OpenReason
  readonly openedBy: string
  readonly openedAtWall: number
  readonly openMillis: number
  /** While local: probes running alone in this process, and those that succeeded. */
  localProbes: number
  localSuccesses: number
  /** Whether a call of this process is asking Redis for the probe slot: one at a time per process. */
  asking: boolean
}

export const stateTagOf = (tag: ViewTag | "Closed"): StateTag => tag === "Isolated" ? "Open" : tag

export const tagOfReply = (state: Reply[0]): ViewTag => state === "O" ? "Open" : state === "I" ? "Isolated" : "HalfOpen"

const openReasons: ReadonlySet<string> = new Set(OpenReasonSchema.literals)

/** A reason read from Redis; one this version does not know (a newer replica's) reads as a trip of the window. */
const openReasonOf = (text: string): OpenReason => openReasons.has(text) ? text as OpenReason : "window"

/** The views of one fleet set's process. */
export class FleetViews {
  readonly #views = new Map<string, View>()
  readonly #closedGenerations = new Map<string, number>()
  readonly #process: string
  readonly #changes: PubSub.PubSub<CircuitStateChange> | undefined
  readonly #context: Context.Context<never>

  constructor(
    process: string,
    changes: PubSub.PubSub<CircuitStateChange> | undefined,
    context: Context.Context<never>
  ) {
    this.#process = process
    this.#changes = changes
    this.#context = context
  }

  get size(): number {
    return this.#views.size
  }

  get(peer: string): View | undefined {
    return this.#views.get(peer)
  }

  has(peer: string): boolean {
    return this.#views.has(peer)
  }

  /** The peers the fleet holds not closed, as this process knows them. */
  peers(): ReadonlyArray<string> {
    return [...this.#views.keys()]
  }

  /**
   * Applies what Redis said of `peer` (a reply or a message, received at monotonic time `now`), if it is news, and
   * reports a change of state: `transition` is the message's reason, `by` the process that caused it.
   */
  observe(
    peer: string,
    reply: Reply,
    now: number,
    clock: Clock.Clock,
    transition: Reason | undefined,
    by?: string
  ): void {
    const [state, generationText, remaining, opening, reason, openedBy, openMillis, openedAgo] = reply
    const generation = Number(generationText)
    const before = this.#views.get(peer)
    const known = before?.generation ?? this.#closedGenerations.get(peer) ?? -1
    if (generation < known) return
    if (state === "C") {
      if (before !== undefined) this.close(peer, generation, transition ?? "probe-succeeded", by ?? openedBy, clock)
      else this.#rememberClosed(peer, generation)
      return
    }
    const tag = tagOfReply(state)
    const view: View = {
      tag,
      generation,
      deadline: now + Number(remaining),
      opening: Number(opening),
      reason: openReasonOf(reason),
      openedBy,
      openedAtWall: clock.currentTimeMillisUnsafe() - Number(openedAgo),
      openMillis: Number(openMillis),
      localProbes: before?.localProbes ?? 0,
      localSuccesses: 0,
      asking: false
    }
    this.#views.set(peer, view)
    this.#closedGenerations.delete(peer)
    if (before?.tag === tag && before.opening === view.opening) return
    const reported: Reason = transition ??
      (tag === "Isolated" ? "isolated" : tag === "HalfOpen" ? "probe" : view.reason)
    const from = before?.tag ?? "Closed"
    this.#report(peer, from, tag, reported, tag === "Isolated" ? 0 : view.opening, by ?? openedBy, clock)
  }

  /** The fleet closed `peer`'s circuit (or this process decided so alone, while Redis was away). */
  close(peer: string, generation: number, reason: Reason, by: string, clock: Clock.Clock): void {
    const before = this.#views.get(peer)
    this.#views.delete(peer)
    this.#rememberClosed(peer, generation)
    if (before !== undefined) this.#report(peer, before.tag, "Closed", reason, 0, by, clock)
  }

  /**
   * Drops the views whose deadline passed more than `idleMillis` before `now`: their peer has not been called since
   * (a call would have asked Redis), so what they say is stale, and an unbounded population of peers must not grow
   * the map. Their generation is kept, to tell a late reply from news.
   */
  prune(now: number, idleMillis: number): void {
    const stale = now - idleMillis
    for (const [peer, view] of this.#views) {
      if (view.deadline < stale && view.localProbes === 0 && !view.asking) {
        this.#views.delete(peer)
        this.#rememberClosed(peer, view.generation)
      }
    }
  }

  /** The view of `peer` as a `CircuitState` at monotonic time `now`, if it is not closed. */
  stateOf(peer: string, now: number, wallNow: number): CircuitState | undefined {
    const view = this.#views.get(peer)
    if (view === undefined) return undefined
    const remaining = Math.max(0, view.deadline - now)
    // Past an opening's end, the next call asks for the probe: as in memory, that reads as half-open.
    if (view.tag === "HalfOpen" || (view.tag === "Open" && remaining === 0)) {
      return {
        _tag: "HalfOpen",
        openedAt: view.openedAtWall,
        probeInFlight: remaining > 0,
        probesInFlight: remaining > 0 ? 1 : 0,
        successes: 0,
        retryAfter: Duration.millis(remaining),
        opening: view.opening,
        reason: view.reason
      }
    }
    return {
      _tag: "Open",
      openedAt: view.openedAtWall,
      probeAt: wallNow + remaining,
      retryAfter: Duration.millis(remaining),
      isolated: view.tag === "Isolated",
      opening: view.tag === "Isolated" ? 0 : view.opening,
      reason: view.tag === "Isolated" ? "isolated" : view.reason
    }
  }

  #rememberClosed(peer: string, generation: number): void {
    this.#closedGenerations.delete(peer)
    this.#closedGenerations.set(peer, generation)
    if (this.#closedGenerations.size > maxClosedGenerations) {
      for (const oldest of this.#closedGenerations.keys()) {
        this.#closedGenerations.delete(oldest)
        break
      }
    }
  }

  /** Publishes a change of the fleet's circuit in `changes`, and logs it, naming the process that caused it. */
  #report(
    peer: string,
    from: ViewTag | "Closed",
    to: ViewTag | "Closed",
    reason: Reason,
    opening: number,
    by: string,
    clock: Clock.Clock
  ): void {
    const change = {
      peer,
      from: stateTagOf(from),
      to: stateTagOf(to),
      at: clock.currentTimeMillisUnsafe(),
      reason,
      opening,
      process: by
    }
    if (this.#changes !== undefined) PubSub.publishUnsafe(this.#changes, change)
    const message = `Fleet circuit ${to === "Isolated" ? "isolated" : to} (${reason}), by process ${by}`
    Effect.runForkWith(this.#context)(
      Effect.ignoreCause(Effect.annotateLogs(
        to === "Closed" ? Effect.logInfo(message) : Effect.logWarning(message),
        { peer: displayPeer(peer), process: this.#process }
      ))
    )
  }
}
