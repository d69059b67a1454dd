// A CRDT value of any kind. Twin of crates/plait-crdt/src/value.rs.
// Encoding: varuint kind (0 gcounter, 1 pncounter, 2 lww), then the kind's state.

import { DecodeError, Decoder, Encoder } from './encoding.ts';
import { GCounter } from './gcounter.ts';
import { LwwRegister } from './lww.ts';
import { PnCounter } from './pncounter.ts';

export type Value = GCounter | PnCounter | LwwRegister;
export type Kind = Value['kind'];

export const KIND_TAGS: Record<Kind, number> = { gcounter: 0, pncounter: 1, lww: 2 };
const KINDS: Kind[] = ['gcounter', 'pncounter', 'lww'];

export function kindFromTag(tag: bigint): Kind {
  const kind = tag < BigInt(KINDS.length) ? KINDS[Number(tag)] : undefined;
  if (kind === undefined) throw new DecodeError('UnknownKind', `unknown value kind ${tag}`);
  return kind;
}

export class KindMismatchError extends Error {
  constructor(
    readonly expected: Kind,
    readonly found: Kind,
  ) {
    super(`kind mismatch: value is ${expected}, got ${found}`);
    this.name = 'KindMismatchError';
  }
}

/** Merges `other` into `target` in place; throws KindMismatchError (target unchanged). */
export function mergeValue(target: Value, other: Value): void {
  if (target.kind === 'gcounter' && other.kind === 'gcounter') target.merge(other);
  else if (target.kind === 'pncounter' && other.kind === 'pncounter') target.merge(other);
  else if (target.kind === 'lww' && other.kind === 'lww') target.merge(other);
  else throw new KindMismatchError(target.kind, other.kind);
}

export function cloneValue(v: Value): Value {
  return v.clone();
}

export function valuesEqual(a: Value, b: Value): boolean {
  if (a.kind === 'gcounter' && b.kind === 'gcounter') return a.equals(b);
  if (a.kind === 'pncounter' && b.kind === 'pncounter') return a.equals(b);
  if (a.kind === 'lww' && b.kind === 'lww') return a.equals(b);
  return false;
}

/** The current value: a bigint for counters (throws CounterError on overflow), the JSON for a
 * register. Use `Number(x)` for display when |x| <= Number.MAX_SAFE_INTEGER. */
export function currentValue(v: Value): bigint | unknown {
  return v.kind === 'lww' ? v.value : v.value();
}

export function writeValue(enc: Encoder, v: Value): void {
  enc.varUint(BigInt(KIND_TAGS[v.kind]));
  v.write(enc);
}

export function readValue(dec: Decoder): Value {
  switch (kindFromTag(dec.varUint())) {
    case 'gcounter':
      return GCounter.read(dec);
    case 'pncounter':
      return PnCounter.read(dec);
    case 'lww':
      return LwwRegister.read(dec);
  }
}

export function encodeValue(v: Value): Uint8Array {
  const enc = new Encoder();
  writeValue(enc, v);
  return enc.finish();
}

export function decodeValue(bytes: Uint8Array): Value {
  const dec = new Decoder(bytes);
  const v = readValue(dec);
  dec.finish();
  return v;
}
