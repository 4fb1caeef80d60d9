import { assert, describe, it } from "@effect/vitest"
import { type Entry, Registry } from "../../src/internal/registry.ts"

interface Item extends Entry {
  readonly key: string
  busy: boolean
}

/** A registry of plain items, keyed by string, whose look-ups carry the time itself; `busy` items are never idle. */
const make = (timeToLive = 1_000) => {
  const dropped: Array<string> = []
  const registry = new Registry<Item, number>({
    timeToLive,
    origin: 0,
    now: (time) => time,
    create: (key) => ({ key, busy: false, touched: false, movedAt: 0 }),
    isIdle: (item) => !item.busy,
    onDrop: (item) => dropped.push(item.key)
  })
  const held = (now: number) => [...registry.entries(now)].map(([key]) => key).sort()
  return { registry, dropped, held }
}

describe("Registry", () => {
  it("creates an entry on its first look-up and returns the same one after", () => {
    const { registry } = make()
    const first = registry.lookup("a", 0)
    assert.strictEqual(registry.lookup("a", 10), first)
    assert.strictEqual(registry.get("a"), first)
    assert.isUndefined(registry.get("b"))
  })

  it("drops an entry looked up once at the first sweep a time to live after its creation, never before", () => {
    const { dropped, held, registry } = make()
    registry.lookup("a", 0)
    assert.deepStrictEqual(held(999), ["a"])
    assert.deepStrictEqual(held(1_000), [])
    assert.deepStrictEqual(dropped, ["a"])
    assert.strictEqual(registry.drops, 1)
  })

  it("keeps an entry looked up again for a time to live after that, and drops it within two", () => {
    const { held, registry } = make()
    registry.lookup("a", 0)
    registry.lookup("a", 500)
    assert.deepStrictEqual(held(1_000), ["a"]) // touched since it was made: moved to the back, flag cleared
    assert.deepStrictEqual(held(1_999), ["a"])
    assert.deepStrictEqual(held(2_000), [])
  })

  it("never drops an entry that is not idle, however long it goes without a look-up", () => {
    const { held, registry } = make()
    registry.lookup("a", 0).busy = true
    for (let t = 1_000; t <= 10_000; t += 1_000) assert.deepStrictEqual(held(t), ["a"])
    registry.get("a")!.busy = false
    assert.deepStrictEqual(held(11_000), [])
  })

  it("sweeps on every 64th look-up without reading the time on the others", () => {
    let reads = 0
    const registry = new Registry<Item, number>({
      timeToLive: 1_000,
      origin: 0,
      now: (time) => {
        reads++
        return time
      },
      create: (key) => ({ key, busy: false, touched: false, movedAt: 0 }),
      isIdle: () => true,
      onDrop: () => {}
    })
    registry.lookup("a", 0) // creation reads the time
    assert.strictEqual(reads, 1)
    for (let i = 0; i < 62; i++) registry.lookup("a", 5_000)
    assert.strictEqual(reads, 1)
    registry.lookup("b", 5_000) // the 64th look-up: one reading serves its sweep and its creation
    assert.strictEqual(reads, 2)
    for (let i = 0; i < 62; i++) registry.lookup("b", 5_000)
    assert.strictEqual(reads, 2)
  })

  it("looks at 64 entries per sweep at most, and sweeps on every look-up while a backlog remains", () => {
    const { registry } = make()
    for (let i = 0; i < 200; i++) registry.lookup(`idle-${i}`, 0)
    registry.getOrCreate("hot", 2_000) // a sweep: drops 64
    assert.strictEqual(registry.drops, 64)
    registry.lookup("hot", 2_000) // backlog: sweeps again
    assert.strictEqual(registry.drops, 128)
    registry.lookup("hot", 2_000)
    registry.lookup("hot", 2_000)
    assert.strictEqual(registry.drops, 200)
  })

  it("counts drops, so that a caller holding an entry across a yield can tell it may be stale", () => {
    const { registry } = make()
    const a = registry.lookup("a", 0)
    const drops = registry.drops
    registry.sweepIfDue(5_000)
    assert.notStrictEqual(registry.drops, drops)
    const again = registry.lookup("a", 5_000)
    assert.notStrictEqual(again, a)
  })
})
