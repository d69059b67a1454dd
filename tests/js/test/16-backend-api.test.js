// 16. A backend on the document REST API, as a Node service would use it: fetch and
//     Y.applyUpdate to read, a Yjs update or JSON edits to write (a connected provider sees
//     them), and the change feed read as Server-Sent Events, resumed with Last-Event-ID across
//     a restart of the server without missing or repeating an event.
//
// plait only: the reference server has no HTTP API.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import {
  Y, startServer, makeProvider, waitSynced, waitFor, uniqueRoom, withServerLog, IS_PLAIT
} from '../support.js'

const SECRET = 'backend-api-test-secret-backend-api-test-secret'

/** An HS256 JWT with plait's claims. */
function jwt (rooms, right) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const now = Math.floor(Date.now() / 1000)
  const head = b64({ alg: 'HS256', typ: 'JWT' })
  const body = b64({ exp: now + 3600, iat: now, rooms, right, user: 'backend' })
  const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

/**
 * Reads `n` events of a Server-Sent Events stream with fetch (what a Node backend without an
 * EventSource has), then closes it. Returns [{ id, data }].
 */
async function readEvents (url, token, n, lastEventId) {
  const controller = new AbortController()
  const headers = { authorization: `Bearer ${token}`, accept: 'text/event-stream' }
  if (lastEventId !== undefined) headers['last-event-id'] = String(lastEventId)
  const response = await fetch(url, { headers, signal: controller.signal })
  assert.equal(response.status, 200)
  assert.match(response.headers.get('content-type'), /text\/event-stream/)
  const events = []
  let text = ''
  const decoder = new TextDecoder()
  const timer = setTimeout(() => controller.abort(), 10000)
  try {
    for await (const chunk of response.body) {
      text += decoder.decode(chunk, { stream: true })
      let end
      while ((end = text.indexOf('\n\n')) >= 0) {
        const block = text.slice(0, end)
        text = text.slice(end + 2)
        const id = block.split('\n').find((l) => l.startsWith('id:'))
        const data = block.split('\n').find((l) => l.startsWith('data:'))
        if (id && data) events.push({ id: Number(id.slice(3)), data: JSON.parse(data.slice(5)) })
      }
      if (events.length >= n) break
    }
  } catch (e) {
    // The timer's abort ends the stream; the count below says what was missing.
    if (e.name !== 'AbortError') throw e
  } finally {
    clearTimeout(timer)
    controller.abort()
  }
  assert.ok(events.length >= n, `only ${events.length} of ${n} events arrived: ${JSON.stringify(events.map((e) => e.id))}`)
  return events.slice(0, n)
}

test('a backend reads, writes and follows a room over HTTP', { skip: !IS_PLAIT }, async (t) => {
  const server = await startServer(t, { args: ['--auth-secret', SECRET] })
  await withServerLog(server, async () => {
    const room = uniqueRoom('backend')
    const api = `${server.httpUrl}/api/rooms/${encodeURIComponent(room)}`
    const reader = jwt([room], 'read')
    const writer = jwt([room], 'write')
    const auth = (token) => ({ authorization: `Bearer ${token}` })

    // Nothing written yet: 404; no token: 401.
    assert.equal((await fetch(api, { headers: auth(reader) })).status, 404)
    assert.equal((await fetch(api)).status, 401)

    const provider = makeProvider(t, server, room, { params: { token: writer } })
    await waitSynced(provider)
    provider.doc.getText('text').insert(0, 'written by a person')
    provider.doc.getMap('meta').set('owner', 'ada')

    // Read as JSON, and as a Yjs update that Y.applyUpdate loads.
    await waitFor(async () => (await fetch(api, { headers: auth(reader) })).status === 200, { message: 'the room to be stored' })
    let doc
    await waitFor(async () => {
      doc = await (await fetch(api, { headers: auth(reader) })).json()
      return doc.content.text === 'written by a person'
    }, { message: 'the JSON to hold the edit' })
    assert.deepEqual(doc.content.meta, { owner: 'ada' })
    const bytes = new Uint8Array(await (await fetch(`${api}/update`, { headers: auth(reader) })).arrayBuffer())
    const copy = new Y.Doc()
    Y.applyUpdate(copy, bytes)
    assert.equal(copy.getText('text').toString(), 'written by a person')

    // Only what a state vector lacks.
    const sv = Buffer.from(Y.encodeStateVector(copy)).toString('base64url')
    const none = new Uint8Array(await (await fetch(`${api}/update?sv=${sv}`, { headers: auth(reader) })).arrayBuffer())
    Y.applyUpdate(copy, none)
    assert.equal(copy.getText('text').toString(), 'written by a person')

    // Write a Yjs update made in the backend: the provider sees it once stored.
    const before = Y.encodeStateVector(copy)
    copy.getText('text').insert(0, '[backend] ')
    const edit = Y.encodeStateAsUpdate(copy, before)
    const refused = await fetch(`${api}/update`, { method: 'POST', headers: auth(reader), body: edit })
    assert.equal(refused.status, 403, 'a read token wrote')
    const posted = await fetch(`${api}/update`, { method: 'POST', headers: auth(writer), body: edit })
    assert.equal(posted.status, 200)
    const written = await posted.json()
    assert.equal(written.changed, true)
    await waitFor(() => provider.doc.getText('text').toString() === '[backend] written by a person', { message: 'the backend edit to reach the provider' })

    // JSON edits for a backend without Yjs.
    const patched = await fetch(api, {
      method: 'PATCH',
      headers: { ...auth(writer), 'content-type': 'application/json' },
      body: JSON.stringify([{ op: 'set', map: 'meta', key: 'status', value: 'reviewed' }])
    })
    assert.equal(patched.status, 200)
    await waitFor(() => provider.doc.getMap('meta').get('status') === 'reviewed', { message: 'the PATCH to reach the provider' })
    const lastSeq = (await patched.json()).seq

    // The change feed from the start: every update in seq order; replaying them builds the doc.
    const feed = `${api}/changes?since=0&json=1`
    const events = await readEvents(feed, reader, lastSeq)
    assert.deepEqual(events.map((e) => e.id), Array.from({ length: lastSeq }, (_, i) => i + 1))
    const replay = new Y.Doc()
    for (const e of events) Y.applyUpdate(replay, Buffer.from(e.data.update, 'base64'))
    assert.equal(replay.getText('text').toString(), '[backend] written by a person')
    assert.deepEqual(events.at(-1).data.changed, { meta: { owner: 'ada', status: 'reviewed' } })

    // Resume across a restart: the consumer's last id, events after it only. The server
    // compacts the room as it stops, so the rows after that id may be gone: then the feed
    // sends one reset event holding the whole document instead, and goes on from there.
    const seen = events[1].id
    await server.stop()
    await server.start()
    const restarted = makeProvider(t, server, room, { params: { token: writer } })
    await waitSynced(restarted)
    restarted.doc.getText('text').insert(0, '+')
    let now
    await waitFor(async () => {
      now = (await (await fetch(api, { headers: auth(reader) })).json()).seq
      return now > lastSeq
    }, { message: 'the edit after the restart to be stored' })
    const resumed = []
    while (!resumed.length || resumed.at(-1).id < now) {
      resumed.push(...await readEvents(`${api}/changes`, reader, 1, resumed.at(-1)?.id ?? seen))
    }
    const ids = resumed.map((e) => e.id)
    assert.ok(ids.every((id, i) => id > (i ? ids[i - 1] : seen)), `ids out of order: ${ids}`)
    assert.ok(ids[0] === seen + 1 || resumed[0].data.reset === true, `a gap after ${seen}: ${ids}`)
    const check = new Y.Doc()
    for (const e of events.slice(0, 2)) Y.applyUpdate(check, Buffer.from(e.data.update, 'base64'))
    for (const e of resumed) Y.applyUpdate(check, Buffer.from(e.data.update, 'base64'))
    assert.equal(check.getText('text').toString(), '+[backend] written by a person')
    assert.equal(check.getMap('meta').get('status'), 'reviewed')
  })
})
