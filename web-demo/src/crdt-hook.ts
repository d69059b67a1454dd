// The document title (LWW-Register) and the like counter (G-Counter), backed by plait's CRDT
// values (README, "CRDT values"), above the editor.
//
// The provider opts in with `params: { 'plait-values': '1' }` (main.ts); the server then sends
// every value's state when the socket joins and each change after it, as y-websocket message
// type 100, which attachToProvider() registers with the provider. The page shows only what
// the server sent: a click or an edit is an op to the server, and its effect comes back as a
// state like everyone else's. Likes clicked while disconnected are kept and sent as one
// increment on reconnect. A server without the extension (the y-websocket reference server)
// ignores the ops, so nothing changes rather than anything being faked.

import type * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { PlaitValues, attachToProvider, sendOp } from '../crdt/src/index.ts'

export interface CrdtHookContext {
  /** The element reserved for the title and the like counter. */
  container: HTMLElement
  room: string
  serverUrl: string
  doc: Y.Doc
  provider: WebsocketProvider
}

/** Names of the values the demo uses, within the room. */
export const TITLE = 'title'
export const LIKES = 'likes'
/** How long typing in the title waits before it is sent. */
const TITLE_DEBOUNCE_MS = 250

export function mountCrdtValues(ctx: CrdtHookContext): PlaitValues {
  const { container, provider } = ctx
  const values = new PlaitValues()
  attachToProvider(provider as unknown as Parameters<typeof attachToProvider>[0], values)

  const title = document.createElement('input')
  title.id = 'doc-title'
  title.className = 'doc-title'
  title.type = 'text'
  title.placeholder = 'Untitled document'
  title.maxLength = 120
  title.spellcheck = false
  title.setAttribute('aria-label', 'Document title')
  title.dataset.testid = 'doc-title'

  const like = document.createElement('button')
  like.id = 'like'
  like.type = 'button'
  like.className = 'like'
  like.dataset.testid = 'like'
  like.title = 'Like this document (a G-Counter: concurrent likes all count)'
  const heart = document.createElement('span')
  heart.setAttribute('aria-hidden', 'true')
  heart.textContent = '♥'
  const count = document.createElement('span')
  count.id = 'like-count'
  count.className = 'like-count'
  count.dataset.testid = 'like-count'
  count.textContent = '0'
  like.append(heart, count)
  like.setAttribute('aria-label', 'Like (0)')

  container.append(title, like)

  const ws = () => (provider as unknown as { ws: Parameters<typeof sendOp>[0] }).ws

  // Likes not yet handed to an open socket.
  let pendingLikes = 0n
  const flushLikes = () => {
    if (pendingLikes > 0n && sendOp(ws(), LIKES, { kind: 'gcounter', delta: pendingLikes })) pendingLikes = 0n
  }
  like.addEventListener('click', () => {
    pendingLikes += 1n
    flushLikes()
  })

  // The title the user typed but that has not been sent yet (sent when the socket opens).
  let unsentTitle: string | undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  const sendTitle = () => {
    clearTimeout(timer)
    timer = undefined
    if (unsentTitle !== undefined && sendOp(ws(), TITLE, { kind: 'lww', value: unsentTitle })) unsentTitle = undefined
  }
  title.addEventListener('input', () => {
    unsentTitle = title.value
    clearTimeout(timer)
    timer = setTimeout(sendTitle, TITLE_DEBOUNCE_MS)
  })
  title.addEventListener('change', sendTitle)
  title.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') sendTitle()
  })

  provider.on('status', ({ status }: { status: string }) => {
    if (status !== 'connected') return
    flushLikes()
    sendTitle()
  })

  values.subscribe((name) => {
    if (name === LIKES) {
      const n = String(values.current(LIKES))
      count.textContent = n
      like.setAttribute('aria-label', `Like (${n})`)
    } else if (name === TITLE) {
      const v = values.current(TITLE)
      const text = typeof v === 'string' ? v : ''
      // Never overwrite what the user is typing.
      if (unsentTitle === undefined && title.value !== text) title.value = text
      document.title = text ? `${text} · ${ctx.room} · plait` : `${ctx.room} · plait`
    }
  })
  values.onRejected = (name, reason) => {
    like.dataset.rejected = name === LIKES ? reason : ''
    title.dataset.rejected = name === TITLE ? reason : ''
  }
  return values
}
