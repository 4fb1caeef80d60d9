/**
 * `--baseline <git-ref>`: the library as it was at another commit, loaded next to the working tree's, so the same
 * cases run against both in the same interleaved rounds.
 *
 * The ref's `src/` is extracted (`git archive`) into `node_modules/.cache/effect-circuit-baseline/<sha>/`, which git,
 * dprint and tsc all ignore, and reused on later runs. Node refuses to strip types from files under `node_modules`,
 * so the extraction strips them itself with `module.stripTypeScriptTypes` (the function Node's own loader uses, in
 * the same "strip" mode: only whitespace replaces the types, the code is unchanged), writes `.js` files and rewrites
 * relative `./x.ts` specifiers to `./x.js`. Bare `effect/...` imports there resolve to the repo's
 * `node_modules/effect`, the very module instance the working tree uses.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { stripTypeScriptTypes } from "node:module"
import { join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

/** The library's public module; the baseline is typed as the working tree's version of it. */
export type Library = typeof import("../src/index.ts")

export interface Baseline {
  /** The ref as given. */
  readonly ref: string
  readonly sha: string
  /** The first 7 hex digits, for labels. */
  readonly short: string
  readonly library: Library
}

const root = fileURLToPath(new URL("..", import.meta.url))
const cacheDir = join(root, "node_modules", ".cache", "effect-circuit-baseline")
/** Written last: a directory without it is an interrupted extraction. */
const marker = ".complete"

const git = (...args: Array<string>): string =>
  execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim()

/** `./x.ts` and `../x.ts` in `from "…"`, `import "…"` and `import("…")`; the same length, so columns are kept. */
const relativeTs = /((?:\bfrom|\bimport)\s*\(?\s*)(["'])(\.{1,2}\/[^"'\n]*)\.ts\2/g

const compileTree = (dir: string): void => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) compileTree(path)
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) {
      const code = stripTypeScriptTypes(readFileSync(path, "utf8"), { mode: "strip" })
      writeFileSync(path.slice(0, -3) + ".js", code.replace(relativeTs, "$1$2$3.js$2"))
    }
  }
}

const extract = (sha: string, target: string): void => {
  const tmp = `${target}.tmp-${process.pid}`
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp, { recursive: true })
  try {
    const tar = join(tmp, "src.tar")
    git("archive", "--format=tar", "-o", tar, sha, "src")
    execFileSync("tar", ["-x", "-f", tar, "-C", tmp])
    rmSync(tar)
    compileTree(join(tmp, "src"))
    // Outside any package scope (Node stops looking at node_modules), `.js` would be read as CommonJS.
    writeFileSync(join(tmp, "package.json"), JSON.stringify({ type: "module", private: true }) + "\n")
    writeFileSync(join(tmp, marker), `${sha}\n`)
    rmSync(target, { recursive: true, force: true })
    renameSync(tmp, target)
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

/** Resolves `ref`, extracts its `src/` unless already cached, and imports its index. */
export const loadBaseline = async (ref: string, log: (line: string) => void): Promise<Baseline> => {
  let sha: string
  try {
    sha = git("rev-parse", "--verify", "--end-of-options", `${ref}^{commit}`)
  } catch {
    throw new Error(`bench: --baseline ${ref}: not a commit in this repository`)
  }
  try {
    git("cat-file", "-e", `${sha}:src/index.ts`)
  } catch {
    throw new Error(`bench: --baseline ${ref}: commit ${sha.slice(0, 7)} has no src/index.ts`)
  }
  const dir = join(cacheDir, sha)
  if (existsSync(join(dir, marker))) {
    log(`baseline ${ref} = ${sha.slice(0, 7)}: cached in ${dir}`)
  } else {
    extract(sha, dir)
    log(`baseline ${ref} = ${sha.slice(0, 7)}: extracted to ${dir}`)
  }
  const library = (await import(pathToFileURL(join(dir, "src", "index.js")).href)) as Library
  return { ref, sha, short: sha.slice(0, 7), library }
}
