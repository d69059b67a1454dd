// 2. Awareness: states propagate, updates propagate, and a provider's state disappears from the
//    others quickly when it is destroyed (clean) or when its connection just dies (crash).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  startServer, makeProvider, waitAllSynced, waitSynced, waitFor, uniqueRoom, withServerLog
} from '../support.js'

const stateOf = (provider, clientID) => provider.awareness.getStates().get(clientID)

for (const version of ['v1', 'v3']) {
  test(`awareness (${version}): propagate, update, remove on destroy and on dropped connection`, async (t) => {
    const server = await startServer(t)
    await withServerLog(server, async () => {
      const room = uniqueRoom('aw')
      const [a, b, c] = [0, 1, 2].map(() => makeProvider(t, server, room, { version }))
      await waitAllSynced([a, b, c])
      const idA = a.doc.clientID
      const idB = b.doc.clientID
      const idC = c.doc.clientID

      a.awareness.setLocalStateField('user', { name: 'alice', color: '#f00' })
      b.awareness.setLocalStateField('user', { name: 'bob' })
      for (const p of [b, c]) {
        await waitFor(() => stateOf(p, idA)?.user?.name === 'alice', { message: `alice's state on ${p.doc.clientID}` })
      }
      await waitFor(() => stateOf(a, idB)?.user?.name === 'bob' && stateOf(c, idB)?.user?.name === 'bob', { message: "bob's state on a and c" })

      // update an existing state
      a.awareness.setLocalStateField('cursor', { anchor: 3, head: 7 })
      for (const p of [b, c]) {
        await waitFor(() => stateOf(p, idA)?.cursor?.head === 7, { message: `alice's cursor update on ${p.doc.clientID}` })
      }
      assert.equal(stateOf(b, idA).user.name, 'alice')

      // a late joiner receives the current states of everybody in the room
      const d = makeProvider(t, server, room, { version })
      await waitSynced(d)
      await waitFor(() => stateOf(d, idA)?.cursor?.head === 7 && stateOf(d, idB)?.user?.name === 'bob', {
        message: () => `late joiner to get existing awareness states, has ${JSON.stringify([...d.awareness.getStates()])}`
      })

      // clean leave: destroy() -> others drop the state within a few seconds (timeout would be 30 s)
      const t0 = Date.now()
      a.destroy()
      for (const p of [b, c, d]) {
        await waitFor(() => !p.awareness.getStates().has(idA), {
          timeout: 5000, message: `alice's state to be removed on ${p.doc.clientID} after destroy`
        })
      }
      assert.ok(Date.now() - t0 < 5000)

      // crash: the connection of c dies without any goodbye (no awareness removal, no close frame).
      // The server must remove the states that connection controlled and tell the others.
      c.awareness.setLocalStateField('user', { name: 'carol' })
      await waitFor(() => stateOf(b, idC)?.user?.name === 'carol' && stateOf(d, idC)?.user?.name === 'carol', { message: "carol's state on b and d" })
      c.shouldConnect = false // no auto-reconnect
      c.ws.terminate()
      for (const p of [b, d]) {
        await waitFor(() => !p.awareness.getStates().has(idC), {
          timeout: 5000,
          message: `carol's state to be removed on ${p.doc.clientID} after her connection dropped (server must null the states of a closed connection)`
        })
      }
      // bob is still there for d
      assert.equal(stateOf(d, idB)?.user?.name, 'bob')
    })
  })
}
