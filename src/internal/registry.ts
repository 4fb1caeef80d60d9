/**
 * A keyed collection that drops entries once they have been idle for a time to live, without reading a clock on
 * every call and without a timer.
 *
 * A look-up only sets its entry's `touched` flag. Sweeps run when the registry reads the clock anyway (creating an
 * entry, operator actions, snapshots), on every 64th look-up, and on every look-up while a backlog remains. The map
 * is kept in order of `movedAt`; a sweep walks it from the front, looks at 64 entries at most, and stops at the
 * first entry moved less than a time to live ago. An entry it finds touched or not idle has its flag cleared and
 * goes to the back; one untouched for a whole time to live since its last move was not looked up for that long,
 * and is dropped if it is idle. So an entry is never dropped early, and an idle one goes within about two times to
 * live of its last look-up while look-ups arrive.
 */

/** The bookkeeping a registry keeps on each of its entries. */
export interface Entry {
  /** Whether the entry was looked up since the registry last moved it. A new entry starts untouched. */
  touched: boolean
  /** When the registry last moved the entry to the back of its order, in whole milliseconds since `origin`. */
  movedAt: number
}

/** How a registry makes, judges and drops its entries. `C` is whatever a look-up is given to read the time from. */
export interface RegistryOptions<V extends Entry, C> {
  /** How long an entry must go without a look-up before it may be dropped, in milliseconds (> 0). */
  readonly timeToLive: number
  /** Monotonic milliseconds when the registry was made. */
  readonly origin: number
  /** The current monotonic time in milliseconds, read from a look-up's `C` only when a sweep or a creation needs it. */
  readonly now: (context: C) => number
  readonly create: (key: string, now: number) => V
  /** Whether an untouched entry could be dropped at `now` without anyone noticing. */
  readonly isIdle: (value: V, now: number) => boolean
  readonly onDrop: (value: V, now: number) => void
}

/** The most entries one sweep looks at, which bounds the work of a single look-up. */
const maxPerSweep = 64

export class Registry<V extends Entry, C> {
  readonly #entries = new Map<string, V>()
  readonly #options: RegistryOptions<V, C>
  #sweepDueAt = Number.POSITIVE_INFINITY
  /** Set when a sweep stopped at its limit: every look-up then sweeps, until the backlog is gone. */
  #backlog = false
  #lookups = 0
  /** How many entries were ever dropped: a caller that found an entry and yielded checks it before using it. */
  drops = 0

  constructor(options: RegistryOptions<V, C>) {
    this.#options = options
  }

  /** The entry of `key` for a call: created if absent, marked as looked up otherwise. */
  lookup(key: string, context: C): V {
    this.#lookups = (this.#lookups + 1) & (maxPerSweep - 1)
    if (this.#lookups !== 0 && !this.#backlog) {
      const found = this.#entries.get(key)
      if (found !== undefined) {
        found.touched = true
        return found
      }
    }
    return this.getOrCreate(key, this.#options.now(context))
  }

  /** The entry of `key` at monotonic time `now`, created if absent and marked as looked up, after a due sweep. */
  getOrCreate(key: string, now: number): V {
    this.sweepIfDue(now)
    const found = this.#entries.get(key)
    if (found === undefined) return this.#create(key, now)
    found.touched = true
    return found
  }

  /** The entry of `key`, if the registry holds one; a read that does not count as a look-up. */
  get(key: string): V | undefined {
    return this.#entries.get(key)
  }

  /** Every entry held, in eviction order, after a sweep if one is due at `now`. */
  entries(now: number): IterableIterator<[string, V]> {
    this.sweepIfDue(now)
    return this.#entries.entries()
  }

  /** Runs a sweep if one is due at monotonic time `now`. */
  sweepIfDue(now: number): void {
    if (now >= this.#sweepDueAt) this.#sweep(now)
  }

  #create(key: string, now: number): V {
    const value = this.#options.create(key, now)
    value.movedAt = this.#stamp(now)
    this.#entries.set(key, value)
    if (this.#sweepDueAt === Number.POSITIVE_INFINITY) this.#sweepDueAt = now + this.#options.timeToLive
    return value
  }

  // Stamps are whole milliseconds since `origin`: a move is stamped rounded up and the present rounded down, so
  // rounding can only make an entry look idle for less time than it was, never more.
  #stamp(now: number): number {
    return Math.ceil(now - this.#options.origin)
  }

  #idleFor(value: V, now: number): number {
    return Math.floor(now - this.#options.origin) - value.movedAt
  }

  #sweep(now: number): void {
    const { isIdle, onDrop, origin, timeToLive } = this.#options
    this.#backlog = false
    let examined = 0
    for (const [key, value] of this.#entries) {
      if (this.#idleFor(value, now) < timeToLive) {
        this.#sweepDueAt = origin + value.movedAt + timeToLive
        return
      }
      if (examined++ === maxPerSweep) {
        this.#sweepDueAt = now
        this.#backlog = true
        return
      }
      this.#entries.delete(key)
      if (value.touched || !isIdle(value, now)) {
        value.touched = false
        value.movedAt = this.#stamp(now)
        this.#entries.set(key, value)
      } else {
        this.drops++
        onDrop(value, now)
      }
    }
    this.#sweepDueAt = Number.POSITIVE_INFINITY
  }
}
