// End-to-end tests of the web demo in real headless Chromium, against plait (or
// the y-websocket reference server as a stand-in; see support.mjs).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import {
  target, demoDir, TestServer, ConsoleLog, launchBrowser, newUser, openRoom, waitForStatus, editorText,
  until, typeInEditor, presenceNames, setOfflineSwitch, screenshot, composeSideBySide, sleep,
} from './support.mjs'

const server = new TestServer()
const consoleLog = new ConsoleLog()
let browser
const run = `${Date.now().toString(36)}`

before(async () => {
  await server.start()
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await server.dispose()
})

test(`[${target}] two people: live text, remote cursor with name, presence list, leaving`, async () => {
  const room = `groceries-${run}`
  const alice = await newUser(browser, consoleLog, { name: 'Alice', color: '#e6194b' })
  const bob = await newUser(browser, consoleLog, { name: 'Bob', color: '#4363d8' })
  try {
    await openRoom(alice.page, server, room)
    await openRoom(bob.page, server, room)
    await waitForStatus(alice.page, 'synced')
    await waitForStatus(bob.page, 'synced')

    // Typing in one window appears in the other within a second.
    await typeInEditor(alice.page, 'Shopping list')
    const typedAt = Date.now()
    await until(async () => (await editorText(bob.page)) === 'Shopping list', { timeout: 1_000, message: "Alice's text in Bob's editor" })
    const latency = Date.now() - typedAt
    assert.ok(latency <= 1_000, `took ${latency} ms`)

    // Alice is shown as typing in Bob's list right after her edit.
    await bob.page.locator('#presence .peer[data-activity="typing"] .peer-name', { hasText: 'Alice' }).waitFor({ timeout: 2_000 })

    await typeInEditor(alice.page, '\n- oat milk\n- apples\n- coffee beans')
    await typeInEditor(bob.page, '\n- bread (Bob)')
    await until(async () => (await editorText(alice.page)) === (await editorText(bob.page)), { message: 'both editors equal' })
    // Put Alice's caret somewhere visible in the middle of the text.
    await alice.page.locator('.cm-line', { hasText: 'apples' }).click()
    await alice.page.keyboard.press('End')

    // Each sees the other's caret, labelled with the other's name.
    const aliceCaretAtBob = bob.page.locator('.cm-ySelectionInfo', { hasText: 'Alice' })
    const bobCaretAtAlice = alice.page.locator('.cm-ySelectionInfo', { hasText: 'Bob' })
    await aliceCaretAtBob.waitFor({ state: 'visible', timeout: 2_000 })
    await bobCaretAtAlice.waitFor({ state: 'visible', timeout: 2_000 })
    assert.equal(await aliceCaretAtBob.evaluate((el) => getComputedStyle(el).opacity), '1')

    // Both appear in both presence lists.
    for (const who of [alice, bob]) {
      await until(async () => {
        const names = await presenceNames(who.page)
        return names.includes('Alice') && names.includes('Bob') && names.length === 2 && names
      }, { message: `${who.name}'s presence list to show Alice and Bob` })
      assert.equal(await who.page.locator('#presence .peer[data-self="true"] .peer-name').textContent(), who.name)
    }

    // The title and the like counter (plait's CRDT values) belong in the picture too.
    if (target === 'plait') {
      await alice.page.locator('#doc-title').fill('Weekend groceries')
      await alice.page.locator('#doc-title').press('Enter')
      await alice.page.locator('#like').click()
      await bob.page.locator('#like').click()
      await bob.page.locator('#like').click()
      for (const who of [alice, bob]) {
        await until(async () => (await who.page.locator('#like-count').textContent()) === '3', { message: `${who.name} to see 3 likes` })
        await until(async () => (await who.page.locator('#doc-title').inputValue()) === 'Weekend groceries', { message: `${who.name} to see the title` })
      }
      await bob.page.locator('.cm-line', { hasText: 'bread' }).click()
      await bob.page.keyboard.press('End')
    }

    // Bob selects his line, so the picture also shows a remote selection.
    await bob.page.keyboard.press('Shift+Home')
    await alice.page.locator('.cm-ySelection').first().waitFor({ timeout: 2_000 })

    // Let the typing badges settle, then keep the pictures.
    await bob.page.locator('#presence .peer[data-activity="active"] .peer-name', { hasText: 'Alice' }).waitFor({ timeout: 5_000 })
    await screenshot(alice.page, 'live-alice')
    await screenshot(bob.page, 'live-bob')
    await composeSideBySide(
      browser,
      [
        { title: `Alice — ${server.pageUrl(room).replace(/^http:\/\/[^/]+/, 'localhost')}`, png: await alice.page.screenshot() },
        { title: `Bob — ${server.pageUrl(room).replace(/^http:\/\/[^/]+/, 'localhost')}`, png: await bob.page.screenshot() },
      ],
      path.join(demoDir, 'e2e', 'artifacts', 'side-by-side.png'),
    )
    // The committed picture (web-demo/screenshot.png) changes only on request.
    if (process.env.UPDATE_SCREENSHOT === '1') {
      fs.copyFileSync(path.join(demoDir, 'e2e', 'artifacts', 'side-by-side.png'), path.join(demoDir, 'screenshot.png'))
    }

    // A phone-sized window for the record.
    const phone = await newUser(browser, consoleLog, { name: 'Carol', color: '#3c8d2f', viewport: { width: 390, height: 760 } })
    await openRoom(phone.page, server, room)
    await waitForStatus(phone.page, 'synced')
    await until(async () => (await presenceNames(phone.page)).length === 3, { message: 'three people in the phone list' })
    await screenshot(phone.page, 'phone')
    await phone.context.close()

    // Closing Alice's window removes her from Bob's list within a few seconds.
    await alice.context.close()
    await until(async () => {
      const names = await presenceNames(bob.page)
      return !names.includes('Alice') && names.includes('Bob')
    }, { timeout: 5_000, message: 'Alice to leave Bob\'s presence list' })
  } finally {
    await alice.context.close().catch(() => {})
    await bob.context.close()
  }
})

test(`[${target}] offline edits on both sides merge when reconnecting`, async () => {
  const room = `e2e-offline-${run}`
  const alice = await newUser(browser, consoleLog, { name: 'Alice', color: '#e6194b' })
  const bob = await newUser(browser, consoleLog, { name: 'Bob', color: '#4363d8' })
  try {
    await openRoom(alice.page, server, room)
    await openRoom(bob.page, server, room)
    await waitForStatus(alice.page, 'synced')
    await waitForStatus(bob.page, 'synced')
    await typeInEditor(alice.page, 'shared line')
    await until(async () => (await editorText(bob.page)) === 'shared line', { message: 'initial text at Bob' })

    // Alice goes offline: the demo's switch (closes the socket) plus no network at all.
    await setOfflineSwitch(alice.page, true)
    await alice.context.setOffline(true)
    await waitForStatus(alice.page, 'offline')
    await until(async () => !(await presenceNames(bob.page)).includes('Alice'), { message: 'Alice to drop from Bob\'s list' })

    await typeInEditor(alice.page, '\nalice wrote this offline')
    await typeInEditor(bob.page, 'bob wrote this online\n', { at: 'start' })
    await sleep(500)
    assert.ok(!(await editorText(bob.page)).includes('alice wrote this offline'), 'offline edit must not reach Bob yet')
    assert.ok(!(await editorText(alice.page)).includes('bob wrote this online'), 'online edit must not reach offline Alice')
    await screenshot(alice.page, 'offline-alice')

    // Back online: both converge to the same text with both edits.
    await alice.context.setOffline(false)
    await setOfflineSwitch(alice.page, false)
    await waitForStatus(alice.page, 'synced')
    const merged = await until(async () => {
      const [a, b] = [await editorText(alice.page), await editorText(bob.page)]
      return a === b && a.includes('alice wrote this offline') && a.includes('bob wrote this online') && a
    }, { message: 'both editors to converge' })
    assert.equal(merged, 'bob wrote this online\nshared line\nalice wrote this offline')
    // ...and Alice is back in Bob's presence list (her awareness is accepted again).
    await until(async () => (await presenceNames(bob.page)).includes('Alice'), { timeout: 3_000, message: 'Alice back in Bob\'s list' })
    await screenshot(bob.page, 'offline-merged-bob')
  } finally {
    await alice.context.close()
    await bob.context.close()
  }
})

test(`[${target}] content survives a server restart; offline reload shows IndexedDB content`, async () => {
  const room = `e2e-persist-${run}`
  const alice = await newUser(browser, consoleLog, { name: 'Alice', color: '#e6194b' })
  try {
    await openRoom(alice.page, server, room)
    await waitForStatus(alice.page, 'synced')
    await typeInEditor(alice.page, 'kept by the server')
    await sleep(750) // let the server's store catch up (plait stores before it broadcasts)

    await server.restart()

    // A fresh browser (no IndexedDB) gets the text from the restarted server.
    const carol = await newUser(browser, consoleLog, { name: 'Carol', color: '#3c8d2f' })
    try {
      await openRoom(carol.page, server, room)
      await waitForStatus(carol.page, 'synced')
      await until(async () => (await editorText(carol.page)) === 'kept by the server', { message: 'stored text in a fresh browser' })

      // Alice reloads: the content is there, and she is synced again.
      await alice.page.reload()
      await waitForStatus(alice.page, 'synced')
      assert.equal(await editorText(alice.page), 'kept by the server')

      // Offline, edit, reload while still offline: the page comes from the service
      // worker's cache, the switch survives the reload, no socket is opened, and the
      // local edit comes back from IndexedDB (the server never saw it).
      await alice.page.waitForFunction(() => navigator.serviceWorker?.controller != null, null, { timeout: 5_000 })
      await setOfflineSwitch(alice.page, true)
      await alice.context.setOffline(true)
      await typeInEditor(alice.page, '\nonly in this browser')
      await sleep(300) // y-indexeddb writes each update as it happens
      const sockets = []
      alice.page.on('websocket', (ws) => sockets.push(ws.url()))
      await alice.page.reload()
      await alice.page.locator('.cm-content').waitFor()
      await waitForStatus(alice.page, 'offline')
      assert.equal(await alice.page.locator('#offline-toggle').getAttribute('aria-pressed'), 'true')
      await sleep(500)
      assert.deepEqual(sockets, [], 'no WebSocket while the offline switch is on')
      assert.equal(await editorText(alice.page), 'kept by the server\nonly in this browser')
      await screenshot(alice.page, 'offline-reload-alice')
      assert.equal(await editorText(carol.page), 'kept by the server', 'the offline edit must not have reached the server')

      // Reconnecting merges it.
      await alice.context.setOffline(false)
      await setOfflineSwitch(alice.page, false)
      await waitForStatus(alice.page, 'synced')
      await until(async () => (await editorText(carol.page)) === 'kept by the server\nonly in this browser', { message: 'offline edit to reach Carol' })
    } finally {
      await carol.context.close()
    }
  } finally {
    await alice.context.close()
  }
})

test(`[${target}] likes and title (CRDT values): 20 clicks split across two windows show 20 in both`, { skip: target !== 'plait' && 'needs plait\'s CRDT values' }, async () => {
  const room = `likes-${run}`
  const alice = await newUser(browser, consoleLog, { name: 'Alice', color: '#e6194b' })
  const bob = await newUser(browser, consoleLog, { name: 'Bob', color: '#4363d8' })
  try {
    await openRoom(alice.page, server, room)
    await openRoom(bob.page, server, room)
    await waitForStatus(alice.page, 'synced')
    await waitForStatus(bob.page, 'synced')
    for (const who of [alice, bob]) assert.equal(await who.page.locator('#like-count').textContent(), '0')

    // Interleaved and concurrent: 12 clicks in Alice's window, 8 in Bob's.
    const clicks = (who, n) => (async () => {
      for (let i = 0; i < n; i++) await who.page.locator('#like').click()
    })()
    await Promise.all([clicks(alice, 12), clicks(bob, 8)])
    for (const who of [alice, bob]) {
      await until(async () => (await who.page.locator('#like-count').textContent()) === '20', { message: `${who.name} to see 20 likes` })
    }

    // The title set in one window shows in the other.
    await bob.page.locator('#doc-title').fill('Plans for Saturday')
    await bob.page.locator('#doc-title').press('Enter')
    await until(async () => (await alice.page.locator('#doc-title').inputValue()) === 'Plans for Saturday', { message: "Bob's title in Alice's window" })

    // A late window gets both from the server.
    const carol = await newUser(browser, consoleLog, { name: 'Carol', color: '#3c8d2f' })
    try {
      await openRoom(carol.page, server, room)
      await until(async () => (await carol.page.locator('#like-count').textContent()) === '20', { message: 'Carol to see 20 likes' })
      await until(async () => (await carol.page.locator('#doc-title').inputValue()) === 'Plans for Saturday', { message: 'Carol to see the title' })
      await screenshot(carol.page, 'values-carol')
    } finally {
      await carol.context.close()
    }
  } finally {
    await alice.context.close()
    await bob.context.close()
  }
})

test(`[${target}] no console errors or warnings from the page`, () => {
  if (consoleLog.ignored.length) {
    console.log(`(ignored ${consoleLog.ignored.length} browser network messages from deliberate outages, e.g. ${consoleLog.ignored[0].text})`)
  }
  assert.deepEqual(consoleLog.problems, [])
})
