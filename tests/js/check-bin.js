// `npm test` pre-flight: fail with one clear line when the plait binary is missing.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const target = (process.env.TARGET || 'plait').toLowerCase()
if (target === 'plait') {
  const bin = path.resolve(here, process.env.PLAIT_BIN || '../../target/release/plait')
  if (!fs.existsSync(bin)) {
    console.error(`plait binary not found at ${bin}\n` +
      '  build it with cargo build --release (from the repo root),\n' +
      '  or point PLAIT_BIN at a binary, or run against the reference server: npm run test:reference')
    process.exit(1)
  }
  console.error(`testing plait binary ${bin}`)
} else {
  console.error('testing the reference server (y-websocket 1.5.4 bin/server.js)')
}
