// 12. Confirmed edits ("saved"): the y-websocket master provider marks a local edit confirmed
//     when the server sends it back inside a sync step 2 or update (`sync-status`). The published
//     @y/websocket 4.0.0-3 lacks that API, so `ConfirmingProvider` (v14.js) adds the same rule.
//     plait echoes every update to its sender too, with strict durability (the default) only
//     once it is committed: so "confirmed" means "stored".
//
//     - after each edit (text, map, array, delete) the client gets back to confirmed/green;
//     - while the store is unavailable (another process holds SQLite's write lock) edits stay
//       unconfirmed (yellow, then red after 8 s), nobody else receives them, and once the store
//       is back they are confirmed and nothing is lost: the observer, a fresh client and a
//       fresh client after a restart have every edit.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import path from 'node:path'
import { IS_REFERENCE, startServer, makeProvider, waitSynced, waitFor, uniqueRoom, withServerLog, sleep } from '../support.js'
import { ConfirmingProvider, makeProviderV4 } from '../v14.js'

const confirmed = (p) => p.syncStatus.localUpdatesSynced && p.syncStatus.status === 'green'

test('sync-status: every edit of a v4 client is confirmed by the server', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('confirm')
    const p = makeProviderV4(t, server, room, { Provider: ConfirmingProvider })
    const other = makeProviderV4(t, server, room)
    await Promise.all([waitSynced(p), waitSynced(other)])
    assert.ok(confirmed(p), `fresh provider: ${JSON.stringify(p.syncStatus)}`)
    const edits = [
      (d) => d.get('text').insert(0, 'hello'),
      (d) => d.get('map').setAttr('k', { a: 1 }),
      (d) => d.get('array').push([1, 2, 3]),
      (d) => d.get('text').delete(0, 2),
      (d) => d.get('map').deleteAttr('k')
    ]
    for (const [i, edit] of edits.entries()) {
      edit(p.doc)
      assert.equal(p.syncStatus.localUpdatesSynced, false, `edit ${i} counted as confirmed before the server answered`)
      await waitFor(() => confirmed(p), {
        timeout: 5000,
        message: () => `edit ${i} to be confirmed by the server (status ${JSON.stringify(p.syncStatus)})`
      })
    }
    // an edit of somebody else does not confirm ours, and ours reached the other client
    assert.equal(other.doc.get('text').toString(), 'llo')
    other.doc.get('text').insert(0, 'x')
    await waitFor(() => p.doc.get('text').toString() === 'xllo', { message: "the other client's edit" })
    assert.ok(confirmed(p))
  })
})

/** Holds SQLite's write lock on `db` from another process until `release()`. */
async function lockSqlite (db) {
  const child = spawn('python3', ['-c', [
    'import sqlite3, sys',
    'c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)',
    "c.execute('BEGIN IMMEDIATE')",
    "print('locked', flush=True)",
    'sys.stdin.read()',
    "c.execute('ROLLBACK')"
  ].join('\n'), db], { stdio: ['pipe', 'pipe', 'inherit'] })
  await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => { if (d.toString().includes('locked')) resolve() })
    child.on('exit', (code) => reject(new Error(`sqlite locker exited with ${code}`)))
  })
  return {
    release: () => new Promise((resolve) => { child.on('exit', resolve); child.stdin.end() })
  }
}

const python = spawnSync('python3', ['-c', 'import sqlite3'], { stdio: 'ignore' }).status === 0

test('sync-status: with the store unavailable edits stay unconfirmed, and nothing is lost once it is back',
  { skip: IS_REFERENCE ? 'the reference server has no store to take away' : !python && 'needs python3 (with sqlite3) to hold the SQLite write lock' },
  async (t) => {
    const server = await startServer(t)
    await withServerLog(server, async () => {
      const room = uniqueRoom('outage')
      const p = makeProviderV4(t, server, room, { Provider: ConfirmingProvider })
      const observer = makeProvider(t, server, room, { version: 'v3' })
      await Promise.all([waitSynced(p), waitSynced(observer)])
      p.doc.get('text').insert(0, 'stored;')
      await waitFor(() => confirmed(p), { message: 'the first edit to be confirmed' })
      await waitFor(() => observer.doc.getText('text').toString() === 'stored;', { message: 'first edit on the observer' })

      const lock = await lockSqlite(path.join(server.dir, 'plait.db'))
      let released = false
      t.after(() => { if (!released) return lock.release() })
      const lockedAt = Date.now()
      const statuses = new Set()
      p.on('sync-status', (s) => statuses.add(s.status))
      for (let i = 0; i < 5; i++) {
        p.doc.get('text').insert(p.doc.get('text').length, `pending${i};`)
        p.doc.get('array').push([i])
        await sleep(700)
      }
      // past the 8 s the master provider allows before turning red
      while (Date.now() - lockedAt < 9000) {
        assert.equal(p.syncStatus.localUpdatesSynced, false,
          `an edit was confirmed ${Date.now() - lockedAt} ms into the store outage: the server sent it back before storing it`)
        await sleep(250)
      }
      assert.equal(p.syncStatus.status, 'red', JSON.stringify(p.syncStatus))
      assert.ok(statuses.has('yellow'), `statuses seen: ${[...statuses]}`)
      assert.equal(p.wsconnected, true, 'the writer was disconnected during the outage')
      assert.equal(observer.doc.getText('text').toString(), 'stored;', 'an unstored edit reached another client')

      released = true
      await lock.release()
      const expected = 'stored;' + [0, 1, 2, 3, 4].map(i => `pending${i};`).join('')
      await waitFor(() => confirmed(p), {
        timeout: 15000, message: () => `edits to be confirmed once the store is back (${JSON.stringify(p.syncStatus)})`
      })
      assert.equal(p.doc.get('text').toString(), expected)
      await waitFor(() => observer.doc.getText('text').toString() === expected && observer.doc.getArray('array').length === 5, {
        message: () => `the observer to get every edit: ${observer.doc.getText('text').toString()}`
      })
      const fresh = makeProvider(t, server, room, { version: 'v1' })
      await waitSynced(fresh)
      assert.equal(fresh.doc.getText('text').toString(), expected)

      // and they are on disk: a restart serves them to a client that never saw them
      p.destroy()
      observer.destroy()
      fresh.destroy()
      const stopped = await server.stop('SIGTERM')
      assert.equal(stopped.code, 0)
      await server.start()
      const after = makeProviderV4(t, server, room)
      await waitSynced(after)
      assert.equal(after.doc.get('text').toString(), expected)
      assert.deepEqual(after.doc.get('array').toArray(), [0, 1, 2, 3, 4])
    })
  })
