// Stand-in for plait while its binary does not exist: the y-websocket@1.5.4
// reference server's own connection handler (bin/utils.js, the same code that
// `node node_modules/y-websocket/bin/server.js` runs) plus what plait adds on the
// same port: the built demo from dist/ at `/` and `/healthz`.
//
//   HOST=127.0.0.1 PORT=1234 YPERSISTENCE=/tmp/ydb node e2e/reference-server.mjs
//
// YPERSISTENCE (a LevelDB directory, handled by bin/utils.js) makes rooms survive
// a restart, like plait's --store.
import http from 'node:http'
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const WebSocket = require('ws')
const { setupWSConnection } = require('y-websocket/bin/utils')

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.resolve(process.env.DIST || path.join(here, '..', 'dist'))
const host = process.env.HOST || '127.0.0.1'
const port = Number(process.env.PORT || 1234)

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.ico': 'image/x-icon',
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url || '/', 'http://x')
  if (url.pathname === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
    return
  }
  const rel = url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname).replace(/^\/+/, '')
  const file = path.resolve(dist, rel)
  if (!file.startsWith(dist + path.sep)) {
    res.writeHead(403).end()
    return
  }
  fs.readFile(file, (err, body) => {
    if (err) {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end('not found')
      return
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-cache' })
    res.end(body)
  })
})

const wss = new WebSocket.Server({ noServer: true })
wss.on('connection', setupWSConnection)
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request))
})

server.listen(port, host, () => {
  console.log(`reference server on http://${host}:${port} (dist: ${dist}, persistence: ${process.env.YPERSISTENCE || 'none'})`)
})

// Exit at once (open WebSockets would keep server.close() waiting); LevelDB has
// already written each update when it was applied.
const stop = () => process.exit(0)
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
