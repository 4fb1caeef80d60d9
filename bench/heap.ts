/**
 * Where the bytes of a held breaker go, from V8 heap snapshots (`npm run memory -- --breakdown`).
 *
 * Two readings of the same snapshots:
 *
 * - `growth`: the self sizes of every object on the heap, grouped by kind (an object's constructor name, a V8
 *   internal array's role), after minus before, per peer. It counts everything the breakers added, the registry's
 *   hash table included, and says nothing of who holds what.
 * - `ownership`: from each object of class `root` (e.g. `PeerBreaker`), the objects it alone holds, by the path of
 *   property names that reaches them (`state.ref.current.counts`), averaged over every such object. An object with
 *   more than one holder (a shared settings object, the shared initial state) is left out, and so is everything it
 *   holds: these are the bytes each breaker costs on its own.
 *
 * Self sizes are what V8 reports in a heap snapshot: the object itself, not what it points to, without the free
 * space around it. They add up to a little less than `process.memoryUsage().heapUsed` deltas, which include
 * fragmentation.
 */
import { readFileSync } from "node:fs"

interface Snapshot {
  readonly snapshot: {
    readonly meta: {
      readonly node_fields: ReadonlyArray<string>
      readonly node_types: readonly [ReadonlyArray<string>, ...Array<unknown>]
      readonly edge_fields: ReadonlyArray<string>
      readonly edge_types: readonly [ReadonlyArray<string>, ...Array<unknown>]
    }
  }
  readonly nodes: ReadonlyArray<number>
  readonly edges: ReadonlyArray<number>
  readonly strings: ReadonlyArray<string>
}

/** A heap snapshot file, read. */
export interface Heap {
  readonly raw: Snapshot
  /** Per node: its kind, e.g. `object PeerBreaker`, `array (object elements)`, `string`. */
  readonly kinds: ReadonlyArray<string>
  readonly sizes: ReadonlyArray<number>
  /** Per node, the index of its first edge (in edges, not in the flat array). */
  readonly firstEdge: Int32Array
}

const kindOf = (type: string, name: string): string => {
  switch (type) {
    case "string":
    case "concatenated string":
    case "sliced string":
    case "number":
    case "bigint":
    case "code":
    case "closure":
      return type === "closure" ? `closure ${name}` : type
    default:
      return `${type} ${name.length > 60 ? `${name.slice(0, 60)}…` : name}`
  }
}

export const readHeap = (path: string): Heap => {
  const raw = JSON.parse(readFileSync(path, "utf8")) as Snapshot
  const meta = raw.snapshot.meta
  const width = meta.node_fields.length
  const type = meta.node_fields.indexOf("type")
  const name = meta.node_fields.indexOf("name")
  const size = meta.node_fields.indexOf("self_size")
  const edgeCount = meta.node_fields.indexOf("edge_count")
  const count = raw.nodes.length / width
  const kinds: Array<string> = new Array(count)
  const sizes: Array<number> = new Array(count)
  const firstEdge = new Int32Array(count + 1)
  let edge = 0
  for (let i = 0; i < count; i++) {
    const at = i * width
    kinds[i] = kindOf(meta.node_types[0][raw.nodes[at + type]!]!, raw.strings[raw.nodes[at + name]!]!)
    sizes[i] = raw.nodes[at + size]!
    firstEdge[i] = edge
    edge += raw.nodes[at + edgeCount]!
  }
  firstEdge[count] = edge
  return { raw, kinds, sizes, firstEdge }
}

const totalsByKind = (heap: Heap): Map<string, number> => {
  const totals = new Map<string, number>()
  heap.kinds.forEach((kind, i) => totals.set(kind, (totals.get(kind) ?? 0) + heap.sizes[i]!))
  return totals
}

/** Bytes per peer by kind, after minus before, largest first; kinds under `min` bytes per peer left out. */
export const growth = (
  before: Heap,
  after: Heap,
  peers: number,
  min = 0.5
): Array<{ readonly kind: string; readonly bytes: number }> => {
  const a = totalsByKind(before)
  const b = totalsByKind(after)
  const rows: Array<{ kind: string; bytes: number }> = []
  for (const kind of new Set([...a.keys(), ...b.keys()])) {
    const bytes = ((b.get(kind) ?? 0) - (a.get(kind) ?? 0)) / peers
    if (Math.abs(bytes) >= min) rows.push({ kind, bytes })
  }
  return rows.sort((x, y) => y.bytes - x.bytes)
}

/**
 * Bytes per `root` object by path of what it alone holds (see the module's comment), with how many of the roots
 * have that path; `depth` bounds the paths.
 */
export const ownership = (
  heap: Heap,
  root: string,
  depth = 10
): { readonly roots: number; readonly paths: Array<{ path: string; kind: string; bytes: number; share: number }> } => {
  const { raw } = heap
  const meta = raw.snapshot.meta
  const width = meta.node_fields.length
  const edgeWidth = meta.edge_fields.length
  const edgeType = meta.edge_fields.indexOf("type")
  const edgeName = meta.edge_fields.indexOf("name_or_index")
  const edgeTo = meta.edge_fields.indexOf("to_node")
  const edgeTypes = meta.edge_types[0]
  const count = heap.kinds.length
  // Holders per node, weak and shortcut edges aside (they do not keep anything alive). An object's elements store
  // repeats, as internal edges, the element edges of the object itself: the store is not counted as a holder, and
  // is not walked through.
  const elementsStore = "array (object elements)"
  const holders = new Int32Array(count)
  for (let node = 0; node < count; node++) {
    if (heap.kinds[node] === elementsStore) continue
    for (let edge = heap.firstEdge[node]!; edge < heap.firstEdge[node + 1]!; edge++) {
      const t = edgeTypes[raw.edges[edge * edgeWidth + edgeType]!]
      if (t === "weak" || t === "shortcut") continue
      holders[raw.edges[edge * edgeWidth + edgeTo]! / width]!++
    }
  }
  const byPath = new Map<string, { kind: string; bytes: number; seen: number }>()
  const add = (path: string, node: number) => {
    const entry = byPath.get(path) ?? { kind: heap.kinds[node]!, bytes: 0, seen: 0 }
    entry.bytes += heap.sizes[node]!
    entry.seen++
    byPath.set(path, entry)
  }
  const walk = (node: number, path: string, level: number) => {
    add(path, node)
    if (level === depth || heap.kinds[node] === elementsStore) return
    for (let edge = heap.firstEdge[node]!; edge < heap.firstEdge[node + 1]!; edge++) {
      const e = edge * edgeWidth
      const t = edgeTypes[raw.edges[e + edgeType]!]
      if (t === "weak" || t === "shortcut") continue
      const to = raw.edges[e + edgeTo]! / width
      if (holders[to] !== 1 || heap.sizes[to] === 0) continue
      const label = t === "element" || t === "hidden" ? "[]" : String(raw.strings[raw.edges[e + edgeName]!])
      walk(to, path === "" ? label : `${path}.${label}`, level + 1)
    }
  }
  let roots = 0
  const rootKind = `object ${root}`
  for (let i = 0; i < count; i++) {
    if (heap.kinds[i] !== rootKind) continue
    roots++
    walk(i, "", 0)
  }
  const paths = [...byPath].map(([path, { bytes, kind, seen }]) => ({
    path: path === "" ? `(the ${root} itself)` : path,
    kind,
    bytes: roots === 0 ? 0 : bytes / roots,
    share: roots === 0 ? 0 : seen / roots
  }))
  return { roots, paths }
}
