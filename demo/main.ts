/**
 * `npm run demo`: the breaker guarding calls to a flaky inventory service on 127.0.0.1, about 15 seconds end to end.
 */
import { Effect } from "effect"
import { defaultPhases, runDemo } from "./demo.ts"

Effect.runPromise(runDemo({
  phases: defaultPhases,
  rate: 20,
  output: {
    isTTY: process.stdout.isTTY === true,
    columns: process.stdout.columns,
    write: (text) => process.stdout.write(text)
  }
})).then(
  () => undefined,
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  }
)
