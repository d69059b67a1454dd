// 10. The second generation: Yjs 14 (`@y/y`) with y-websocket 4 (`@y/websocket`). Three
//     providers edit text, map and array concurrently and converge; a late joiner has everything
//     at `synced`; awareness states (53-bit client ids) propagate and are removed on destroy.
//     A provider without awareness stays connected past y-websocket 4's 30 s no-message
//     watchdog in a quiet room (the server's keepalive; ~36 s).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, waitSynced, uniqueRoom, withServerLog, sleep } from '../support.js'
import { Y14, makeProviderV4, snapshot14, svHex } from '../v14.js'

const converged14 = (docs) => docs.every(d => svHex(Y14, d) === svHex(Y14, docs[0]) && snapshot14(d) === snapshot14(docs[0]))

function edit14 (doc, i) {
  doc.transact(() => {
    doc.get('text').insert(0, `<t${i}>`)
    doc.get('map').setAttr(`key${i}`, { from: i, list: [i, i * 10], big: 2 ** 40 + i })
    doc.get('map').setAttr('contested', `value-from-${i}`)
    doc.get('array').push([`a${i}`, i])
  })
  const text = doc.get('text')
  text.insert(text.length, `[end${i}]`)
}

test('v14: 3 concurrent @y/websocket 4 providers converge on text, map and array; a late joiner has it all at synced', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('y14')
    const providers = [0, 1, 2].map(() => makeProviderV4(t, server, room))
    await Promise.all(providers.map(p => waitSynced(p)))
    const docs = providers.map(p => p.doc)
    assert.ok(docs.some(d => d.clientID > 2 ** 32), 'Yjs 14 client ids are 53-bit (expected at least one above 2^32)')

    docs.forEach((doc, i) => edit14(doc, i))
    await waitFor(() => converged14(docs) && docs[0].get('array').length === 6, {
      message: () => `3 v14 providers to converge:\n${docs.map(snapshot14).join('\n')}`
    })
    const text = docs[0].get('text').toString()
    for (let i = 0; i < 3; i++) {
      assert.ok(text.includes(`<t${i}>`) && text.includes(`[end${i}]`), text)
      assert.deepEqual(docs[0].get('map').getAttr(`key${i}`), { from: i, list: [i, i * 10], big: 2 ** 40 + i })
    }
    assert.equal(text.length, '<t0>[end0]'.length * 3)

    // deletes converge too
    docs[1].get('text').delete(0, 2)
    docs[2].get('map').deleteAttr('contested')
    docs[0].get('array').delete(0, 1)
    await waitFor(() => converged14(docs) && docs[0].get('array').length === 5 && !docs[1].get('map').hasAttr('contested'), {
      message: () => `deletes to converge:\n${docs.map(snapshot14).join('\n')}`
    })

    const late = makeProviderV4(t, server, room)
    let atSynced = null
    late.on('synced', (s) => { if (s && atSynced === null) atSynced = snapshot14(late.doc) })
    await waitSynced(late)
    assert.equal(atSynced, snapshot14(docs[0]), 'late joiner lacked content when it became synced')
    assert.equal(svHex(Y14, late.doc), svHex(Y14, docs[0]))
  })
})

test('v14: awareness propagates with 53-bit client ids and is removed when a provider is destroyed', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('y14-aw')
    const [a, b, c] = [0, 1, 2].map(() => makeProviderV4(t, server, room))
    await Promise.all([a, b, c].map(p => waitSynced(p)))
    const idA = a.doc.clientID
    a.awareness.setLocalStateField('user', { name: 'alice' })
    b.awareness.setLocalStateField('user', { name: 'bob' })
    for (const p of [b, c]) {
      await waitFor(() => p.awareness.getStates().get(idA)?.user?.name === 'alice', { message: `alice (client ${idA}) on ${p.doc.clientID}` })
    }
    await waitFor(() => a.awareness.getStates().get(b.doc.clientID)?.user?.name === 'bob', { message: 'bob on a' })
    a.awareness.setLocalStateField('cursor', { head: 7 })
    await waitFor(() => c.awareness.getStates().get(idA)?.cursor?.head === 7, { message: "alice's cursor on c" })

    a.destroy()
    await waitFor(() => !b.awareness.getStates().has(idA) && !c.awareness.getStates().has(idA), {
      timeout: 5000, message: "alice's state to disappear after destroy"
    })
  })
})

test('v14: a provider without awareness stays connected past the 30 s watchdog in a quiet room (keepalive)', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const p = makeProviderV4(t, server, uniqueRoom('y14-quiet'))
    // a backend or read-only viewer: no presence, so no awareness renewals to echo
    p.awareness.setLocalState(null)
    const closes = []
    p.on('connection-close', (ev) => closes.push({ at: Date.now(), code: ev?.code }))
    await waitSynced(p)
    const t0 = Date.now()
    await sleep(36000) // the behaviour under test is a timeout; there is nothing to wait for
    assert.deepEqual(closes, [], `the v4 provider was disconnected after ${closes.map(c => ((c.at - t0) / 1000).toFixed(1) + ' s').join(', ')} ` +
      '(its no-message watchdog fired: the server sent nothing for 30 s)')
    assert.equal(p.wsconnected, true)
  })
})
