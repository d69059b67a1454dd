// Prints the byte fixtures pasted into the Rust tests of lib0 `Any` fidelity
// (vendor/yrs/src/any.rs and crates/plait-protocol/tests/any_fidelity.rs):
//
//   cd tests/js && npm ci && node any-fixtures.js
//
// 1. each value of any-values.js as lib0 0.2 `encoding.writeAny` writes it (Yjs 13), checked
//    against lib0 1.0 (Yjs 14) which must write the same bytes;
// 2. a Yjs 13 and a Yjs 14 update of one client (id 7) that sets each value in a map 'map' and
//    pushes `arrayContent()` to an array 'array', in one transaction.
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import * as Y14 from '@y/y'
import { createRequire } from 'node:module'
import { ANY_VALUES, arrayContent } from './any-values.js'

const require = createRequire(import.meta.url)
const encoding14 = await import(require.resolve('lib0/encoding', { paths: [require.resolve('@y/y')] }))
const hex = (u8) => Buffer.from(u8).toString('hex')

for (const [label, value] of ANY_VALUES()) {
  const bytes = hex(encoding.encode(e => encoding.writeAny(e, value)))
  const bytes14 = hex(encoding14.encode(e => encoding14.writeAny(e, value)))
  if (bytes !== bytes14) throw new Error(`lib0 generations disagree on ${label}: ${bytes} vs ${bytes14}`)
  console.log(`    (${JSON.stringify(label)}, "${bytes}"),`)
}

const doc13 = new Y.Doc()
doc13.clientID = 7
doc13.transact(() => {
  for (const [label, value] of ANY_VALUES()) doc13.getMap('map').set(label, value)
  doc13.getArray('array').push(arrayContent())
})
console.log(`\nYJS13_UPDATE = "${hex(Y.encodeStateAsUpdate(doc13))}"`)

const doc14 = new Y14.Doc()
doc14.clientID = 7
doc14.transact(() => {
  for (const [label, value] of ANY_VALUES()) doc14.get('map').setAttr(label, value)
  doc14.get('array').push(arrayContent())
})
console.log(`\nYJS14_UPDATE = "${hex(Y14.encodeStateAsUpdate(doc14))}"`)
