// 9. The admin CLI with real Yjs documents: a file exported by plait with --format yjs loads
//    with Y.applyUpdate, a file made by Yjs imports, and a restore (from plait's default
//    snapshot file) reaches connected providers, including one that edited offline before the
//    restore and reconnects after it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import fsp from 'node:fs/promises'
import path from 'node:path'
import {
  Y, startServer, makeProvider, waitSynced, waitFor, uniqueRoom, withServerLog, IS_PLAIT, PLAIT_BIN, ADMIN_TOKEN
} from '../support.js'

function cli (server, args) {
  return new Promise((resolve, reject) => {
    execFile(PLAIT_BIN, args, {
      env: { ...process.env, PLAIT_SERVER: server.httpUrl, PLAIT_ADMIN_TOKEN: ADMIN_TOKEN, RUST_LOG: 'warn' }
    }, (err, stdout, stderr) => err ? reject(new Error(`plait ${args.join(' ')} failed: ${stderr}`)) : resolve(stdout))
  })
}

test('export loads with Y.applyUpdate, and a Yjs-made file imports', { skip: !IS_PLAIT }, async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('cli')
    // Yjs → plait: a document made in JS, imported while a provider is connected.
    const watcher = makeProvider(t, server, room)
    await waitSynced(watcher)
    const made = new Y.Doc()
    made.getText('text').insert(0, 'made in yjs')
    made.getMap('map').set('answer', 42)
    made.getXmlFragment('xml').insert(0, [new Y.XmlElement('p')])
    const file = path.join(server.dir, 'made.ydoc')
    await fsp.writeFile(file, Y.encodeStateAsUpdate(made))
    await cli(server, ['import', room, file])
    await waitFor(() => watcher.doc.getText('text').toString() === 'made in yjs', { message: 'import to reach the provider' })
    assert.equal(watcher.doc.getMap('map').get('answer'), 42)

    // plait → Yjs: the export applies to a fresh Y.Doc and holds everything.
    watcher.doc.getText('text').insert(0, '+edited ')
    await waitFor(async () => true)
    const out = path.join(server.dir, 'out.ydoc')
    await waitFor(async () => {
      await cli(server, ['export', room, '-o', out, '--format', 'yjs'])
      const doc = new Y.Doc()
      Y.applyUpdate(doc, new Uint8Array(await fsp.readFile(out)))
      return doc.getText('text').toString() === '+edited made in yjs' && doc.getMap('map').get('answer') === 42 &&
        doc.getXmlFragment('xml').length === 1
    }, { message: 'export to hold every edit' })
  })
})

test('restore converges connected providers and merges an offline editor', { skip: !IS_PLAIT }, async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('restore')
    const a = makeProvider(t, server, room)
    const b = makeProvider(t, server, room)
    const c = makeProvider(t, server, room)
    await Promise.all([waitSynced(a), waitSynced(b), waitSynced(c)])
    a.doc.getText('text').insert(0, 'the good version.')
    a.doc.getMap('meta').set('title', 'good')
    await waitFor(() => c.doc.getText('text').toString() === 'the good version.', { message: 'c to sync' })
    const good = path.join(server.dir, 'good.plait')
    await cli(server, ['export', room, '-o', good])

    // c goes offline and edits; meanwhile a makes a mess online.
    c.disconnect()
    c.doc.getText('text').insert(0, '[offline note] ')
    a.doc.getText('text').insert(17, ' BROKEN EDIT')
    a.doc.getMap('meta').set('title', 'bad')
    await waitFor(() => b.doc.getText('text').toString().includes('BROKEN'), { message: 'the mess to reach b' })

    await cli(server, ['restore', room, '--from', good])
    for (const p of [a, b]) {
      await waitFor(() => p.doc.getText('text').toString() === 'the good version.' && p.doc.getMap('meta').get('title') === 'good',
        { message: () => `restore to reach a provider, has "${p.doc.getText('text')}"` })
    }
    // c reconnects: it still held the mess (it saw the mess? no: it was offline before it) and
    // its own offline note. The merge keeps the offline note, which the restore never saw,
    // and the restore, which c merges like any other edit.
    c.connect()
    await waitFor(() => {
      const texts = [a, b, c].map(p => p.doc.getText('text').toString())
      return texts.every(x => x === texts[0]) && texts[0].includes('[offline note]')
    }, { message: () => `all three to converge: ${[a, b, c].map(p => JSON.stringify(p.doc.getText('text').toString())).join(' ')}` })
    assert.equal(a.doc.getText('text').toString(), '[offline note] the good version.')
    assert.equal(c.doc.getMap('meta').get('title'), 'good')
  })
})
