// Observability and operations recipes, linked from the README: metrics for Prometheus and OTLP, alerts on the
// changes stream, a health endpoint, and an incident drain. `npm run check` type-checks this file.
import { Effect, Layer, Schema, Stream } from "effect"
import { CircuitBreakerSet, CircuitSnapshot } from "effect-circuit"
import { FetchHttpClient } from "effect/http"
import { OtlpMetrics, OtlpSerialization, PrometheusMetrics } from "effect/observability"

// Prometheus text of every metric in the registry: serve it from your router's /metrics route,
// or add the route with PrometheusMetrics.layerHttp().
export const metricsText: Effect.Effect<string> = PrometheusMetrics.format()

// Or push to an OpenTelemetry collector.
export const OtlpLive = OtlpMetrics.layer({ url: "http://localhost:4318/v1/metrics" }).pipe(
  Layer.provide(Layer.mergeAll(FetchHttpClient.layer, OtlpSerialization.layerJson))
)

// Alert on every circuit that opens.
export const alerts = Effect.gen(function*() {
  const breakers = yield* CircuitBreakerSet
  yield* breakers.changes.pipe(
    Stream.filter((change) => change.to === "Open"),
    Stream.runForEach((change) => Effect.logError(`${change.peer} opened (${change.reason})`))
  )
})

// A health endpoint's body.
export const health = Effect.gen(function*() {
  const breakers = yield* CircuitBreakerSet
  const snapshot = yield* breakers.snapshot
  return JSON.stringify(Schema.encodeSync(CircuitSnapshot.CircuitSnapshot)(snapshot))
})

// During an incident: keep traffic off the payments provider for as long as this fiber runs.
export const drain = Effect.scoped(Effect.gen(function*() {
  const breakers = yield* CircuitBreakerSet
  yield* breakers.isolate("payments-provider")
  yield* Effect.never
}))
