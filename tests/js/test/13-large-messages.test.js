// 13. Large messages (issue 14 item 6): a 5 MiB paste is one update message. With the default
//     limits it syncs: the writer stays connected, a live peer and a fresh client receive it,
//     and so does a Yjs 14 client. (The message cap was 4 MiB: the writer was closed with 1009,
//     reconnected, resent its step 2 and was closed again, forever.)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, makeProvider, waitSynced, waitFor, uniqueRoom, withServerLog } from '../support.js'
import { makeProviderV4 } from '../v14.js'

const MIB = 1024 * 1024

test('a 5 MiB paste from a v13 client syncs with the default limits', async (t) => {
  const server = await startServer(t)
  await withServerLog(server, async () => {
    const room = uniqueRoom('paste')
    const writer = makeProvider(t, server, room, { version: 'v3' })
    const peer = makeProvider(t, server, room, { version: 'v1' })
    await Promise.all([waitSynced(writer), waitSynced(peer)])
    const closes = []
    writer.on('connection-close', (ev) => closes.push(ev?.code))

    const line = 'pasted text, line of a large document 0123456789\n' // 50 bytes
    const paste = line.repeat(Math.ceil(5 * MIB / line.length))
    assert.ok(paste.length >= 5 * MIB)
    writer.doc.getText('text').insert(0, paste)

    await waitFor(() => peer.doc.getText('text').length === paste.length, {
      timeout: 30000, message: () => `the paste at the live peer (has ${peer.doc.getText('text').length}, writer closed with ${closes})`
    })
    const fresh = makeProvider(t, server, room, { version: 'v3' })
    const fresh14 = makeProviderV4(t, server, room)
    await Promise.all([waitSynced(fresh, { timeout: 30000 }), waitSynced(fresh14, { timeout: 30000 })])
    assert.equal(fresh.doc.getText('text').toString(), paste)
    assert.equal(fresh14.doc.get('text').toString(), paste)
    assert.deepEqual(closes, [], 'the writer was disconnected')
  })
})
