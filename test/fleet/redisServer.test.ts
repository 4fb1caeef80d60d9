// The redis-server helper itself: real processes, real time (bounded waits, no speed asserted).
import { createServer } from "node:net"
import { assert, it } from "vitest"
import { describeRedis, redisCommand, type RedisServer, startRedis } from "./redisServer.ts"

const TEST_TIMEOUT_MS = 30_000

/** Runs `body` against a fresh server, and kills the server whatever happens. */
const withRedis = async (body: (server: RedisServer) => Promise<void>): Promise<void> => {
  const server = await startRedis()
  try {
    await body(server)
  } finally {
    await server.kill()
  }
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    assert.strictEqual((error as NodeJS.ErrnoException).code, "ESRCH")
    return false
  }
}

const rejection = async (promise: Promise<unknown>): Promise<Error> => {
  try {
    await promise
  } catch (error) {
    assert.instanceOf(error, Error)
    return error
  }
  assert.fail("expected a rejection")
}

describeRedis("redis-server test helper", () => {
  it("starts a server that answers, and reads every kind of reply", async () => {
    await withRedis(async (server) => {
      assert.strictEqual(server.url, `redis://127.0.0.1:${server.port}`)
      assert.isTrue(isAlive(server.pid))
      assert.strictEqual(await redisCommand(server.port, "PING"), "PONG")
      assert.strictEqual(await redisCommand(server.port, "SET", "greeting", "héllo ☃"), "OK")
      assert.strictEqual(await redisCommand(server.port, "GET", "greeting"), "héllo ☃")
      assert.strictEqual(await redisCommand(server.port, "GET", "missing"), "(nil)")
      assert.strictEqual(await redisCommand(server.port, "INCRBY", "counter", 41), "41")
      assert.strictEqual(await redisCommand(server.port, "RPUSH", "list", "a", "b\r\nc", ""), "3")
      assert.strictEqual(await redisCommand(server.port, "LRANGE", "list", 0, -1), `["a","b\\r\\nc",""]`)
      assert.strictEqual(await redisCommand(server.port, "MGET", "counter", "missing"), `["41",null]`)
      assert.strictEqual(await redisCommand(server.port, "DBSIZE"), "3")
      assert.match(await redisCommand(server.port, "MEMORY", "USAGE", "greeting"), /^\d+$/)
      assert.match(await redisCommand(server.port, "INFO", "commandstats"), /^cmdstat_set:calls=1,/m)
      const error = await rejection(redisCommand(server.port, "INCR", "greeting"))
      assert.include(error.message, "ERR value is not an integer")
      assert.strictEqual(await redisCommand(server.port, "FLUSHALL"), "OK")
      assert.strictEqual(await redisCommand(server.port, "DBSIZE"), "0")
    })
  }, TEST_TIMEOUT_MS)

  it("a paused server leaves a command without reply until it is resumed", async () => {
    await withRedis(async (server) => {
      server.pause()
      try {
        const error = await rejection(redisCommand(server.port, "PING"))
        assert.include(error.message, "no reply within 2000 ms")
      } finally {
        server.resume()
      }
      assert.strictEqual(await redisCommand(server.port, "PING"), "PONG")
    })
  }, TEST_TIMEOUT_MS)

  it("a killed server restarts, empty, on the same port", async () => {
    await withRedis(async (server) => {
      const { port } = server
      const firstPid = server.pid
      assert.strictEqual(await redisCommand(port, "SET", "key", "value"), "OK")
      await rejection(server.restart()) // still running

      await server.kill()
      assert.isFalse(isAlive(firstPid))
      const refused = await rejection(redisCommand(port, "PING"))
      assert.include(refused.message, "ECONNREFUSED")

      await server.restart()
      assert.strictEqual(server.port, port)
      assert.notStrictEqual(server.pid, firstPid)
      assert.isTrue(isAlive(server.pid))
      assert.strictEqual(await redisCommand(port, "PING"), "PONG")
      assert.strictEqual(await redisCommand(port, "DBSIZE"), "0")
    })
  }, TEST_TIMEOUT_MS)

  it("a stopped server leaves no process, paused or not", async () => {
    const server = await startRedis()
    await server.stop()
    assert.isFalse(isAlive(server.pid))
    await rejection(redisCommand(server.port, "PING"))
    await server.stop() // already stopped: nothing to do

    const paused = await startRedis()
    paused.pause()
    await paused.stop()
    assert.isFalse(isAlive(paused.pid))
  }, TEST_TIMEOUT_MS)

  it("starts on a given port, and says why when that port is taken", async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const address = probe.address()
        probe.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
      })
    })
    const server = await startRedis({ port })
    try {
      assert.strictEqual(server.port, port)
      assert.strictEqual(await redisCommand(port, "PING"), "PONG")
      const error = await rejection(startRedis({ port }))
      assert.include(error.message, `redis-server on 127.0.0.1:${port}`)
      assert.match(error.message, /another redis-server|address already in use|exited during startup/i)
    } finally {
      await server.kill()
    }
  }, TEST_TIMEOUT_MS)
})
