// Service worker of the plait demo: keeps the page itself (index.html and the
// built assets) available when the network or the server is not, so that a
// reload while offline still opens the editor and shows the local copy from
// IndexedDB. Network first: a reachable server always serves the current bundle.
// It never touches WebSockets, /api/, /metrics or /healthz.
const CACHE = 'plait-demo-shell-v1'

const scopeUrl = new URL(self.registration.scope)

function isShellRequest(request) {
  if (request.method !== 'GET') return false
  const url = new URL(request.url)
  if (url.origin !== scopeUrl.origin || !url.pathname.startsWith(scopeUrl.pathname)) return false
  const rest = url.pathname.slice(scopeUrl.pathname.length)
  return rest === '' || rest === 'index.html' || rest.startsWith('assets/')
}

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE)
      const response = await fetch(scopeUrl.href, { cache: 'no-cache' })
      if (!response.ok) return
      const html = await response.clone().text()
      await cache.put(scopeUrl.href, response)
      const assets = [...html.matchAll(/(?:src|href)="(\.?\/?assets\/[^"]+)"/g)].map((m) => new URL(m[1], scopeUrl).href)
      await cache.addAll(assets)
      await self.skipWaiting()
    })(),
  )
})

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key !== CACHE) await caches.delete(key)
      await self.clients.claim()
    })(),
  )
})

self.addEventListener('fetch', (event) => {
  const { request } = event
  if (!isShellRequest(request)) return
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE)
      const key = request.mode === 'navigate' ? scopeUrl.href : request
      try {
        const response = await fetch(request)
        if (response.ok) await cache.put(key, response.clone())
        return response
      } catch (err) {
        const cached = await cache.match(key, { ignoreSearch: request.mode === 'navigate' })
        if (cached) return cached
        throw err
      }
    })(),
  )
})
