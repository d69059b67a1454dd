// 6. SIGKILL: whatever a second provider had received (i.e. the server broadcast it) must be
//    there after a restart, served from the store to a fresh client.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  startServer, makeProvider, waitSynced, waitFor, uniqueRoom, withServerLog, IS_REFERENCE, RESTART_SKIP, sleep, captureAtSynced
} from '../support.js'

test('SIGKILL loses nothing that was broadcast', { skip: RESTART_SKIP }, async (t) => {
  const server = await startServer(t, { persistent: true })
  await withServerLog(server, async () => {
    const room = uniqueRoom('sigkill')
    const writer = makeProvider(t, server, room)
    const receiver = makeProvider(t, server, room)
    await waitSynced(writer)
    await waitSynced(receiver)

    // a burst of separate updates, the last ones right before the kill
    const text = writer.doc.getText('text')
    for (let k = 0; k < 30; k++) text.insert(text.length, `w${k};`)
    writer.doc.getMap('map').set('last', 'set just before the kill')
    const expected = text.toString()
    await waitFor(() => receiver.doc.getText('text').toString() === expected && receiver.doc.getMap('map').get('last'), {
      message: () => `receiver to get every edit, has "${receiver.doc.getText('text')}"`
    })

    // the reference server writes to LevelDB asynchronously and has no flush on kill
    if (IS_REFERENCE) await sleep(300)
    const res = await server.stop('SIGKILL')
    assert.equal(res.signal, 'SIGKILL')
    // the clients must not be able to re-upload anything after the restart
    writer.destroy()
    receiver.destroy()

    await server.start()
    const fresh = makeProvider(t, server, room)
    const atSynced = captureAtSynced(fresh, doc => doc.getText('text').toString())
    await waitSynced(fresh)
    // PROTOCOL.md §4 rule 6 (the reference server breaks it, y-websocket#81)
    if (!IS_REFERENCE) assert.equal(atSynced.value, expected, 'the first SyncStep2 after the restart must already contain the persisted state')
    await waitFor(() => fresh.doc.getText('text').toString() === expected, {
      message: () => `fresh client after SIGKILL+restart to see "${expected}", has "${fresh.doc.getText('text')}"`
    })
    assert.equal(fresh.doc.getMap('map').get('last'), 'set just before the kill')
  })
})
