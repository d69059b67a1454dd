// 3. Offline editing with y-indexeddb (fake-indexeddb): sync, go offline, edit (persisted in
//    IndexedDB), "reload the page" (new Y.Doc loaded from IndexedDB, then connect) while another
//    client edited online; both converge with both edits, and the server keeps them.
import 'fake-indexeddb/auto'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { IndexeddbPersistence } from 'y-indexeddb'
import {
  Y, startServer, makeProvider, waitAllSynced, waitSynced, waitFor, uniqueRoom, converged,
  describeDocs, withServerLog
} from '../support.js'

for (const version of ['v1', 'v3']) {
  test(`offline edits via y-indexeddb survive a reload and merge with online edits (${version})`, async (t) => {
    const server = await startServer(t)
    await withServerLog(server, async () => {
      const room = uniqueRoom('offline')
      const dbName = `idb-${room}`

      // "page" of user A: IndexedDB first, then the websocket
      const docA = new Y.Doc()
      const idbA = new IndexeddbPersistence(dbName, docA)
      await idbA.whenSynced
      const a = makeProvider(t, server, room, { version, doc: docA })
      const b = makeProvider(t, server, room, { version })
      await waitAllSynced([a, b])

      docA.getText('text').insert(0, 'hello ')
      docA.getMap('map').set('shared', 'from A online')
      await waitFor(() => b.doc.getText('text').toString() === 'hello ', { message: 'online edit of A to reach B' })

      // A goes offline and edits; meanwhile B edits online
      a.disconnect()
      await waitFor(() => !a.wsconnected, { message: 'A to be disconnected' })
      docA.getText('text').insert(0, '[A-offline]')
      docA.getMap('map').set('offlineA', true)
      b.doc.getText('text').insert(b.doc.getText('text').length, '[B-online]')
      b.doc.getMap('map').set('onlineB', true)

      // B's edit reached the server (a fresh client sees it) but not A
      const probe = makeProvider(t, server, room, { version })
      await waitSynced(probe)
      await waitFor(() => probe.doc.getText('text').toString() === 'hello [B-online]', {
        message: () => `server to hold B's online edit, fresh client has "${probe.doc.getText('text')}"`
      })
      probe.destroy()
      assert.equal(docA.getText('text').toString(), '[A-offline]hello ')

      // reload: tear down the page (doc, provider, IndexedDB handle) ...
      a.destroy()
      await idbA.destroy()
      docA.destroy()

      // ... and start a new one: load from IndexedDB first, then connect
      const docA2 = new Y.Doc()
      const idbA2 = new IndexeddbPersistence(dbName, docA2)
      t.after(() => idbA2.destroy())
      await idbA2.whenSynced
      assert.equal(docA2.getText('text').toString(), '[A-offline]hello ', 'offline edit restored from IndexedDB before connecting')
      assert.equal(docA2.getMap('map').get('offlineA'), true)

      const a2 = makeProvider(t, server, room, { version, doc: docA2 })
      await waitSynced(a2)
      const expected = '[A-offline]hello [B-online]'
      await waitFor(() => converged([docA2, b.doc]) && docA2.getText('text').toString() === expected, {
        message: () => `A (reloaded) and B to converge on "${expected}"\n${describeDocs([docA2, b.doc])}`
      })
      for (const doc of [docA2, b.doc]) {
        assert.equal(doc.getText('text').toString(), expected)
        assert.deepEqual(doc.getMap('map').toJSON(), { shared: 'from A online', offlineA: true, onlineB: true })
      }

      // the server has the merged state: a fresh client gets it
      const fresh = makeProvider(t, server, room, { version })
      await waitSynced(fresh)
      await waitFor(() => fresh.doc.getText('text').toString() === expected, {
        message: () => `fresh client to see merged text, has "${fresh.doc.getText('text')}"`
      })

      // and B's online edit is now also in A's IndexedDB (y-indexeddb stores remote updates)
      await waitFor(async () => {
        const check = new Y.Doc()
        const idb = new IndexeddbPersistence(dbName, check)
        await idb.whenSynced
        const s = check.getText('text').toString()
        await idb.destroy()
        return s === expected
      }, { message: 'merged state stored in IndexedDB of A' })
    })
  })
}
