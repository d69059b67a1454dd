// Hook for the values that will be backed by plait's CRDT values (see DESIGN.md,
// "CRDT values"): a like counter (PN-Counter) and a document title (LWW-Register).
//
// NOT IMPLEMENTED YET, on purpose. The page reserves an empty container,
// <div id="crdt-values" data-hook="crdt-values">, above the editor, and main.ts
// calls mountCrdtValues() once the room is set up. When plait's opt-in CRDT
// message type and the TypeScript twin in web-demo/crdt/ are ready, render the
// title and the like button into `container` here and talk to the server through
// `provider` / `serverUrl`. Until then the container stays empty (and hidden by CSS).

import type * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'

export interface CrdtHookContext {
  /** The empty element reserved for the title and the like counter. */
  container: HTMLElement
  room: string
  serverUrl: string
  doc: Y.Doc
  provider: WebsocketProvider
}

export function mountCrdtValues(ctx: CrdtHookContext): void {
  // Intentionally empty: no faked values before the server supports them.
  void ctx
}
