/**
 * Validation of the options of a breaker and of a set: schemas, the typed error that names every bad field, and the
 * defaults filled in.
 */
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { CircuitBreakerConfigError } from "../CircuitBreakerConfigError.ts"
import type { PeerLabel } from "../CircuitBreakerMetrics.ts"
import { defaults, type HalfOpenOptions, type ResolvedOptions } from "../CircuitBreakerOptions.ts"
import * as Policy from "../Policy.ts"
import type { Limits, Openings } from "./machine.ts"
import { firstDelay, fixedOpenings } from "./openings.ts"
import { compile, type Compiled } from "./policy.ts"

const durationExpectation = "a finite duration of at least 1 nanosecond (a Duration, a number of milliseconds, or a " +
  "string such as \"10 seconds\")"

export const toPositiveDuration = (input: unknown): Duration.Duration | undefined => {
  if (input === null || input === undefined || typeof input === "boolean" || typeof input === "function") {
    return undefined
  }
  if (typeof input === "number" && !Number.isFinite(input)) return undefined
  try {
    return positiveOf(input)
  } catch {
    // Not a duration `Duration` can read, or an object whose getters throw.
    return undefined
  }
}

const positiveOf = (input: unknown): Duration.Duration | undefined => {
  // A duration object ({ seconds: 5, millis: 200 }) with a negative or non-finite part would be summed silently.
  if (Predicate.isObject(input) && !Duration.isDuration(input) && !Array.isArray(input)) {
    const parts = Object.values(input)
    if (parts.length === 0 || parts.some((part) => typeof part !== "number" || !Number.isFinite(part) || part < 0)) {
      return undefined
    }
  }
  const duration = Duration.fromInputUnsafe(input as Duration.Input)
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

const Anything = Schema.declare((_input): _input is unknown => true)

/**
 * The fields every breaker accepts, as schema fields. The set and the single breaker extend them. The structured
 * options (`policy`, `openDuration`, `halfOpen`, `mode`) are checked by `checkBreaker`, which names nested paths.
 */
export const breakerFields = {
  policy: Schema.optionalKey(Anything),
  maxFailures: Schema.optionalKey(MaxFailures),
  window: Schema.optionalKey(PositiveDurationInput),
  openDuration: Schema.optionalKey(Anything),
  resetTimeout: Schema.optionalKey(PositiveDurationInput),
  maxOpenDuration: Schema.optionalKey(PositiveDurationInput),
  halfOpen: Schema.optionalKey(Anything),
  mode: Schema.optionalKey(Schema.Literals(["enforce", "observe"])),
  isFailure: Schema.optionalKey(FailurePredicate),
  metricPeerLabel: Schema.optionalKey(MetricPeerLabel)
}

/** The breaker options a decoded struct holds (the structured ones still unknown until `checkBreaker`). */
export type DecodedBreaker = Schema.Struct<typeof breakerFields>["Type"]

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

const describe = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)
  if (typeof value === "function") return "a function"
  if (typeof value === "bigint") return `${value}n`
  if (Duration.isDuration(value)) return `Duration(${Duration.format(value)})`
  if (Schedule.isSchedule(value)) return "a Schedule"
  if (Array.isArray(value)) return `[${value.map(describe).join(", ")}]`
  if (Predicate.isObject(value)) return "an object"
  return String(value)
}

/** One bad option: its path (`policy.threshold`), what was expected, and the value found. */
export interface Issue {
  readonly path: string
  readonly message: string
  readonly value: unknown
}

/** The error naming every issue, one line each. */
export const configError = (issues: ReadonlyArray<Issue>): CircuitBreakerConfigError => {
  const names: Array<string> = []
  for (const issue of issues) if (!names.includes(issue.path)) names.push(issue.path)
  return new CircuitBreakerConfigError({
    fields: names,
    details: issues.map((issue) => `${issue.path}: ${issue.message}, got ${describe(issue.value)}`).join("\n")
  })
}

/** The own entries of an options object with `undefined` values left out, or the issue if it cannot be read. */
const presentEntries = (
  input: unknown,
  path: string
): { readonly present: Record<string, unknown> } | { readonly issue: Issue } => {
  if (!Predicate.isObject(input) || Array.isArray(input) || Schedule.isSchedule(input)) {
    return { issue: { path, message: "Expected an object of options", value: input } }
  }
  try {
    // Own entries only, copied with `fromEntries`: a "__proto__" key stays a key (and is reported as unknown) instead
    // of becoming the prototype, whose properties would slip past validation.
    return { present: Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined)) }
  } catch (error) {
    return { issue: { path, message: `could not be read (${String(error)})`, value: input } }
  }
}

/**
 * Validates raw options against a struct schema of options, then runs `check` on what is present (when given),
 * failing with one error that names every bad field. Optional keys present with the value `undefined` are treated as
 * absent. `prefix` is put before every path (for a peer's entry in a set).
 */
export const decodeOptions = <A>(
  schema: Schema.ConstraintDecoder<A>,
  input: unknown,
  check?: (present: Record<string, unknown>) => ReadonlyArray<Issue>
): Effect.Effect<A, CircuitBreakerConfigError> => {
  const [decoded, issues] = decodeIssues(schema, input === undefined ? {} : input, "", check)
  return issues.length === 0 ? Effect.succeed(decoded as A) : Effect.fail(configError(issues))
}

/** `decodeOptions` as data: the decoded value (when every issue is absent) and the issues, paths under `prefix`. */
export const decodeIssues = <A>(
  schema: Schema.ConstraintDecoder<A>,
  input: unknown,
  prefix: string,
  check?: (present: Record<string, unknown>) => ReadonlyArray<Issue>
): readonly [A | undefined, ReadonlyArray<Issue>] => {
  const entries = presentEntries(input, prefix === "" ? "options" : prefix.slice(0, -1))
  if ("issue" in entries) return [undefined, [entries.issue]]
  const present = entries.present
  const issues: Array<Issue> = []
  const exit = Schema.decodeUnknownExit(schema)(present, { errors: "all", onExcessProperty: "error" })
  if (Exit.isFailure(exit)) {
    const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
    const found = Schema.isSchemaError(error) ? formatIssues(error.issue).issues : []
    if (!Schema.isSchemaError(error)) {
      // A check died (a value whose getters throw, say): reported, never a defect.
      issues.push({
        path: prefix.slice(0, -1) || "options",
        message: `could not be validated (${String(error)})`,
        value: input
      })
    }
    for (const issue of found) {
      const name = (issue.path ?? []).map(String).join(".")
      const message = issue.message === "Expected no excess property" ? "Unknown option" : issue.message
      issues.push({
        path: name === "" ? prefix.slice(0, -1) || "options" : prefix + name,
        message,
        value: present[name]
      })
    }
  }
  if (check !== undefined) {
    for (const issue of check(present)) issues.push({ ...issue, path: prefix + issue.path })
  }
  return [Exit.isSuccess(exit) && issues.length === 0 ? exit.value : undefined, issues]
}

// Structured options, checked by hand so that every error names its full path.

const isWhole = (value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= min && value <= max

const wholeIssue = (path: string, value: unknown, min: number, max?: number): Array<Issue> =>
  isWhole(value, min, max)
    ? []
    : [{
      path,
      message: max === undefined ? `Expected an integer >= ${min}` : `Expected an integer from ${min} to ${max}`,
      value
    }]

const durationIssue = (path: string, value: unknown): Array<Issue> =>
  toPositiveDuration(value) === undefined ? [{ path, message: `Expected ${durationExpectation}`, value }] : []

const thresholdIssue = (path: string, value: unknown): Array<Issue> =>
  typeof value === "number" && value > 0 && value <= 1
    ? []
    : [{ path, message: "Expected a ratio greater than 0 and at most 1", value }]

/** The most buckets a time window may have, and the most calls a count window may hold. */
const maxBuckets = 1_000
const maxCalls = 100_000

/** The most probes a half-open circuit may run at once. */
const maxProbes = 1_000

const policyExpectation = "Expected a policy built by Policy.window, consecutive, rate, slowCalls or any"

const knownKeys: Record<string, ReadonlyArray<string>> = {
  Window: ["_tag", "maxFailures", "window"],
  Consecutive: ["_tag", "failures"],
  Rate: ["_tag", "threshold", "minimumCalls", "window", "buckets", "calls"],
  SlowCalls: ["_tag", "duration", "threshold", "minimumCalls", "window", "buckets", "calls"],
  Any: ["_tag", "members"]
}

/** Checks a policy (plain tagged data: built by `Policy`, or decoded from JSON) and compiles it. */
export const checkPolicy = (value: unknown, path: string, issues: Array<Issue>): Compiled | undefined => {
  try {
    return checkPolicyUnsafe(value, path, issues)
  } catch (error) {
    issues.push({ path, message: `could not be read (${String(error)})`, value })
    return undefined
  }
}

const checkPolicyUnsafe = (value: unknown, path: string, issues: Array<Issue>): Compiled | undefined => {
  const tag = Predicate.isObject(value) && !Array.isArray(value) ? (value as { _tag?: unknown })._tag : undefined
  if (typeof tag !== "string" || !Object.hasOwn(knownKeys, tag)) {
    issues.push({ path, message: policyExpectation, value })
    return undefined
  }
  const policy = value as Record<string, unknown>
  const before = issues.length
  for (const key of Object.keys(policy)) {
    if (!knownKeys[tag]!.includes(key) && !key.startsWith("~") && policy[key] !== undefined) {
      issues.push({ path: `${path}.${key}`, message: "Unknown option", value: policy[key] })
    }
  }
  switch (tag) {
    case "Window":
      issues.push(...wholeIssue(`${path}.maxFailures`, policy.maxFailures, 0))
      issues.push(...durationIssue(`${path}.window`, policy.window))
      return issues.length > before ? undefined : {
        _tag: "Window",
        maxFailures: policy.maxFailures as number,
        windowMillis: millis(policy.window)
      }
    case "Consecutive":
      issues.push(...wholeIssue(`${path}.failures`, policy.failures, 1))
      return issues.length > before ? undefined : { _tag: "Consecutive", failures: policy.failures as number }
    case "Rate":
    case "SlowCalls": {
      if (tag === "SlowCalls") issues.push(...durationIssue(`${path}.duration`, policy.duration))
      issues.push(...thresholdIssue(`${path}.threshold`, policy.threshold))
      issues.push(...wholeIssue(`${path}.minimumCalls`, policy.minimumCalls, 1))
      const window = checkRateWindow(policy, path, issues)
      if (issues.length > before || window === undefined) return undefined
      return {
        _tag: tag,
        threshold: policy.threshold as number,
        minimumCalls: policy.minimumCalls as number,
        window,
        slowMillis: tag === "SlowCalls" ? millis(policy.duration) : Infinity
      }
    }
    case "Any": {
      const members = policy.members
      if (!Array.isArray(members) || members.length === 0) {
        issues.push({ path: `${path}.members`, message: "Expected at least one policy", value: members })
        return undefined
      }
      const compiled = members.map((member, i) => checkPolicy(member, `${path}.members.${i}`, issues))
      return issues.length > before ? undefined : { _tag: "Any", members: compiled as Array<Compiled> }
    }
  }
  return undefined
}

const checkRateWindow = (
  policy: Record<string, unknown>,
  path: string,
  issues: Array<Issue>
): { readonly millis: number; readonly buckets: number } | { readonly calls: number } | undefined => {
  if (policy.calls !== undefined) {
    for (const key of ["window", "buckets"] as const) {
      if (policy[key] !== undefined) {
        issues.push({
          path: `${path}.${key}`,
          message: "A time window cannot be combined with a count window (calls): give one or the other",
          value: policy[key]
        })
      }
    }
    const bad = wholeIssue(`${path}.calls`, policy.calls, 1, maxCalls)
    issues.push(...bad)
    if (bad.length > 0) return undefined
    if (isWhole(policy.minimumCalls, 1) && policy.minimumCalls > (policy.calls as number)) {
      issues.push({
        path: `${path}.minimumCalls`,
        message: `Expected at most calls (${policy.calls}): a window of ${policy.calls} calls never holds more`,
        value: policy.minimumCalls
      })
      return undefined
    }
    return { calls: policy.calls as number }
  }
  const badWindow = durationIssue(`${path}.window`, policy.window)
  const badBuckets = wholeIssue(`${path}.buckets`, policy.buckets, 1, maxBuckets)
  issues.push(...badWindow, ...badBuckets)
  if (badWindow.length > 0 || badBuckets.length > 0) return undefined
  const windowMillis = millis(policy.window)
  if (windowMillis / (policy.buckets as number) < 1) {
    issues.push({
      path: `${path}.buckets`,
      message: `Expected buckets at least 1 ms wide: a window of ${windowMillis} ms holds at most ${
        Math.floor(windowMillis)
      } buckets`,
      value: policy.buckets
    })
    return undefined
  }
  return { millis: windowMillis, buckets: policy.buckets as number }
}

const millis = (input: unknown): number => Duration.toMillis(toPositiveDuration(input)!)

/** Checks the structured breaker options of `present`: the conflicts between names, `policy`, `openDuration`, `halfOpen`. */
export const checkBreaker = (present: Record<string, unknown>): Array<Issue> => {
  const issues: Array<Issue> = []
  if (present.policy !== undefined) {
    checkPolicy(present.policy, "policy", issues)
    for (const shorthand of ["maxFailures", "window"] as const) {
      if (present[shorthand] !== undefined) {
        issues.push({
          path: shorthand,
          message: `Cannot be combined with policy: ${shorthand} is shorthand for Policy.window; give one or the other`,
          value: present[shorthand]
        })
      }
    }
  }
  if (present.openDuration !== undefined) {
    if (!Schedule.isSchedule(present.openDuration)) {
      issues.push(
        ...durationIssue("openDuration", present.openDuration).map((issue) => ({
          ...issue,
          message: `${issue.message}, or a Schedule`
        }))
      )
    }
    if (present.resetTimeout !== undefined) {
      issues.push({
        path: "resetTimeout",
        message: "Cannot be combined with openDuration: resetTimeout is a fixed openDuration; give one or the other",
        value: present.resetTimeout
      })
    }
  }
  const fixed = present.openDuration ?? present.resetTimeout
  if (fixed !== undefined && !Schedule.isSchedule(fixed) && present.maxOpenDuration !== undefined) {
    const open = toPositiveDuration(fixed)
    const max = toPositiveDuration(present.maxOpenDuration)
    if (open !== undefined && max !== undefined && Duration.isGreaterThan(open, max)) {
      issues.push({
        path: "maxOpenDuration",
        message: `Expected at least the fixed open duration (${Duration.format(open)}), which it would cut`,
        value: present.maxOpenDuration
      })
    }
  }
  if (present.halfOpen !== undefined) issues.push(...checkHalfOpen(present.halfOpen))
  return issues
}

const checkHalfOpen = (input: unknown): Array<Issue> => {
  const entries = presentEntries(input, "halfOpen")
  if ("issue" in entries) return [entries.issue]
  const present = entries.present
  const issues: Array<Issue> = []
  for (const key of Object.keys(present)) {
    if (!["probes", "successThreshold", "probeTimeout"].includes(key)) {
      issues.push({ path: `halfOpen.${key}`, message: "Unknown option", value: present[key] })
    }
  }
  if (present.probes !== undefined) issues.push(...wholeIssue("halfOpen.probes", present.probes, 1, maxProbes))
  if (present.successThreshold !== undefined) {
    issues.push(...wholeIssue("halfOpen.successThreshold", present.successThreshold, 1))
  }
  if (present.probeTimeout !== undefined) issues.push(...durationIssue("halfOpen.probeTimeout", present.probeTimeout))
  const probes = present.probes ?? 1
  if (isWhole(probes, 1) && isWhole(present.successThreshold, 1) && present.successThreshold < probes) {
    issues.push({
      path: "halfOpen.probes",
      message:
        `Expected at most successThreshold (${present.successThreshold}): a probe slot beyond it is never needed`,
      value: probes
    })
  }
  return issues
}

/** The settings of one breaker: its options with defaults filled in, and what the machine and the shell need. */
export interface Settings {
  readonly options: ResolvedOptions
  readonly limits: Limits
  /** The durations of the openings when they are fixed (shared by every breaker). */
  readonly fixedOpenings: Openings | undefined
  /** Otherwise, the schedule of the openings, which each breaker steps. */
  readonly schedule: Schedule.Schedule<unknown, number> | undefined
  readonly maxOpenMillis: number
  readonly observe: boolean
}

/**
 * Fills in the defaults of validated breaker options (see `checkBreaker`) and steps an `openDuration` schedule
 * once, in `context`: one that yields no delay is a configuration error.
 */
export const resolve = (
  options: DecodedBreaker,
  context: Context.Context<never>,
  path = ""
): Effect.Effect<Settings, CircuitBreakerConfigError> => {
  const policy = (options.policy as Policy.Policy | undefined) ??
    (options.maxFailures !== undefined || options.window !== undefined
      ? Policy.window({
        maxFailures: options.maxFailures ?? 3,
        window: options.window === undefined ? "60 seconds" : toPositiveDuration(options.window)!
      })
      : defaults.policy)
  const compiled = checkPolicy(policy, `${path}policy`, [])!
  const openInput = (options.openDuration ?? options.resetTimeout) as
    | Duration.Input
    | Schedule.Schedule<unknown, number>
    | undefined
  const openDuration = openInput === undefined
    ? defaults.openDuration
    : Schedule.isSchedule(openInput)
    ? openInput
    : toPositiveDuration(openInput)!
  const maxOpenDuration = options.maxOpenDuration !== undefined
    ? toPositiveDuration(options.maxOpenDuration)!
    : Duration.isDuration(openDuration)
    ? Duration.max(openDuration, defaults.maxOpenDuration)
    : defaults.maxOpenDuration
  const halfOpen = (options.halfOpen ?? {}) as HalfOpenOptions
  const probes = halfOpen.probes ?? defaults.halfOpen.probes
  const resolved: ResolvedOptions = {
    policy,
    openDuration,
    maxOpenDuration,
    halfOpen: {
      probes,
      successThreshold: halfOpen.successThreshold ?? probes,
      probeTimeout: halfOpen.probeTimeout === undefined ? undefined : toPositiveDuration(halfOpen.probeTimeout)!
    },
    mode: options.mode ?? defaults.mode,
    isFailure: options.isFailure ?? defaults.isFailure,
    metricPeerLabel: options.metricPeerLabel ?? defaults.metricPeerLabel
  }
  const maxOpenMillis = Duration.toMillis(maxOpenDuration)
  const settings: Settings = {
    options: resolved,
    limits: {
      tracker: compile(compiled),
      probes,
      successThreshold: resolved.halfOpen.successThreshold,
      probeTimeoutMillis: resolved.halfOpen.probeTimeout === undefined
        ? undefined
        : Duration.toMillis(resolved.halfOpen.probeTimeout),
      pollMillis: 0
    },
    fixedOpenings: Duration.isDuration(openDuration) ? fixedOpenings(Duration.toMillis(openDuration)) : undefined,
    schedule: Duration.isDuration(openDuration) ? undefined : openDuration,
    maxOpenMillis,
    observe: resolved.mode === "observe"
  }
  if (settings.schedule === undefined) {
    return Effect.succeed({ ...settings, limits: { ...settings.limits, pollMillis: settings.fixedOpenings!.delay(1) } })
  }
  const first = firstDelay(settings.schedule, context)
  if (typeof first === "string") {
    return Effect.fail(configError([{ path: `${path}openDuration`, message: first, value: settings.schedule }]))
  }
  return Effect.succeed({ ...settings, limits: { ...settings.limits, pollMillis: Math.min(first, maxOpenMillis) } })
}

/**
 * Converts a positive `Duration.Input` that has already passed validation.
 */
export const positiveDuration = (input: Duration.Input): Duration.Duration => toPositiveDuration(input)!

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
