import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    // Examples and README tests import the package by its name, as users do.
    alias: { "effect-circuit": fileURLToPath(new URL("./src/index.ts", import.meta.url)) }
  },
  test: {
    include: ["test/**/*.test.ts"],
    sequence: { concurrent: true }
  }
})
