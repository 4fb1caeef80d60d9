/**
 * `npm run demo -- --fleet`: three replicas of a service, each a Node process of its own (demo/fleetReplica.ts) with a
 * set built by `CircuitBreakerSet.layerRedis`, call the same flaky peer and share their breakers through a
 * `redis-server` this demo starts on a free 127.0.0.1 port. About 8 seconds end to end.
 *
 * The peer is a small HTTP server in this process that follows a fixed script: healthy, then failing (a quick 500),
 * then recovered (its first answers slow, while it warms up). The replicas call it in turn, one call every 100 ms in
 * all, so that each sees only 2 of the 6 failures that trip the fleet's circuit (`maxFailures: 5`). The timeline
 * shows each replica's failures, every replica seeing the circuit open and rejecting, the one probe of the whole
 * fleet, and every replica seeing it close. Everything is stopped at the end: replicas, peer and redis-server.
 *
 * The replicas report to this process over their IPC channels; the timeline is printed from those reports, in time
 * order, a moment after they happen.
 */
import { type ChildProcess, fork } from "node:child_process"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { fileURLToPath } from "node:url"
import { redisAvailable, redisCommand, startRedis } from "../scripts/redisServer.ts"
import type { CircuitStateChange } from "../src/CircuitStateChange.ts"
import type { ReplicaConfig, ReplicaEvent, StartMessage } from "./fleetReplica.ts"

export type { ReplicaEvent }

/** Printed (to stderr) when redis-server is missing; the demo then exits with code 1. */
export const missingRedisMessage =
  "npm run demo -- --fleet: redis-server is not on PATH. The fleet demo starts a local one on a free port:\n" +
  "install it (Debian, Ubuntu: apt-get install -y redis-server; macOS: brew install redis) and run it again."

export interface FleetDemoOptions {
  readonly write: (text: string) => void
  /** The replicas' names; default A, B, C. */
  readonly replicas?: ReadonlyArray<string> | undefined
}

/** The peer's script, in milliseconds after the start. */
const script = {
  /** Quick 500s from here (the first failing call is the one at +1.0 s: one call every 100 ms starts at +0.0 s). */
  failingAt: 950,
  recoveringAt: 3000,
  /** Answers take `slowMs` from `recoveringAt` to here, while the peer warms up. */
  slowUntil: 4500,
  slowMs: 400,
  /** The replicas' calls: each one call every `intervalMs`, in turn, none starting after `durationMs`. */
  intervalMs: 300,
  durationMs: 5500
} as const

const peer = "inventory-api"
const maxFailures = 5
const window = "10 seconds"
const resetTimeout = "2 seconds"
const timeoutMs = 1000

/** What the peer did with one request. */
export interface PeerRequest {
  readonly replica: string
  readonly at: number
  readonly status: number
  readonly delayMs: number
}

export type CallEvent = Extract<ReplicaEvent, { type: "call" }>

export interface ReplicaResult {
  readonly name: string
  /** Its id in the fleet, as the changes it caused name it. */
  readonly process: string
  readonly calls: ReadonlyArray<CallEvent>
  /** Every change its `changes` stream published: the fleet's (with `process`) and its local breaker's. */
  readonly changes: ReadonlyArray<CircuitStateChange>
  readonly finalState: CircuitStateChange["to"] | undefined
  readonly exitCode: number | null
}

export interface FleetDemoResult {
  readonly startedAt: number
  readonly failingAt: number
  readonly recoveringAt: number
  readonly replicas: ReadonlyArray<ReplicaResult>
  readonly requests: ReadonlyArray<PeerRequest>
  /** The fleet's opening, as the first replica saw it, and its closing. */
  readonly openedAt: number | undefined
  readonly closedAt: number | undefined
  /** Calls admitted while the caller's view of the circuit was not Closed: the probes, fleet-wide. */
  readonly probes: ReadonlyArray<CallEvent>
  /** Requests the peer received between the opening and the closing. */
  readonly requestsWhileOpen: ReadonlyArray<PeerRequest>
  readonly summary: ReadonlyArray<string>
  /** The whole run, from starting redis-server to stopping it, in milliseconds. */
  readonly elapsedMs: number
}

const seconds = (at: number, origin: number) =>
  `${at < origin ? "-" : "+"}${(Math.abs(at - origin) / 1000).toFixed(2)}s`

const ordinal = (n: number) => `${n}${n === 1 ? "st" : n === 2 ? "nd" : n === 3 ? "rd" : "th"}`

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

/** The peer: an HTTP server following `script` from `startedAt` (set once the replicas are ready). */
const startPeer = async (requests: Array<PeerRequest>, startedAt: () => number | undefined) => {
  const timers = new Set<NodeJS.Timeout>()
  const server = Http.createServer((req, res) => {
    const at = Date.now()
    const origin = startedAt() ?? at
    const t = at - origin
    const status = t >= script.failingAt && t < script.recoveringAt ? 500 : 200
    const delayMs = t >= script.recoveringAt && t < script.slowUntil ? script.slowMs : 0
    const replica = String(req.headers["x-replica"] ?? "?")
    requests.push({ replica, at, status, delayMs })
    const respond = () => {
      if (res.destroyed) return
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify(status === 200 ? { sku: "sku-1", inStock: 12 } : { error: "stock backend unavailable" }))
    }
    if (delayMs === 0) return respond()
    const timer = setTimeout(() => {
      timers.delete(timer)
      respond()
    }, delayMs)
    timers.add(timer)
  })
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer)
        server.close(() => resolve())
        server.closeAllConnections()
      })
  }
}

interface Replica {
  readonly name: string
  readonly child: ChildProcess
  process: string | undefined
  readonly calls: Array<CallEvent>
  readonly changes: Array<CircuitStateChange>
  finalState: CircuitStateChange["to"] | undefined
  stderr: string
  readonly exited: Promise<number | null>
}

/**
 * When a report goes in the timeline: a change when it happened; a call that failed or was rejected when it started
 * (a quick 500 or a rejection ends within milliseconds, and the change a failure causes is seen after the caller
 * has its result, which may be after the call's end is noted), a call that succeeded when it ended.
 */
const eventTime = (event: ReplicaEvent): number =>
  event.type === "call"
    ? event.outcome === "ok" ? event.endedAt : event.startedAt
    : event.type === "change"
    ? event.change.at
    : event.type === "log"
    ? event.at
    : Date.now()

/**
 * Turns the replicas' reports, taken in time order, into the timeline's lines: failures, what each replica sees of
 * the fleet's circuit, the first rejection of each replica in each state (the others are counted), the probe.
 */
const makeTimeline = (origin: () => number, nameOf: (process: string | undefined) => string) => {
  const width = 2
  const fleetFailures = { count: 0 }
  const perReplica = new Map<
    string,
    {
      failures: number
      rejected: number
      rejectedIn: string | undefined
      okPrinted: boolean
      reopened: boolean
      state: string
    }
  >()
  const stateOf = (name: string) => {
    let state = perReplica.get(name)
    if (state === undefined) {
      state = { failures: 0, rejected: 0, rejectedIn: undefined, okPrinted: false, reopened: false, state: "Closed" }
      perReplica.set(name, state)
    }
    return state
  }
  const line = (at: number, name: string, text: string) =>
    `${seconds(at, origin()).padStart(7)}  ${name.padEnd(width)} ${text}`
  const rejectedSoFar = (replica: ReturnType<typeof stateOf>) => {
    const text = replica.rejected > 0 ? `; it rejected ${plural(replica.rejected, "call")} while ${replica.state}` : ""
    replica.rejected = 0
    replica.rejectedIn = undefined
    return text
  }

  return (event: ReplicaEvent): Array<string> => {
    switch (event.type) {
      case "call": {
        const replica = stateOf(event.name)
        const probe = event.stateBefore !== "Closed" && event.outcome !== "rejected"
        if (event.outcome === "rejected") {
          replica.rejected++
          if (replica.rejectedIn === event.rejectedBy) return []
          replica.rejectedIn = event.rejectedBy
          const retry = event.retryAfterMs !== undefined && event.rejectedBy === "Open"
            ? `, retry in ${(event.retryAfterMs / 1000).toFixed(1)}s`
            : ""
          return [
            line(eventTime(event), event.name, `rejects: CircuitOpenError (${event.rejectedBy}${retry}), not sent`)
          ]
        }
        if (event.outcome === "failed") {
          replica.failures++
          fleetFailures.count++
          const status = event.status === undefined ? "no answer" : String(event.status)
          if (probe) return [line(eventTime(event), event.name, `the probe failed (${status})`)]
          const over = fleetFailures.count > maxFailures ? ` > maxFailures ${maxFailures}` : ""
          return [
            line(
              eventTime(event),
              event.name,
              `call failed (${status}): ${event.name}'s ${ordinal(replica.failures)} failure, ` +
                `${fleetFailures.count} in the fleet${over}`
            )
          ]
        }
        // A probe's success is told by the change it causes.
        if (probe || replica.okPrinted) return []
        replica.okPrinted = true
        const again = replica.reopened ? ": calls go through again" : ""
        return [line(event.endedAt, event.name, `call ok (${event.status})${again}`)]
      }
      case "change": {
        const { change, name } = event
        const replica = stateOf(name)
        if (change.process === undefined) {
          return [line(change.at, name, `its local breaker: ${change.from} -> ${change.to} (${change.reason})`)]
        }
        const by = nameOf(change.process)
        const own = by === name
        const before = rejectedSoFar(replica)
        replica.state = change.to
        if (change.to === "Open") {
          fleetFailures.count = 0
          const text = change.from === "HalfOpen"
            ? `sees Open again: ${by}'s probe failed (${change.reason})`
            : own
            ? `sees the fleet circuit Open: its own failure tripped it (${change.reason}); ` +
              `its local breaker holds ${plural(replica.failures, "failure")}`
            : `sees Open: tripped by ${by} (${change.reason}); its local breaker holds ${
              plural(replica.failures, "failure")
            }`
          return [line(change.at, name, text + before)]
        }
        if (change.to === "HalfOpen") {
          const text = own
            ? "takes the fleet's one probe slot: HalfOpen, its call is sent"
            : `sees HalfOpen: ${by} probes`
          return [line(change.at, name, text + before)]
        }
        replica.okPrinted = false
        replica.reopened = true
        replica.failures = 0
        const text = change.reason !== "probe-succeeded"
          ? `sees Closed (${change.reason}, by ${by})`
          : own
          ? "sees Closed: its probe succeeded and closed the fleet circuit"
          : `sees Closed: ${by}'s probe succeeded`
        return [line(change.at, name, text + before)]
      }
      case "log":
        return (event.level === "Warning" || event.level === "Error" || event.level === "Fatal") &&
            event.message.startsWith("Fleet store")
          ? [line(event.at, event.name, `${event.level}: ${event.message}`)]
          : []
      default:
        return []
    }
  }
}

/** Runs the demo; resolves once everything it started has stopped. Requires redis-server on PATH. */
export const runFleetDemo = async (options: FleetDemoOptions): Promise<FleetDemoResult> => {
  const { write } = options
  const print = (lines: ReadonlyArray<string>) => {
    if (lines.length > 0) write(lines.map((text) => `${text}\n`).join(""))
  }
  if (!redisAvailable) throw new Error(missingRedisMessage)
  const began = Date.now()
  const names = options.replicas ?? ["A", "B", "C"]
  const requests: Array<PeerRequest> = []
  let startedAt: number | undefined
  const redis = await startRedis()
  const replicas: Array<Replica> = []
  let peerServer: Awaited<ReturnType<typeof startPeer>> | undefined
  let flusher: NodeJS.Timeout | undefined
  try {
    peerServer = await startPeer(requests, () => startedAt)
    const version = /redis_version:(\S+)/.exec(await redisCommand(redis.port, "INFO", "server"))?.[1] ?? "?"
    const prefix = "demo-fleet:"
    const callEvery = script.intervalMs / names.length
    print([
      `effect-circuit fleet demo: ${names.length} replicas (${
        names.join(", ")
      }), each a Node process, guard calls to ` +
      `one flaky peer and share their breakers through Redis`,
      `  redis-server ${version} on 127.0.0.1:${redis.port} (pid ${redis.pid}, started for this demo), prefix "${prefix}"`,
      `  each replica: CircuitBreakerSet.layerRedis({ maxFailures: ${maxFailures}, window: "${window}", ` +
      `resetTimeout: "${resetTimeout}" }), withBreaker("${peer}")`,
      `  the replicas call in turn: one call every ${callEvery} ms in all, each replica one every ${script.intervalMs} ms`,
      `  the peer: healthy, then a quick 500 from +${(script.failingAt / 1000).toFixed(2)}s, recovered at +${
        (script.recoveringAt / 1000).toFixed(1)
      }s (answers take ${script.slowMs} ms until +${(script.slowUntil / 1000).toFixed(1)}s)`,
      `  shared: more than ${maxFailures} failures in the window, from any replicas, open the circuit for all; ` +
      `after ${resetTimeout}, one probe for the whole fleet`,
      ""
    ])

    const entry = fileURLToPath(new URL("./fleetReplica.ts", import.meta.url))
    const pending: Array<{ readonly at: number; readonly order: number; readonly event: ReplicaEvent }> = []
    let order = 0
    let readyCount = 0
    let onReady: (() => void) | undefined
    for (const [index, name] of names.entries()) {
      const config: ReplicaConfig = {
        name,
        redisUrl: redis.url,
        prefix,
        peer,
        peerUrl: peerServer.url,
        maxFailures,
        windowMs: 10_000,
        resetTimeoutMs: 2_000,
        timeoutMs,
        intervalMs: script.intervalMs,
        offsetMs: index * callEvery,
        durationMs: script.durationMs
      }
      const child = fork(entry, [JSON.stringify(config)], {
        execPath: process.execPath,
        execArgv: [],
        stdio: ["ignore", "pipe", "pipe", "ipc"]
      })
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
      const replica: Replica = {
        name,
        child,
        process: undefined,
        calls: [],
        changes: [],
        finalState: undefined,
        stderr: "",
        exited
      }
      child.stderr?.on("data", (chunk: Buffer) => (replica.stderr = (replica.stderr + chunk.toString()).slice(-8192)))
      child.stdout?.on("data", () => {})
      child.on("message", (event: ReplicaEvent) => {
        switch (event.type) {
          case "ready":
            replica.process = event.process
            readyCount++
            if (readyCount === names.length) onReady?.()
            return
          case "done":
            replica.finalState = event.finalState
            return
          case "call":
            replica.calls.push(event)
            break
          case "change":
            replica.changes.push(event.change)
            break
        }
        pending.push({ at: eventTime(event), order: order++, event })
      })
      replicas.push(replica)
    }

    // Every replica connected to the fleet, or one of them gone, or too long.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the replicas did not all join the fleet within 30 s")), 30_000)
      onReady = () => {
        clearTimeout(timer)
        resolve()
      }
      for (const replica of replicas) {
        void replica.exited.then((code) => {
          clearTimeout(timer)
          reject(new Error(`replica ${replica.name} exited (code ${code}) before it was ready:\n${replica.stderr}`))
        })
      }
      if (readyCount === names.length) onReady()
    })
    const nameOf = (id: string | undefined) => replicas.find((replica) => replica.process === id)?.name ?? String(id)
    print([
      `setup: ${names.join(", ")} joined the fleet ${((Date.now() - began) / 1000).toFixed(1)} s after redis-server ` +
      `started (fleet process ids: ${replicas.map((replica) => `${replica.name} ${replica.process}`).join(", ")})`,
      ""
    ])

    // A moment ahead, so that every replica has the message before its first call.
    startedAt = Date.now() + 100
    for (const replica of replicas) replica.child.send({ type: "start", startedAt } satisfies StartMessage)
    const timeline = makeTimeline(() => startedAt!, nameOf)
    const flush = (all: boolean) => {
      // Reports arrive within a few milliseconds of what they report: those older than 300 ms are all there. The
      // replicas' reports of one change of the fleet's circuit go together, the one whose process caused it first.
      const until = all ? Infinity : Date.now() - 300
      const keyOf = (entry: (typeof pending)[number]) => {
        if (entry.event.type !== "change" || entry.event.change.process === undefined) return [entry.at, 1] as const
        const { change } = entry.event
        let first = entry.at
        for (const other of pending) {
          if (other.event.type !== "change") continue
          const { change: same } = other.event
          if (
            same.process === change.process && same.from === change.from && same.to === change.to &&
            Math.abs(same.at - change.at) < 100
          ) first = Math.min(first, other.at)
        }
        return [first, nameOf(change.process) === entry.event.name ? 0 : 1] as const
      }
      const keyed = pending.map((entry) => ({ entry, key: keyOf(entry) }))
      keyed.sort((a, b) =>
        a.key[0] - b.key[0] || a.key[1] - b.key[1] || a.entry.at - b.entry.at || a.entry.order - b.entry.order
      )
      const taken = keyed.filter(({ key }) => key[0] <= until).map(({ entry }) => entry)
      for (const entry of taken) pending.splice(pending.indexOf(entry), 1)
      print(taken.flatMap(({ event }) => timeline(event)))
    }
    flusher = setInterval(() => flush(false), 100)

    let deadline: NodeJS.Timeout | undefined
    const exits = await Promise.race([
      Promise.all(replicas.map((replica) => replica.exited)),
      new Promise<undefined>((resolve) => (deadline = setTimeout(() => resolve(undefined), script.durationMs + 20_000)))
    ])
    clearTimeout(deadline)
    clearInterval(flusher)
    flush(true)
    if (exits === undefined) throw new Error("the replicas did not finish within 20 s of the script's end")
    for (const replica of replicas) {
      if ((await replica.exited) !== 0) {
        throw new Error(`replica ${replica.name} failed:\n${replica.stderr}`)
      }
    }

    // The figures, from the replicas' reports and the peer's own log.
    const origin = startedAt
    const failingAt = origin + script.failingAt
    const recoveringAt = origin + script.recoveringAt
    const fleetChanges = replicas.flatMap((replica) => replica.changes.filter((change) => change.process !== undefined))
    const openings = fleetChanges.filter((change) => change.from === "Closed" && change.to === "Open")
    const openedAt = openings.length === 0 ? undefined : Math.min(...openings.map((change) => change.at))
    const closings = fleetChanges.filter((change) => change.to === "Closed")
    const closedAt = closings.length === 0 ? undefined : Math.min(...closings.map((change) => change.at))
    const calls = replicas.flatMap((replica) => replica.calls)
    const probes = calls.filter((call) => call.stateBefore !== "Closed" && call.outcome !== "rejected")
    const requestsWhileOpen = openedAt === undefined
      ? []
      : requests.filter((request) => request.at > openedAt && (closedAt === undefined || request.at < closedAt))
    const count = (replica: Replica, outcome: string) => replica.calls.filter((call) => call.outcome === outcome).length
    const sawOpenAt = replicas.map((replica) =>
      replica.changes.find((change) => change.process !== undefined && change.to === "Open")?.at
    )
    const failed = calls.filter((call) => call.outcome === "failed").map((call) => call.endedAt)
    const firstFailure = failed.length === 0 ? undefined : Math.min(...failed)
    const failuresBeforeOpening = replicas.map((replica) =>
      replica.calls.filter((call) => call.outcome === "failed" && (openedAt === undefined || call.endedAt <= openedAt))
        .length
    )
    const summary = [
      ...replicas.map((replica) => {
        const rejected = replica.calls.filter((call) => call.outcome === "rejected")
        const by = (state: string) => rejected.filter((call) => call.rejectedBy === state).length
        const probed = probes.filter((call) => call.name === replica.name).length
        return `${replica.name}: ${replica.calls.length} calls: ${count(replica, "ok")} ok, ${
          count(replica, "failed")
        } failed, ${rejected.length} rejected (Open ${by("Open")}, HalfOpen ${by("HalfOpen")}), ${
          plural(probed, "probe")
        }; ends ${replica.finalState ?? "?"}`
      }),
      openedAt === undefined
        ? "the fleet's circuit never opened"
        : `the fleet opened at ${seconds(openedAt, origin)}, ${
          firstFailure === undefined ? "?" : openedAt - firstFailure
        } ms after the first failure, on ${failuresBeforeOpening.reduce((a, b) => a + b, 0)} failures (${
          replicas.map((replica, i) => `${replica.name} ${failuresBeforeOpening[i]}`).join(", ")
        }: no replica reached ${maxFailures + 1} alone); ${
          sawOpenAt.every((at) => at !== undefined)
            ? `every replica saw it open, the last ${Math.max(...(sawOpenAt as Array<number>)) - openedAt} ms ` +
              "after the first"
            : "not every replica saw it open"
        }`,
      `probes across the fleet: ${probes.length}${
        probes.length > 0
          ? ` (${
            probes.map((call) =>
              `${call.name} at ${seconds(call.startedAt, origin)}: ${
                call.outcome === "ok" ? call.status : `failed, ${call.status ?? "no answer"}`
              } after ${call.endedAt - call.startedAt} ms`
            ).join("; ")
          })`
          : ""
      }; the peer received ${plural(requestsWhileOpen.length, "request")} while the circuit was not closed`,
      closedAt === undefined
        ? "the fleet's circuit did not close"
        : `the fleet closed at ${seconds(closedAt, origin)}, ${closedAt - recoveringAt} ms after the peer recovered; ` +
          `every replica ends ${
            replicas.every((replica) => replica.finalState === "Closed") ? "Closed" : "— not all Closed"
          }`,
      `the peer received ${requests.length} requests; ${
        calls.filter((call) => call.outcome === "rejected").length
      } calls were rejected by the breakers and never sent`
    ].map((text) => `summary: ${text}`)
    print(["", ...summary])
    await Promise.all([peerServer.close(), redis.stop()])
    peerServer = undefined
    const elapsedMs = Date.now() - began
    print([`done in ${(elapsedMs / 1000).toFixed(1)} s: the replicas exited, redis-server and the peer stopped`])
    return {
      startedAt: origin,
      failingAt,
      recoveringAt,
      replicas: replicas.map((replica) => ({
        name: replica.name,
        process: replica.process ?? "?",
        calls: replica.calls,
        changes: replica.changes,
        finalState: replica.finalState,
        exitCode: replica.child.exitCode
      })),
      requests,
      openedAt,
      closedAt,
      probes,
      requestsWhileOpen,
      summary,
      elapsedMs
    }
  } finally {
    if (flusher !== undefined) clearInterval(flusher)
    for (const replica of replicas) {
      if (replica.child.exitCode === null && replica.child.signalCode === null) replica.child.kill("SIGKILL")
    }
    await peerServer?.close()
    await redis.stop()
  }
}
