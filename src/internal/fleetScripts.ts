/**
 * The Lua scripts that hold a fleet's breaker state in Redis, one atomic step each, and the shape of their replies.
 *
 * Layout, per peer (every key carries the peer's hash tag, so a peer's scripts stay in one Redis Cluster slot):
 * - `{prefix}{peer}`, a hash: `s` the state (`C`, `O`, `H`), `g` the generation, and
 *   - Closed: `f` the newest failure times (at most `maxFailures`, comma-separated) of a `window` policy, or `t` the
 *     buckets of a `rate` or `slowCalls` policy (`index:calls:bad;…`); `q` the newest bad outcome of each process
 *     (only with `minProcesses` > 1); `b` the last opening (`n:closedAt:openMillis`, for backoff);
 *   - Open and half-open: `n` the opening, `o` when it opened, `d` its duration, `r` why, `w` the process that
 *     opened it, `p` the probes in flight (`ticket:startedAt;…`, oldest first), `k` the probes that succeeded.
 * - `{prefix}{peer}:f`, a sorted set of failure times, instead of `f`, when `maxFailures` is large (O(log n) per
 *   failure rather than a string rewritten whole).
 * - `{prefix}{peer}:i`, a sorted set of isolations: holder id, scored by when its lease ends.
 *
 * Time is Redis `TIME` in milliseconds, the only clock the fleet shares; processes hold durations only. Tests pass
 * a time of their own (`ARGV[1]`), so the rules can be tested without waiting.
 *
 * Every reply is `[state, generation, remainingMillis, opening, openReason, openedBy, openMillis, openedAgoMillis]`,
 * with the state `C`, `O`, `H`, `I` (isolated), or `P` for a probe admitted (the generation is then its ticket, the
 * remaining time its lease). A change of state is published on the fleet's channel in the same step, as
 * `peer state generation remainingMillis opening transitionReason openReason process openMillis openedAgoMillis`.
 */
import * as Redis from "effect/persistence/Redis"

const prelude = `
local nowMicros
if ARGV[1] ~= "" then
  nowMicros = tonumber(ARGV[1]) * 1000
else
  local time = redis.call("TIME")
  nowMicros = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local now = math.floor(nowMicros / 1000)
local key, failuresKey, isolationsKey = KEYS[1], KEYS[2], KEYS[3]
local peer, channel, who, idle = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local probeSlots, probeTimeout, successThreshold = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[9])
local delays = {}
for d in string.gmatch(ARGV[8], "[^,]+") do delays[#delays + 1] = tonumber(d) end
local function int(n) return string.format("%.0f", n) end
local function delay(n) return delays[math.min(n, #delays)] end
local function nextGeneration(current) return int(math.max((tonumber(current) or 0) + 1, nowMicros)) end
local isolatedFor
local function publish(s, g, remaining, n, transition, reason, by, d, ago)
  if s ~= "I" then
    local isolated = isolatedFor()
    if isolated then s, remaining = "I", isolated end
  end
  redis.call("PUBLISH", channel,
    table.concat({ peer, s, g, int(math.max(0, remaining)), tostring(n), transition, reason, by, int(d), int(ago) }, " "))
end
local function probesOf(text)
  local list = {}
  for t, at in string.gmatch(text or "", "([^:;]+):([^;]+)") do list[#list + 1] = { t, tonumber(at) } end
  return list
end
local function joinProbes(list)
  local parts = {}
  for i = 1, #list do parts[i] = list[i][1] .. ":" .. int(list[i][2]) end
  return table.concat(parts, ";")
end
local h = redis.call("HMGET", key, "s", "g", "n", "o", "d", "r", "w", "p", "k", "f", "q", "b", "t")
local state = { s = h[1] or "C", g = h[2] or int(nowMicros), n = tonumber(h[3]) or 0, o = tonumber(h[4]) or 0, d = tonumber(h[5]) or 0,
  r = h[6] or "", w = h[7] or "", p = h[8] or "", k = tonumber(h[9]) or 0, f = h[10] or "", q = h[11] or "", b = h[12],
  t = h[13] or "" }
local function lease()
  if probeTimeout ~= "" then return tonumber(probeTimeout) end
  return state.d
end
isolatedFor = function()
  redis.call("ZREMRANGEBYSCORE", isolationsKey, "-inf", int(now))
  local last = redis.call("ZRANGE", isolationsKey, -1, -1, "WITHSCORES")
  if #last == 0 then return nil end
  return tonumber(last[2]) - now
end
local function view()
  local remaining = 0
  if state.s == "O" then
    remaining = state.o + state.d - now
  elseif state.s == "H" then
    local list = probesOf(state.p)
    if #list > 0 and (#list >= probeSlots or state.k + #list >= successThreshold) then
      remaining = list[1][2] + lease() - now
    end
  end
  return { state.s, state.g, int(math.max(0, remaining)), tostring(state.n), state.r, state.w, int(state.d), int(now - state.o) }
end
-- Opens the circuit at \`at\` as opening \`n\`: a trip, a failed probe, or a probe whose lease ended.
local function open(at, n, reason, transition)
  local g = nextGeneration(state.g)
  local d = delay(n)
  redis.call("HSET", key, "s", "O", "g", g, "n", n, "o", int(at), "d", int(d), "r", reason, "w", who, "p", "", "k", 0)
  redis.call("HDEL", key, "f", "q", "b", "t")
  redis.call("DEL", failuresKey)
  redis.call("PEXPIRE", key, int(d + math.max(d, lease()) + idle))
  state = { s = "O", g = g, n = n, o = at, d = d, r = reason, w = who, p = "", k = 0, f = "", q = "", t = "" }
  publish("O", g, at + d - now, n, transition, reason, who, d, now - at)
end
-- The distinct processes with a bad outcome in the window, this one's at \`at\` included, and the field \`q\` to keep.
local function processesWith(at, window)
  local seen = {}
  for id, t in string.gmatch(state.q, "([^@,]+)@([^,]+)") do
    local n = tonumber(t)
    if now - n < window then seen[id] = n end
  end
  if not seen[who] or seen[who] < at then seen[who] = at end
  local count, latest = 0, {}
  for id, t in pairs(seen) do
    count = count + 1
    latest[#latest + 1] = id .. "@" .. int(t)
  end
  return count, table.concat(latest, ",")
end
-- The opening a trip at \`at\` starts: the next one if it relapses within the last opening's length after a close.
local function tripOpening(at)
  if state.b then
    local opening, closedAt, lastOpen = string.match(state.b, "([^:]+):([^:]+):([^:]+)")
    if at - tonumber(closedAt) < tonumber(lastOpen) then return tonumber(opening) + 1 end
  end
  return 1
end
-- How long a closed circuit's key lives: its window, or its backoff if that ends later, then \`idle\`.
local function closedTtl(window)
  local ttl = window + idle
  if state.b then
    local _, closedAt, lastOpen = string.match(state.b, "([^:]+):([^:]+):([^:]+)")
    ttl = math.max(ttl, tonumber(closedAt) + tonumber(lastOpen) - now + idle)
  end
  return int(ttl)
end
-- The oldest probe's lease has ended: it failed, and the circuit reopened at that instant.
local function expireProbe()
  if state.s ~= "H" then return end
  local list = probesOf(state.p)
  if #list == 0 then return end
  local ends = list[1][2] + lease()
  if now >= ends then open(ends, state.n + 1, "probe-timeout", "probe-timeout") end
end
`

const admitBody = `
local isolated = isolatedFor()
if isolated then return { "I", state.g, int(isolated), tostring(state.n), state.r, state.w, int(state.d), "0" } end
if state.s == "C" then return view() end
expireProbe()
local moved = false
if state.s == "O" then
  if now - state.o < state.d then return view() end
  state.s, state.p, state.k, moved = "H", "", 0, true
end
local list = probesOf(state.p)
-- Probes in flight and successes so far may not exceed what closes the circuit.
if #list >= probeSlots or state.k + #list >= successThreshold then return view() end
local ticket = nextGeneration(state.g)
list[#list + 1] = { ticket, now }
redis.call("HSET", key, "s", "H", "g", ticket, "p", joinProbes(list), "k", state.k)
redis.call("PEXPIRE", key, int(lease() + delay(state.n + 1) + idle))
local full = #list >= probeSlots or state.k + #list >= successThreshold
if moved then publish("H", ticket, full and lease() or 0, state.n, "probe", state.r, who, state.d, now - state.o) end
return { "P", ticket, int(lease()), tostring(state.n), state.r, state.w, int(state.d), int(now - state.o) }
`

const recordBody = `
local ticket, outcome, age = ARGV[10], ARGV[11], tonumber(ARGV[12])
local maxFailures, window, minProcesses, sorted = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15]), ARGV[16] == "1"
if state.s == "C" then
  -- Only a failure on a closed circuit counts here; a probe's late result decides nothing.
  if outcome ~= "failure" or ticket ~= "*" then return view() end
  local at = now - age
  if now - at >= window then return view() end
  local live = {}
  local count
  if sorted then
    redis.call("ZREMRANGEBYSCORE", failuresKey, "-inf", int(now - window))
    count = redis.call("ZCARD", failuresKey)
  else
    for t in string.gmatch(state.f, "[^,]+") do
      local n = tonumber(t)
      if now - n < window then live[#live + 1] = n end
    end
    count = #live
  end
  local processes, latest = 1, ""
  if minProcesses > 1 then processes, latest = processesWith(at, window) end
  if count >= maxFailures and processes >= minProcesses then
    open(now, tripOpening(now), "window", "window")
    return view()
  end
  if state.g == "0" then state.g = nextGeneration(0) end
  local ttl = closedTtl(window)
  if sorted then
    local member = redis.call("HINCRBY", key, "z", 1)
    redis.call("ZADD", failuresKey, int(at), member)
    redis.call("ZREMRANGEBYRANK", failuresKey, 0, -(maxFailures + 1))
    redis.call("PEXPIRE", failuresKey, ttl)
    redis.call("HSET", key, "s", "C", "g", state.g)
  else
    live[#live + 1] = at
    table.sort(live)
    local parts = {}
    for i = math.max(1, #live - maxFailures + 1), #live do parts[#parts + 1] = int(live[i]) end
    redis.call("HSET", key, "s", "C", "g", state.g, "f", table.concat(parts, ","))
  end
  if minProcesses > 1 then redis.call("HSET", key, "q", latest) end
  redis.call("PEXPIRE", key, ttl)
  return view()
end
expireProbe()
if state.s ~= "H" then return view() end
local list = probesOf(state.p)
local index
for i = 1, #list do if list[i][1] == ticket then index = i end end
if not index then return view() end
local startedAt = list[index][2]
if outcome == "failure" then
  open(now, state.n + 1, "probe-failed", "probe-failed")
  return view()
end
if outcome == "timeout" then
  open(math.min(now, startedAt + lease()), state.n + 1, "probe-timeout", "probe-timeout")
  return view()
end
table.remove(list, index)
local successes = state.k
if outcome == "success" then successes = successes + 1 end
if successes >= successThreshold then
  local g = nextGeneration(state.g)
  redis.call("DEL", key)
  redis.call("HSET", key, "s", "C", "g", g, "b", tostring(state.n) .. ":" .. int(now) .. ":" .. int(state.d))
  redis.call("PEXPIRE", key, int(state.d + idle))
  publish("C", g, 0, 0, "probe-succeeded", "", who, 0, 0)
  local isolated = isolatedFor()
  if isolated then return { "I", g, int(isolated), "0", "", who, "0", "0" } end
  return { "C", g, "0", "0", "", who, "0", "0" }
end
local g = nextGeneration(state.g)
state.g, state.p, state.k = g, joinProbes(list), successes
redis.call("HSET", key, "g", g, "p", state.p, "k", successes)
return view()
`

/** Counts of a rate or slow-call policy: `t` holds the window's buckets as \`index:calls:bad;…\`. */
const tallyBody = `
local calls, bad, age = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local window, buckets, threshold = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local minimumCalls, minProcesses, reason = tonumber(ARGV[16]), tonumber(ARGV[17]), ARGV[18]
if state.s ~= "C" then return view() end
local at = now - age
local nowIndex = math.floor(now * buckets / window)
local index = math.floor(at * buckets / window)
if nowIndex - index >= buckets then return view() end
local kept, totalCalls, totalBad, found = {}, 0, 0, false
for i, c, b in string.gmatch(state.t, "([^:;]+):([^:;]+):([^;]+)") do
  local n, cc, bb = tonumber(i), tonumber(c), tonumber(b)
  if nowIndex - n < buckets then
    if n == index then
      cc, bb, found = cc + calls, bb + bad, true
    end
    kept[#kept + 1] = int(n) .. ":" .. int(cc) .. ":" .. int(bb)
    totalCalls, totalBad = totalCalls + cc, totalBad + bb
  end
end
if not found then
  kept[#kept + 1] = int(index) .. ":" .. int(calls) .. ":" .. int(bad)
  totalCalls, totalBad = totalCalls + calls, totalBad + bad
end
local processes, latest = 1, ""
if bad > 0 and minProcesses > 1 then processes, latest = processesWith(at, window) end
if bad > 0 and totalCalls >= minimumCalls and totalBad / totalCalls >= threshold and processes >= minProcesses then
  open(now, tripOpening(now), reason, reason)
  return view()
end
if state.g == "0" then state.g = nextGeneration(0) end
redis.call("HSET", key, "s", "C", "g", state.g, "t", table.concat(kept, ";"))
if bad > 0 and minProcesses > 1 then redis.call("HSET", key, "q", latest) end
redis.call("PEXPIRE", key, closedTtl(window))
return view()
`

const readBody = `
local isolated = isolatedFor()
if isolated then return { "I", state.g, int(isolated), tostring(state.n), state.r, state.w, int(state.d), "0" } end
expireProbe()
return view()
`

const resetBody = `
redis.call("DEL", key, failuresKey)
local g = nextGeneration(state.g)
if state.s ~= "C" then
  redis.call("HSET", key, "s", "C", "g", g)
  redis.call("PEXPIRE", key, int(idle))
  publish("C", g, 0, 0, "reset", "", who, 0, 0)
end
local isolated = isolatedFor()
if isolated then return { "I", g, int(isolated), "0", "", who, "0", "0" } end
return { "C", g, "0", "0", "", who, "0", "0" }
`

/** `ARGV[10]`: `add` with the lease in milliseconds in `ARGV[11]`, or `remove`. */
const isolateBody = `
-- An isolation that begins or ends advances the generation, so that a reply already on its way (an \`I\` after the
-- release, say) reads as older than the change.
local function advance(ttl)
  state.g = nextGeneration(state.g)
  redis.call("HSET", key, "s", state.s, "g", state.g)
  if redis.call("PTTL", key) < 0 then redis.call("PEXPIRE", key, int(ttl)) end
end
local before = isolatedFor()
if ARGV[10] == "add" then
  redis.call("ZADD", isolationsKey, int(now + tonumber(ARGV[11])), who)
  local last = redis.call("ZRANGE", isolationsKey, -1, -1, "WITHSCORES")
  redis.call("PEXPIRE", isolationsKey, int(math.max(1, tonumber(last[2]) - now)))
  if not before then
    advance(tonumber(ARGV[11]) + idle)
    publish("I", state.g, tonumber(ARGV[11]), state.n, "isolated", state.r, who, 0, 0)
  end
else
  redis.call("ZREM", isolationsKey, who)
  if before and not isolatedFor() then
    expireProbe()
    advance(idle)
    local v = view()
    publish(v[1], v[2], tonumber(v[3]), state.n, "released", state.r, who, state.d, now - state.o)
  end
end
local isolated = isolatedFor()
if isolated then return { "I", state.g, int(isolated), tostring(state.n), state.r, state.w, int(state.d), "0" } end
return view()
`

/** What every script is told, besides its own arguments. */
export interface ScriptContext {
  /** The hash key; the other keys are made from it. */
  readonly key: string
  /** The peer, as it travels in messages. */
  readonly peer: string
  readonly channel: string
  /** The id of the calling process. */
  readonly process: string
  readonly idleMillis: number
  readonly probes: number
  /** The probe's lease; `undefined`: the duration of the opening that preceded the half-open period. */
  readonly probeTimeoutMillis: number | undefined
  /** The duration of openings 1, 2, …; the last one holds for every later opening. */
  readonly delays: ReadonlyArray<number>
  readonly successThreshold: number
  /** A time for the script to use instead of Redis `TIME`, in milliseconds: tests only. */
  readonly now: number | undefined
}

/** A script's reply: see the module's documentation. */
export type Reply = readonly [
  state: "C" | "O" | "H" | "I" | "P",
  generation: string,
  remainingMillis: string,
  opening: string,
  openReason: string,
  openedBy: string,
  openMillis: string,
  openedAgoMillis: string
]

const common = (context: ScriptContext): Array<string> => [
  context.key,
  `${context.key}:f`,
  `${context.key}:i`,
  context.now === undefined ? "" : String(context.now),
  context.peer,
  context.channel,
  context.process,
  String(context.idleMillis),
  String(context.probes),
  context.probeTimeoutMillis === undefined ? "" : String(context.probeTimeoutMillis),
  context.delays.join(","),
  String(context.successThreshold)
]

const define = <Params extends ReadonlyArray<any>>(body: string, args: (...params: Params) => ReadonlyArray<string>) =>
  Redis.script(args, { lua: prelude + body, numberOfKeys: 3 }).withReturnType<Reply>()

/** Asks for a call at the end of an open period: a probe slot (`P`), or how long to wait. */
export const admit = define(admitBody, (context: ScriptContext) => common(context))

/** How a call ended, as far as the fleet is concerned. */
export type FleetOutcome = "success" | "failure" | "ignored" | "timeout"

/** The window rule's figures, for a failure on a closed circuit. */
export interface WindowRule {
  readonly maxFailures: number
  readonly windowMillis: number
  readonly minProcesses: number
}

/** Above this many failures kept, a peer's failure times go in a sorted set rather than a string. */
export const sortedAbove = 32

/**
 * Records a call's outcome: a failure on a closed circuit (ticket `*`, `ageMillis` ago: a replayed failure is older)
 * or a probe's result (its ticket).
 */
export const record = define(
  recordBody,
  (context: ScriptContext, ticket: string, outcome: FleetOutcome, ageMillis: number, rule: WindowRule) => [
    ...common(context),
    ticket,
    outcome,
    String(Math.max(0, Math.round(ageMillis))),
    String(rule.maxFailures),
    String(rule.windowMillis),
    String(rule.minProcesses),
    rule.maxFailures > sortedAbove ? "1" : "0"
  ]
)

/** A rate or slow-call policy over a time window, as the fleet shares it. */
export interface RateRule {
  readonly reason: "rate" | "slow-calls"
  readonly threshold: number
  readonly minimumCalls: number
  readonly windowMillis: number
  readonly buckets: number
  /** For `slow-calls`: a call this long or longer is bad. */
  readonly slowMillis: number
  readonly minProcesses: number
}

/**
 * Adds `calls` calls, `bad` of them bad, made `ageMillis` ago (a batch is sent at most 250 ms after its first call,
 * a replayed one later), to a closed circuit's buckets; a bad one may open it.
 */
export const tally = define(
  tallyBody,
  (context: ScriptContext, calls: number, bad: number, ageMillis: number, rule: RateRule) => [
    ...common(context),
    String(calls),
    String(bad),
    String(Math.max(0, Math.round(ageMillis))),
    String(rule.windowMillis),
    String(rule.buckets),
    String(rule.threshold),
    String(rule.minimumCalls),
    String(rule.minProcesses),
    rule.reason
  ]
)

/** Reads the fleet's view of a peer, with an ended probe lease applied. */
export const read = define(readBody, (context: ScriptContext) => common(context))

/** Closes the circuit for the fleet, forgetting its failures (isolations stay). */
export const reset = define(resetBody, (context: ScriptContext) => common(context))

/** Adds or renews (`leaseMillis`) this process's isolation of the peer, or removes it. */
export const isolate = define(
  isolateBody,
  (context: ScriptContext, action: "add" | "remove", leaseMillis: number) => [
    ...common(context),
    action,
    String(leaseMillis)
  ]
)
