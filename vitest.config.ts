import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    // Examples and README tests import the package by its name, as users do.
    alias: { "effect-circuit": fileURLToPath(new URL("./src/index.ts", import.meta.url)) }
  },
  test: {
    include: ["test/**/*.test.ts"],
    sequence: { concurrent: true },
    // Files run side by side: the fleet tests against real processes spend their time waiting on them, so more
    // workers than cores shorten the run without slowing the CPU-bound files much.
    maxWorkers: 4,
    // Generous: with files side by side on two cores, a test that builds the package or spawns processes takes
    // several times as long as alone.
    testTimeout: 30_000
  }
})
