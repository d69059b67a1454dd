// End-to-end tests of the rich-text page (`/tiptap.html`: Tiptap over `@hocuspocus/provider`
// on plait's `/hocuspocus` endpoint) in real headless Chromium, alone and beside the
// plain-text page (CodeMirror over y-websocket) in the same room.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import {
  target, demoDir, TestServer, ConsoleLog, launchBrowser, newUser, openRoom, openTiptap, waitForStatus,
  tiptapText, typeInTiptap, typeInEditor, editorText, until, presenceNames, screenshot, composeSideBySide, sleep,
} from './support.mjs'

// The reference server speaks y-websocket only; the page would never connect.
const skip = target !== 'plait' && 'the y-websocket reference server has no Hocuspocus endpoint (/hocuspocus)'

const server = new TestServer()
const consoleLog = new ConsoleLog()
let browser
const run = `${Date.now().toString(36)}`

before(async () => {
  if (skip) return
  await server.start()
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await server.dispose()
})

/** Records the URL of every WebSocket the page opens. */
function watchSockets(page) {
  const urls = []
  page.on('websocket', (ws) => urls.push(ws.url()))
  return urls
}

test(`[${target}] tiptap: two people: live rich text, remote caret with name, presence list, leaving`, { skip }, async () => {
  const room = `tiptap-${run}`
  const alice = await newUser(browser, consoleLog, { name: 'Alice', color: '#e6194b' })
  const bob = await newUser(browser, consoleLog, { name: 'Bob', color: '#4363d8' })
  try {
    const aliceSockets = watchSockets(alice.page)
    await openTiptap(alice.page, server, room)
    await openTiptap(bob.page, server, room)
    await waitForStatus(alice.page, 'synced')
    await waitForStatus(bob.page, 'synced')
    // The page talks Hocuspocus, on the endpoint for it.
    assert.ok(aliceSockets.length >= 1 && aliceSockets.every((u) => new URL(u).pathname === '/hocuspocus'), JSON.stringify(aliceSockets))

    // Typing in one window appears in the other within a second.
    await typeInTiptap(alice.page, 'Trip to the coast')
    const typedAt = Date.now()
    await until(async () => (await tiptapText(bob.page)) === 'Trip to the coast', { timeout: 1_000, message: "Alice's text in Bob's editor" })
    const latency = Date.now() - typedAt
    assert.ok(latency <= 1_000, `took ${latency} ms`)

    // Alice is shown as typing in Bob's list right after her edit.
    await bob.page.locator('#presence .peer[data-activity="typing"] .peer-name', { hasText: 'Alice' }).waitFor({ timeout: 2_000 })

    // Rich text: a bold run made with the toolbar arrives bold.
    await typeInTiptap(alice.page, '\nPack: ')
    // The toolbar button hands focus back to the editor a frame later (Tiptap's focus()): a key
    // pressed before then goes to the button, so wait for the editor to have it.
    const editorFocused = () => alice.page.waitForFunction(() => document.activeElement?.closest('.tiptap'), null, { timeout: 2_000 })
    await alice.page.locator('#bold').click()
    await editorFocused()
    await alice.page.keyboard.type('sunscreen', { delay: 15 })
    await alice.page.locator('#bold').click()
    await editorFocused()
    await alice.page.keyboard.type(', towels', { delay: 15 })
    await bob.page.locator('.tiptap strong', { hasText: 'sunscreen' }).waitFor({ timeout: 2_000 })
    await typeInTiptap(bob.page, '\nTrain at 9:40 (Bob)')
    await until(async () => (await tiptapText(alice.page)) === (await tiptapText(bob.page)), { message: 'both editors equal' })
    assert.equal(await tiptapText(alice.page), 'Trip to the coast\nPack: sunscreen, towels\nTrain at 9:40 (Bob)')

    // Alice's caret goes back into the middle of the text.
    await alice.page.locator('.tiptap p', { hasText: 'Pack' }).click()
    await alice.page.keyboard.press('End')

    // Each sees the other's caret, labelled with the other's name.
    const aliceCaretAtBob = bob.page.locator('.collaboration-carets__label', { hasText: 'Alice' })
    const bobCaretAtAlice = alice.page.locator('.collaboration-carets__label', { hasText: 'Bob' })
    await aliceCaretAtBob.waitFor({ state: 'visible', timeout: 2_000 })
    await bobCaretAtAlice.waitFor({ state: 'visible', timeout: 2_000 })
    assert.equal(await aliceCaretAtBob.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(230, 25, 75)')

    // Both appear in both presence lists.
    for (const who of [alice, bob]) {
      await until(async () => {
        const names = await presenceNames(who.page)
        return names.includes('Alice') && names.includes('Bob') && names.length === 2 && names
      }, { message: `${who.name}'s presence list to show Alice and Bob` })
      assert.equal(await who.page.locator('#presence .peer[data-self="true"] .peer-name').textContent(), who.name)
    }

    // Bob selects his line, so the picture also shows a remote selection.
    await bob.page.keyboard.press('Shift+Home')
    await alice.page.locator('.ProseMirror-yjs-selection').first().waitFor({ timeout: 2_000 })

    // Let the typing badges settle, then keep the pictures.
    await bob.page.locator('#presence .peer[data-activity="active"] .peer-name', { hasText: 'Alice' }).waitFor({ timeout: 5_000 })
    await screenshot(alice.page, 'tiptap-alice')
    await screenshot(bob.page, 'tiptap-bob')
    const shown = server.tiptapUrl(room).replace(/^http:\/\/[^/]+/, 'localhost')
    await composeSideBySide(
      browser,
      [
        { title: `Alice — ${shown}`, png: await alice.page.screenshot() },
        { title: `Bob — ${shown}`, png: await bob.page.screenshot() },
      ],
      path.join(demoDir, 'e2e', 'artifacts', 'tiptap-side-by-side.png'),
    )
    // The committed picture (web-demo/screenshot-tiptap.png) changes only on request.
    if (process.env.UPDATE_SCREENSHOT === '1') {
      fs.copyFileSync(path.join(demoDir, 'e2e', 'artifacts', 'tiptap-side-by-side.png'), path.join(demoDir, 'screenshot-tiptap.png'))
    }

    // Closing Alice's window removes her from Bob's list within a few seconds.
    await alice.context.close()
    await until(async () => {
      const names = await presenceNames(bob.page)
      return !names.includes('Alice') && names.includes('Bob')
    }, { timeout: 5_000, message: "Alice to leave Bob's presence list" })
  } finally {
    await alice.context.close().catch(() => {})
    await bob.context.close()
  }
})

test(`[${target}] tiptap and codemirror in one room: one presence list, separate texts, links between the pages`, { skip }, async () => {
  const room = `mixed-${run}`
  const alice = await newUser(browser, consoleLog, { name: 'Alice', color: '#e6194b' })
  const bob = await newUser(browser, consoleLog, { name: 'Bob', color: '#4363d8' })
  try {
    await openRoom(alice.page, server, room) // CodeMirror, y-websocket
    await openTiptap(bob.page, server, room) // Tiptap, Hocuspocus
    await waitForStatus(alice.page, 'synced')
    await waitForStatus(bob.page, 'synced')

    // Each is in the other's list, across the two protocols.
    for (const who of [alice, bob]) {
      await until(async () => {
        const names = await presenceNames(who.page)
        return names.includes('Alice') && names.includes('Bob') && names.length === 2 && names
      }, { message: `${who.name}'s presence list to show Alice and Bob` })
    }

    // Activity crosses over too.
    await typeInTiptap(bob.page, 'rich text by Bob')
    await alice.page.locator('#presence .peer[data-activity="typing"] .peer-name', { hasText: 'Bob' }).waitFor({ timeout: 2_000 })
    await typeInEditor(alice.page, 'plain text by Alice')
    await bob.page.locator('#presence .peer[data-activity="typing"] .peer-name', { hasText: 'Alice' }).waitFor({ timeout: 2_000 })

    // The pages edit different parts of the room's document (a Y.Text and a Y.XmlFragment).
    await sleep(300)
    assert.equal(await editorText(alice.page), 'plain text by Alice')
    assert.equal(await tiptapText(bob.page), 'rich text by Bob')
    await screenshot(alice.page, 'mixed-alice-codemirror')
    await screenshot(bob.page, 'mixed-bob-tiptap')

    // "Rich text" on the plain page leads to the Tiptap page of the same room, and back.
    await alice.page.locator('#page-rich').click()
    await alice.page.waitForURL((url) => url.pathname === '/tiptap.html' && url.searchParams.get('room') === room)
    await alice.page.locator('.tiptap[contenteditable="true"]').waitFor()
    await waitForStatus(alice.page, 'synced')
    await until(async () => (await tiptapText(alice.page)) === 'rich text by Bob', { message: "Bob's rich text on Alice's new page" })
    await until(async () => (await presenceNames(bob.page)).includes('Alice'), { message: 'Alice still in Bob\'s list after switching pages' })
    await alice.page.locator('#page-plain').click()
    await alice.page.waitForURL((url) => url.pathname === '/' && url.searchParams.get('room') === room)
    await alice.page.locator('.cm-content').waitFor()
    await waitForStatus(alice.page, 'synced')
    assert.equal(await editorText(alice.page), 'plain text by Alice')
  } finally {
    await alice.context.close()
    await bob.context.close()
  }
})

test(`[${target}] tiptap: the text survives a server restart and a reload`, { skip }, async () => {
  const room = `tiptap-persist-${run}`
  const alice = await newUser(browser, consoleLog, { name: 'Alice', color: '#e6194b' })
  try {
    await openTiptap(alice.page, server, room)
    await waitForStatus(alice.page, 'synced')
    await typeInTiptap(alice.page, 'kept by the server\nsecond paragraph')
    await sleep(750) // let the server's store catch up (plait stores before it confirms)
    await until(async () => !(await alice.page.evaluate(() => window.plaitTiptap.provider.hasUnsyncedChanges)), { message: 'every edit confirmed' })

    await server.restart()

    // The page keeps no local copy: what a reload shows came from the restarted server.
    await alice.page.reload()
    await alice.page.locator('.tiptap[contenteditable="true"]').waitFor()
    await waitForStatus(alice.page, 'synced')
    await until(async () => (await tiptapText(alice.page)) === 'kept by the server\nsecond paragraph', { message: 'stored text after the reload' })

    // A fresh browser gets it too.
    const carol = await newUser(browser, consoleLog, { name: 'Carol', color: '#3c8d2f' })
    try {
      await openTiptap(carol.page, server, room)
      await waitForStatus(carol.page, 'synced')
      await until(async () => (await tiptapText(carol.page)) === 'kept by the server\nsecond paragraph', { message: 'stored text in a fresh browser' })
    } finally {
      await carol.context.close()
    }
  } finally {
    await alice.context.close()
  }
})

test(`[${target}] tiptap: no console errors or warnings from the pages`, { skip }, () => {
  if (consoleLog.ignored.length) {
    console.log(`(ignored ${consoleLog.ignored.length} browser network messages from deliberate outages, e.g. ${consoleLog.ignored[0].text})`)
  }
  assert.deepEqual(consoleLog.problems, [])
})
