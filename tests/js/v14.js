// The second client generation: Yjs 14 (`@y/y`) with y-websocket 4 (`@y/websocket`).
//
// Yjs 14 has one shared type, `Y.Type`: `doc.get(name)` returns it, and it is text
// (`insert(i, 'str')`), map (`setAttr`/`getAttr`) and array (`push`) at once. On the wire the
// update format is the same v1 encoding as Yjs 13 (root types are addressed by name), so a
// Yjs 13 `getText('text')` reads what a Yjs 14 `get('text').insert(..)` wrote. Yjs 14 client
// ids are 53-bit (Yjs 13: 32-bit), which a server must carry through state vectors and
// awareness unchanged.
//
// `ConfirmingProvider` adds the unpublished y-websocket master's "sync-status" rule to the
// published 4.0.0-3 provider (see its comment).

import * as Y14 from '@y/y'
import * as decoding from 'lib0/decoding'
import { WebsocketProvider as WebsocketProviderV4 } from '@y/websocket'

import { WebSocket } from './support.js'

export { Y14, WebsocketProviderV4 }

/**
 * A stock `@y/websocket` 4 provider on a Yjs 14 doc for `room` on `server`; destroyed with `t`.
 * Options are passed through (`disableBc` is forced on, see support.js).
 */
export function makeProviderV4 (t, server, room, { doc = new Y14.Doc(), Provider = WebsocketProviderV4, ...opts } = {}) {
  const provider = new Provider(server.url ?? server, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    ...opts
  })
  provider.clientVersion = 'v4'
  if (t) {
    t.after(() => {
      try { provider.destroy() } catch {}
      try { doc.destroy() } catch {}
    })
  }
  return provider
}

const sortKeys = (v) => {
  if (Array.isArray(v)) return v.map(sortKeys)
  if (v && typeof v === 'object' && !(v instanceof Uint8Array)) {
    return Object.fromEntries(Object.keys(v).sort().map(k => [k, sortKeys(v[k])]))
  }
  return v
}

/**
 * A comparable view of a Yjs 14 doc: its 'text', 'map' and 'array' types, keys sorted. Equal to
 * `snapshot13` of a Yjs 13 doc with the same content, so docs of both generations compare.
 */
export const snapshot14 = (doc) => JSON.stringify(sortKeys({
  text: doc.get('text').toString(),
  map: doc.get('map').getAttrs(),
  array: doc.get('array').toArray()
}))

/** The same view of a Yjs 13 doc (no XML: Yjs 14 has no separate XML types). */
export const snapshot13 = (doc) => JSON.stringify(sortKeys({
  text: doc.getText('text').toString(),
  map: doc.getMap('map').toJSON(),
  array: doc.getArray('array').toJSON()
}))

/** State vector of a doc of either generation, as hex (the encoding is the same). */
export const svHex = (Y, doc) => Buffer.from(Y.encodeStateVector(doc)).toString('hex')

/**
 * y-websocket 4.0.0-3 with the confirmation rule of the y-websocket master provider
 * (github.com/yjs/y-websocket src/y-websocket.js, `unconfirmedUpdates` and `syncStatus`):
 *
 * - every local update (origin other than the provider) is recorded as its content ids
 *   (`Y.createContentIdsFromUpdate`), merged into the previous record if that is < 500 ms old;
 * - every sync step 2 or update the server sends removes the ids it contains
 *   (`Y.excludeContentIds`); a record with nothing left is confirmed;
 * - `syncStatus.status` is 'green' when connected, synced and nothing is unconfirmed, 'yellow'
 *   while the oldest unconfirmed edit is younger than 8 s, 'red' after.
 *
 * So an edit is confirmed only when the server sends it back: plait does so for the sender
 * too, and with strict durability only after the edit is committed.
 */
export class ConfirmingProvider extends WebsocketProviderV4 {
  constructor (serverUrl, roomname, doc, { connect = true, ...opts } = {}) {
    super(serverUrl, roomname, doc, { ...opts, connect: false })
    /** @type {Array<{ created: number, ids: any }>} */
    this.unconfirmedUpdates = []
    /** Every confirmation event, for tests: { at, remaining }. */
    this.confirmations = []
    const handleSync = this.messageHandlers[0]
    this.messageHandlers[0] = (encoder, decoder, provider, emitSynced, messageType) => {
      const start = decoder.pos
      handleSync(encoder, decoder, provider, emitSynced, messageType)
      const sub = decoding.createDecoder(decoder.arr)
      sub.pos = start
      const syncType = decoding.readVarUint(sub)
      if (syncType === 1 || syncType === 2) {
        const received = Y14.createContentIdsFromUpdate(decoding.readVarUint8Array(sub))
        const before = this.unconfirmedUpdates.length
        this.unconfirmedUpdates = this.unconfirmedUpdates.filter(unconfirmed => {
          unconfirmed.ids = Y14.excludeContentIds(unconfirmed.ids, received)
          return !unconfirmed.ids.inserts.isEmpty() || !unconfirmed.ids.deletes.isEmpty()
        })
        if (this.unconfirmedUpdates.length !== before) {
          this.confirmations.push({ at: Date.now(), remaining: this.unconfirmedUpdates.length })
        }
        this.emit('sync-status', [this.syncStatus])
      }
    }
    this._recordLocal = (update, origin) => {
      if (origin === this) return
      const now = Date.now()
      const ids = Y14.createContentIdsFromUpdate(update)
      const last = this.unconfirmedUpdates[this.unconfirmedUpdates.length - 1]
      if (last != null && now - last.created < 500) {
        last.ids = Y14.mergeContentIds([last.ids, ids])
      } else {
        this.unconfirmedUpdates.push({ created: now, ids })
      }
      this.emit('sync-status', [this.syncStatus])
    }
    doc.on('update', this._recordLocal)
    if (connect) this.connect()
  }

  get syncStatus () {
    const now = Date.now()
    const connected = this.wsconnected
    const receivedInitialSync = this.synced
    const localUpdatesSynced = this.unconfirmedUpdates.length === 0
    const localUpdatesAge = localUpdatesSynced ? 0 : now - this.unconfirmedUpdates[0].created
    const status = (connected && receivedInitialSync && localUpdatesAge === 0)
      ? 'green'
      : (connected && localUpdatesAge < 8000 ? 'yellow' : 'red')
    return { connected, receivedInitialSync, localUpdatesSynced, localUpdatesAge, status }
  }

  destroy () {
    this.doc.off('update', this._recordLocal)
    super.destroy()
  }
}
