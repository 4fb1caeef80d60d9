import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Equal, Exit, Fiber, Hash, HashSet, Ref } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { sep } from "node:path"
import { CircuitBreaker, CircuitBreakerSet } from "../../src/index.ts"
import { Breaker } from "../../src/internal/breaker.ts"
import * as machine from "../../src/internal/machine.ts"
import { SetService } from "../../src/internal/set.ts"

/** The `Ref` that holds `peer`'s circuit in a set built by the layer. */
const refOf = (peer: string) =>
  Effect.gen(function*() {
    const set = yield* CircuitBreakerSet
    assert.instanceOf(set, SetService)
    const breaker = set instanceof SetService ? set.registry.get(peer) : undefined
    assert.isDefined(breaker)
    return breaker!.state
  })

describe("the circuit lives in the breaker's Ref", () => {
  it.effect("every transition is what Ref.get reads", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.succeed(1).pipe(set.withBreaker("p"))
      const ref = yield* refOf("p")
      assert.strictEqual((yield* Ref.get(ref))._tag, "Closed")
      yield* Effect.exit(Effect.fail("down").pipe(set.withBreaker("p")))
      assert.strictEqual((yield* Ref.get(ref))._tag, "Open")
    }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0 }))))

  it.effect("what is written to the Ref is what the breaker does", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      yield* Effect.succeed(1).pipe(set.withBreaker("p"))
      const ref = yield* refOf("p")
      const isolated: machine.State = { _tag: "Isolated", generation: 7, isolations: 1, openedAt: 0, openedAtWall: 0 }
      yield* Ref.set(ref, isolated)
      const rejected = yield* Effect.exit(Effect.succeed(1).pipe(set.withBreaker("p")))
      assert.isTrue(Exit.isFailure(rejected))
      assert.strictEqual((yield* set.state("p"))._tag, "Open")
      yield* Ref.set(ref, { ...machine.initial, generation: 8 })
      assert.strictEqual(yield* Effect.succeed(2).pipe(set.withBreaker("p")), 2)
    }).pipe(Effect.provide(CircuitBreakerSet.layer())))

  it.effect("a result is recorded against the Ref's state when the call ends, not a copy taken at admission", () =>
    Effect.gen(function*() {
      const set = yield* CircuitBreakerSet
      const gate = yield* Deferred.make<void>()
      const call = yield* Effect.forkChild(
        Effect.exit(Deferred.await(gate).pipe(Effect.andThen(Effect.fail("down")), set.withBreaker("p")))
      )
      yield* Effect.yieldNow
      const ref = yield* refOf("p")
      // A reset written straight to the Ref starts a new generation: the call in flight must decide nothing.
      yield* Ref.update(ref, (state) => ({ ...machine.initial, generation: state.generation + 1 }))
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(call)
      assert.deepStrictEqual(yield* set.state("p"), { _tag: "Closed", failures: 0 })
    }).pipe(Effect.provide(CircuitBreakerSet.layer({ maxFailures: 0 }))))

  it.effect("a single breaker keeps its circuit in a Ref too", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ maxFailures: 0 })
      assert.instanceOf(breaker, Breaker)
      const ref = (breaker as Breaker).state
      yield* Effect.exit(Effect.fail("down").pipe(CircuitBreaker.withBreaker(breaker)))
      assert.strictEqual((yield* Ref.get(ref))._tag, "Open")
      yield* Ref.set(ref, { ...machine.initial, generation: 5 })
      assert.strictEqual((yield* CircuitBreaker.state(breaker))._tag, "Closed")
    }))

  it("no module writes a Ref's value behind the Ref API", () => {
    const root = new URL("../../src/", import.meta.url)
    const files = readdirSync(root, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts"))
    const sources = files.map((file) => [file, readFileSync(new URL(file, root), "utf8")] as const)
    // A breaker is its own Ref (see `Breaker`): its `current` is written by the Ref functions alone, and once by the
    // constructor, which gives the Ref its first value as `Ref.makeUnsafe` would.
    const writes = sources.flatMap(([file, text]) =>
      [...text.matchAll(
        /^.*(\.current\b\s*((\*\*|<<|>>>?|\?\?|\|\||&&|[-+*/%&|^])?=(?!=)|\+\+|--)|\[\s*["'`]current["'`]\s*\]|\.ref\.current\b|\bMutableRef\.(?!MutableRef\b)\w+).*$/gm
      )]
        .map((match) => `${file}: ${match[0].trim()}`)
    )
    assert.deepStrictEqual(writes, [`internal${sep}breaker.ts: this.current = machine.closedAt(generation)`])
    assert.isAbove(files.length, 10)
  })

  it("a breaker is the Ref of its circuit, and its value is the breaker's state", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ maxFailures: 0 })
      assert.instanceOf(breaker, Breaker)
      const ref: Ref.Ref<machine.State> = breaker as Breaker
      assert.strictEqual(yield* Ref.get(ref), (breaker as Breaker).current)
      yield* Ref.update(ref, (state) => ({ ...state, generation: 3 }))
      assert.strictEqual((breaker as Breaker).current.generation, 3)
      assert.deepStrictEqual(JSON.parse(JSON.stringify(breaker)), { _id: "CircuitBreaker", name: "default" })
    }))

  it.effect("two breakers of one peer are two Refs: equal and hashed by identity, as Effect's own Ref", () =>
    Effect.gen(function*() {
      const a = (yield* CircuitBreaker.make({ name: "p" })) as Breaker
      const b = new Breaker("p", a.shared, 0)
      assert.isTrue(Equal.equals(a.state, a.state))
      assert.isFalse(Equal.equals(a.state, b.state))
      assert.strictEqual(HashSet.size(HashSet.make(a.state, b.state)), 2)
      assert.strictEqual(Hash.hash(a), Hash.hash(a))
    }))
})
