// 8. Keep-alive (PROTOCOL.md §5): a stock client closes and reconnects when no message arrived for
//    30 s. A lone, idle client in a room must stay connected: the server echoes its awareness
//    renewal (every 15 s) or sends something else. Takes ~36 s; both client versions at once.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, makeProvider, waitSynced, uniqueRoom, withServerLog, sleep } from '../support.js'

test('a lone idle provider stays connected past the 30 s client watchdog (v1 and v3)', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const providers = ['v1', 'v3'].map(version => makeProvider(t, server, uniqueRoom(`lone-${version}`), { version }))
    const closes = providers.map(() => [])
    providers.forEach((p, i) => p.on('connection-close', (ev) => closes[i].push({ at: Date.now(), code: ev?.code })))
    await Promise.all(providers.map(p => waitSynced(p)))
    const t0 = Date.now()
    await sleep(36000) // the behaviour under test is a timeout; there is nothing to wait for
    providers.forEach((p, i) => {
      assert.deepEqual(closes[i], [], `${p.clientVersion} provider was disconnected after ` +
        `${closes[i].map(c => ((c.at - t0) / 1000).toFixed(1) + ' s').join(', ')} (its 30 s no-message watchdog fired: the server neither echoed its awareness renewal nor sent anything else)`)
      assert.equal(p.wsconnected, true)
    })
  })
})
