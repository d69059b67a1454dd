// The rich-text page (`/tiptap.html`): Tiptap bound to the room's `Y.XmlFragment` through
// the Hocuspocus provider on `ws(s)://<host>/hocuspocus`, with the same presence list as the
// plain-text page.
//
// Both pages edit one room, but different parts of its Y.Doc: the plain-text page the
// `Y.Text` named `codemirror`, this page the `Y.XmlFragment` named `default` (Tiptap's
// default field, so other Tiptap apps on the room see the same text). Awareness is the
// room's, whichever protocol a client speaks, so people on either page see each other in
// the list; it carries `{ user: {name, color, colorLight}, activity }` from both pages.

import './style.css'

import * as Y from 'yjs'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { Editor } from '@tiptap/core'
import { Document } from '@tiptap/extension-document'
import { Paragraph } from '@tiptap/extension-paragraph'
import { Text } from '@tiptap/extension-text'
import { Bold } from '@tiptap/extension-bold'
import { Italic } from '@tiptap/extension-italic'
import { Placeholder } from '@tiptap/extensions'
import { Collaboration } from '@tiptap/extension-collaboration'
import { CollaborationCaret } from '@tiptap/extension-collaboration-caret'

import { hocuspocusUrl, pageLink, readConfig } from './config'
import { loadIdentity, type UserIdentity } from './user'
import { ActivityTracker, bindIdentityInput, bindPresenceList, publishUser } from './presence'
import { $, bindCopyLink, failPage } from './page'

/** The root type this page edits: Tiptap's default `field`. */
export const FIELD = 'default'

type SocketStatus = 'connecting' | 'connected' | 'disconnected'

function start(): void {
  const { room, serverUrl } = readConfig()
  const identity: UserIdentity = loadIdentity()

  document.title = `${room} · rich text · plait`
  $('room-name').textContent = room
  for (const id of ['page-plain', 'plain-hint-link']) $<HTMLAnchorElement>(id).href = pageLink('./')

  // The provider owns its socket and connects at once; the document name is the room.
  const doc = new Y.Doc()
  const provider = new HocuspocusProvider({ url: hocuspocusUrl(serverUrl), name: room, document: doc })
  const awareness = provider.awareness
  if (!awareness) throw new Error('the provider has no awareness')
  publishUser(awareness, identity)

  // ---- editor -------------------------------------------------------------
  const editor = new Editor({
    element: $('editor'),
    extensions: [
      Document,
      Paragraph,
      Text,
      Bold,
      Italic,
      Placeholder.configure({ placeholder: 'Start typing — everyone on this page of the room sees it live.' }),
      // Collaboration brings its own undo (Y.UndoManager): no UndoRedo extension.
      Collaboration.configure({ document: doc, field: FIELD }),
      // Sets awareness `user` to this object when the editor starts; the same shape as publishUser.
      CollaborationCaret.configure({
        provider: { awareness },
        user: { name: identity.name, color: identity.color, colorLight: identity.colorLight },
      }),
    ],
    editorProps: {
      attributes: { 'aria-label': 'Shared rich-text document', 'data-testid': 'editor-content' },
    },
  })

  const bold = $<HTMLButtonElement>('bold')
  const italic = $<HTMLButtonElement>('italic')
  bold.addEventListener('click', () => editor.chain().focus().toggleBold().run())
  italic.addEventListener('click', () => editor.chain().focus().toggleItalic().run())
  const renderToolbar = () => {
    bold.setAttribute('aria-pressed', String(editor.isActive('bold')))
    italic.setAttribute('aria-pressed', String(editor.isActive('italic')))
  }
  editor.on('transaction', renderToolbar)
  renderToolbar()

  // ---- presence -----------------------------------------------------------
  const activity = new ActivityTracker(awareness)
  doc.getXmlFragment(FIELD).observeDeep((_events, tr) => {
    if (tr.local) activity.edited()
  })
  bindPresenceList(awareness, $('presence'), $('presence-count'))
  bindIdentityInput(awareness, identity, $<HTMLInputElement>('user-name'), $('user-color'))

  // The provider removes our state on pagehide; a page restored from bfcache publishes it again.
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) {
      publishUser(awareness, identity)
      activity.publish()
    }
  })

  // ---- connection status ----------------------------------------------------
  const statusEl = $('status')
  let socket: SocketStatus = provider.configuration.websocketProvider.status as SocketStatus
  let denied = false
  const renderStatus = () => {
    let status: 'offline' | 'connecting' | 'synced'
    let label: string
    if (denied) {
      status = 'offline'
      label = 'access denied'
    } else if (socket === 'connected' && provider.isSynced) {
      status = 'synced'
      label = 'synced'
    } else if (socket === 'disconnected') {
      status = 'offline'
      label = 'offline · retrying'
    } else {
      status = 'connecting'
      label = 'connecting…'
    }
    statusEl.dataset.status = status
    statusEl.textContent = label
  }
  provider.on('status', ({ status }: { status: SocketStatus }) => {
    socket = status
    renderStatus()
  })
  provider.on('synced', ({ state }: { state: boolean }) => {
    // After a reconnect, publish our awareness with a fresh clock: the room removed our entry
    // at its last clock when the old socket closed and ignores a state whose clock is not
    // newer (the plain-text page does the same). Done once synced, so it follows the token.
    const local = awareness.getLocalState()
    if (state && local !== null) awareness.setLocalState({ ...local })
    renderStatus()
  })
  provider.on('authenticationFailed', () => {
    denied = true
    renderStatus()
  })
  provider.on('authenticated', () => {
    denied = false
    renderStatus()
  })
  renderStatus()

  bindCopyLink($('copy-link'))

  // Handle for debugging in the console and for the end-to-end tests; not used by the page itself.
  Object.defineProperty(window, 'plaitTiptap', { value: Object.freeze({ doc, provider, awareness, editor }) })
}

try {
  start()
} catch (err) {
  failPage(err)
}
