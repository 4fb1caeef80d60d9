/**
 * The failure of a rejected call: a `CircuitOpenError` built without a stack trace, and shared by the rejections of
 * one breaker within the same millisecond of `retryAfter`.
 */
import * as Duration from "effect/Duration"
import * as Exit from "effect/Exit"
import { CircuitOpenError, type RejectedBy } from "../CircuitOpenError.ts"

/** `Error.stackTraceLimit` is a V8 extension (Node, Deno, Bun, Chromium); elsewhere it is an ordinary property. */
const ErrorWithLimit = Error as ErrorConstructor & { stackTraceLimit?: number | undefined }

/**
 * Whether `Error.stackTraceLimit` can be written. A hardened runtime (SES, `Object.freeze(Error)`) makes writing it
 * throw; there the error is built with whatever limit is in force instead of failing the call.
 */
const canSetStackTraceLimit = ((): boolean => {
  const descriptor = Object.getOwnPropertyDescriptor(Error, "stackTraceLimit")
  if (descriptor === undefined) return Object.isExtensible(Error)
  return "writable" in descriptor ? descriptor.writable === true : descriptor.set !== undefined
})()

/**
 * Builds a `CircuitOpenError` without capturing a stack trace: capturing one costs microseconds, far more than the
 * rest of a rejection, and says nothing useful (the breaker rejected the call before it ran).
 */
export const makeCircuitOpenError = (peer: string, state: RejectedBy, retryAfterMillis: number): CircuitOpenError => {
  const fields = {
    peer,
    state,
    retryAfter: retryAfterMillis === Infinity ? Duration.infinity : Duration.millis(retryAfterMillis)
  }
  if (!canSetStackTraceLimit) return new CircuitOpenError(fields, { disableChecks: true })
  const limit = ErrorWithLimit.stackTraceLimit
  ErrorWithLimit.stackTraceLimit = 0
  try {
    return new CircuitOpenError(fields, { disableChecks: true })
  } finally {
    ErrorWithLimit.stackTraceLimit = limit
  }
}

/**
 * The last rejection built by the breakers of one set (or by one single breaker). Under load an open circuit
 * rejects many calls within a millisecond; they share one immutable error carrying the same peer and `retryAfter`,
 * rounded up to whole milliseconds so that a caller that waits that long finds the circuit ready.
 */
export class RejectionCache {
  #owner: object | undefined = undefined
  #state: RejectedBy = "Open"
  #retryAfterMillis = 0
  #exit: Exit.Exit<never, CircuitOpenError> | undefined = undefined

  /**
   * The rejection of a call to `peer` on the breaker `owner`, in `state`, `retryAfterMillis` before it may admit a
   * call again.
   */
  get(owner: object, peer: string, state: RejectedBy, retryAfterMillis: number): Exit.Exit<never, CircuitOpenError> {
    const millis = Math.ceil(retryAfterMillis)
    if (
      this.#exit !== undefined && this.#owner === owner && this.#retryAfterMillis === millis && this.#state === state
    ) return this.#exit
    const exit = Exit.fail(makeCircuitOpenError(peer, state, millis))
    this.#owner = owner
    this.#state = state
    this.#retryAfterMillis = millis
    this.#exit = exit
    return exit
  }
}
