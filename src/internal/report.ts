/**
 * How a breaker tells the world what it did: the caller's span, the state gauge and transition counter, the
 * `changes` stream and a log line.
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as PubSub from "effect/PubSub"
import type { Reason, StateTag } from "../CircuitStateChange.ts"
import type { Breaker } from "./breaker.ts"
import { displayMillis, displayPeer } from "./display.ts"
import type * as machine from "./machine.ts"
import { tagOf } from "./view.ts"

/** Adds the peer and the state to the caller's span, if it has one. */
export const annotateSpan = (fiber: Fiber.Fiber<unknown, unknown>, peer: string, state: StateTag): void => {
  // The fiber caches its current span, so this costs two property reads when there is none.
  const span = fiber.cache.span
  if (span !== undefined && span._tag === "Span") {
    span.attribute("circuit_breaker.peer", peer)
    span.attribute("circuit_breaker.state", state)
  }
}

const transitionLog = (breaker: Breaker, to: machine.State, reason: Reason): Effect.Effect<void> => {
  const settings = breaker.settings
  const opening = to._tag === "Open" ? to.opening : 0
  const rejecting = `${settings.observe ? "observe mode: would reject" : "rejecting"} calls for ${
    displayMillis(to._tag === "Open" ? to.openMillis : 0)
  }${opening > 1 ? ` (opening ${opening})` : ""}`
  switch (reason) {
    case "window":
    case "consecutive":
    case "rate":
    case "slow-calls":
      return Effect.logWarning(`Circuit opened${to._tag === "Open" ? to.detail : ""}; ${rejecting}`)
    case "probe":
      return Effect.logDebug(
        settings.limits.probes === 1
          ? "Circuit half-open: letting one probe through"
          : `Circuit half-open: letting up to ${settings.limits.probes} probes through`
      )
    case "probe-succeeded":
      return Effect.logInfo(
        settings.limits.successThreshold === 1
          ? "Circuit closed: the probe succeeded"
          : `Circuit closed: ${settings.limits.successThreshold} probes succeeded`
      )
    case "probe-failed":
      return Effect.logWarning(`Circuit re-opened: a probe failed; ${rejecting}`)
    case "probe-timeout":
      return Effect.logWarning(`Circuit re-opened: a probe was still running when its lease ended; ${rejecting}`)
    case "reset":
      return Effect.logInfo("Circuit reset by an operator")
    case "isolated":
      return Effect.logWarning("Circuit isolated by an operator: rejecting every call until released")
    case "released":
      return Effect.logInfo("Circuit released by an operator: closed")
  }
}

/** Logs `message` at Warning, annotated with the breaker's peer (shortened if very long), never failing. */
export const warn = (breaker: Breaker, message: string, error: unknown): Effect.Effect<void> =>
  Effect.ignoreCause(Effect.annotateLogs(Effect.logWarning(message, error), "peer", displayPeer(breaker.name)))

/**
 * Reports a change of state: the state gauge and transition counter at once, and an effect that publishes the
 * change and logs it (to run in the caller's fiber, with its logger).
 */
export const reportChange = (
  breaker: Breaker,
  from: machine.State,
  to: machine.State,
  reason: Reason,
  clock: Clock.Clock
): Effect.Effect<void> => {
  const fromTag = tagOf(from)
  const toTag = tagOf(to)
  const opening = to._tag === "Open" || to._tag === "HalfOpen" ? to.opening : 0
  breaker.series.transition(fromTag, toTag, reason, opening)
  // Reporting must never fail the call it runs in: a logger that breaks is its own problem, not the peer's.
  const log = Effect.ignoreCause(
    Effect.annotateLogs(transitionLog(breaker, to, reason), "peer", displayPeer(breaker.name))
  )
  const changes = breaker.shared.changes
  if (changes === undefined) return log
  const change = { peer: breaker.name, from: fromTag, to: toTag, at: clock.currentTimeMillisUnsafe(), reason, opening }
  // Published when the effect runs, after the state is stored (callers run it once `Ref.modify` has returned): a
  // subscriber that reacts to the change reads the state it announces. The synchronous path fails only when a
  // subscriber's buffer is full; `publish` then drops that subscriber's oldest change (the pubsub slides).
  return Effect.suspend(() =>
    PubSub.publishUnsafe(changes, change) ? log : Effect.andThen(PubSub.publish(changes, change), log)
  )
}
