/**
 * The fake peer of the demo: a flaky "inventory service" on 127.0.0.1 that follows a script of phases and records
 * every request it sees, so the client's figures can be checked against what actually reached it.
 */
import * as Effect from "effect/Effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"

/** One phase of the script. `failing` answers most requests with a 500 and the rest slowly. */
export interface Phase {
  readonly name: "healthy" | "failing" | "recovering"
  readonly durationMs: number
}

export interface ServerOptions {
  readonly phases: ReadonlyArray<Phase>
  /** In a failing phase, the fraction of requests for a known SKU answered with a 500; the rest are slow. */
  readonly errorRate: number
  /** How long a slow response takes (longer than the client's timeout). */
  readonly slowMs: number
  /** Seeds the choice between a 500 and a slow response. */
  readonly seed: number
}

/** What the server did with one request. `status` is what it answered (after `delayMs`). */
export interface ServerRequest {
  /** The client's call number, from the `x-call-id` header (-1 if absent). */
  readonly callId: number
  readonly sku: string
  /** Arrival time, wall-clock epoch milliseconds. */
  readonly at: number
  readonly phase: Phase["name"]
  readonly status: number
  readonly delayMs: number
  /** The client had hung up (timed out) before the response was sent. */
  clientGone: boolean
}

export interface InventoryServer {
  readonly url: string
  /** When the script started (wall-clock epoch milliseconds). */
  readonly startedAt: number
  /** The phase the script is in at `at`. */
  readonly phaseAt: (at: number) => Phase["name"]
  /** When each phase began, in script order. */
  readonly phaseStarts: ReadonlyArray<{ readonly name: Phase["name"]; readonly at: number }>
  readonly requests: ReadonlyArray<ServerRequest>
}

/** The SKUs the inventory knows; any other SKU is answered with a 404, in every phase. */
export const catalog: ReadonlyArray<string> = ["sku-1", "sku-2", "sku-3", "sku-4", "sku-5"]

/** A small seeded PRNG (mulberry32), so a run's choices are repeatable. */
export const random = (seed: number): () => number => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Starts the server on an ephemeral port of 127.0.0.1; it stops when the scope closes. The script's clock starts
 * when the server is listening.
 */
export const start = (options: ServerOptions) =>
  Effect.acquireRelease(
    Effect.callback<{ server: Http.Server; state: InventoryServer; timers: Set<NodeJS.Timeout> }>((resume) => {
      const requests: Array<ServerRequest> = []
      const timers = new Set<NodeJS.Timeout>()
      const next = random(options.seed)
      const phaseStarts: Array<{ name: Phase["name"]; at: number }> = []
      const phaseAt = (at: number): Phase["name"] => {
        let phase = phaseStarts[0]!.name
        for (const start of phaseStarts) if (at >= start.at) phase = start.name
        return phase
      }

      const server = Http.createServer((req, res) => {
        const at = Date.now()
        const phase = phaseAt(at)
        const sku = decodeURIComponent((req.url ?? "").replace(/^\/stock\//, ""))
        const header = req.headers["x-call-id"]
        const callId = typeof header === "string" ? Number(header) : -1
        let status: number
        let delayMs = 0
        if (!catalog.includes(sku)) {
          // The catalog is checked in front of the stock backend: an unknown SKU is a quick 404 in every phase.
          status = 404
        } else if (phase === "failing" && next() < options.errorRate) {
          status = 500
        } else if (phase === "failing") {
          status = 200
          delayMs = options.slowMs
        } else {
          status = 200
        }
        const record: ServerRequest = { callId, sku, at, phase, status, delayMs, clientGone: false }
        requests.push(record)
        const body = status === 200
          ? { sku, inStock: 1 + (sku.charCodeAt(sku.length - 1) * 7) % 40 }
          : status === 404
          ? { error: "unknown sku", sku }
          : { error: "stock backend unavailable" }
        const send = () => {
          if (res.destroyed) {
            record.clientGone = true
            return
          }
          res.writeHead(status, { "content-type": "application/json" })
          res.end(JSON.stringify(body))
        }
        if (delayMs === 0) return send()
        const timer = setTimeout(() => {
          timers.delete(timer)
          send()
        }, delayMs)
        timers.add(timer)
      })
      server.keepAliveTimeout = 1000
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        const startedAt = Date.now()
        let at = startedAt
        for (const phase of options.phases) {
          phaseStarts.push({ name: phase.name, at })
          at += phase.durationMs
        }
        const state: InventoryServer = { url: `http://127.0.0.1:${port}`, startedAt, phaseAt, phaseStarts, requests }
        resume(Effect.succeed({ server, timers, state }))
      })
    }),
    ({ server, timers }) =>
      Effect.callback<void>((resume) => {
        for (const timer of timers) clearTimeout(timer)
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
      })
  ).pipe(Effect.map(({ state }) => state))
