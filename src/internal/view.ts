/**
 * The one place where a machine state becomes what users see: the state tag of metrics and `changes`, the
 * `CircuitState` of `state(peer)`, and a peer's entry in a snapshot.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"
import type { PeerSnapshot } from "../CircuitSnapshot.ts"
import type { CircuitState } from "../CircuitState.ts"
import type { StateTag } from "../CircuitStateChange.ts"
import * as machine from "./machine.ts"
import { monotonicMillis } from "./time.ts"

/** The state tag a machine state is reported under: an isolated circuit is Open. */
export const tagOf = (state: machine.State): StateTag => state._tag === "Isolated" ? "Open" : state._tag

/** The public view of a machine state at monotonic time `now` and wall-clock time `wallNow`. */
export const toCircuitState = (
  stored: machine.State,
  now: number,
  wallNow: number,
  limits: machine.Limits
): CircuitState => {
  const state = machine.expireProbe(stored, now, { currentTimeMillisUnsafe: () => wallNow })
  switch (state._tag) {
    case "Closed": {
      const figures = machine.figures(state, now, limits)
      return {
        _tag: "Closed",
        failures: figures.failures,
        ...(figures.calls === undefined ? {} : { calls: figures.calls }),
        ...(figures.slowCalls === undefined ? {} : { slowCalls: figures.slowCalls })
      }
    }
    case "Open": {
      const remaining = state.openMillis - (now - state.openedAt)
      return remaining > 0
        ? {
          _tag: "Open",
          openedAt: state.openedAtWall,
          probeAt: wallNow + remaining,
          retryAfter: Duration.millis(remaining),
          isolated: false,
          opening: state.opening,
          reason: state.reason
        }
        : halfOpen(state.openedAtWall, state.opening, state.reason, 0, 0, 0)
    }
    case "Isolated":
      return {
        _tag: "Open",
        openedAt: state.openedAtWall,
        probeAt: wallNow + limits.pollMillis,
        retryAfter: Duration.millis(limits.pollMillis),
        isolated: true,
        opening: 0,
        reason: "isolated"
      }
    case "HalfOpen": {
      const [admission] = machine.admit(state, now, limits, noOpenings)
      return halfOpen(
        state.openedAtWall,
        state.opening,
        state.reason,
        state.probes.length,
        state.successes,
        typeof admission === "number" ? 0 : admission.retryAfterMillis
      )
    }
  }
}

/** A half-open state never asks for a delay when admitting (it asks only on entry): reads can pass this. */
const noOpenings: machine.Openings = { delay: () => NaN }

const halfOpen = (
  openedAt: number,
  opening: number,
  reason: machine.OpenReason,
  probesInFlight: number,
  successes: number,
  retryAfterMillis: number
): CircuitState => ({
  _tag: "HalfOpen",
  openedAt,
  probeInFlight: probesInFlight > 0,
  probesInFlight,
  successes,
  retryAfter: Duration.millis(retryAfterMillis),
  opening,
  reason
})

/** A peer's entry in a snapshot taken at wall-clock time `wallNow`. */
export const toPeerSnapshot = (peer: string, state: CircuitState, wallNow: number): PeerSnapshot => {
  switch (state._tag) {
    case "Closed":
      return {
        peer,
        state: "Closed",
        failures: state.failures,
        ...(state.calls === undefined ? {} : { calls: state.calls }),
        ...(state.slowCalls === undefined ? {} : { slowCalls: state.slowCalls })
      }
    case "Open":
      return {
        peer,
        state: "Open",
        failures: 0,
        openedAt: state.openedAt,
        probeAt: state.probeAt,
        isolated: state.isolated,
        opening: state.opening,
        reason: state.reason
      }
    case "HalfOpen":
      return {
        peer,
        state: "HalfOpen",
        failures: 0,
        openedAt: state.openedAt,
        probeAt: wallNow + Duration.toMillis(state.retryAfter),
        opening: state.opening,
        reason: state.reason,
        probesInFlight: state.probesInFlight,
        successes: state.successes
      }
  }
}

/** Reads the state in `ref` (a fresh breaker's, if there is none) as `CircuitState`, at the current `Clock` time. */
export const readState = (
  ref: Ref.Ref<machine.State> | undefined,
  limits: machine.Limits
): Effect.Effect<CircuitState> =>
  Effect.clockWith((clock) =>
    Effect.sync(() =>
      toCircuitState(
        ref === undefined ? machine.initial : Ref.getUnsafe(ref),
        monotonicMillis(clock),
        clock.currentTimeMillisUnsafe(),
        limits
      )
    )
  )
