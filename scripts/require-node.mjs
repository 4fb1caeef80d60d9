// npm scripts put node_modules/.bin first on PATH, so they run on the Node 22 from devDependencies.
// Running vitest straight from node_modules/.bin would use the system Node, which Effect 4 does not support.
const major = Number(process.versions.node.split(".")[0])
if (major < 22) {
  console.error(
    `Node ${process.version} found; run the tests through npm (npm test, npx vitest) so the Node 22 from devDependencies is used`
  )
  process.exit(1)
}
