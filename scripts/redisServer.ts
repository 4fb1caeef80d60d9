// A real redis-server for the fleet tests, the bench and the demo: started on a free 127.0.0.1 port, stopped by its
// pid. Node built-ins only (node:child_process, node:net), so it does not depend on the Redis client under test.
import { type ChildProcess, spawn } from "node:child_process"
import { accessSync, constants, mkdtempSync, rmSync, statSync } from "node:fs"
import { createConnection, createServer } from "node:net"
import { tmpdir } from "node:os"
import { delimiter, join } from "node:path"

const REDIS_SERVER = "redis-server"

// What this process has started, on globalThis rather than in this module: the test runner may load this module
// afresh for every test file, and the handlers below must be installed once per process, and kill every server.
interface Registry {
  /** Every redis-server still running. */
  readonly servers: Set<ChildProcess>
  /** The servers' working directory, once made. */
  dir: string | undefined
  /** Whether the missing-redis-server line has been printed. */
  warned: boolean
}

const killAll = (registry: Registry): void => {
  for (const child of registry.servers) {
    try {
      child.kill("SIGKILL")
    } catch {
      // already gone
    }
  }
  registry.servers.clear()
  if (registry.dir !== undefined) rmSync(registry.dir, { recursive: true, force: true })
  registry.dir = undefined
}

// No redis-server may outlive the test process, even a crashed one: SIGKILL them all when it exits, and when it is
// terminated by a signal, which skips 'exit' handlers (vitest stops its fork workers with SIGTERM). After killing, a
// signal is raised again so that it terminates the process as it would have without this handler.
const install = (): Registry => {
  const registry: Registry = { servers: new Set(), dir: undefined, warned: false }
  process.on("exit", () => killAll(registry))
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    const onSignal = () => {
      killAll(registry)
      process.off(signal, onSignal)
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    }
    process.on(signal, onSignal)
  }
  return registry
}

const registryKey = Symbol.for("effect-circuit/test/redisServer")
const registry: Registry = (globalThis as { [registryKey]?: Registry })[registryKey] ??= install()

/** Whether this is the first call in the process: the missing-redis-server line is printed once. */
export const markWarned = (): boolean => {
  if (registry.warned) return false
  registry.warned = true
  return true
}

const onPath = (command: string): boolean =>
  (process.env["PATH"] ?? "").split(delimiter).some((dir) => {
    if (dir === "") return false
    const file = join(dir, command)
    try {
      accessSync(file, constants.X_OK)
      return statSync(file).isFile()
    } catch {
      return false
    }
  })

/** Whether `redis-server` is on PATH (checked once, synchronously, when this module loads). */
export const redisAvailable: boolean = onPath(REDIS_SERVER)

/** A redis-server started by {@link startRedis}. */
export interface RedisServer {
  readonly port: number
  /** `redis://127.0.0.1:PORT` */
  readonly url: string
  /** The pid of the current process; a {@link RedisServer.restart} changes it. */
  readonly pid: number
  /** SIGTERM, then SIGKILL if it has not exited within 2 s; resolves once it has exited. */
  stop(): Promise<void>
  /** SIGKILL; resolves once it has exited. */
  kill(): Promise<void>
  /** SIGSTOP: the port still accepts connections but nothing is answered. */
  pause(): void
  /** SIGCONT, after {@link RedisServer.pause}. */
  resume(): void
  /** After a kill or stop: starts a new, empty server on the same port; updates `pid`. */
  restart(): Promise<void>
}

const STARTUP_TIMEOUT_MS = 5_000
const POLL_INTERVAL_MS = 50
const PROBE_TIMEOUT_MS = 500
const STOP_GRACE_MS = 2_000
const COMMAND_TIMEOUT_MS = 2_000
const FREE_PORT_ATTEMPTS = 3
const OUTPUT_LIMIT = 16_384

// The servers' working directory: an empty one of our own, so that no dump.rdb lying in the current directory is
// loaded at startup (with --save "" nothing is ever written to it).
const serverDir = (): string => {
  registry.dir ??= mkdtempSync(join(tmpdir(), "effect-circuit-redis-"))
  return registry.dir
}

const sleep = (millis: number) => new Promise<void>((resolve) => setTimeout(resolve, millis))

const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null

const exited = (child: ChildProcess): Promise<void> =>
  isRunning(child) ? new Promise((resolve) => child.once("exit", () => resolve())) : Promise.resolve()

/** A port that was free on 127.0.0.1 a moment ago. */
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => {
        if (address !== null && typeof address === "object") resolve(address.port)
        else reject(new Error(`unexpected listening address ${String(address)}`))
      })
    })
  })

class StartError extends Error {
  readonly portTaken: boolean
  constructor(message: string, portTaken: boolean) {
    super(message)
    this.portTaken = portTaken
  }
}

interface Started {
  readonly child: ChildProcess
  readonly pid: number
}

/** Spawns redis-server on `port` and resolves once it answers PING, or kills it and rejects. */
const spawnRedis = async (port: number): Promise<Started> => {
  const child = spawn(
    REDIS_SERVER,
    [
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      "--loglevel",
      "warning"
    ],
    { cwd: serverDir(), stdio: ["ignore", "pipe", "pipe"] }
  )
  // Neither the child nor its pipes keep the test process alive: the exit and signal handlers kill what is left.
  child.unref()
  let stdout = ""
  let stderr = ""
  const keep = (sofar: string, chunk: Buffer) => (sofar + chunk.toString("utf8")).slice(-OUTPUT_LIMIT)
  child.stdout?.on("data", (chunk: Buffer) => (stdout = keep(stdout, chunk)))
  child.stderr?.on("data", (chunk: Buffer) => (stderr = keep(stderr, chunk)))
  ;(child.stdout as { unref?: () => void } | null)?.unref?.()
  ;(child.stderr as { unref?: () => void } | null)?.unref?.()

  let spawnError: Error | undefined
  child.once("error", (error) => (spawnError ??= error))
  if (child.pid !== undefined) registry.servers.add(child)
  child.once("exit", () => registry.servers.delete(child))

  const output = () =>
    [stderr.trim() === "" ? "" : `stderr:\n${stderr.trim()}`, stdout.trim() === "" ? "" : `stdout:\n${stdout.trim()}`]
      .filter((part) => part !== "")
      .join("\n") || "(no output)"
  const fail = async (reason: string, portTaken = false): Promise<never> => {
    if (isRunning(child) && child.pid !== undefined) {
      child.kill("SIGKILL")
      await exited(child)
    }
    const text = output()
    throw new StartError(
      `redis-server on 127.0.0.1:${port} ${reason}\n${text}`,
      portTaken || /address already in use/i.test(text)
    )
  }

  const deadline = Date.now() + STARTUP_TIMEOUT_MS
  for (;;) {
    if (spawnError !== undefined) return fail(`could not be spawned: ${spawnError.message}`)
    if (!isRunning(child)) {
      return fail(`exited during startup (code ${child.exitCode}, signal ${child.signalCode})`)
    }
    const reply = await send(port, ["PING"], PROBE_TIMEOUT_MS).catch(() => undefined)
    if (reply === "PONG") {
      // Another server may own this port (ours then fails to bind and exits): make sure it is ours that answered.
      const info = await send(port, ["INFO", "server"], PROBE_TIMEOUT_MS).catch(() => "")
      const owner = /^process_id:(\d+)/m.exec(info)?.[1]
      if (owner !== undefined && Number(owner) === child.pid && isRunning(child)) {
        return { child, pid: child.pid }
      }
      if (owner !== undefined && Number(owner) !== child.pid) {
        return fail(`could not start: port ${port} is served by another redis-server (pid ${owner})`, true)
      }
    }
    if (Date.now() >= deadline) return fail(`did not answer PING within ${STARTUP_TIMEOUT_MS} ms`)
    await sleep(POLL_INTERVAL_MS)
  }
}

/**
 * Starts a redis-server on 127.0.0.1 (on `options.port`, or on a free port) with no persistence, and resolves once it
 * answers PING (within 5 s, or rejects with its output).
 */
export const startRedis = async (options?: { readonly port?: number }): Promise<RedisServer> => {
  const fixedPort = options?.port
  let port: number
  let started: Started
  for (let attempt = 1;; attempt++) {
    port = fixedPort ?? await freePort()
    try {
      started = await spawnRedis(port)
      break
    } catch (error) {
      // The free port can be taken between our probe and redis-server's bind: try another one.
      const retry = fixedPort === undefined && error instanceof StartError && error.portTaken
      if (!retry || attempt >= FREE_PORT_ATTEMPTS) throw error
    }
  }

  let current: Started = started
  const requireRunning = (action: string) => {
    if (!isRunning(current.child)) throw new Error(`redis-server on port ${port} is not running: cannot ${action}`)
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return current.pid
    },
    stop: async () => {
      const { child } = current
      if (!isRunning(child)) return
      child.kill("SIGTERM")
      // A stopped (paused) process would only see the SIGTERM once continued.
      child.kill("SIGCONT")
      const timer = setTimeout(() => {
        if (isRunning(child)) child.kill("SIGKILL")
      }, STOP_GRACE_MS)
      await exited(child)
      clearTimeout(timer)
    },
    kill: async () => {
      const { child } = current
      if (!isRunning(child)) return
      child.kill("SIGKILL")
      await exited(child)
    },
    pause: () => {
      requireRunning("pause it")
      current.child.kill("SIGSTOP")
    },
    resume: () => {
      requireRunning("resume it")
      current.child.kill("SIGCONT")
    },
    restart: async () => {
      if (isRunning(current.child)) {
        throw new Error(`redis-server on port ${port} (pid ${current.pid}) is still running: kill() or stop() it first`)
      }
      current = await spawnRedis(port)
    }
  }
}

// RESP (version 2, what a connection speaks unless it sends HELLO 3)

type Reply =
  | { readonly type: "simple" | "bulk" | "integer" | "error"; readonly text: string }
  | { readonly type: "nil" }
  | { readonly type: "array"; readonly items: ReadonlyArray<Reply> }

const CRLF = "\r\n"

const encode = (args: ReadonlyArray<string | number>): Buffer => {
  const parts = [`*${args.length}${CRLF}`]
  for (const arg of args) {
    const text = String(arg)
    parts.push(`$${Buffer.byteLength(text, "utf8")}${CRLF}${text}${CRLF}`)
  }
  return Buffer.from(parts.join(""), "utf8")
}

/** The reply starting at `offset`, and where it ends; undefined if `buffer` does not hold all of it yet. */
const parse = (buffer: Buffer, offset: number): { readonly reply: Reply; readonly end: number } | undefined => {
  const lineEnd = buffer.indexOf(CRLF, offset)
  if (lineEnd === -1) return undefined
  const kind = String.fromCharCode(buffer[offset]!)
  const line = buffer.toString("utf8", offset + 1, lineEnd)
  const next = lineEnd + 2
  switch (kind) {
    case "+":
      return { reply: { type: "simple", text: line }, end: next }
    case "-":
      return { reply: { type: "error", text: line }, end: next }
    case ":":
      return { reply: { type: "integer", text: line }, end: next }
    case "$": {
      const length = Number(line)
      if (length < 0) return { reply: { type: "nil" }, end: next }
      if (buffer.length < next + length + 2) return undefined
      return { reply: { type: "bulk", text: buffer.toString("utf8", next, next + length) }, end: next + length + 2 }
    }
    case "*": {
      const count = Number(line)
      if (count < 0) return { reply: { type: "nil" }, end: next }
      const items: Array<Reply> = []
      let end = next
      for (let i = 0; i < count; i++) {
        const item = parse(buffer, end)
        if (item === undefined) return undefined
        items.push(item.reply)
        end = item.end
      }
      return { reply: { type: "array", items }, end }
    }
    default:
      throw new Error(`unsupported RESP reply type ${JSON.stringify(kind)} (only RESP2 is understood)`)
  }
}

const json = (reply: Reply): string => {
  switch (reply.type) {
    case "integer":
      return reply.text
    case "nil":
      return "null"
    case "array":
      return `[${reply.items.map(json).join(",")}]`
    case "error":
      return JSON.stringify(`(error) ${reply.text}`)
    default:
      return JSON.stringify(reply.text)
  }
}

/** Sends one command on a fresh connection and resolves with its reply as text; rejects on an error reply. */
const send = (port: number, args: ReadonlyArray<string | number>, timeoutMs: number): Promise<string> =>
  new Promise((resolve, reject) => {
    const name = String(args[0] ?? "")
    const socket = createConnection({ host: "127.0.0.1", port })
    let received = Buffer.alloc(0)
    let settled = false
    const settle = (outcome: () => void) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      outcome()
    }
    const timer = setTimeout(
      () => settle(() => reject(new Error(`redis ${name} on port ${port}: no reply within ${timeoutMs} ms`))),
      timeoutMs
    )
    socket.on("connect", () => socket.write(encode(args)))
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
      let parsed: ReturnType<typeof parse>
      try {
        parsed = parse(received, 0)
      } catch (error) {
        settle(() => reject(error))
        return
      }
      if (parsed === undefined) return
      const { reply } = parsed
      if (reply.type === "error") {
        settle(() => reject(new Error(`redis ${name} on port ${port} replied with an error: ${reply.text}`)))
      } else {
        settle(() => resolve(reply.type === "nil" ? "(nil)" : reply.type === "array" ? json(reply) : reply.text))
      }
    })
    socket.on("error", (error) => settle(() => reject(new Error(`redis ${name} on port ${port}: ${error.message}`))))
    socket.on(
      "close",
      () => settle(() => reject(new Error(`redis ${name} on port ${port}: connection closed before a full reply`)))
    )
  })

/**
 * Sends one command (e.g. `redisCommand(port, "INFO", "commandstats")`) to the redis-server on 127.0.0.1:`port` on a
 * connection of its own, and resolves with the reply as text: simple and bulk strings as they are, integers in
 * decimal, a nil reply as `(nil)`, arrays as JSON (`["a",1,null]`). Rejects on an error reply, on a closed
 * connection, and when there is no full reply within 2 s.
 */
export const redisCommand = (port: number, ...args: ReadonlyArray<string | number>): Promise<string> =>
  send(port, args, COMMAND_TIMEOUT_MS)
