// A 50 MB document through plait (issue 14 item 6), with the default limits and SQLite:
//
//   cd tests/js && node large-doc-bench.js            # PLAIT_BIN as for the suite
//
// A y-websocket 3.x client builds the document from ten 5 MiB pastes (each one live update,
// timed from the insert to its arrival at a second client); then a fresh client's sync
// (connect to `synced`, the server's step 2 of the whole document); then a cold load (plait
// restarted on the same store, a fresh client's connect to `synced`, a second fresh client's,
// then one more live 5 MiB paste from the first to the second). The server's peak RSS (VmHWM in
// /proc/PID/status) is printed after each phase; the cold phase's is what issue 17 bounds
// (3× the document's encoded size). Last, a Hocuspocus provider (v3) syncs the same document.
//
// With REFERENCE=path/to/y-websocket/bin/server.js (bench/reference after `npm ci` there) the
// same runs against the Node reference server instead, in memory: no restart, no cold load.
import fs from 'node:fs'
import net from 'node:net'
import { spawn } from 'node:child_process'
import { startServer, makeProvider, waitSynced, waitFor, uniqueRoom, Y, WebSocket } from './support.js'
import * as hocusV3 from 'hocuspocus-provider-v3'

const REFERENCE = process.env.REFERENCE

/** The reference server on a free loopback port: `{ url, proc }` as the providers need. */
async function startReference () {
  const port = await new Promise((resolve) => {
    const probe = net.createServer()
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
  const proc = spawn(process.execPath, [REFERENCE], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: 'ignore'
  })
  cleanups.push(() => proc.kill())
  const listening = () => new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
    socket.on('error', () => resolve(false))
  })
  const started = Date.now()
  while (!(await listening())) {
    if (Date.now() - started > 10000) throw new Error(`the reference server did not listen on ${port}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { url: `ws://127.0.0.1:${port}`, proc }
}

const MIB = 1024 * 1024
const PASTES = Number(process.env.PASTES || 10)
const t = { after: (fn) => cleanups.push(fn) }
const cleanups = []
const peak = (server) => {
  const status = fs.readFileSync(`/proc/${server.proc.pid}/status`, 'utf8')
  const kb = (key) => Number(status.match(new RegExp(`${key}:\\s+(\\d+)`))[1])
  return `VmHWM ${(kb('VmHWM') / 1024).toFixed(0)} MiB, VmRSS ${(kb('VmRSS') / 1024).toFixed(0)} MiB`
}
const ms = (t0) => `${(performance.now() - t0).toFixed(0)} ms`

const server = REFERENCE ? await startReference() : await startServer(t)
const room = uniqueRoom('big')
const writer = makeProvider(t, server, room, { version: 'v3' })
const peer = makeProvider(t, server, room, { version: 'v3' })
await Promise.all([waitSynced(writer), waitSynced(peer)])
console.log(`server started: ${peak(server)}`)

const line = 'pasted text, line of a large document 0123456789\n'
const paste = line.repeat(Math.ceil(5 * MIB / line.length))
const live = []
for (let i = 0; i < PASTES; i++) {
  const text = writer.doc.getText('text')
  const want = text.length + paste.length
  const t0 = performance.now()
  text.insert(text.length, paste)
  await waitFor(() => peer.doc.getText('text').length === want, { timeout: 120000, interval: 5, message: `paste ${i}` })
  live.push(performance.now() - t0)
}
const docBytes = (await import('yjs')).encodeStateAsUpdate(writer.doc).length
console.log(`document: ${(docBytes / 1e6).toFixed(1)} MB encoded, ${writer.doc.getText('text').length} characters`)
console.log(`live 5 MiB update, insert to arrival at a peer: ${live.map(x => x.toFixed(0)).join(', ')} ms (median ${live.slice().sort((a, b) => a - b)[live.length >> 1].toFixed(0)} ms)`)
console.log(`after the pastes: ${peak(server)}`)

let t0 = performance.now()
const fresh = makeProvider(t, server, room, { version: 'v3' })
await waitSynced(fresh, { timeout: 120000 })
console.log(`fresh client, connect to synced (step 2 of the loaded document): ${ms(t0)}; ${peak(server)}`)
if (fresh.doc.getText('text').length !== writer.doc.getText('text').length) throw new Error('fresh client incomplete')
for (const p of [writer, peer, fresh]) p.destroy()
if (REFERENCE) {
  for (const fn of cleanups.reverse()) await fn()
  process.exit(0)
}

await server.stop('SIGTERM', { timeout: 60000 })
await server.start({ timeout: 60000 })
console.log(`restarted: ${peak(server)}`)
t0 = performance.now()
const cold = makeProvider(t, server, room, { version: 'v3' })
await waitSynced(cold, { timeout: 120000 })
console.log(`cold load, connect to synced (load from SQLite, then step 2): ${ms(t0)}; ${peak(server)}`)
if (cold.doc.getText('text').length !== PASTES * paste.length) throw new Error('cold client incomplete')
t0 = performance.now()
const coldPeer = makeProvider(t, server, room, { version: 'v3' })
await waitSynced(coldPeer, { timeout: 120000 })
console.log(`second fresh client, connect to synced: ${ms(t0)}; ${peak(server)}`)
t0 = performance.now()
const text = cold.doc.getText('text')
const want = text.length + paste.length
text.insert(text.length, paste)
await waitFor(() => coldPeer.doc.getText('text').length === want, { timeout: 120000, interval: 5, message: 'paste after the cold load' })
console.log(`live 5 MiB update after the cold load, insert to arrival at a peer: ${ms(t0)}; ${peak(server)}`)
console.log(`cold phase peak: ${peak(server).split(',')[0]} against 3 × ${(docBytes / 1e6).toFixed(1)} MB = ${(3 * docBytes / MIB).toFixed(0)} MiB`)
cold.destroy()
coldPeer.destroy()

// A Hocuspocus provider (Tiptap's) on the same document: its step 2 is re-framed for the
// provider (the document's name before each message).
t0 = performance.now()
const socket = new hocusV3.HocuspocusProviderWebsocket({ url: `${server.url}/hocuspocus`, WebSocketPolyfill: WebSocket })
const hocus = new hocusV3.HocuspocusProvider({ websocketProvider: socket, name: room, document: new Y.Doc() })
if (typeof hocus.attach === 'function' && !hocus._isAttached) hocus.attach()
await waitFor(() => hocus.synced, { timeout: 120000, interval: 5, message: 'Hocuspocus provider synced' })
console.log(`Hocuspocus provider, connect to synced: ${ms(t0)}; ${peak(server)}`)
if (hocus.document.getText('text').length !== want) throw new Error('Hocuspocus provider incomplete')
hocus.destroy()
socket.destroy()
for (const fn of cleanups.reverse()) await fn()
process.exit(0)
