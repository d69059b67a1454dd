// 7. Wire-level details stock clients rely on (PROTOCOL.md §3-§4), checked with a raw client.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  startServer, makeProvider, waitSynced, waitAllSynced, waitFor, uniqueRoom, withServerLog, converged, Y, IS_REFERENCE
} from '../support.js'
import {
  RawClient, MSG_SYNC, MSG_AWARENESS, encodeSyncStep1, encodeSyncStep2, encodeUpdate,
  encodeQueryAwareness, encodeAwareness, awarenessProtocol
} from '../raw-client.js'

const isSS1 = m => m.type === MSG_SYNC && m.syncType === 0
const isSS2 = m => m.type === MSG_SYNC && m.syncType === 1
const hasStates = (...ids) => m => m.type === MSG_AWARENESS && ids.every(id => m.states.some(s => s.clientID === id && s.state !== null))

function rawClient (t, server, room) {
  const c = new RawClient(server.url, room)
  t.after(() => c.close())
  return c
}

function assertWellFramed (client) {
  assert.equal(client.textFrames, 0, 'server sent text frames; the protocol is binary only')
  for (const m of client.messages) {
    assert.equal(m.trailing, 0, `frame of type ${m.type} carries ${m.trailing} extra bytes (stock clients read only one message per frame)`)
  }
}

for (const version of ['v1', 'v3']) {
  test(`a provider that never sets awareness still gets SyncStep2 and synced fires (${version})`, async (t) => {
    const server = await startServer(t)
    await withServerLog(server, async () => {
      const room = uniqueRoom('noaw')
      const writer = makeProvider(t, server, room, { version })
      await waitSynced(writer)
      writer.doc.getText('text').insert(0, 'content')
      // a late joiner whose local awareness state is null: it sends SyncStep1 only
      const p = makeProvider(t, server, room, { version, connect: false })
      p.awareness.setLocalState(null)
      p.connect()
      await waitSynced(p)
      await waitFor(() => p.doc.getText('text').toString() === 'content', { message: 'content for the awareness-less provider' })
      // in an empty room too
      const q = makeProvider(t, server, uniqueRoom('noaw-empty'), { version, connect: false })
      q.awareness.setLocalState(null)
      q.connect()
      await waitSynced(q)
    })
  })
}

test('raw: server sends SyncStep1 on connect and answers every SyncStep1 with a SyncStep2', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('raw-sync')
    const writer = makeProvider(t, server, room)
    await waitSynced(writer)
    writer.doc.getText('text').insert(0, 'abc')
    writer.doc.getMap('map').set('k', 1)
    const observer = makeProvider(t, server, room)
    await waitSynced(observer)
    await waitFor(() => observer.doc.getText('text').toString() === 'abc', { message: 'edit to be on the server' })

    const c = rawClient(t, server, room)
    await c.opened
    const ss1 = await c.next(isSS1, { message: "the server's SyncStep1 right after connect, without being asked" })
    assert.deepEqual(Y.decodeStateVector(ss1.data), Y.decodeStateVector(Y.encodeStateVector(writer.doc)), "server SyncStep1 carries the room's state vector")

    // a client with an empty doc asks for everything (this client never sends awareness)
    const local = new Y.Doc()
    let from = c.messages.length
    c.send(encodeSyncStep1(local))
    const ss2 = await c.next(isSS2, { from, message: 'SyncStep2 in reply to our SyncStep1' })
    Y.applyUpdate(local, ss2.data)
    assert.equal(local.getText('text').toString(), 'abc')
    assert.equal(local.getMap('map').get('k'), 1)

    // ask again with a full state vector: still a SyncStep2 (resyncInterval relies on it), now tiny
    from = c.messages.length
    c.send(encodeSyncStep1(local))
    const ss2b = await c.next(isSS2, { from, message: 'SyncStep2 in reply to a second SyncStep1' })
    const probe = new Y.Doc()
    Y.applyUpdate(probe, Y.encodeStateAsUpdate(local))
    Y.applyUpdate(probe, ss2b.data)
    assert.ok(converged([probe, local]), 'second SyncStep2 adds nothing new')

    // our SyncStep2 (the reply to the server's SyncStep1) is applied like an update and broadcast
    local.getText('text').insert(3, 'def')
    c.send(encodeSyncStep2(Y.encodeStateAsUpdate(local, ss1.data)))
    await waitFor(() => writer.doc.getText('text').toString() === 'abcdef', { message: () => `our SyncStep2 to reach the provider, has "${writer.doc.getText('text')}"` })

    // and an Update message likewise
    const before = Y.encodeStateVector(local)
    local.getText('text').insert(6, 'ghi')
    c.send(encodeUpdate(Y.encodeStateAsUpdate(local, before)))
    await waitFor(() => writer.doc.getText('text').toString() === 'abcdefghi', { message: 'our Update to reach the provider' })
    // the server also relays provider updates to us as messageSync/Update
    from = c.messages.length
    writer.doc.getText('text').insert(0, '>')
    const upd = await c.next(m => m.type === MSG_SYNC && m.syncType === 2, { from, message: "a provider's update relayed to the raw client" })
    Y.applyUpdate(local, upd.data)
    assert.equal(local.getText('text').toString(), '>abcdefghi')
    assertWellFramed(c)
  })
})

test('raw: awareness snapshot on connect, echo to the sender, removal when the connection drops', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('raw-aw')
    const a = makeProvider(t, server, room)
    const b = makeProvider(t, server, room)
    await waitAllSynced([a, b])
    a.awareness.setLocalStateField('user', { name: 'alice' })
    b.awareness.setLocalStateField('user', { name: 'bob' })
    const idA = a.doc.clientID
    const idB = b.doc.clientID
    await waitFor(() => a.awareness.getStates().get(idB)?.user && b.awareness.getStates().get(idA)?.user, { message: 'a and b to see each other' })

    const c = rawClient(t, server, room)
    await c.opened
    // the room has states, so the server sends them on connect, unasked
    const snap = await c.next(m => m.type === MSG_AWARENESS && m.states.some(s => s.clientID === idA && s.state?.user?.name === 'alice'),
      { message: "awareness states of the room sent on connect (alice's)" })
    assert.ok(snap)
    await c.next(hasStates(idB), { message: "bob's state sent on connect" })

    // our own awareness: relayed to the providers and echoed back to us (the echo is what keeps
    // a lone stock client's 30 s watchdog from firing)
    const rawDoc = new Y.Doc()
    const rawAw = new awarenessProtocol.Awareness(rawDoc)
    t.after(() => rawAw.destroy())
    rawAw.setLocalState({ user: { name: 'raw' } })
    const from2 = c.messages.length
    c.send(encodeAwareness(rawAw, [rawDoc.clientID]))
    await waitFor(() => a.awareness.getStates().get(rawDoc.clientID)?.user?.name === 'raw', { message: "raw client's awareness state to reach provider a" })
    await c.next(m => m.type === MSG_AWARENESS && m.states.some(s => s.clientID === rawDoc.clientID && s.state?.user?.name === 'raw'),
      { from: from2, message: 'our own awareness update echoed back to us' })
    assertWellFramed(c)

    // connection drops without a goodbye: the server removes the states it controlled
    c.close()
    await waitFor(() => !a.awareness.getStates().has(rawDoc.clientID) && !b.awareness.getStates().has(rawDoc.clientID), {
      timeout: 5000, message: "raw client's awareness state removed on a and b after its connection closed"
    })
  })
})

test('raw: messageQueryAwareness (type 3) is answered with all awareness states', {
  skip: IS_REFERENCE && 'the reference server (y-websocket 1.5.4 bin/utils.js) ignores messageQueryAwareness'
}, async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('raw-query')
    const a = makeProvider(t, server, room)
    const b = makeProvider(t, server, room)
    await waitAllSynced([a, b])
    a.awareness.setLocalStateField('user', { name: 'alice' })
    b.awareness.setLocalStateField('user', { name: 'bob' })
    const idA = a.doc.clientID
    const idB = b.doc.clientID
    await waitFor(() => a.awareness.getStates().get(idB)?.user && b.awareness.getStates().get(idA)?.user, { message: 'a and b to see each other' })

    const c = rawClient(t, server, room)
    await c.opened
    await c.next(isSS1, { message: "server's SyncStep1" })
    // let the unasked connect-time snapshot arrive first, so it is not mistaken for the answer
    await c.next(hasStates(idA), { message: 'connect-time awareness snapshot' }).catch(() => {})
    await c.next(hasStates(idB), { message: 'connect-time awareness snapshot' }).catch(() => {})
    // messageQueryAwareness -> one messageAwareness with all known states
    const from = c.messages.length
    c.send(encodeQueryAwareness())
    const answer = await c.next(hasStates(idA, idB), { from, message: 'an awareness message with the states of both a and b in reply to messageQueryAwareness (type 3)' })
    assert.equal(answer.states.find(s => s.clientID === idA).state.user.name, 'alice')
    assert.equal(answer.states.find(s => s.clientID === idB).state.user.name, 'bob')

    assertWellFramed(c)
  })
})

test('raw: messageQueryAwareness in a room without awareness states gets no error', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('raw-query-empty')
    const c = rawClient(t, server, room)
    await c.opened
    await c.next(isSS1, { message: "server's SyncStep1" })
    c.send(encodeQueryAwareness())
    const local = new Y.Doc()
    const from = c.messages.length
    c.send(encodeSyncStep1(local))
    await c.next(isSS2, { from, message: 'SyncStep2 after a query in an empty room (connection still usable)' })
    assert.equal(c.closed, null)
    assertWellFramed(c)
  })
})

test('raw: a malformed update does not break the room', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('raw-bad')
    const a = makeProvider(t, server, room)
    const b = makeProvider(t, server, room)
    await waitAllSynced([a, b])
    a.doc.getText('text').insert(0, 'ok;')
    await waitFor(() => b.doc.getText('text').toString() === 'ok;', { message: 'first edit' })

    const c = rawClient(t, server, room)
    await c.opened
    await c.next(isSS1, { message: "server's SyncStep1" })
    // an Update whose payload is not a valid Yjs update, and a truncated frame
    c.send(Uint8Array.from([0, 2, 5, 0xff, 0xff, 0xff, 0xff, 0xff]))
    c.send(Uint8Array.from([0, 2, 0x7f, 1, 2]))
    // the server may close this connection or ignore the message, but the room keeps working
    a.doc.getText('text').insert(3, 'still;')
    b.doc.getText('text').insert(0, 'b;')
    await waitFor(() => converged([a.doc, b.doc]) && a.doc.getText('text').toString() === 'b;ok;still;', {
      message: () => `a and b to keep syncing after the bad frames: a="${a.doc.getText('text')}" b="${b.doc.getText('text')}"`
    })
    const late = makeProvider(t, server, room)
    await waitSynced(late)
    await waitFor(() => late.doc.getText('text').toString() === 'b;ok;still;', { message: 'late joiner after the bad frames' })
    assert.equal(server.running, true, 'server process still running')
  })
})

test('room names with spaces, unicode and slashes work like any other', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const base = uniqueRoom('names')
    const names = [`${base} with space`, `${base}-ünïcödé-✓`, `${base}/nested/path`]
    for (const name of names) {
      const p1 = makeProvider(t, server, name)
      const p2 = makeProvider(t, server, name)
      await waitAllSynced([p1, p2])
      p1.doc.getText('text').insert(0, name)
      await waitFor(() => p2.doc.getText('text').toString() === name, { message: `edit to travel within room "${name}"` })
    }
    // and they are different rooms from each other and from the base name
    const other = makeProvider(t, server, base)
    await waitSynced(other)
    const late = makeProvider(t, server, names[1])
    await waitSynced(late)
    await waitFor(() => late.doc.getText('text').toString() === names[1], { message: 'late joiner of the unicode room' })
    assert.equal(other.doc.getText('text').toString(), '')
  })
})

test('subprotocols offered by the client are echoed (v3 `protocols` option), or the handshake fails', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('subproto')
    // `ws`, like browsers, fails the handshake when it offered subprotocols and got none back
    const p = makeProvider(t, server, room, { version: 'v3', protocols: ['yauth-abc.def', 'other'] })
    const q = makeProvider(t, server, room, { version: 'v3' })
    let errors = 0
    p.on('connection-error', () => { errors++ })
    await waitSynced(p)
    await waitSynced(q)
    assert.ok(['yauth-abc.def', 'other'].includes(p.ws.protocol), `server picked subprotocol "${p.ws.protocol}"`)
    p.doc.getText('text').insert(0, 'x')
    await waitFor(() => q.doc.getText('text').toString() === 'x', { message: 'edit from the subprotocol client' })
    assert.equal(errors, 0)
  })
})
