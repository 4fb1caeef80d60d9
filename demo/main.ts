/**
 * `npm run demo`: the breaker guarding calls to a flaky inventory service on 127.0.0.1, about 15 seconds end to end.
 * `npm run demo -- --policy rate` runs it with another trip policy (see demo/cli.ts). `npm run demo -- --fleet` runs
 * three replicas sharing their breakers through a local redis-server (see demo/fleet.ts), about 8 seconds.
 */
import { Effect } from "effect"
import { breakerFor, parseArgs, usage } from "./cli.ts"
import { defaultPhases, runDemo } from "./demo.ts"

const command = parseArgs(process.argv.slice(2))

if (command._tag === "Help") {
  console.log(usage)
} else if (command._tag === "Invalid") {
  console.error(`npm run demo: ${command.message}`)
  process.exitCode = 2
} else if (command._tag === "Fleet") {
  // Loaded only here: it starts processes, and needs redis-server.
  const { missingRedisMessage, runFleetDemo } = await import("./fleet.ts")
  const { redisAvailable } = await import("../scripts/redisServer.ts")
  if (!redisAvailable) {
    console.error(missingRedisMessage)
    process.exitCode = 1
  } else {
    await runFleetDemo({ write: (text) => process.stdout.write(text) }).then(
      () => undefined,
      (error: unknown) => {
        console.error(`npm run demo -- --fleet: ${error instanceof Error ? error.message : String(error)}`)
        process.exitCode = 1
      }
    )
  }
} else {
  Effect.runPromise(runDemo({
    phases: defaultPhases,
    rate: 20,
    breaker: breakerFor(command.policy),
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
}
