// Shared helpers for the plait real-client test suite.
//
// Server under test:
//   TARGET=plait (default)  -> $PLAIT_BIN (default ../../target/release/plait relative to tests/js)
//                              started as `plait serve --host 127.0.0.1 --port P --store sqlite://DIR/plait.db`
//   TARGET=reference        -> node node_modules/y-websocket/bin/server.js (HOST/PORT env,
//                              YPERSISTENCE=DIR/leveldb when the test asks for persistence)
//
// Every provider is created with `disableBc: true`: in Node 20 BroadcastChannel is global and
// providers of the same room in one process would otherwise sync through it, bypassing the server.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'

import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider as WebsocketProviderV1 } from 'y-websocket'
import { WebsocketProvider as WebsocketProviderV3 } from 'y-websocket-v3'

export { Y, WebSocket, sleep }

const HERE = path.dirname(fileURLToPath(import.meta.url))

export const TARGET = (process.env.TARGET || 'plait').toLowerCase()
if (TARGET !== 'plait' && TARGET !== 'reference') {
  throw new Error(`TARGET must be "plait" or "reference", got "${process.env.TARGET}"`)
}
export const IS_PLAIT = TARGET === 'plait'
/** The admin token every plait test server is started with (its admin API and the CLI). */
export const ADMIN_TOKEN = 'test-admin-token'
export const IS_REFERENCE = TARGET === 'reference'

export const PLAIT_BIN = path.resolve(HERE, process.env.PLAIT_BIN || '../../target/release/plait')
const REFERENCE_SERVER = path.join(HERE, 'node_modules', 'y-websocket', 'bin', 'server.js')

/** Does the reference server's persistence (y-leveldb + leveldown) load here? */
export const REFERENCE_PERSISTENCE_AVAILABLE = (() => {
  try {
    // y-leveldb is an optional dependency of y-websocket; leveldown ships prebuilt binaries.
    const require = createRequire(path.join(HERE, 'node_modules', 'y-websocket', 'bin', 'server.js'))
    require.resolve('y-leveldb')
    require('leveldown')
    return true
  } catch {
    return false
  }
})()

/** Skip reason for tests that restart the server (reference needs y-leveldb). */
export const RESTART_SKIP = IS_REFERENCE && !REFERENCE_PERSISTENCE_AVAILABLE
  ? 'reference server persistence (y-leveldb) not installed; restart tests are plait-only'
  : false

// ---------------------------------------------------------------------------------------------
// process bookkeeping: whatever happens, no server outlives the test process

// every provider registers a process 'exit' handler; 50+ of them are expected here
process.setMaxListeners(500)

const liveProcs = new Set()
const killAll = () => {
  for (const child of liveProcs) {
    try { child.kill('SIGKILL') } catch {}
  }
}
process.on('exit', killAll)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAll(); process.exit(130) })
}

export const getFreePort = () => new Promise((resolve, reject) => {
  const srv = net.createServer()
  srv.unref()
  srv.on('error', reject)
  srv.listen(0, '127.0.0.1', () => {
    const { port } = srv.address()
    srv.close(() => resolve(port))
  })
})

let roomCounter = 0
/** A room name unique to this process and call. */
export const uniqueRoom = (prefix = 'room') =>
  `${prefix}-${process.pid}-${++roomCounter}-${Math.random().toString(36).slice(2, 8)}`

// ---------------------------------------------------------------------------------------------
// waiting

/**
 * Poll `predicate` until it returns truthy; reject after `timeout` ms with `message` (or the
 * result of calling it, so failures can show the current state).
 */
export async function waitFor (predicate, { timeout = 10000, interval = 20, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let lastErr
  for (;;) {
    try {
      const v = await predicate()
      if (v) return v
    } catch (e) { lastErr = e }
    if (Date.now() > deadline) {
      const msg = typeof message === 'function' ? message() : message
      const err = new Error(`timed out after ${timeout} ms waiting for: ${msg}` +
        (lastErr ? ` (last error: ${lastErr.message})` : ''))
      throw err
    }
    await sleep(interval)
  }
}

/** Resolve when `emitter` emits `event` (first argument), reject after timeout. */
export function waitForEvent (emitter, event, { timeout = 10000, filter = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const onEv = (...args) => {
      if (!filter(...args)) return
      clearTimeout(timer)
      off()
      resolve(args[0])
    }
    const off = () => (emitter.off ? emitter.off(event, onEv) : emitter.removeListener(event, onEv))
    const timer = setTimeout(() => { off(); reject(new Error(`timed out after ${timeout} ms waiting for event "${event}"`)) }, timeout)
    emitter.on(event, onEv)
  })
}

// ---------------------------------------------------------------------------------------------
// server

const LOG_TAIL = 20000

class ServerHandle {
  constructor ({ port, dir, persistent, keepDir, args = [] }) {
    this.extraArgs = args
    this.port = port
    this.dir = dir
    this.persistent = persistent
    this.keepDir = keepDir
    this.url = `ws://127.0.0.1:${port}`
    this.httpUrl = `http://127.0.0.1:${port}`
    this.proc = null
    this.log = ''
    this.starts = 0
    this.exits = []
  }

  get running () { return this.proc !== null }

  _command () {
    if (IS_PLAIT) {
      if (!fs.existsSync(PLAIT_BIN)) {
        throw new Error(`plait binary not found at ${PLAIT_BIN} — build it with cargo build --release ` +
          '(or set PLAIT_BIN=/path/to/plait, or run the suite with TARGET=reference)')
      }
      return {
        cmd: PLAIT_BIN,
        args: ['serve', '--host', '127.0.0.1', '--port', String(this.port), '--store', `sqlite://${path.join(this.dir, 'plait.db')}`, ...this.extraArgs],
        env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1', PLAIT_ADMIN_TOKEN: ADMIN_TOKEN }
      }
    }
    const env = { ...process.env, HOST: '127.0.0.1', PORT: String(this.port) }
    delete env.YPERSISTENCE
    if (this.persistent) env.YPERSISTENCE = path.join(this.dir, 'leveldb')
    return { cmd: process.execPath, args: [REFERENCE_SERVER], env }
  }

  /** Start (or restart) the server process and wait until it answers /healthz with 200. */
  async start ({ timeout = 15000 } = {}) {
    if (this.proc) throw new Error('server already running')
    const { cmd, args, env } = this._command()
    this.starts++
    this.log += `\n===== start #${this.starts}: ${cmd} ${args.join(' ')}\n`
    const child = spawn(cmd, args, { env, cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] })
    liveProcs.add(child)
    this.proc = child
    const append = (chunk) => {
      this.log += chunk.toString()
      if (this.log.length > LOG_TAIL * 2) this.log = this.log.slice(-LOG_TAIL)
      if (process.env.PLAIT_TEST_VERBOSE) process.stderr.write(chunk)
    }
    child.stdout.on('data', append)
    child.stderr.on('data', append)
    child.exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        liveProcs.delete(child)
        if (this.proc === child) this.proc = null
        const info = { code, signal }
        this.exits.push(info)
        this.log += `\n===== exited code=${code} signal=${signal}\n`
        resolve(info)
      })
    })
    let spawnError = null
    child.on('error', (e) => { spawnError = e })

    const deadline = Date.now() + timeout
    for (;;) {
      if (spawnError) throw new Error(`failed to start ${cmd}: ${spawnError.message}`)
      if (child.exitCode !== null || child.signalCode !== null || this.proc !== child) {
        throw new Error(`server exited during startup\n${this.logTail()}`)
      }
      if (await httpOk(`${this.httpUrl}/healthz`)) return this
      if (Date.now() > deadline) {
        throw new Error(`server did not answer GET /healthz with 200 within ${timeout} ms\n${this.logTail()}`)
      }
      await sleep(50)
    }
  }

  /**
   * Stop the server with `signal` and wait for it to exit. Falls back to SIGKILL after
   * `timeout` ms. Returns { code, signal, timedOut }.
   */
  async stop (signal = 'SIGTERM', { timeout = 10000 } = {}) {
    const child = this.proc
    if (!child) return { code: null, signal: null, timedOut: false, notRunning: true }
    if (IS_REFERENCE && this.persistent && signal !== 'SIGKILL') {
      // The reference server has no graceful shutdown: node dies on SIGTERM at once, possibly
      // with y-leveldb writes still queued. Give them a moment (plait must flush by itself).
      await sleep(300)
    }
    child.kill(signal)
    let timer
    const res = await Promise.race([
      child.exitPromise,
      new Promise((resolve) => { timer = setTimeout(() => resolve(null), timeout) })
    ])
    clearTimeout(timer)
    if (res) return { ...res, timedOut: false }
    child.kill('SIGKILL')
    const r2 = await child.exitPromise
    return { ...r2, timedOut: true }
  }

  /** Kill the server and remove its directory (used in t.after). */
  async dispose () {
    if (this.proc) await this.stop('SIGKILL', { timeout: 5000 })
    if (!this.keepDir) await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => {})
  }

  logTail (n = 4000) {
    const clean = this.log.replace(/\x1b\[[0-9;]*m/g, '') // strip ANSI colours
    return `----- server log (last ${n} chars, dir ${this.dir}) -----\n${clean.slice(-n)}\n-----`
  }
}

function httpOk (url) {
  return new Promise((resolve) => {
    const req = fetch(url, { signal: AbortSignal.timeout(1000) })
    req.then(async (res) => { await res.arrayBuffer().catch(() => {}); resolve(res.status === 200) }, () => resolve(false))
  })
}

/**
 * Start a fresh server (own port, own temp dir) and register its teardown on `t`.
 * opts.persistent: the test restarts the server and needs durable state (reference: y-leveldb).
 * opts.args: extra `plait serve` flags (plait only).
 */
export async function startServer (t, { persistent = false, args = [] } = {}) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'plait-js-'))
  const port = await getFreePort()
  const server = new ServerHandle({ port, dir, persistent, keepDir: !!process.env.PLAIT_TEST_KEEP, args })
  // registered before start so a failing start still cleans up
  t.after(() => server.dispose())
  try {
    await server.start()
  } catch (e) {
    await server.dispose()
    throw e
  }
  return server
}

/**
 * Attach the server log to failures: `await withServerLog(server, async () => { ... })`.
 */
export async function withServerLog (server, fn) {
  try {
    return await fn()
  } catch (e) {
    e.message += `\n${server.logTail()}`
    throw e
  }
}

// ---------------------------------------------------------------------------------------------
// providers

export const CLIENTS = {
  v1: WebsocketProviderV1, // y-websocket 1.5.4
  v3: WebsocketProviderV3 // y-websocket 3.x
}

/**
 * Create a stock WebsocketProvider for `room` on `server` and register its destruction on `t`.
 * opts.version: 'v1' (default) or 'v3'; opts.doc: existing Y.Doc; other opts are passed through.
 */
export function makeProvider (t, server, room, { version = 'v1', doc = new Y.Doc(), ...opts } = {}) {
  const Provider = CLIENTS[version]
  if (!Provider) throw new Error(`unknown client version ${version}`)
  const provider = new Provider(server.url ?? server, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    ...opts
  })
  provider.clientVersion = version
  if (t) {
    t.after(() => {
      try { provider.destroy() } catch {}
      try { doc.destroy() } catch {}
    })
  }
  return provider
}

/** Wait until the provider is connected and has received its SyncStep2. */
export async function waitSynced (provider, { timeout = 10000 } = {}) {
  await waitFor(() => provider.wsconnected && provider.synced, {
    timeout,
    message: () => `provider ${provider.doc.clientID} (${provider.clientVersion} room ${provider.roomname}) synced ` +
      `(wsconnected=${provider.wsconnected} synced=${provider.synced})`
  })
  return provider
}

/**
 * Record `fn(provider.doc)` at the moment the provider first becomes synced (i.e. right after it
 * applied its first SyncStep2). Call before the provider connects/syncs.
 */
export function captureAtSynced (provider, fn) {
  const box = { value: undefined, done: false }
  const handler = (isSynced) => {
    if (isSynced && !box.done) {
      box.done = true
      box.value = fn(provider.doc)
      provider.off('synced', handler)
    }
  }
  provider.on('synced', handler)
  return box
}

/** Wait for all providers to be synced. */
export const waitAllSynced = (providers, opts) => Promise.all(providers.map(p => waitSynced(p, opts)))

/**
 * A deterministic, comparable view of the usual shared types of a doc. Object keys are sorted
 * recursively: convergence is about content, key order inside JSON values is checked separately
 * (01-convergence, "key order").
 */
export function snapshot (doc) {
  return JSON.stringify(canonical({
    text: doc.getText('text').toString(),
    map: doc.getMap('map').toJSON(),
    array: doc.getArray('array').toJSON(),
    xml: doc.getXmlFragment('xml').toString()
  }))
}

export function canonical (v) {
  if (Array.isArray(v)) return v.map(canonical)
  if (v && typeof v === 'object' && !(v instanceof Uint8Array)) {
    return Object.fromEntries(Object.keys(v).sort().map(k => [k, canonical(v[k])]))
  }
  return v
}

/** True if all docs have identical state vectors and identical content. */
export function converged (docs) {
  const sv0 = Buffer.from(Y.encodeStateVector(docs[0])).toString('hex')
  const s0 = snapshot(docs[0])
  return docs.every(d => Buffer.from(Y.encodeStateVector(d)).toString('hex') === sv0 && snapshot(d) === s0)
}

/** Human readable state of several docs for failure messages. */
export function describeDocs (docs, max = 5) {
  return docs.slice(0, max).map((d, i) => `  doc[${i}] client=${d.clientID} ${snapshot(d).slice(0, 300)}`).join('\n') +
    (docs.length > max ? `\n  ... (${docs.length - max} more)` : '')
}
