/**
 * The live terminal timeline of the demo: one column per call, in rows of a few seconds. Each row shows the peer's
 * scripted phase, the outcome of every call, and the circuit's state as a band underneath, followed by the circuit's
 * state changes during that row.
 *
 * With a TTY the rows still in progress (and a status line) are redrawn in place with ANSI codes; without one, each
 * row is printed once, as plain text, when it is complete.
 */
import type { CircuitStateChange } from "../src/CircuitStateChange.ts"
import type { Phase } from "./server.ts"

/** Where the demo writes. `isTTY` chooses between in-place ANSI redraws and plain lines. */
export interface Output {
  readonly isTTY: boolean
  /** The terminal's width, if known: live lines are cut to fit, since a wrapped line would break the redraw. */
  readonly columns?: number | undefined
  readonly write: (text: string) => void
}

/** How a call ended, as the client saw it. */
export type Outcome = "ok" | "not-found" | "server-error" | "timeout" | "error" | "rejected"

export type StateTag = CircuitStateChange["to"]

/** One call of the client. `outcome` and `endedAt` are filled in when it ends. */
export interface CallRecord {
  readonly seq: number
  readonly sku: string
  /** When the call started, wall-clock epoch milliseconds. */
  readonly startedAt: number
  /** The circuit's state (`CircuitBreakerSet.state`) just before the call. */
  readonly state: StateTag
  /** The peer's scripted phase when the call started. */
  readonly phase: Phase["name"]
  outcome?: Outcome | undefined
  endedAt?: number | undefined
}

const ansi = {
  reset: "\x1b[0m",
  bold: "\x1b[1m",
  dim: "\x1b[2m",
  red: "\x1b[31m",
  green: "\x1b[32m",
  yellow: "\x1b[33m",
  cyan: "\x1b[36m"
} as const

type Color = keyof typeof ansi

const marks: Record<Outcome, readonly [string, Color]> = {
  "ok": ["o", "green"],
  "not-found": ["?", "yellow"],
  "server-error": ["x", "red"],
  "timeout": ["t", "red"],
  "error": ["e", "red"],
  "rejected": ["-", "dim"]
}

const bands: Record<StateTag, readonly [plain: string, tty: string, Color]> = {
  Closed: ["_", "▁", "green"],
  Open: ["#", "█", "red"],
  HalfOpen: ["~", "▄", "yellow"]
}

const phases: Record<Phase["name"], readonly [plain: string, tty: string, Color]> = {
  healthy: [".", "─", "green"],
  failing: ["!", "━", "red"],
  recovering: [".", "─", "green"]
}

export const legend = (tty: boolean): ReadonlyArray<string> => {
  const paint = painter(tty)
  const mark = (outcome: Outcome) => paint(marks[outcome][1], marks[outcome][0])
  const band = (state: StateTag) => paint(bands[state][2], tty ? bands[state][1] : bands[state][0])
  const phase = (name: Phase["name"]) => paint(phases[name][2], tty ? phases[name][1] : phases[name][0])
  return [
    `legend:  peer    ${phase("healthy")} healthy  ${phase("failing")} failing`,
    `         calls   ${mark("ok")} 200  ${mark("not-found")} 404 (not a failure)  ${mark("server-error")} 5xx  ${
      mark("timeout")
    } timeout  ${mark("error")} other error`,
    `                 ${mark("rejected")} rejected by the breaker (never sent)`,
    `         circuit ${band("Closed")} closed  ${band("Open")} open  ${band("HalfOpen")} half-open (probe in flight)`
  ]
}

const painter = (tty: boolean) => (color: Color, text: string): string =>
  tty ? `${ansi[color]}${text}${ansi.reset}` : text

const seconds = (ms: number): string => `+${(ms / 1000).toFixed(1)}s`

export interface TimelineOptions {
  readonly output: Output
  /** When the script (and the first call) started. */
  readonly startedAt: number
  readonly intervalMs: number
  readonly totalCalls: number
  /** Calls per row. */
  readonly columns: number
  readonly calls: ReadonlyArray<CallRecord>
  readonly changes: ReadonlyArray<CircuitStateChange>
}

export interface Timeline {
  /** Draws what changed since the last frame. `final` completes every row. */
  readonly render: (now: number, status: string, final: boolean) => void
}

export const make = (options: TimelineOptions): Timeline => {
  const { calls, changes, columns, output, startedAt, totalCalls } = options
  const tty = output.isTTY
  const paint = painter(tty)
  const rows = Math.ceil(totalCalls / columns)
  const rowStart = (row: number) => startedAt + row * columns * options.intervalMs
  const gap = " ".repeat(9)
  let printedRows = 0
  let liveLines = 0

  const rowOf = (at: number): number =>
    Math.max(0, Math.min(rows - 1, Math.floor((at - startedAt) / (columns * options.intervalMs))))

  const isComplete = (row: number, now: number): boolean => {
    if (now < rowStart(row + 1) + 50) return false
    const last = Math.min(totalCalls, (row + 1) * columns)
    for (let seq = row * columns; seq < last; seq++) {
      if (calls[seq]?.outcome === undefined) return false
    }
    return true
  }

  const drawRow = (row: number): Array<string> => {
    const slice = calls.slice(row * columns, (row + 1) * columns)
    const peer = slice.map((call) => paint(phases[call.phase][2], tty ? phases[call.phase][1] : phases[call.phase][0]))
    const outcomes = slice.map((call) =>
      call.outcome === undefined ? " " : paint(marks[call.outcome][1], marks[call.outcome][0])
    )
    const band = slice.map((call) => paint(bands[call.state][2], tty ? bands[call.state][1] : bands[call.state][0]))
    const lines = [
      `${seconds(rowStart(row) - startedAt).padEnd(9)}peer    ${peer.join("")}`,
      `${gap}calls   ${outcomes.join("")}`,
      `${gap}circuit ${band.join("")}`
    ]
    for (const change of changes) {
      if (rowOf(change.at) !== row) continue
      const text = `${seconds(change.at - startedAt)} circuit ${change.from} -> ${change.to} (${change.reason})`
      lines.push(`${gap}${paint(change.to === "Open" ? "red" : change.to === "Closed" ? "green" : "yellow", text)}`)
    }
    lines.push("")
    return lines
  }

  return {
    render: (now, status, final) => {
      const lines: Array<string> = []
      while (printedRows < rows && (final || isComplete(printedRows, now))) {
        lines.push(...drawRow(printedRows))
        printedRows++
      }
      if (!tty) {
        if (lines.length > 0) output.write(lines.map((line) => `${line}\n`).join(""))
        return
      }
      // Rows in progress and the status line are redrawn in place: move up over the last frame's live lines, clear
      // to the end of the screen, print the completed rows for good, then the live part again.
      const live: Array<string> = []
      if (!final) {
        const started = calls.length
        for (let row = printedRows; row < rows && row * columns < started; row++) live.push(...drawRow(row))
        live.push(`${ansi.bold}${status.slice(0, (output.columns ?? 80) - 1)}${ansi.reset}`)
      }
      const rewind = liveLines > 0 ? `\x1b[${liveLines}F\x1b[J` : ""
      output.write(rewind + [...lines, ...live].map((line) => `${line}\n`).join(""))
      liveLines = live.length
    }
  }
}
