/**
 * Validation of the options of a breaker and of a set: schemas, the typed error that names every bad field, and the
 * defaults filled in.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { CircuitBreakerConfigError } from "../CircuitBreakerConfigError.ts"
import type { PeerLabel } from "../CircuitBreakerMetrics.ts"
import { defaults, type ResolvedOptions } from "../CircuitBreakerOptions.ts"
import type { Limits } from "./machine.ts"

const durationExpectation = "a finite duration of at least 1 nanosecond (a Duration, a number of milliseconds, or a " +
  "string such as \"10 seconds\")"

const toPositiveDuration = (input: unknown): Duration.Duration | undefined => {
  if (input === null || input === undefined || typeof input === "boolean" || typeof input === "function") {
    return undefined
  }
  if (typeof input === "number" && !Number.isFinite(input)) return undefined
  // A duration object ({ seconds: 5, millis: 200 }) with a negative or non-finite part would be summed silently.
  if (Predicate.isObject(input) && !Duration.isDuration(input) && !Array.isArray(input)) {
    const parts = Object.values(input)
    if (parts.length === 0 || parts.some((part) => typeof part !== "number" || !Number.isFinite(part) || part < 0)) {
      return undefined
    }
  }
  let duration: Duration.Duration
  try {
    duration = Duration.fromInputUnsafe(input as Duration.Input)
  } catch {
    return undefined
  }
  return Duration.isFinite(duration) && Duration.toNanosUnsafe(duration) > 0n ? duration : undefined
}

/** A `Duration.Input` that must be finite and greater than zero. */
export const PositiveDurationInput = Schema.declare(
  (input): input is Duration.Input => toPositiveDuration(input) !== undefined,
  { expected: durationExpectation }
)

const MaxFailures = Schema.Int.check(
  Schema.isGreaterThanOrEqualTo(0),
  Schema.isLessThanOrEqualTo(Number.MAX_SAFE_INTEGER)
)

const FailurePredicate = Schema.declare(
  (input): input is (error: unknown) => boolean => typeof input === "function",
  { expected: "a function (error: unknown) => boolean" }
)

const MetricPeerLabel = Schema.declare(
  (input): input is PeerLabel => input === "peer" || input === "none" || typeof input === "function",
  { expected: "\"peer\", \"none\" or a function (peer: string) => string" }
)

/**
 * The fields every breaker accepts, as schema fields. The set and the single breaker extend them.
 */
export const breakerFields = {
  maxFailures: Schema.optionalKey(MaxFailures),
  window: Schema.optionalKey(PositiveDurationInput),
  resetTimeout: Schema.optionalKey(PositiveDurationInput),
  isFailure: Schema.optionalKey(FailurePredicate),
  metricPeerLabel: Schema.optionalKey(MetricPeerLabel)
}

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

const describe = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)
  if (typeof value === "function") return "a function"
  if (typeof value === "bigint") return `${value}n`
  if (Duration.isDuration(value)) return `Duration(${Duration.format(value)})`
  if (Array.isArray(value)) return `[${value.map(describe).join(", ")}]`
  if (Predicate.isObject(value)) return "an object"
  return String(value)
}

/**
 * Validates raw options against a struct schema of options, with a message that names every bad field.
 * Optional keys that are present with the value `undefined` are treated as absent.
 */
export const decodeOptions = <A>(
  schema: Schema.ConstraintDecoder<A>,
  input: unknown
): Effect.Effect<A, CircuitBreakerConfigError> => {
  if (input === undefined) input = {}
  if (!Predicate.isObject(input) || Array.isArray(input)) {
    return Effect.fail(
      new CircuitBreakerConfigError({
        fields: ["options"],
        details: `options: Expected an object of options, got ${describe(input)}`
      })
    )
  }
  let present: Record<string, unknown>
  try {
    // Own entries only, copied with `fromEntries`: a "__proto__" key stays a key (and is reported as unknown) instead
    // of becoming the prototype, whose properties would slip past validation.
    present = Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined))
  } catch (error) {
    return Effect.fail(
      new CircuitBreakerConfigError({ fields: ["options"], details: `options: could not be read: ${String(error)}` })
    )
  }
  const exit = Schema.decodeUnknownExit(schema)(present, { errors: "all", onExcessProperty: "error" })
  if (Exit.isSuccess(exit)) return Effect.succeed(exit.value)
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
  if (!Schema.isSchemaError(error)) return Effect.die(error)
  const names: Array<string> = []
  const lines: Array<string> = []
  for (const issue of formatIssues(error.issue).issues) {
    const name = (issue.path ?? []).map(String).join(".") || "options"
    if (!names.includes(name)) names.push(name)
    const message = issue.message === "Expected no excess property" ? "Unknown option" : issue.message
    lines.push(`${name}: ${message}, got ${describe(present[name])}`)
  }
  return Effect.fail(new CircuitBreakerConfigError({ fields: names, details: lines.join("\n") }))
}

/**
 * Fills in the defaults of validated breaker options.
 */
export const resolve = (options: Schema.Struct<typeof breakerFields>["Type"]): ResolvedOptions => ({
  maxFailures: options.maxFailures ?? defaults.maxFailures,
  window: options.window === undefined ? defaults.window : toPositiveDuration(options.window)!,
  resetTimeout: options.resetTimeout === undefined ? defaults.resetTimeout : toPositiveDuration(options.resetTimeout)!,
  isFailure: options.isFailure ?? defaults.isFailure,
  metricPeerLabel: options.metricPeerLabel ?? defaults.metricPeerLabel
})

/**
 * Converts a positive `Duration.Input` that has already passed validation.
 */
export const positiveDuration = (input: Duration.Input): Duration.Duration => toPositiveDuration(input)!

/** The state machine's view of resolved options: every duration in milliseconds. */
export const toLimits = (options: ResolvedOptions): Limits => ({
  maxFailures: options.maxFailures,
  windowMillis: Duration.toMillis(options.window),
  resetTimeoutMillis: Duration.toMillis(options.resetTimeout)
})

/** The environment variables `layerConfig` reads, by option, in the order they are reported. */
export const environmentVariables = {
  maxFailures: "CIRCUIT_MAX_FAILURES",
  window: "CIRCUIT_WINDOW",
  resetTimeout: "CIRCUIT_RESET_TIMEOUT",
  idleTimeToLive: "CIRCUIT_IDLE_TIME_TO_LIVE",
  metricRetention: "CIRCUIT_METRIC_RETENTION"
} as const

/** The options `layerConfig` reads from the environment, each as its variable held it (absent when unset). */
export type EnvironmentText = { readonly [K in keyof typeof environmentVariables]: string | undefined }

/** The options read from the environment, validated all at once, with errors that name the variable. */
export interface EnvironmentOptions {
  readonly maxFailures?: number
  readonly window?: Duration.Duration
  readonly resetTimeout?: Duration.Duration
  readonly idleTimeToLive?: Duration.Duration
  readonly metricRetention?: Duration.Duration
}

const units = "nanos, micros, millis, seconds, minutes, hours, days or weeks"

/**
 * Parses the variables' text. An empty value is an error, not "use the default"; a duration needs a unit; every bad
 * variable is reported in one `CircuitBreakerConfigError`.
 */
export const parseEnvironment = (
  text: EnvironmentText
): Effect.Effect<EnvironmentOptions, CircuitBreakerConfigError> => {
  const options: { -readonly [K in keyof EnvironmentOptions]: EnvironmentOptions[K] } = {}
  const names: Array<string> = []
  const lines: Array<string> = []
  const bad = (name: string, line: string) => {
    names.push(name)
    lines.push(line)
  }
  for (const key of Object.keys(environmentVariables) as Array<keyof typeof environmentVariables>) {
    const name = environmentVariables[key]
    const raw = text[key]
    if (raw === undefined) continue
    const value = raw.trim()
    const shown = `${name}=${JSON.stringify(raw)}`
    if (value === "") {
      bad(name, `${name} is set but empty: unset it to use the default, or give it a value`)
      continue
    }
    if (key === "maxFailures") {
      const n = /^\d+$/.test(value) ? Number(value) : Number.NaN
      if (Number.isSafeInteger(n)) options.maxFailures = n
      else bad(name, `${shown}: expected a whole number of failures, 0 or more (e.g. 5)`)
      continue
    }
    if (/^[+-]?(\d+\.?\d*|\.\d+)$/.test(value)) {
      bad(name, `${shown}: a duration needs a unit, e.g. "${value} seconds" (${units})`)
      continue
    }
    const duration = toPositiveDuration(value)
    if (duration === undefined) {
      bad(name, `${shown}: expected a finite duration longer than zero, e.g. "30 seconds" (${units})`)
      continue
    }
    options[key] = duration
  }
  return names.length === 0
    ? Effect.succeed(options)
    : Effect.fail(new CircuitBreakerConfigError({ fields: names, details: lines.join("\n") }))
}
