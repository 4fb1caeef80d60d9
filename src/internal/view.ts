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
  const state = machine.expireProbe(stored, now, { currentTimeMillisUnsafe: () => wallNow }, limits)
  switch (state._tag) {
    case "Closed":
      return { _tag: "Closed", failures: machine.failuresInWindow(state, now, limits) }
    case "Open": {
      const remaining = limits.resetTimeoutMillis - (now - state.openedAt)
      return remaining > 0
        ? open(state.openedAtWall, wallNow, remaining, false)
        : { _tag: "HalfOpen", openedAt: state.openedAtWall, probeInFlight: false, retryAfter: Duration.zero }
    }
    case "Isolated":
      return open(state.openedAtWall, wallNow, limits.resetTimeoutMillis, true)
    case "HalfOpen":
      return state.probeInFlight
        ? {
          _tag: "HalfOpen",
          openedAt: state.openedAtWall,
          probeInFlight: true,
          retryAfter: Duration.millis(machine.leaseEnd(state, limits) - now)
        }
        : { _tag: "HalfOpen", openedAt: state.openedAtWall, probeInFlight: false, retryAfter: Duration.zero }
  }
}

const open = (openedAt: number, wallNow: number, remaining: number, isolated: boolean): CircuitState => ({
  _tag: "Open",
  openedAt,
  probeAt: wallNow + remaining,
  retryAfter: Duration.millis(remaining),
  isolated
})

/** A peer's entry in a snapshot taken at wall-clock time `wallNow`. */
export const toPeerSnapshot = (peer: string, state: CircuitState, wallNow: number): PeerSnapshot => {
  switch (state._tag) {
    case "Closed":
      return { peer, state: "Closed", failures: state.failures }
    case "Open":
      return {
        peer,
        state: "Open",
        failures: 0,
        openedAt: state.openedAt,
        probeAt: state.probeAt,
        isolated: state.isolated
      }
    case "HalfOpen":
      return {
        peer,
        state: "HalfOpen",
        failures: 0,
        openedAt: state.openedAt,
        probeAt: wallNow + Duration.toMillis(state.retryAfter)
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
