// A raw y-websocket protocol client on top of `ws`, lib0 encoding and y-protocols, for checking
// wire-level details that stock providers rely on.
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as Y from 'yjs'
import { waitFor } from './support.js'

export const MSG_SYNC = 0
export const MSG_AWARENESS = 1
export const MSG_AUTH = 2
export const MSG_QUERY_AWARENESS = 3

/** Decode one frame. Reports trailing bytes (a frame must hold exactly one message). */
export function decodeFrame (buf) {
  const bytes = new Uint8Array(buf)
  const dec = decoding.createDecoder(bytes)
  const msg = { type: decoding.readVarUint(dec), bytes }
  if (msg.type === MSG_SYNC) {
    msg.syncType = decoding.readVarUint(dec)
    msg.data = decoding.readVarUint8Array(dec)
  } else if (msg.type === MSG_AWARENESS) {
    msg.data = decoding.readVarUint8Array(dec)
    const d2 = decoding.createDecoder(msg.data)
    const n = decoding.readVarUint(d2)
    msg.states = []
    for (let i = 0; i < n; i++) {
      const clientID = decoding.readVarUint(d2)
      const clock = decoding.readVarUint(d2)
      const state = JSON.parse(decoding.readVarString(d2))
      msg.states.push({ clientID, clock, state })
    }
  } else if (msg.type === MSG_AUTH) {
    msg.authType = decoding.readVarUint(dec)
    if (msg.authType === 0) msg.reason = decoding.readVarString(dec)
  }
  msg.trailing = bytes.length - dec.pos
  if (msg.type === MSG_AUTH && msg.authType !== 0) msg.trailing = 0 // unknown auth payloads: not ours to judge
  return msg
}

export const encodeSyncStep1 = (doc) => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_SYNC)
  syncProtocol.writeSyncStep1(e, doc)
  return encoding.toUint8Array(e)
}

export const encodeSyncStep2 = (update) => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_SYNC)
  encoding.writeVarUint(e, syncProtocol.messageYjsSyncStep2)
  encoding.writeVarUint8Array(e, update)
  return encoding.toUint8Array(e)
}

export const encodeUpdate = (update) => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_SYNC)
  syncProtocol.writeUpdate(e, update)
  return encoding.toUint8Array(e)
}

export const encodeQueryAwareness = () => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_QUERY_AWARENESS)
  return encoding.toUint8Array(e)
}

export const encodeAwareness = (awareness, clients) => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_AWARENESS)
  encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(awareness, clients))
  return encoding.toUint8Array(e)
}

export class RawClient {
  constructor (url, room) {
    this.messages = []
    this.textFrames = 0
    this.closed = null
    this.ws = new WebSocket(`${url}/${room}`)
    this.ws.binaryType = 'arraybuffer'
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) { this.textFrames++; return }
      this.messages.push(decodeFrame(data))
    })
    this.ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() } })
    this.ws.on('error', () => {})
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('error', reject)
    })
  }

  send (bytes) { this.ws.send(bytes) }

  /** Wait for a message (received at index >= from) matching pred; returns it. */
  async next (pred, { from = 0, timeout = 5000, message = 'a matching message' } = {}) {
    let found
    await waitFor(() => {
      found = this.messages.slice(from).find(pred)
      return found
    }, { timeout, message: () => `${message}; got ${this.describe()}` })
    return found
  }

  describe () {
    return `[${this.messages.map(m => m.type === MSG_SYNC ? `sync/${m.syncType}(${m.data.length}B)` : m.type === MSG_AWARENESS ? `awareness(${m.states.map(s => s.clientID).join(',')})` : `type${m.type}`).join(', ')}]` +
      (this.closed ? ` closed=${JSON.stringify(this.closed)}` : '')
  }

  close () { try { this.ws.terminate() } catch {} }
}

export { Y, encoding, decoding, syncProtocol, awarenessProtocol }
