/**
 * The demo: an Effect program calling a flaky inventory service on 127.0.0.1 through `withBreaker("inventory-api")`,
 * drawing a live timeline, then printing a summary and the breaker's metrics in Prometheus text form.
 *
 * `runDemo` is the whole program; `npm run demo` (demo/main.ts) runs it with the default script, and
 * test/demo/demo.test.ts runs it with a shortened one.
 */
import { Cause, Clock, Duration, Effect, Fiber, Layer, Logger, Metric, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import type { CircuitStateChange } from "../src/CircuitStateChange.ts"
import { CircuitBreakerMetrics, CircuitBreakerSet, withBreaker } from "../src/index.ts"
import type { CircuitBreakerConfigError, Policy, ResolvedOptions, SetOptions } from "../src/index.ts"
import { breakerFor } from "./cli.ts"
import * as Server from "./server.ts"
import * as Timeline from "./timeline.ts"

export type { Phase, ServerRequest } from "./server.ts"
export type { CallRecord, Outcome, Output } from "./timeline.ts"

/** The peer every call is guarded with. */
export const peer = "inventory-api"

/** The script `npm run demo` follows: about 14 seconds in all. */
export const defaultPhases: ReadonlyArray<Server.Phase> = [
  { name: "healthy", durationMs: 4000 },
  { name: "failing", durationMs: 5000 },
  { name: "recovering", durationMs: 5000 }
]

/** The breaker options `npm run demo` uses without `--policy` (`isFailure` is always `isPeerFailure`). */
export const defaultBreaker: Omit<SetOptions, "isFailure"> = breakerFor("window")

export interface DemoOptions {
  readonly phases: ReadonlyArray<Server.Phase>
  /** Calls per second. */
  readonly rate: number
  readonly output: Timeline.Output
  /** The client's timeout, inside the breaker. Default 300 ms. */
  readonly timeoutMs?: number | undefined
  /** How long the peer takes over a slow response. Default 1000 ms. */
  readonly slowMs?: number | undefined
  /** In the failing phase, the fraction of requests answered with a 500 (the rest are slow). Default 0.6. */
  readonly errorRate?: number | undefined
  /** The fraction of calls that ask for an unknown SKU (a 404, in every phase). Default 0.1. */
  readonly unknownSkuRate?: number | undefined
  /** The breaker's options, in place of `defaultBreaker` (not merged with it). */
  readonly breaker?: Omit<SetOptions, "isFailure"> | undefined
  /** Calls per row of the timeline. Default: three seconds' worth. */
  readonly columns?: number | undefined
  readonly seed?: number | undefined
}

/** What a run saw, from the client, the breaker and the peer. Times are wall-clock epoch milliseconds. */
export interface DemoResult {
  readonly url: string
  /** When the script (and the first call) started. */
  readonly startedAt: number
  /** When the peer started failing and started recovering, per the script. */
  readonly failingAt: number | undefined
  readonly recoveringAt: number | undefined
  /** Every call the client made, in order. */
  readonly calls: ReadonlyArray<Timeline.CallRecord>
  /** Every request the peer received, in order of arrival. */
  readonly requests: ReadonlyArray<Server.ServerRequest>
  /** Every change of the circuit, from the `changes` stream. */
  readonly changes: ReadonlyArray<CircuitStateChange>
  readonly callsSent: number
  readonly outcomes: Readonly<Record<Timeline.Outcome, number>>
  /** Calls the breaker kept off the peer: rejected with `CircuitOpenError`, never sent. */
  readonly rejected: number
  /** The first opening at or after `failingAt`, and how long after it. */
  readonly openedAt: number | undefined
  readonly openLagMs: number | undefined
  /** The first closing at or after `recoveringAt`, and how long after it (undefined if it was closed then). */
  readonly closedAt: number | undefined
  readonly closeLagMs: number | undefined
  /** The circuit's state when the peer started recovering. */
  readonly stateAtRecovery: Timeline.StateTag | undefined
  /** The library's counters, read from the metric registry. */
  readonly metrics: {
    readonly success: number
    readonly failure: number
    readonly ignored: number
    readonly rejected: number
    readonly probes: number
    readonly transitions: number
  }
  /** The registry rendered by `PrometheusMetrics.format()`. */
  readonly prometheus: string
  /** The `summary:` lines as printed. */
  readonly summary: ReadonlyArray<string>
}

/**
 * What counts against the peer: a 5xx, a timeout or a transport error. A 404 is the peer answering (the SKU does
 * not exist), so it does not count.
 */
export const isPeerFailure = (error: unknown): boolean => {
  if (Cause.isTimeoutError(error)) return true
  if (HttpClientError.isHttpClientError(error)) {
    const status = error.response?.status
    return status === undefined || status >= 500
  }
  return true
}

const outcomeOf = (error: HttpClientError.HttpClientError): Timeline.Outcome => {
  const status = error.response?.status
  return status === 404 ? "not-found" : status !== undefined && status >= 500 ? "server-error" : "error"
}

/** The circuit's state at `at`, from the changes (a circuit with no change yet is Closed). */
export const stateAt = (changes: ReadonlyArray<CircuitStateChange>, at: number): Timeline.StateTag => {
  let state: Timeline.StateTag = "Closed"
  for (const change of changes) if (change.at <= at) state = change.to
  return state
}

const percent = (ratio: number) => `${Math.round(ratio * 100)}%`

const duration = (input: Duration.Input) => Duration.format(Duration.fromInputUnsafe(input))

const rateWindow = (policy: Policy.Rate | Policy.SlowCalls) =>
  policy.calls !== undefined
    ? `of the last ${policy.calls} calls, once there are ${policy.minimumCalls}`
    : `of the calls within ${duration(policy.window)}, once there are ${policy.minimumCalls}`

/** The trip policy in words, for the demo's header. */
export const describePolicy = (policy: Policy.Policy): string => {
  switch (policy._tag) {
    case "Window":
      return `window: more than ${policy.maxFailures} failures within ${duration(policy.window)}`
    case "Consecutive":
      return `consecutive: ${policy.failures} failures in a row`
    case "Rate":
      return `rate: failures reach ${percent(policy.threshold)} ${rateWindow(policy)}`
    case "SlowCalls":
      return `slow-calls: calls taking ${duration(policy.duration)} or longer reach ${percent(policy.threshold)} ${
        rateWindow(policy)
      }`
    case "Any":
      return policy.members.map(describePolicy).join(", or ")
  }
}

/** How long the circuit stays open, and how it probes. */
const describeBreaker = (options: ResolvedOptions): string => {
  const open = Duration.isDuration(options.openDuration)
    ? `open for ${Duration.format(options.openDuration)}`
    : `open for a schedule of openings (at most ${Duration.format(options.maxOpenDuration)})`
  const { probes, successThreshold } = options.halfOpen
  const probing = probes === 1 && successThreshold === 1
    ? "then one probe"
    : `then ${probes} probe${probes === 1 ? "" : "s"} at once, ${successThreshold} successes to close`
  return `${open}, ${probing}${options.mode === "observe" ? ", observe mode (rejects nothing)" : ""}`
}

/**
 * The sum of a counter's series whose attributes include `attributes`, read from a snapshot of the registry (reading
 * a series through `Metric.value` would register it, and print a series the library never wrote).
 */
const counterSum = (
  snapshots: ReadonlyArray<Metric.Metric.Snapshot>,
  metric: Metric.Counter<number>,
  attributes: Record<string, string>
): number => {
  let sum = 0
  for (const snapshot of snapshots) {
    if (snapshot.id !== metric.id || snapshot.type !== "Counter") continue
    const own = snapshot.attributes ?? {}
    if (Object.entries(attributes).every(([key, value]) => own[key] === value)) sum += Number(snapshot.state.count)
  }
  return sum
}

const ms = (value: number) => `${Math.round(value)} ms`
const at = (startedAt: number, value: number) => `+${((value - startedAt) / 1000).toFixed(2)}s`

const program = (options: DemoOptions) =>
  Effect.gen(function*() {
    const timeoutMs = options.timeoutMs ?? 300
    const slowMs = options.slowMs ?? 1000
    const errorRate = options.errorRate ?? 0.6
    const unknownSkuRate = options.unknownSkuRate ?? 0.1
    const seed = options.seed ?? 42
    const intervalMs = 1000 / options.rate
    const scriptMs = options.phases.reduce((sum, phase) => sum + phase.durationMs, 0)
    const totalCalls = Math.floor(scriptMs / intervalMs)
    const { output } = options
    const print = (lines: ReadonlyArray<string>) => Effect.sync(() => output.write(lines.map((l) => `${l}\n`).join("")))

    const breakers = yield* CircuitBreakerSet
    const client = yield* HttpClient.HttpClient
    const changes: Array<CircuitStateChange> = []
    yield* breakers.changes.pipe(
      Stream.runForEach((change) => Effect.sync(() => changes.push(change))),
      Effect.forkScoped({ startImmediately: true })
    )
    yield* Effect.yieldNow

    const server = yield* Server.start({ phases: options.phases, errorRate, slowMs, seed })
    const { startedAt } = server
    const breaker = breakers.options
    yield* print([
      `effect-circuit demo: a flaky inventory service at ${server.url}`,
      `peer script: ${
        options.phases.map((phase) => `${phase.name} ${(phase.durationMs / 1000).toFixed(1)}s`).join(", ")
      }`,
      `  failing: ${Math.round(errorRate * 100)}% of requests get a 500, the rest an answer after ${ms(slowMs)}`,
      `  every phase: ${Math.round(unknownSkuRate * 100)}% of calls ask for an unknown SKU and get a 404`,
      `client: ${options.rate} calls/s with effect/http's FetchHttpClient`,
      `  Effect.timeout ${ms(timeoutMs)} inside withBreaker("${peer}")`,
      `breaker policy: ${describePolicy(breaker.policy)}`,
      `  ${describeBreaker(breaker)}`,
      `  isFailure: 5xx, timeouts and transport errors count; a 404 does not`,
      ...Timeline.legend(output.isTTY),
      ""
    ])

    const calls: Array<Timeline.CallRecord> = []
    const timeline = Timeline.make({
      output,
      startedAt,
      intervalMs,
      totalCalls,
      columns: options.columns ??
        Math.max(10, Math.min(Math.round(options.rate * 3), (output.isTTY ? output.columns ?? 80 : Infinity) - 18)),
      calls,
      changes
    })
    const count = (outcome: Timeline.Outcome) => calls.filter((call) => call.outcome === outcome).length
    const status = (now: number) =>
      [
        at(startedAt, now),
        `peer: ${server.phaseAt(now)}`,
        `circuit: ${stateAt(changes, now)}`,
        `calls: ${calls.length}`,
        `rejected: ${count("rejected")}`
      ].join("  ")
    const render = (final: boolean) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => timeline.render(now, status(now), final)))
    const renderer = yield* Effect.forkScoped(Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(output.isTTY ? 100 : 250)
        yield* render(false)
      }
    }))

    const skus = Server.random(seed + 1)
    const getStock = (sku: string, callId: number) =>
      client.get(`${server.url}/stock/${sku}`, { acceptJson: true, headers: { "x-call-id": String(callId) } }).pipe(
        Effect.flatMap(HttpClientResponse.filterStatusOk),
        Effect.flatMap((response) => response.json)
      )

    const call = Effect.fnUntraced(function*(record: Timeline.CallRecord) {
      const outcome = yield* getStock(record.sku, record.seq).pipe(
        Effect.timeout(timeoutMs),
        withBreaker(peer),
        Effect.as<Timeline.Outcome>("ok"),
        Effect.catchTag("CircuitOpenError", () => Effect.succeed<Timeline.Outcome>("rejected")),
        Effect.catchTag("TimeoutError", () => Effect.succeed<Timeline.Outcome>("timeout")),
        Effect.catchTag("HttpClientError", (error) => Effect.succeed(outcomeOf(error)))
      )
      record.endedAt = yield* Clock.currentTimeMillis
      record.outcome = outcome
    })

    // About `rate` calls a second, each on its own fiber: a slow call does not hold up the next one.
    const fibers: Array<Fiber.Fiber<void>> = []
    for (let seq = 0; seq < totalCalls; seq++) {
      const wait = startedAt + seq * intervalMs - (yield* Clock.currentTimeMillis)
      if (wait > 0) yield* Effect.sleep(wait)
      const sku = skus() < unknownSkuRate
        ? "sku-unknown"
        : Server.catalog[Math.floor(skus() * Server.catalog.length)]!
      const now = yield* Clock.currentTimeMillis
      const state = yield* breakers.state(peer)
      const record: Timeline.CallRecord = { seq, sku, startedAt: now, state: state._tag, phase: server.phaseAt(now) }
      calls.push(record)
      fibers.push(yield* Effect.forkChild(call(record)))
    }
    yield* Fiber.joinAll(fibers)
    // Let the changes subscriber take the last changes before the final frame.
    yield* Effect.sleep(20)
    yield* Fiber.interrupt(renderer)
    yield* render(true)

    const failingAt = server.phaseStarts.find((phase) => phase.name === "failing")?.at
    const recoveringAt = failingAt === undefined
      ? undefined
      : server.phaseStarts.find((phase) => phase.name !== "failing" && phase.at > failingAt)?.at
    const openedAt = failingAt === undefined
      ? undefined
      : changes.find((change) => change.to === "Open" && change.at >= failingAt)?.at
    const stateAtRecovery = recoveringAt === undefined ? undefined : stateAt(changes, recoveringAt)
    const closedAt = recoveringAt === undefined || stateAtRecovery === "Closed"
      ? undefined
      : changes.find((change) => change.to === "Closed" && change.at >= recoveringAt)?.at
    const outcomes: Record<Timeline.Outcome, number> = {
      "ok": count("ok"),
      "not-found": count("not-found"),
      "server-error": count("server-error"),
      "timeout": count("timeout"),
      "error": count("error"),
      "rejected": count("rejected")
    }
    const requests = server.requests
    const byStatus = (status: number) => requests.filter((request) => request.status === status).length
    const tooSlow = requests.filter((request) => request.delayMs > timeoutMs).length
    const probes = changes.filter((change) => change.to === "HalfOpen").length
    const whileOpen = requestsWhileOpen(changes, calls, requests)

    const snapshots = yield* Metric.snapshot
    const callsMetric = CircuitBreakerMetrics.calls
    const metrics = {
      success: counterSum(snapshots, callsMetric, { peer, outcome: "success" }),
      failure: counterSum(snapshots, callsMetric, { peer, outcome: "failure" }),
      ignored: counterSum(snapshots, callsMetric, { peer, outcome: "ignored" }),
      rejected: counterSum(snapshots, callsMetric, { peer, outcome: "rejected" }),
      probes: counterSum(snapshots, CircuitBreakerMetrics.probes, { peer }),
      // Every transition, whatever its reason (the policy that tripped, a probe's outcome, …).
      transitions: counterSum(snapshots, CircuitBreakerMetrics.transitions, { peer })
    }
    const prometheus = yield* PrometheusMetrics.format()

    const transitions = new Map<string, number>()
    for (const change of changes) {
      const key = `${change.from}->${change.to}`
      transitions.set(key, (transitions.get(key) ?? 0) + 1)
    }
    const summary = [
      `calls sent: ${calls.length} (${
        calls.length - outcomes.rejected
      } reached the peer, ${outcomes.rejected} rejected by the breaker)`,
      `outcomes: ${outcomes.ok} ok, ${outcomes["not-found"]} not found (404, not counted as failures), ${
        outcomes["server-error"]
      } server errors (5xx), ${outcomes.timeout} timeouts (${
        ms(timeoutMs)
      }), ${outcomes.error} other errors, ${outcomes.rejected} rejected`,
      `calls the breaker kept off the failing peer: ${outcomes.rejected} (failed fast with CircuitOpenError, never sent)`,
      failingAt === undefined
        ? "peer never failed"
        : openedAt === undefined
        ? `peer started failing at ${at(startedAt, failingAt)}; the circuit never opened`
        : `peer started failing at ${at(startedAt, failingAt)}; circuit opened at ${at(startedAt, openedAt)}, ${
          ms(openedAt - failingAt)
        } later`,
      recoveringAt === undefined
        ? "peer never recovered"
        : stateAtRecovery === "Closed"
        ? `peer recovered at ${
          at(startedAt, recoveringAt)
        }; the circuit was already closed (a probe had succeeded: a 404 is a success)`
        : closedAt === undefined
        ? `peer recovered at ${at(startedAt, recoveringAt)}; the circuit did not close before the end`
        : `peer recovered at ${at(startedAt, recoveringAt)}; circuit closed at ${at(startedAt, closedAt)}, ${
          ms(closedAt - recoveringAt)
        } later`,
      `the peer saw ${requests.length} requests: ${byStatus(200)} answered 200 (${tooSlow} after ${
        ms(slowMs)
      }, too late for the client), ${byStatus(404)} 404, ${
        byStatus(500)
      } 500; ${whileOpen} arrived while the circuit was open, besides ${probes} probes`,
      `circuit changes: ${changes.length} (${[...transitions].map(([key, n]) => `${key} ${n}`).join(", ") || "none"})`,
      `metrics (Prometheus text format, effect/observability PrometheusMetrics.format):`
    ].map((line) => `summary: ${line}`)
    yield* print([...summary, prometheus.trimEnd()])

    const result: DemoResult = {
      url: server.url,
      startedAt,
      failingAt,
      recoveringAt,
      calls,
      requests,
      changes,
      callsSent: calls.length,
      outcomes,
      rejected: outcomes.rejected,
      openedAt,
      openLagMs: openedAt === undefined || failingAt === undefined ? undefined : openedAt - failingAt,
      closedAt,
      closeLagMs: closedAt === undefined || recoveringAt === undefined ? undefined : closedAt - recoveringAt,
      stateAtRecovery,
      metrics,
      prometheus,
      summary
    }
    return result
  })

/**
 * Requests that reached the peer while the circuit was open (or half-open with its probe in flight) for calls that
 * started after it opened, other than the probes. A correct breaker keeps this at zero. Calls already in flight when
 * the circuit opened are not counted.
 */
export const requestsWhileOpen = (
  changes: ReadonlyArray<CircuitStateChange>,
  calls: ReadonlyArray<Timeline.CallRecord>,
  requests: ReadonlyArray<Server.ServerRequest>
): number => {
  let count = 0
  for (let i = 0; i < changes.length; i++) {
    const change = changes[i]!
    if (change.to === "Closed") continue
    const from = change.at
    const until = changes[i + 1]?.at ?? Number.POSITIVE_INFINITY
    for (const request of requests) {
      const started = calls[request.callId]?.startedAt
      // A probe starts at most a millisecond before the Open -> HalfOpen change it causes, so it is not counted.
      if (request.at > from && request.at < until && started !== undefined && started > from) count++
    }
  }
  return count
}

/**
 * Runs the demo: starts the fake peer, calls it at `rate` through the breaker for the length of the script, draws the
 * timeline on `output`, prints the summary and returns what the client, the breaker and the peer saw.
 */
export const runDemo = (options: DemoOptions): Effect.Effect<DemoResult, CircuitBreakerConfigError> =>
  program(options).pipe(
    Effect.scoped,
    Effect.provide(Layer.mergeAll(
      FetchHttpClient.layer,
      // The set registers its metrics in the registry it is built with: one of its own, so they are this run's only.
      CircuitBreakerSet.layer({ ...(options.breaker ?? defaultBreaker), isFailure: isPeerFailure }).pipe(
        Layer.provideMerge(Layer.sync(Metric.MetricRegistry, () => new Map()))
      ),
      // Transitions are drawn on the timeline; the library's log lines would break it.
      Logger.layer([])
    ))
  )
