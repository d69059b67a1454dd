// 11. A mixed room: Yjs 13 clients (y-websocket 1.5.4 and 3.x) and Yjs 14 clients
//     (@y/websocket 4) edit text, map and array concurrently and converge both ways; presence
//     crosses generations (Yjs 14's 53-bit client ids into Yjs 13 awareness); a v14 client's
//     offline edits reach v13 clients on reconnect, and late joiners of either generation load
//     everything.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, startServer, makeProvider, waitSynced, waitFor, uniqueRoom, withServerLog } from '../support.js'
import { Y14, makeProviderV4, snapshot13, snapshot14, svHex } from '../v14.js'

const view = (p) => p.clientVersion === 'v4' ? snapshot14(p.doc) : snapshot13(p.doc)
const sv = (p) => p.clientVersion === 'v4' ? svHex(Y14, p.doc) : svHex(Y, p.doc)
const converged = (ps) => ps.every(p => view(p) === view(ps[0]) && sv(p) === sv(ps[0]))
const describe = (ps) => ps.map(p => `  ${p.clientVersion} ${p.doc.clientID}: ${view(p).slice(0, 300)}`).join('\n')

function edit (p, i) {
  if (p.clientVersion === 'v4') {
    const doc = p.doc
    doc.transact(() => {
      doc.get('text').insert(0, `<${i}>`)
      doc.get('map').setAttr(`k${i}`, { gen: 14, i, nested: { z: 1, a: [i] } })
      doc.get('array').push([`a${i}`])
    })
  } else {
    const doc = p.doc
    doc.transact(() => {
      doc.getText('text').insert(0, `<${i}>`)
      doc.getMap('map').set(`k${i}`, { gen: 13, i, nested: { z: 1, a: [i] } })
      doc.getArray('array').push([`a${i}`])
    })
  }
}

test('mixed v13 (y-websocket 1.5.4, 3.x) and v14 (@y/websocket 4) clients converge both ways', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('mixed')
    const ps = [
      makeProvider(t, server, room, { version: 'v1' }),
      makeProviderV4(t, server, room),
      makeProvider(t, server, room, { version: 'v3' }),
      makeProviderV4(t, server, room)
    ]
    await Promise.all(ps.map(p => waitSynced(p)))

    // v13 -> v14
    edit(ps[0], 0)
    await waitFor(() => ps[1].doc.get('text').toString() === '<0>' && ps[3].doc.get('map').getAttr('k0')?.gen === 13, {
      message: () => `a v13 edit to reach the v14 clients\n${describe(ps)}`
    })
    // v14 -> v13
    edit(ps[1], 1)
    await waitFor(() => ps[0].doc.getMap('map').get('k1')?.gen === 14 && ps[2].doc.getText('text').toString().includes('<1>'), {
      message: () => `a v14 edit to reach the v13 clients\n${describe(ps)}`
    })
    // all at once
    ps.forEach((p, i) => edit(p, 10 + i))
    await waitFor(() => converged(ps) && ps[0].doc.getArray('array').length === 6, {
      message: () => `4 mixed providers to converge\n${describe(ps)}`
    })
    const text = ps[2].doc.getText('text').toString()
    for (const i of [0, 1, 10, 11, 12, 13]) assert.ok(text.includes(`<${i}>`), `text misses <${i}>: ${text}`)
    assert.equal(text.length, '<0><1>'.length + '<10>'.length * 4)
    // key order inside a JSON value survives the trip between generations
    assert.deepEqual(Object.keys(ps[0].doc.getMap('map').get('k11').nested), ['z', 'a'])
    assert.deepEqual(Object.keys(ps[3].doc.get('map').getAttr('k10').nested), ['z', 'a'])

    // presence across generations, with a 53-bit id into Yjs 13 awareness and back
    ps[1].awareness.setLocalStateField('user', { name: 'v14' })
    ps[0].awareness.setLocalStateField('user', { name: 'v13' })
    await waitFor(() => ps[0].awareness.getStates().get(ps[1].doc.clientID)?.user?.name === 'v14' &&
      ps[3].awareness.getStates().get(ps[0].doc.clientID)?.user?.name === 'v13', {
      message: 'awareness to cross generations'
    })

    // late joiners of both generations load everything
    const late13 = makeProvider(t, server, room, { version: 'v3' })
    const late14 = makeProviderV4(t, server, room)
    await Promise.all([waitSynced(late13), waitSynced(late14)])
    assert.equal(view(late13), view(ps[0]))
    assert.equal(view(late14), view(ps[0]))
    assert.equal(sv(late14), sv(ps[0]))
  })
})

test('mixed: a v14 client edits offline, reconnects, and v13 clients get its edits (and it theirs)', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('mixed-offline')
    const v13 = makeProvider(t, server, room, { version: 'v3' })
    const v14 = makeProviderV4(t, server, room)
    await Promise.all([waitSynced(v13), waitSynced(v14)])
    v13.doc.getText('text').insert(0, 'online13 ')
    await waitFor(() => v14.doc.get('text').toString() === 'online13 ', { message: 'first edit on v14' })

    v14.disconnect()
    await waitFor(() => !v14.wsconnected, { message: 'v14 to disconnect' })
    for (let i = 0; i < 50; i++) v14.doc.get('text').insert(v14.doc.get('text').length, `o${i};`)
    v14.doc.get('map').setAttr('offline', true)
    v13.doc.getText('text').insert(0, 'while-away ')

    v14.connect()
    await waitFor(() => converged([v13, v14]) && v13.doc.getMap('map').get('offline') === true, {
      message: () => `offline v14 edits to converge with v13\n${describe([v13, v14])}`
    })
    const text = v13.doc.getText('text').toString()
    assert.ok(text.startsWith('while-away online13 '), text)
    assert.ok(text.endsWith('o49;'), text)
  })
})
