// Page chrome both editors share: element lookup, the "Copy link" button, and the
// message shown when an editor fails to start.

export const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id)
  if (!el) throw new Error(`missing #${id}`)
  return el as T
}

/** Copies the page's address (which names the room) to the clipboard. */
export function bindCopyLink(button: HTMLElement): void {
  button.addEventListener('click', async () => {
    const url = new URL(window.location.href)
    try {
      await navigator.clipboard.writeText(url.href)
      button.textContent = 'Copied!'
    } catch {
      window.prompt('Copy this link to share the room:', url.href)
    }
    setTimeout(() => (button.textContent = 'Copy link'), 1500)
  })
}

/** Shows why the editor could not start, then rethrows so the error is not hidden. */
export function failPage(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err)
  document.body.dataset.failed = 'true'
  const box = document.createElement('p')
  box.className = 'fatal'
  box.textContent = `The editor could not start: ${message}`
  document.body.prepend(box)
  throw err
}
