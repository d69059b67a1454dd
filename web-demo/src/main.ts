import './style.css'

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { IndexeddbPersistence } from 'y-indexeddb'
import { removeAwarenessStates } from 'y-protocols/awareness'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import { EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter, drawSelection, placeholder } from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'

import { pageLink, readConfig } from './config'
import { loadIdentity, loadOfflinePreference, saveOfflinePreference, type UserIdentity } from './user'
import { ActivityTracker, bindIdentityInput, bindPresenceList, publishUser } from './presence'
import { mountCrdtValues } from './crdt-hook'
import { $, bindCopyLink, failPage } from './page'


/** How long to wait for IndexedDB before connecting anyway (it can be blocked or unavailable). */
const IDB_TIMEOUT_MS = 3_000

async function start(): Promise<void> {
  const { room, serverUrl } = readConfig()
  const identity: UserIdentity = loadIdentity()
  let offline = loadOfflinePreference()

  document.title = `${room} · plait`
  $('room-name').textContent = room
  for (const id of ['page-rich', 'rich-hint-link']) $<HTMLAnchorElement>(id).href = pageLink('./tiptap.html')

  const doc = new Y.Doc()
  const ytext = doc.getText('codemirror')

  // Created without connecting: local content from IndexedDB is loaded first, so
  // that the first SyncStep2 we send already carries edits made while offline.
  // `plait-values=1` opts in to plait's CRDT values (the title and likes, src/crdt-hook.ts);
  // other servers ignore the parameter.
  const provider = new WebsocketProvider(serverUrl, encodeURIComponent(room), doc, {
    connect: false,
    params: { 'plait-values': '1' },
  })
  const awareness = provider.awareness
  publishUser(awareness, identity)

  const persistence = new IndexeddbPersistence(`plait-demo/${room}`, doc)
  await Promise.race([persistence.whenSynced, new Promise((resolve) => setTimeout(resolve, IDB_TIMEOUT_MS))])

  // ---- editor -------------------------------------------------------------
  const undoManager = new Y.UndoManager(ytext)
  const view = new EditorView({
    parent: $('editor'),
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightActiveLine(),
        drawSelection(),
        EditorView.lineWrapping,
        placeholder('Start typing — everyone in this room sees it live.'),
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
        yCollab(ytext, awareness, { undoManager }),
        EditorView.contentAttributes.of({ 'aria-label': 'Shared document', 'data-testid': 'editor-content' }),
      ],
    }),
  })

  // ---- presence -----------------------------------------------------------
  const activity = new ActivityTracker(awareness)
  ytext.observe((_event, tr) => {
    if (tr.local) activity.edited()
  })
  bindPresenceList(awareness, $('presence'), $('presence-count'))

  bindIdentityInput(awareness, identity, $<HTMLInputElement>('user-name'), $('user-color'))

  // Tell the others at once that we left, instead of waiting for the socket to close.
  window.addEventListener('pagehide', () => removeAwarenessStates(awareness, [doc.clientID], 'page hidden'))
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) {
      publishUser(awareness, identity)
      activity.publish()
    }
  })

  // ---- connection status and the offline switch ----------------------------
  const statusEl = $('status')
  const toggle = $<HTMLButtonElement>('offline-toggle')
  const renderStatus = () => {
    let status: 'offline' | 'connecting' | 'synced'
    let label: string
    if (offline) {
      status = 'offline'
      label = 'offline'
    } else if (provider.wsconnected && provider.synced) {
      status = 'synced'
      label = 'synced'
    } else if (provider.wsconnected || provider.wsUnsuccessfulReconnects === 0) {
      status = 'connecting'
      label = 'connecting…'
    } else {
      status = 'offline'
      label = 'offline · retrying'
    }
    statusEl.dataset.status = status
    statusEl.textContent = label
    toggle.setAttribute('aria-pressed', String(offline))
    document.body.dataset.offline = String(offline)
  }
  provider.on('status', renderStatus)
  // On every (re)connect, publish our awareness with a fresh clock. Peers and the
  // server removed our entry at its last clock when the old socket closed, and
  // they ignore a state whose clock is not newer, so re-sending the same clock
  // would leave us invisible until the next 15 s renewal.
  provider.on('status', ({ status }: { status: string }) => {
    const state = awareness.getLocalState()
    if (status === 'connected' && state !== null) awareness.setLocalState({ ...state })
  })
  provider.on('sync', renderStatus)
  provider.on('connection-close', renderStatus)
  provider.on('connection-error', renderStatus)

  toggle.addEventListener('click', () => {
    offline = !offline
    saveOfflinePreference(offline)
    if (offline) provider.disconnect()
    else provider.connect()
    renderStatus()
  })

  bindCopyLink($('copy-link'))

  mountCrdtValues({ container: $('crdt-values'), room, serverUrl, doc, provider })

  if (!offline) provider.connect()
  renderStatus()

  // Handle for debugging in the console; not used by the page itself.
  Object.defineProperty(window, 'plaitDemo', { value: Object.freeze({ doc, ytext, provider, awareness, persistence, view }) })
}

// Keep the page itself available offline (see public/sw.js). Production builds only:
// the Vite dev server must not be shadowed by a cache. Browsers allow service
// workers on https and on localhost only; elsewhere the page simply needs the network.
if (import.meta.env.PROD && 'serviceWorker' in navigator && window.isSecureContext) {
  navigator.serviceWorker.register('./sw.js').catch(() => {
    document.body.dataset.offlineShell = 'unavailable'
  })
}

start().catch(failPage)
