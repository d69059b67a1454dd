// Shared machinery for the end-to-end tests: the server under test (plait, or the
// y-websocket reference server as a stand-in), headless Chromium via
// playwright-core, and small page helpers.
//
// Environment:
//   TARGET     plait | reference | auto (default auto: plait when PLAIT_BIN exists)
//   PLAIT_BIN  path to the plait binary (default ../target/release/plait)
//   CHROMIUM   path to Chromium (default /usr/bin/chromium)
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

export const demoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const artifactsDir = path.join(demoDir, 'e2e', 'artifacts')
fs.mkdirSync(artifactsDir, { recursive: true })

const plaitBin = path.resolve(demoDir, process.env.PLAIT_BIN || '../target/release/plait')
const requested = (process.env.TARGET || 'auto').toLowerCase()
if (!['auto', 'plait', 'reference'].includes(requested)) throw new Error(`TARGET must be plait, reference or auto, not ${requested}`)
export const target = requested === 'auto' ? (fs.existsSync(plaitBin) ? 'plait' : 'reference') : requested
if (target === 'plait' && !fs.existsSync(plaitBin)) throw new Error(`TARGET=plait but ${plaitBin} does not exist (build it or set PLAIT_BIN)`)
if (target === 'reference' && !fs.existsSync(path.join(demoDir, 'dist', 'index.html'))) {
  throw new Error('dist/index.html is missing: run `npm run build` first')
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/**
 * The server under test. One port serves the page (`/`), `/healthz` and the rooms,
 * for plait and for the reference stand-in alike. restart() keeps port and store.
 */
export class TestServer {
  constructor() {
    this.port = 0
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `plait-e2e-${target}-`))
    this.proc = null
    this.log = fs.createWriteStream(path.join(artifactsDir, `server-${target}.log`), { flags: 'w' })
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`
  }

  pageUrl(room) {
    return `${this.httpUrl}/?room=${encodeURIComponent(room)}`
  }

  /** The rich-text page (Tiptap over the Hocuspocus endpoint) for the same room. */
  tiptapUrl(room) {
    return `${this.httpUrl}/tiptap.html?room=${encodeURIComponent(room)}`
  }

  async start() {
    if (!this.port) this.port = await freePort()
    let cmd, args, env
    if (target === 'plait') {
      cmd = plaitBin
      args = ['serve', '--host', '127.0.0.1', '--port', String(this.port), '--store', `sqlite://${path.join(this.dataDir, 'plait.db')}`]
      env = { ...process.env }
    } else {
      cmd = process.execPath
      args = [path.join(demoDir, 'e2e', 'reference-server.mjs')]
      env = { ...process.env, HOST: '127.0.0.1', PORT: String(this.port), YPERSISTENCE: path.join(this.dataDir, 'leveldb') }
    }
    this.log.write(`\n--- start ${cmd} ${args.join(' ')}\n`)
    const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    proc.stdout.pipe(this.log, { end: false })
    proc.stderr.pipe(this.log, { end: false })
    this.proc = proc
    let exited = null
    proc.once('exit', (code, signal) => (exited = { code, signal }))
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline) {
      if (exited) throw new Error(`server exited during start (${JSON.stringify(exited)}); see e2e/artifacts/server-${target}.log`)
      try {
        const res = await fetch(`${this.httpUrl}/healthz`)
        if (res.status === 200) return
      } catch {
        // not listening yet
      }
      await sleep(100)
    }
    throw new Error('server did not become healthy within 30 s')
  }

  async stop() {
    const proc = this.proc
    if (!proc) return
    this.proc = null
    if (proc.exitCode !== null || proc.signalCode !== null) return
    const exited = new Promise((r) => proc.once('exit', r))
    proc.kill('SIGTERM')
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }

  async restart() {
    await this.stop()
    await this.start()
  }

  async dispose() {
    await this.stop()
    this.log.end()
    fs.rmSync(this.dataDir, { recursive: true, force: true })
  }
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
  })
}

// Messages the browser itself logs about network failures while a test has
// deliberately taken the server or the network away. They are not the page's own.
// Also ProseMirror's warning when y-prosemirror restores the local selection after a remote
// edit at a position between blocks: it logs it and falls back to a valid selection.
const BROWSER_NETWORK_NOISE = [/^WebSocket connection to '.*' failed/, /net::ERR_(CONNECTION_REFUSED|INTERNET_DISCONNECTED|CONNECTION_RESET|NETWORK_CHANGED)/, /^TextSelection endpoint not pointing into a node with inline content/]

/** Console errors/warnings and uncaught exceptions of every page, for the "no console errors" check. */
export class ConsoleLog {
  constructor() {
    this.problems = []
    this.ignored = []
  }

  watch(page, who) {
    page.on('console', (msg) => {
      const type = msg.type()
      if (type !== 'error' && type !== 'warning') return
      const text = msg.text()
      const entry = { who, type, text, location: msg.location()?.url }
      if (BROWSER_NETWORK_NOISE.some((re) => re.test(text))) this.ignored.push(entry)
      else this.problems.push(entry)
    })
    page.on('pageerror', (err) => this.problems.push({ who, type: 'pageerror', text: String(err?.stack || err) }))
  }
}

/**
 * A person in their own browser context (own storage, own IndexedDB), with a
 * fixed name and colour so the screenshots and assertions are predictable.
 */
export async function newUser(browser, consoleLog, { name, color, viewport = { width: 800, height: 560 } }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 })
  await context.addInitScript(({ name, color }) => {
    if (!localStorage.getItem('plait-demo:user')) localStorage.setItem('plait-demo:user', JSON.stringify({ name, color }))
  }, { name, color })
  const page = await context.newPage()
  consoleLog.watch(page, name)
  return { name, context, page }
}

export async function openRoom(page, server, room) {
  await page.goto(server.pageUrl(room))
  await page.locator('.cm-content').waitFor()
}

export async function waitForStatus(page, status, timeout = 10_000) {
  await page.locator(`#status[data-status="${status}"]`).waitFor({ timeout })
}

/** The rich-text page, its editor ready. */
export async function openTiptap(page, server, room) {
  await page.goto(server.tiptapUrl(room))
  await page.locator('.tiptap[contenteditable="true"]').waitFor()
}

/** The rich-text editor's text, one line per paragraph. */
export async function tiptapText(page) {
  return page.evaluate(() => window.plaitTiptap.editor.getText({ blockSeparator: '\n' }))
}

/** Type at the end of the rich-text document, as a person would with the keyboard. */
export async function typeInTiptap(page, text) {
  await page.locator('.tiptap').click()
  await page.keyboard.press('Control+End')
  await page.keyboard.type(text, { delay: 15 })
}

/** The editor's text as the user sees it. */
export async function editorText(page) {
  return page.evaluate(() => window.plaitDemo.view.state.doc.toString())
}

/** Poll fn() until it returns truthy; returns the value, or throws with the last value. */
export async function until(fn, { timeout = 5_000, interval = 50, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let last
  while (true) {
    last = await fn()
    if (last) return last
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message} (last: ${JSON.stringify(last)})`)
    await sleep(interval)
  }
}

/** Type at the end of the document (or the start), as a person would with the keyboard. */
export async function typeInEditor(page, text, { at = 'end' } = {}) {
  await page.locator('.cm-content').click()
  await page.keyboard.press(at === 'end' ? 'Control+End' : 'Control+Home')
  await page.keyboard.type(text, { delay: 15 })
}

export async function presenceNames(page) {
  return page.locator('#presence .peer-name').allTextContents()
}

export async function setOfflineSwitch(page, offline) {
  const toggle = page.locator('#offline-toggle')
  const pressed = (await toggle.getAttribute('aria-pressed')) === 'true'
  if (pressed !== offline) await toggle.click()
  await page.locator(`#offline-toggle[aria-pressed="${offline}"]`).waitFor()
}

export async function screenshot(page, name) {
  await page.screenshot({ path: path.join(artifactsDir, `${name}.png`) })
}

/** Two screenshots side by side, each under a small title bar, composed in a page of its own. */
export async function composeSideBySide(browser, shots, outPath) {
  const context = await browser.newContext({ viewport: { width: 1660, height: 680 }, deviceScaleFactor: 1 })
  const page = await context.newPage()
  const panes = shots
    .map(
      ({ title, png }) => `<figure><figcaption><i></i><i></i><i></i><span>${title}</span></figcaption><img src="data:image/png;base64,${png.toString('base64')}"></figure>`,
    )
    .join('')
  await page.setContent(`<!doctype html><style>
    body{margin:0;background:#e9ecf1;display:flex;gap:20px;padding:20px;font:13px system-ui,sans-serif}
    figure{margin:0;border-radius:8px;overflow:hidden;box-shadow:0 6px 20px rgb(0 0 0 / .18);background:#fff}
    figcaption{display:flex;align-items:center;gap:6px;padding:8px 10px;background:#dfe3ea;color:#444}
    figcaption i{width:11px;height:11px;border-radius:50%;background:#c5cad3}
    figcaption span{margin-left:10px}
    img{display:block}
  </style>${panes}`)
  await page.locator('body').screenshot({ path: outPath })
  await context.close()
}
