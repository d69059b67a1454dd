// Where the page connects and which room it edits, taken from the URL.
//
//   /?room=notes                      edit room "notes" on the server that served the page
//   /?room=notes&server=ws://h:1234   development: page from the Vite dev server, rooms elsewhere
//
// A page opened without a room gets a random one, written back into the URL so
// that the address bar is the link to share.

const ROOM_ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789'

export function randomRoomName(): string {
  const bytes = new Uint8Array(8)
  crypto.getRandomValues(bytes)
  let id = ''
  for (const b of bytes) id += ROOM_ALPHABET[b % ROOM_ALPHABET.length]
  return `notes-${id}`
}

export interface PageConfig {
  /** Room name as the user sees it (decoded). */
  room: string
  /** Base WebSocket URL without the room, no trailing slash. */
  serverUrl: string
}

export function readConfig(loc: Location = window.location): PageConfig {
  const url = new URL(loc.href)
  let room = (url.searchParams.get('room') ?? '').trim()
  if (!room) {
    room = randomRoomName()
    url.searchParams.set('room', room)
    window.history.replaceState(null, '', url)
  }
  const override = url.searchParams.get('server')
  const serverUrl = (override && override.trim()) || defaultServerUrl(loc)
  return { room, serverUrl: serverUrl.replace(/\/+$/, '') }
}

/** ws(s)://<host of the page>; plait serves the page and the rooms on one port. */
export function defaultServerUrl(loc: Location): string {
  const scheme = loc.protocol === 'https:' ? 'wss' : 'ws'
  return `${scheme}://${loc.host}`
}

/** The Hocuspocus endpoint of the server: plait answers `@hocuspocus/provider` there. */
export function hocuspocusUrl(serverUrl: string): string {
  return `${serverUrl}/hocuspocus`
}

/**
 * The address of another page of the demo (`./` or `./tiptap.html`) for the same room and
 * the same `server` override, so that following the link keeps you in the room.
 */
export function pageLink(page: string, loc: Location = window.location): string {
  const here = new URL(loc.href)
  const there = new URL(page, here)
  for (const key of ['room', 'server']) {
    const value = here.searchParams.get(key)
    if (value) there.searchParams.set(key, value)
  }
  return there.href
}
