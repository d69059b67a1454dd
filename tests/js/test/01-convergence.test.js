// 1. Three stock providers edit Text, Map, Array and XmlFragment concurrently and converge;
//    a late joiner receives the full state. Run with y-websocket 1.5.4, 3.x, and a mix.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  Y, startServer, makeProvider, waitAllSynced, waitSynced, waitFor, uniqueRoom,
  converged, snapshot, describeDocs, withServerLog
} from '../support.js'

/** Concurrent edits by provider number i into every shared type. */
function editAll (doc, i) {
  doc.transact(() => {
    doc.getText('text').insert(0, `<t${i}>`)
    doc.getMap('map').set(`key${i}`, { from: i, list: [i, i * 10] })
    doc.getMap('map').set('contested', `value-from-${i}`)
    doc.getArray('array').push([`a${i}`, i])
  })
  const el = new Y.XmlElement('p')
  el.setAttribute('data-from', String(i))
  el.insert(0, [new Y.XmlText(`para ${i}`)])
  doc.getXmlFragment('xml').insert(0, [el])
  // a second, separate text edit (own transaction) to exercise several updates per client
  const t = doc.getText('text')
  t.insert(t.length, `[end${i}]`)
}

function assertContainsAllEdits (doc, n) {
  const text = doc.getText('text').toString()
  const map = doc.getMap('map').toJSON()
  const array = doc.getArray('array').toJSON()
  const xml = doc.getXmlFragment('xml').toString()
  for (let i = 0; i < n; i++) {
    assert.ok(text.includes(`<t${i}>`) && text.includes(`[end${i}]`), `text misses edits of provider ${i}: ${text}`)
    assert.deepEqual(map[`key${i}`], { from: i, list: [i, i * 10] }, `map misses key${i}`)
    assert.ok(array.includes(`a${i}`) && array.includes(i), `array misses edits of provider ${i}: ${JSON.stringify(array)}`)
    assert.ok(xml.includes(`<p data-from="${i}">para ${i}</p>`), `xml misses paragraph ${i}: ${xml}`)
  }
  assert.equal(text.length, Array.from({ length: n }, (_, i) => `<t${i}>[end${i}]`).join('').length, `text has unexpected length: ${text}`)
  assert.equal(array.length, 2 * n)
  assert.equal(doc.getXmlFragment('xml').length, n)
  assert.match(map.contested, /^value-from-\d$/)
}

for (const versions of [['v1', 'v1', 'v1'], ['v3', 'v3', 'v3'], ['v1', 'v3', 'v1']]) {
  test(`converge: 3 concurrent providers (${versions.join('+')}) and a late joiner`, async (t) => {
    const server = await startServer(t)
    await withServerLog(server, async () => {
      const room = uniqueRoom('converge')
      const providers = versions.map(version => makeProvider(t, server, room, { version }))
      await waitAllSynced(providers)
      const docs = providers.map(p => p.doc)

      // all edits happen in the same tick: truly concurrent with respect to the server
      docs.forEach((doc, i) => editAll(doc, i))

      await waitFor(() => converged(docs) && docs[0].getArray('array').length === 2 * docs.length, {
        message: () => `3 providers to converge\n${describeDocs(docs)}`
      })
      docs.forEach(doc => assertContainsAllEdits(doc, docs.length))

      // late joiner (other client version than the first provider, to mix implementations)
      const late = makeProvider(t, server, room, { version: versions[0] === 'v1' ? 'v3' : 'v1' })
      await waitSynced(late)
      // the SyncStep2 that made it `synced` must already carry the full state
      assert.equal(snapshot(late.doc), snapshot(docs[0]), 'late joiner content right after synced')
      assert.deepEqual(Y.encodeStateVector(late.doc), Y.encodeStateVector(docs[0]))
      assertContainsAllEdits(late.doc, docs.length)

      // and it takes part in editing afterwards
      late.doc.getText('text').insert(0, 'LATE')
      await waitFor(() => converged([...docs, late.doc]), {
        message: () => `late joiner edit to reach everybody\n${describeDocs([...docs, late.doc])}`
      })
      assert.ok(docs[1].getText('text').toString().startsWith('LATE'))
    })
  })
}

test('rooms are isolated, and query params do not change the room', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const roomA = uniqueRoom('iso-a')
    const roomB = uniqueRoom('iso-b')
    const a1 = makeProvider(t, server, roomA)
    const a2 = makeProvider(t, server, roomA, { params: { token: 'abc', x: 'y z' } })
    const b1 = makeProvider(t, server, roomB)
    await waitAllSynced([a1, a2, b1])
    a1.doc.getText('text').insert(0, 'only-in-A')
    b1.doc.getText('text').insert(0, 'only-in-B')
    await waitFor(() => a2.doc.getText('text').toString() === 'only-in-A', {
      message: () => `room A edit to reach the provider with query params (has "${a2.doc.getText('text')}")`
    })
    // a late joiner of B must see only B's content (after it synced, nothing of A)
    const b2 = makeProvider(t, server, roomB)
    await waitSynced(b2)
    await waitFor(() => b2.doc.getText('text').toString() === 'only-in-B', { message: () => `B content in b2, got "${b2.doc.getText('text')}"` })
    assert.equal(b1.doc.getText('text').toString(), 'only-in-B')
    assert.equal(a1.doc.getText('text').toString(), 'only-in-A')
  })
})

test('key order of JSON objects stored in Y.Map / Y.Array survives the live relay and SyncStep2', async (t) => {
  // Yjs keeps a plain object's keys in insertion order (ContentAny); the reference server relays
  // the bytes as they are. A server that decodes and re-encodes updates through a hash map
  // shuffles them, so clients see differently ordered objects than their author.
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('keyorder')
    const a = makeProvider(t, server, room)
    const b = makeProvider(t, server, room)
    await waitAllSynced([a, b])
    const obj = { zeta: 1, yankee: 2, xray: 3, whiskey: 4, victor: 5, uniform: 6, tango: 7, sierra: { romeo: 1, quebec: 2, papa: 3 } }
    a.doc.getMap('map').set('obj', obj)
    a.doc.getArray('array').push([obj])
    await waitFor(() => b.doc.getMap('map').has('obj') && b.doc.getArray('array').length === 1, { message: 'object to reach b' })
    const order = o => JSON.stringify(o)
    assert.equal(order(b.doc.getMap('map').get('obj')), order(obj), 'key order after relay (Update) in Y.Map')
    assert.equal(order(b.doc.getArray('array').get(0)), order(obj), 'key order after relay (Update) in Y.Array')
    const late = makeProvider(t, server, room)
    await waitSynced(late)
    // A late joiner's SyncStep2 is encoded by yrs from the document; plait's patched yrs keeps
    // key order there too (15-any-fidelity covers every value type, through a restart).
    assert.deepEqual(late.doc.getMap('map').get('obj'), obj, 'content in the SyncStep2 of a late joiner')
    assert.equal(order(late.doc.getMap('map').get('obj')), order(obj), 'key order in the SyncStep2 (Y.Map)')
    assert.equal(order(late.doc.getArray('array').get(0)), order(obj), 'key order in the SyncStep2 (Y.Array)')
  })
})
