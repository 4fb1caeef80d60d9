/**
 * Time, always from the `Clock` service of the fiber that asks: every duration the breakers measure is monotonic,
 * and wall-clock time only labels events for users.
 */
import * as Clock from "effect/Clock"
import type * as Fiber from "effect/Fiber"

/** The clock of the fiber: `TestClock` in tests. */
export const clockOf = (fiber: Fiber.Fiber<unknown, unknown>): Clock.Clock => fiber.getRef(Clock.Clock)

/** Monotonic milliseconds, the time base of every duration a breaker measures. */
export const monotonicMillis = (clock: Clock.Clock): number => Number(clock.monotonicTimeNanosUnsafe()) / 1e6
