/**
 * Type-checks every example: each ```ts block of README.md, CONTRIBUTING.md and docs/*.md, and each ```ts block in
 * the JSDoc comments of src/. Part of `npm run check`; run alone with `node scripts/check-examples.ts` (Node 22).
 *
 * Each block becomes its own module in node_modules/.cache/examples/ (ignored by git, dprint and the main tsconfig),
 * with a tsconfig that extends the repository's, maps `effect-circuit` to src/index.ts and turns on
 * `noUnusedLocals`, so an import the block does not use is an error. Declarations a block makes and never uses are
 * fine: a fragment may end with `const program = …`. `tsc` runs once on all blocks, and every error is reported at
 * the file and line of the block it came from. Fence a block as `sh`, `text` or anything other than `ts` to leave it
 * unchecked.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const outDir = path.join(root, "node_modules", ".cache", "examples")

interface Line {
  readonly text: string
  /** 1-based line number in the source file. */
  readonly line: number
  /** Characters removed from the start of the source line (a JSDoc ` * ` prefix, a list indent). */
  readonly offset: number
}

interface Block {
  /** Path of the source file, relative to the repository root. */
  readonly source: string
  readonly lines: ReadonlyArray<Line>
}

/** Fenced blocks whose info string starts with `ts` or `typescript`, from lines of Markdown. */
const fencedBlocks = (source: string, lines: ReadonlyArray<Line>): Array<Block> => {
  const blocks: Array<Block> = []
  let open: { readonly fence: string; readonly indent: number; readonly code: Array<Line> | undefined } | undefined
  for (const line of lines) {
    const match = /^(\s*)(`{3,}|~{3,})(.*)$/.exec(line.text)
    // A backtick fence's info string has no backtick: "```` ```ts ```` blocks" is inline code, not a fence.
    const fence = match === null || (match[2]![0] === "`" && match[3]!.includes("`")) ? undefined : {
      indent: match[1]!.length,
      marker: match[2]!,
      info: match[3]!.trim().split(/\s+/)[0]!.toLowerCase()
    }
    if (open === undefined) {
      if (fence === undefined) continue
      const isTs = fence.info === "ts" || fence.info === "typescript"
      open = { fence: fence.marker, indent: fence.indent, code: isTs ? [] : undefined }
      continue
    }
    const closes = fence !== undefined && fence.marker[0] === open.fence[0] &&
      fence.marker.length >= open.fence.length && fence.info === ""
    if (closes) {
      if (open.code !== undefined) blocks.push({ source, lines: open.code })
      open = undefined
      continue
    }
    if (open.code !== undefined) {
      const indent = Math.min(open.indent, /^\s*/.exec(line.text)![0].length)
      open.code.push({ text: line.text.slice(indent), line: line.line, offset: line.offset + indent })
    }
  }
  if (open?.code !== undefined) throw new Error(`${source}: a \`\`\`ts block is never closed`)
  return blocks
}

const markdownBlocks = (file: string): Array<Block> => {
  const text = fs.readFileSync(path.join(root, file), "utf8")
  return fencedBlocks(file, text.split("\n").map((line, i) => ({ text: line, line: i + 1, offset: 0 })))
}

/** The fenced blocks inside each `/** … *\/` comment of a TypeScript file, without the leading ` * `. */
const jsdocBlocks = (file: string): Array<Block> => {
  const lines = fs.readFileSync(path.join(root, file), "utf8").split("\n")
  const blocks: Array<Block> = []
  let comment: Array<Line> | undefined
  lines.forEach((text, i) => {
    if (comment === undefined) {
      if (/^\s*\/\*\*/.test(text) && !text.includes("*/")) comment = []
      return
    }
    if (/^\s*\*\//.test(text)) {
      blocks.push(...fencedBlocks(file, comment))
      comment = undefined
      return
    }
    const prefix = /^\s*\* ?/.exec(text)?.[0] ?? ""
    comment.push({ text: text.slice(prefix.length), line: i + 1, offset: prefix.length })
  })
  return blocks
}

const listFiles = (dir: string, extension: string): Array<string> => {
  const absolute = path.join(root, dir)
  if (!fs.existsSync(absolute)) return []
  return fs.readdirSync(absolute, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(extension))
    .map((name) => path.join(dir, name).split(path.sep).join("/"))
    .sort()
}

const markdownFiles = ["README.md", "CONTRIBUTING.md", ...listFiles("docs", ".md")]
  .filter((file) => fs.existsSync(path.join(root, file)))
const blocks = [
  ...markdownFiles.flatMap(markdownBlocks),
  ...listFiles("src", ".ts").flatMap(jsdocBlocks)
]

// One module per block, named after where it came from.
fs.rmSync(outDir, { recursive: true, force: true })
fs.mkdirSync(outDir, { recursive: true })
const generated = new Map<string, Block>()
blocks.forEach((block, i) => {
  const origin = `${block.source.replace(/[^A-Za-z0-9.]+/g, "_")}-${block.lines[0]?.line}`
  const name = `${String(i).padStart(3, "0")}-${origin}.ts`
  generated.set(name, block)
  fs.writeFileSync(path.join(outDir, name), block.lines.map((line) => line.text).join("\n") + "\n")
})

const relative = (to: string) => path.relative(outDir, path.join(root, to)).split(path.sep).join("/")
fs.writeFileSync(
  path.join(outDir, "tsconfig.json"),
  JSON.stringify(
    {
      extends: relative("tsconfig.json"),
      compilerOptions: { noEmit: true, noUnusedLocals: true, paths: { "effect-circuit": [relative("src/index.ts")] } },
      files: [...generated.keys()],
      include: []
    },
    null,
    2
  )
)

/**
 * `noUnusedLocals` reports unused imports and unused declarations with the same codes; only imports are errors
 * here. The lines each block spends on import declarations, by generated file name.
 */
const importLines = new Map<string, Set<number>>()
for (const [name, block] of generated) {
  const lines = new Set<number>()
  let inImport = false
  block.lines.forEach((line, i) => {
    if (/^import\b/.test(line.text)) inImport = true
    if (inImport) lines.add(i + 1)
    if (inImport && /\bfrom\s+["'][^"']+["']|^import\s+["']/.test(line.text)) inImport = false
  })
  importLines.set(name, lines)
}
const unusedCodes = new Set(["TS6133", "TS6192", "TS6196", "TS6198"])

const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")
const result = spawnSync(process.execPath, [tsc, "-p", path.join(outDir, "tsconfig.json"), "--pretty", "false"], {
  cwd: root,
  encoding: "utf8"
})
if (result.error !== undefined) throw result.error

// Diagnostics: `file(line,col): error TSnnnn: message`, continued on indented lines.
const diagnostics: Array<{ head: string; rest: Array<string> }> = []
for (const text of (result.stdout + result.stderr).split("\n")) {
  if (text.trim() === "") continue
  if (/^\s/.test(text) && diagnostics.length > 0) diagnostics.at(-1)!.rest.push(text)
  else diagnostics.push({ head: text, rest: [] })
}

const errors: Array<string> = []
for (const { head, rest } of diagnostics) {
  const match = /^(.*)\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(head)
  if (match === null) {
    errors.push([head, ...rest].join("\n"))
    continue
  }
  const [, file, lineText, columnText, code, message] = match
  const name = path.basename(file!)
  const block = path.resolve(root, file!).startsWith(outDir) ? generated.get(name) : undefined
  if (block === undefined) {
    errors.push([head, ...rest].join("\n"))
    continue
  }
  const line = Number(lineText)
  if (unusedCodes.has(code!) && !importLines.get(name)!.has(line)) continue
  const at = block.lines[line - 1]
  const where = at === undefined
    ? `${block.source}:${block.lines[0]?.line}`
    : `${block.source}:${at.line}:${Number(columnText) + at.offset}`
  errors.push([`${where} - error ${code}: ${message}`, ...rest].join("\n"))
}

const counted = markdownFiles.concat("src").map((source) => {
  const count = blocks.filter((block) => source === "src" ? block.source.startsWith("src/") : block.source === source)
    .length
  return `${source === "src" ? "src/ JSDoc" : source}: ${count}`
})
if (errors.length > 0 || (result.status !== 0 && diagnostics.length === 0)) {
  console.error(errors.join("\n"))
  console.error(`\ncheck-examples: ${errors.length} error(s) in ${blocks.length} examples (${counted.join(", ")})`)
  process.exit(1)
}
console.log(`check-examples: ${blocks.length} examples type-check (${counted.join(", ")})`)
