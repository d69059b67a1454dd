// 5. Restart with SIGTERM (graceful) and SIGINT: content survives, and a provider that stays
//    around through the outage merges its offline edits without duplication.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  startServer, makeProvider, waitSynced, waitFor, uniqueRoom, converged, describeDocs,
  withServerLog, IS_PLAIT, RESTART_SKIP, captureAtSynced
} from '../support.js'

function assertGraceful (res, signal) {
  assert.equal(res.timedOut, false, `server did not exit within 10 s of ${signal}`)
  if (IS_PLAIT) assert.deepEqual({ code: res.code, signal: res.signal }, { code: 0, signal: null }, `plait should exit 0 on ${signal}`)
}

for (const version of ['v1', 'v3']) {
  test(`restart (SIGTERM): a connected provider's edits before, during and after the outage (${version})`, { skip: RESTART_SKIP }, async (t) => {
    const server = await startServer(t, { persistent: true })
    await withServerLog(server, async () => {
      const room = uniqueRoom('restart')
      const p = makeProvider(t, server, room, { version })
      const observer = makeProvider(t, server, room, { version })
      await waitSynced(p)
      await waitSynced(observer)

      p.doc.getText('text').insert(0, 'before;')
      p.doc.getArray('array').push(['before'])
      await waitFor(() => observer.doc.getText('text').toString() === 'before;', { message: 'edit before outage to reach the observer' })
      observer.destroy()

      const res = await server.stop('SIGTERM')
      assertGraceful(res, 'SIGTERM')
      await waitFor(() => !p.wsconnected, { message: 'provider to notice the outage' })

      // offline edits while the server is down
      p.doc.getText('text').insert(p.doc.getText('text').length, 'during;')
      p.doc.getArray('array').push(['during'])

      await server.start()
      await waitFor(() => p.wsconnected && p.synced, { timeout: 15000, message: 'provider to reconnect and resync by itself' })

      p.doc.getText('text').insert(p.doc.getText('text').length, 'after;')
      p.doc.getArray('array').push(['after'])

      const late = makeProvider(t, server, room, { version })
      await waitSynced(late)
      await waitFor(() => converged([p.doc, late.doc]) && late.doc.getArray('array').length >= 3, {
        message: () => `late joiner to see all edits\n${describeDocs([p.doc, late.doc])}`
      })
      for (const doc of [p.doc, late.doc]) {
        assert.equal(doc.getText('text').toString(), 'before;during;after;')
        assert.deepEqual(doc.getArray('array').toJSON(), ['before', 'during', 'after'])
      }

      // once more, with nobody connected: the store alone must reproduce exactly this
      p.destroy()
      late.destroy()
      assertGraceful(await server.stop('SIGTERM'), 'SIGTERM')
      await server.start()
      const fresh = makeProvider(t, server, room, { version })
      await waitSynced(fresh)
      await waitFor(() => fresh.doc.getArray('array').length >= 3, { message: () => `fresh client after 2nd restart, has ${fresh.doc.getArray('array').toJSON()}` })
      assert.equal(fresh.doc.getText('text').toString(), 'before;during;after;')
      assert.deepEqual(fresh.doc.getArray('array').toJSON(), ['before', 'during', 'after'])
    })
  })
}

test('restart (SIGINT): content is served from the store, no client re-uploads it', { skip: RESTART_SKIP }, async (t) => {
  const server = await startServer(t, { persistent: true })
  await withServerLog(server, async () => {
    const rooms = [uniqueRoom('sigint-a'), uniqueRoom('sigint-b')]
    const writers = rooms.map(room => makeProvider(t, server, room))
    const readers = rooms.map(room => makeProvider(t, server, room))
    await Promise.all([...writers, ...readers].map(p => waitSynced(p)))
    writers.forEach((w, i) => {
      for (let k = 0; k < 20; k++) w.doc.getText('text').insert(w.doc.getText('text').length, `${i}:${k};`)
      w.doc.getMap('map').set('room', rooms[i])
    })
    const expected = writers.map(w => w.doc.getText('text').toString())
    await Promise.all(readers.map((r, i) => waitFor(() => r.doc.getText('text').toString() === expected[i], { message: `reader ${i} to get all edits` })))
    // nobody who could re-upload is left
    for (const p of [...writers, ...readers]) p.destroy()

    assertGraceful(await server.stop('SIGINT'), 'SIGINT')
    await server.start()

    for (let i = 0; i < rooms.length; i++) {
      const fresh = makeProvider(t, server, rooms[i])
      const atSynced = captureAtSynced(fresh, doc => doc.getText('text').toString())
      await waitSynced(fresh)
      if (IS_PLAIT) {
        // PROTOCOL.md §4 rule 6: no SyncStep1/2 before the room is loaded from the store. (The
        // reference server breaks this rule, y-websocket#81: it serves an empty doc first.)
        assert.equal(atSynced.value, expected[i], 'the first SyncStep2 after a restart must already contain the persisted state')
      }
      await waitFor(() => fresh.doc.getText('text').toString() === expected[i], {
        message: () => `fresh client in ${rooms[i]} to get the persisted text, has "${fresh.doc.getText('text')}"`
      })
      assert.equal(fresh.doc.getMap('map').get('room'), rooms[i])
    }
  })
})
