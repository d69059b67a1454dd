// The local user's identity: a name (editable) and a colour, both remembered in
// localStorage so that a person keeps them across reloads and rooms.

export interface UserIdentity {
  name: string
  color: string
  colorLight: string
}

const STORAGE_KEY = 'plait-demo:user'

// Readable on light and dark backgrounds; the caret and name label use them as is.
export const PALETTE = [
  '#e6194b', '#3c8d2f', '#4363d8', '#f58231', '#911eb4', '#0f8b8d',
  '#c2185b', '#6d4c41', '#5c6bc0', '#d81b60', '#00897b', '#8e6c00',
]

const ADJECTIVES = ['Amber', 'Brisk', 'Calm', 'Dapper', 'Eager', 'Fuzzy', 'Gentle', 'Happy', 'Jolly', 'Keen', 'Lucky', 'Merry', 'Nimble', 'Quiet', 'Rapid', 'Sunny', 'Witty', 'Zesty']
const ANIMALS = ['Otter', 'Heron', 'Badger', 'Lynx', 'Panda', 'Falcon', 'Koala', 'Marten', 'Puffin', 'Gecko', 'Bison', 'Robin', 'Hare', 'Ibex', 'Wren', 'Yak']

function pick<T>(items: readonly T[]): T {
  const r = new Uint32Array(1)
  crypto.getRandomValues(r)
  return items[r[0] % items.length]
}

/** Same hue, translucent: the background of a remote selection. */
export function lighten(color: string): string {
  return /^#[0-9a-f]{6}$/i.test(color) ? `${color}33` : color
}

function storage(): Storage | null {
  try {
    return window.localStorage
  } catch {
    return null // storage disabled: identity lasts for this page only
  }
}

export function loadIdentity(): UserIdentity {
  const store = storage()
  let saved: Partial<UserIdentity> = {}
  try {
    saved = JSON.parse(store?.getItem(STORAGE_KEY) ?? '{}') ?? {}
  } catch {
    saved = {}
  }
  const name = typeof saved.name === 'string' && saved.name.trim() ? saved.name.trim().slice(0, 32) : `${pick(ADJECTIVES)} ${pick(ANIMALS)}`
  const color = typeof saved.color === 'string' && /^#[0-9a-f]{6}$/i.test(saved.color) ? saved.color : pick(PALETTE)
  const identity = { name, color, colorLight: lighten(color) }
  saveIdentity(identity)
  return identity
}

export function saveIdentity(identity: UserIdentity): void {
  try {
    storage()?.setItem(STORAGE_KEY, JSON.stringify({ name: identity.name, color: identity.color }))
  } catch {
    // quota or privacy mode: not fatal
  }
}

const OFFLINE_KEY = 'plait-demo:offline'

/** The offline switch survives reloads so that a page can be reopened without a connection. */
export function loadOfflinePreference(): boolean {
  try {
    return storage()?.getItem(OFFLINE_KEY) === '1'
  } catch {
    return false
  }
}

export function saveOfflinePreference(offline: boolean): void {
  try {
    if (offline) storage()?.setItem(OFFLINE_KEY, '1')
    else storage()?.removeItem(OFFLINE_KEY)
  } catch {
    // ignore
  }
}
