/**
 * The demo's command line: `npm run demo -- --policy rate` picks the trip policy the breaker uses.
 *
 * Each policy is set for the demo's traffic (20 calls a second, a 300 ms timeout inside the breaker): the rates need
 * 20 calls in their window, one second of traffic, before they judge the peer.
 */
import { Policy } from "../src/index.ts"
import type { SetOptions } from "../src/index.ts"

/** The policies `--policy` accepts, by name. */
export const policies = {
  /** The default rule: a 4th counted failure within 5 seconds opens the circuit. */
  "window": Policy.window({ maxFailures: 3, window: "5 seconds" }),
  /** 5 counted failures in a row. */
  "consecutive": Policy.consecutive(5),
  /** Half the calls of the last 2 seconds failed, once they were at least 20. */
  "rate": Policy.rate({ threshold: 0.5, minimumCalls: 20, window: "2 seconds", buckets: 4 }),
  /**
   * A quarter of the calls of the last 2 seconds took 250 ms or longer (a call cut by the 300 ms timeout is slow),
   * once they were at least 20. The peer's quick 500s are not slow: this policy sees only its slow answers.
   */
  "slow-calls": Policy.slowCalls({
    duration: "250 millis",
    threshold: 0.25,
    minimumCalls: 20,
    window: "2 seconds",
    buckets: 4
  })
} as const

export type PolicyName = keyof typeof policies

export const policyNames = Object.keys(policies) as ReadonlyArray<PolicyName>

/** The breaker options of the demo for a policy (`isFailure` is always the demo's `isPeerFailure`). */
export const breakerFor = (name: PolicyName): Omit<SetOptions, "isFailure"> => ({
  policy: policies[name],
  resetTimeout: "2 seconds"
})

export const usage = `usage: npm run demo -- [--policy ${policyNames.join("|")}]\n` +
  "       npm run demo -- --fleet    (three replicas sharing their breakers through a local redis-server)"

/**
 * What the command line asks for: a run with a policy, the fleet demo, the usage text, or an error to print before
 * exiting.
 */
export type Command =
  | { readonly _tag: "Run"; readonly policy: PolicyName }
  | { readonly _tag: "Fleet" }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Invalid"; readonly message: string }

/**
 * Reads the arguments after `npm run demo --`. `--policy NAME` and `--policy=NAME` both work; the default is `window`.
 * `--fleet` runs the fleet demo, whose replicas share the window policy (the one policy a fleet shares whatever the
 * order of calls): it takes no `--policy` but `window`.
 */
export const parseArgs = (args: ReadonlyArray<string>): Command => {
  let policy: PolicyName = "window"
  let fleet = false
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--help" || arg === "-h") return { _tag: "Help" }
    if (arg === "--fleet") {
      fleet = true
      continue
    }
    const inline = /^--policy=(.*)$/.exec(arg)
    if (arg !== "--policy" && inline === null) {
      return { _tag: "Invalid", message: `unknown argument ${JSON.stringify(arg)}\n${usage}` }
    }
    const value = inline !== null ? inline[1]! : args[++i]
    if (value === undefined || value === "" || value.startsWith("--")) {
      return { _tag: "Invalid", message: `--policy needs a value: one of ${policyNames.join(", ")}\n${usage}` }
    }
    if (!(policyNames as ReadonlyArray<string>).includes(value)) {
      return {
        _tag: "Invalid",
        message: `--policy: unknown policy ${JSON.stringify(value)}, expected one of ${
          policyNames.join(", ")
        }\n${usage}`
      }
    }
    policy = value as PolicyName
  }
  if (fleet && policy !== "window") {
    return {
      _tag: "Invalid",
      message: `--fleet runs the window policy (the fleet demo's replicas share it); drop --policy ${policy}\n${usage}`
    }
  }
  return fleet ? { _tag: "Fleet" } : { _tag: "Run", policy }
}
