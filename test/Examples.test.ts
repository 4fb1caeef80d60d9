/**
 * The documentation's examples: every Markdown block marked `<!-- file: path -->` is that file, byte for byte, and
 * the quick start runs to completion as a newcomer would run it. (`npm run check` type-checks every block.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"

const root = path.resolve(import.meta.dirname, "..")
const read = (file: string) => fs.readFileSync(path.join(root, file), "utf8")

const docs = path.join(root, "docs")
const documents = ["README.md", "CONTRIBUTING.md"]
  .concat((fs.existsSync(docs) ? fs.readdirSync(docs) : []).map((name) => `docs/${name}`))
  .filter((file) => file.endsWith(".md") && fs.existsSync(path.join(root, file)))

interface Mirror {
  readonly document: string
  readonly line: number
  readonly file: string
  readonly code: string | undefined
}

/** Each `<!-- file: path -->` marker, with the fenced block that follows it (blank lines in between are allowed). */
const mirrors = (document: string): Array<Mirror> => {
  const lines = read(document).split("\n")
  const found: Array<Mirror> = []
  lines.forEach((text, i) => {
    const marker = /^<!-- file: (\S+) -->$/.exec(text.trim())
    if (marker === null) return
    let start = i + 1
    while (start < lines.length && lines[start]!.trim() === "") start++
    const fence = /^(`{3,})\w*$/.exec(lines[start] ?? "")
    const end = fence === null ? -1 : lines.indexOf(fence[1]!, start + 1)
    found.push({
      document,
      line: i + 1,
      file: marker[1]!,
      code: end === -1 ? undefined : lines.slice(start + 1, end).join("\n") + "\n"
    })
  })
  return found
}

const allMirrors = documents.flatMap(mirrors)

describe("documentation examples", () => {
  it("every block marked with a file is that file, byte for byte", () => {
    assert.isAbove(allMirrors.length, 0)
    for (const { code, document, file, line } of allMirrors) {
      assert.isDefined(code, `${document}:${line}: the marker for ${file} is not followed by a fenced block`)
      assert.isTrue(fs.existsSync(path.join(root, file)), `${document}:${line}: ${file} does not exist`)
      assert.strictEqual(code, read(file), `${document}:${line}: the block differs from ${file}`)
    }
  })

  it("the README shows the quick start and the TestClock test", () => {
    const shown = allMirrors.filter((mirror) => mirror.document === "README.md").map((mirror) => mirror.file)
    assert.include(shown, "examples/quick-start.ts")
    assert.include(shown, "test/ReadmeExample.test.ts")
  })

  it.live("the quick start runs to completion with the output the README shows", () =>
    Effect.gen(function*() {
      // The example imports the package by its name, as a user's program does. Vitest's alias does not reach a
      // child process, Node does not read tsconfig's `paths`, and the package's `exports` point at dist/, which only
      // exists after a build. So the child gets a resolve hook (`module.registerHooks`, synchronous, in the same
      // thread) that maps that one name to src/index.ts, and runs the example file itself, unmodified. It runs on
      // the Node that runs the tests (22, which strips the types).
      const source = JSON.stringify(pathToFileURL(path.join(root, "src", "index.ts")).href)
      const hook = [
        `import { registerHooks } from "node:module"`,
        `registerHooks({ resolve: (specifier, context, next) =>`,
        `  next(specifier === "effect-circuit" ? ${source} : specifier, context) })`
      ].join("\n")
      const { code, output } = yield* Effect.callback<{ code: number | string | null; output: string }>(
        (resume, signal) => {
          execFile(
            process.execPath,
            ["--import", `data:text/javascript,${encodeURIComponent(hook)}`, "examples/quick-start.ts"],
            { cwd: root, signal, timeout: 20_000 },
            (error, stdout, stderr) => {
              const code = error === null ? 0 : typeof error.code === "number" ? error.code : error.signal ?? null
              resume(Effect.succeed({ code, output: `${stdout}${stderr}` }))
            }
          )
        }
      )
      assert.strictEqual(code, 0, output)
      const lines = output.split("\n")
      const index = (text: string) => {
        const at = lines.findIndex((line) => line.includes(text))
        assert.isAtLeast(at, 0, `expected a line with ${JSON.stringify(text)} in:\n${output}`)
        return at
      }
      const order = [
        index("call 1: failed with 503"),
        index("Circuit opened: more than 3 failures within 1m; rejecting calls for 1s"),
        index("call 4: failed with 503"),
        index("call 5: not called, circuit open (retry in"),
        index("call 6: not called, circuit open (retry in"),
        index("Circuit closed: the probe succeeded"),
        index("call 7: 42 in stock"),
        index("the peer received 5 of 7 calls")
      ]
      assert.deepStrictEqual(order, [...order].sort((a, b) => a - b), output)
    }), 30_000)
})
