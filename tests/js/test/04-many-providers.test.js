// 4. 50 providers in one room each insert something; all converge to identical content with all
//    50 inserts. Half of them edit before their connection is up (sent in the SyncStep2 reply),
//    half after being synced (sent as Update messages).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  startServer, makeProvider, waitAllSynced, waitSynced, waitFor, uniqueRoom, converged,
  describeDocs, withServerLog
} from '../support.js'

const N = 50

test(`${N} providers in one room converge with all inserts`, async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('fifty')
    const providers = []
    for (let i = 0; i < N; i++) {
      const p = makeProvider(t, server, room, { version: i % 5 === 4 ? 'v3' : 'v1' })
      if (i % 2 === 0) edit(p.doc, i) // before connecting
      providers.push(p)
    }
    await waitAllSynced(providers, { timeout: 20000 })
    providers.forEach((p, i) => { if (i % 2 === 1) edit(p.doc, i) })

    const docs = providers.map(p => p.doc)
    await waitFor(() => docs.every(d => d.getArray('array').length === N) && converged(docs), {
      timeout: 20000,
      message: () => `all ${N} providers to converge\n` +
        `array lengths: ${docs.map(d => d.getArray('array').length).join(',')}\n${describeDocs(docs)}`
    })
    const items = docs[0].getArray('array').toJSON()
    assert.deepEqual([...items].sort((x, y) => x - y), Array.from({ length: N }, (_, i) => i))
    const map = docs[0].getMap('map').toJSON()
    assert.equal(Object.keys(map).length, N)
    const text = docs[0].getText('text').toString()
    for (let i = 0; i < N; i++) assert.ok(text.includes(`(${i})`), `text misses (${i})`)
    assert.equal(text.length, Array.from({ length: N }, (_, i) => `(${i})`).join('').length)

    const late = makeProvider(t, server, room)
    await waitSynced(late)
    assert.ok(converged([late.doc, docs[0]]), 'late joiner has everything right after synced')
  })
})

function edit (doc, i) {
  doc.transact(() => {
    doc.getArray('array').push([i])
    doc.getMap('map').set(`p${i}`, i)
    doc.getText('text').insert(0, `(${i})`)
  })
}
