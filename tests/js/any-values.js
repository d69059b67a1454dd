// Values of every lib0 `Any` type (encoding.writeAny tags 116..127), with the edge cases where a
// re-encoder can go wrong: the integer / float32 / float64 boundaries, -0, NaN, bigint, astral
// strings, binary, and objects whose key order is not alphabetical. Shared by
// test/15-any-fidelity.test.js and any-fixtures.js (which prints the byte fixtures of the Rust
// tests).

/** [label, value] pairs; labels are unique and double as Y.Map keys. */
export const ANY_VALUES = () => [
  ['undefined', undefined],
  ['null', null],
  ['true', true],
  ['false', false],
  ['int 0', 0],
  ['int -0', -0],
  ['int 42', 42],
  ['int -42', -42],
  ['int 2^31-1', 2 ** 31 - 1],
  ['int -(2^31-1)', -(2 ** 31 - 1)],
  ['number 2^31', 2 ** 31],
  ['number -2^31', -(2 ** 31)],
  ['number 2^32+1', 2 ** 32 + 1],
  ['number 2^53', 2 ** 53],
  ['number 2^53+2', 2 ** 53 + 2],
  ['number -(2^53+2)', -(2 ** 53 + 2)],
  ['float32 1.5', 1.5],
  ['float32 max', 3.4028234663852886e38],
  ['float32 min subnormal', 1.401298464324817e-45],
  ['float64 0.1', 0.1],
  ['float64 1e30', 1e30],
  ['float64 max', Number.MAX_VALUE],
  ['float64 min subnormal', 5e-324],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['bigint 0n', 0n],
  ['bigint 42n', 42n],
  ['bigint 2n**40n', 2n ** 40n],
  ['bigint -(2n**40n)', -(2n ** 40n)],
  ['bigint i64 max', 2n ** 63n - 1n],
  ['bigint i64 min', -(2n ** 63n)],
  ['string empty', ''],
  ['string ascii', 'plait'],
  ['string astral', '𝄞😀 é'],
  ['Uint8Array empty', new Uint8Array([])],
  ['Uint8Array', new Uint8Array([0, 1, 127, 128, 255])],
  ['array empty', []],
  ['array nested', [1, [2n, [-0, '𝄞']], { z: 1, a: 2 }, null, undefined]],
  ['object empty', {}],
  ['object key order', { zeta: 1, alpha: 2, mike: { yankee: 2n ** 40n, bravo: [3, 1.5], kilo: { x: 1, c: 2 } }, charlie: new Uint8Array([9]) }],
  ['object integer-like keys', { b: 1, 10: 2, a: 3, 2: 4 }]
]

/**
 * What the tests push to a Y.Array: all values as one nested JSON array, then each value that
 * Yjs accepts as an array element of its own (Yjs 13 refuses a top-level `undefined` or bigint
 * in `Y.Array.insert`; a top-level Uint8Array becomes binary content, not `Any`).
 */
export const arrayContent = (values = ANY_VALUES().map(([, v]) => v)) =>
  [values, ...values.filter(v => v !== undefined && typeof v !== 'bigint')]
