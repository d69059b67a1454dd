// Presence: who is in the room and what they are doing, carried in awareness.
//
// Each client publishes { user: {name, color, colorLight}, activity } where
// activity is 'typing' (edited in the last TYPING_MS), 'idle' (no input for
// IDLE_MS) or 'active'. The state is computed locally and published only when
// it changes, so remote clocks never need to agree.

import type { Awareness } from 'y-protocols/awareness'

import { saveIdentity, type UserIdentity } from './user'

export type Activity = 'active' | 'typing' | 'idle'

export const TYPING_MS = 2_000
export const IDLE_MS = 60_000

export class ActivityTracker {
  private lastEdit = 0
  private lastInput = Date.now()
  private current: Activity = 'active'
  private timer: number | undefined

  constructor(private readonly awareness: Awareness) {
    const onInput = () => this.touch()
    for (const ev of ['keydown', 'pointerdown', 'pointermove', 'wheel', 'focus', 'touchstart']) {
      window.addEventListener(ev, onInput, { passive: true, capture: true })
    }
    document.addEventListener('visibilitychange', onInput)
    this.timer = window.setInterval(() => this.update(), 1_000)
    this.publish()
  }

  /** A local edit of the document. */
  edited(): void {
    this.lastEdit = this.lastInput = Date.now()
    this.update()
  }

  /** Any other sign of life (keys, pointer, focus). */
  touch(): void {
    this.lastInput = Date.now()
    if (this.current === 'idle') this.update()
  }

  get activity(): Activity {
    return this.current
  }

  /** Re-publish (after the local state was cleared, e.g. when the page came back from bfcache). */
  publish(): void {
    this.awareness.setLocalStateField('activity', this.current)
  }

  stop(): void {
    window.clearInterval(this.timer)
  }

  private update(): void {
    const now = Date.now()
    const next: Activity = now - this.lastEdit < TYPING_MS ? 'typing' : now - this.lastInput >= IDLE_MS ? 'idle' : 'active'
    if (next !== this.current) {
      this.current = next
      if (this.awareness.getLocalState() !== null) this.publish()
    }
  }
}

interface PeerState {
  user?: { name?: unknown; color?: unknown }
  activity?: unknown
}

const ACTIVITY_LABEL: Record<Activity, string> = { typing: 'typing…', active: 'here', idle: 'idle' }

function asActivity(value: unknown): Activity {
  return value === 'typing' || value === 'idle' ? value : 'active'
}

function safeColor(value: unknown): string {
  return typeof value === 'string' && /^#[0-9a-f]{3,8}$/i.test(value) ? value : '#888888'
}

/** Renders the presence list into `list` and keeps it current. */
export function bindPresenceList(awareness: Awareness, list: HTMLElement, count: HTMLElement | null): () => void {
  const render = () => {
    const self = awareness.clientID
    const entries = [...awareness.getStates().entries()]
      .filter(([, state]) => state && typeof state === 'object')
      .map(([clientId, state]) => {
        const s = state as PeerState
        const name = typeof s.user?.name === 'string' && s.user.name.trim() ? s.user.name.trim().slice(0, 32) : 'Anonymous'
        return { clientId, name, color: safeColor(s.user?.color), activity: asActivity(s.activity), isSelf: clientId === self }
      })
      .sort((a, b) => Number(b.isSelf) - Number(a.isSelf) || a.name.localeCompare(b.name) || a.clientId - b.clientId)

    const items = entries.map((e) => {
      const li = document.createElement('li')
      li.className = 'peer'
      li.dataset.clientId = String(e.clientId)
      li.dataset.activity = e.activity
      if (e.isSelf) li.dataset.self = 'true'

      const swatch = document.createElement('span')
      swatch.className = 'swatch'
      swatch.style.backgroundColor = e.color

      const name = document.createElement('span')
      name.className = 'peer-name'
      name.textContent = e.name

      const you = document.createElement('span')
      you.className = 'you'
      you.textContent = e.isSelf ? '(you)' : ''

      const activity = document.createElement('span')
      activity.className = `activity activity-${e.activity}`
      activity.textContent = ACTIVITY_LABEL[e.activity]

      li.append(swatch, name, you, activity)
      return li
    })
    list.replaceChildren(...items)
    if (count) count.textContent = String(entries.length)
  }
  awareness.on('change', render)
  render()
  return () => awareness.off('change', render)
}

/** Publishes the local user as `{ user: {name, color, colorLight} }`, the shape both pages use. */
export function publishUser(awareness: Awareness, identity: UserIdentity): void {
  awareness.setLocalStateField('user', { name: identity.name, color: identity.color, colorLight: identity.colorLight })
}

/** The "Your name" field and colour swatch: edits rename the user, saved and published. */
export function bindIdentityInput(awareness: Awareness, identity: UserIdentity, input: HTMLInputElement, swatch: HTMLElement): void {
  input.value = identity.name
  swatch.style.backgroundColor = identity.color
  input.addEventListener('input', () => {
    const name = input.value.trim().slice(0, 32)
    if (!name) return
    identity.name = name
    saveIdentity(identity)
    publishUser(awareness, identity)
  })
  input.addEventListener('change', () => {
    if (!input.value.trim()) input.value = identity.name
  })
}
