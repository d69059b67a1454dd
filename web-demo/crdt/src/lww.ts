// LWW-Register holding a JSON value; the greater HLC timestamp wins. Twin of
// crates/plait-crdt/src/lww.rs. Encoding: timestamp, then varstring of compact JSON text
// (at most MAX_JSON_BYTES bytes, nesting at most MAX_JSON_DEPTH, as serde_json enforces).

import { compareBytes, DecodeError, utf8, type Decoder, type Encoder } from './encoding.ts';
import { compareTimestamps, readTimestamp, writeTimestamp, type Timestamp } from './hlc.ts';

export const MAX_JSON_BYTES = 64 * 1024;
/** serde_json refuses 128 levels of nesting; 127 is the deepest accepted. */
export const MAX_JSON_DEPTH = 127;

/** Compact JSON text, as JSON.stringify makes it; throws on values JSON cannot represent. */
export function jsonText(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError('value is not representable as json');
  return text;
}

export class LwwRegister {
  readonly kind = 'lww' as const;

  constructor(
    public value: unknown,
    public stamp: Timestamp,
  ) {}

  /** The greater timestamp wins; equal timestamps with different values keep the greater JSON
   * text (UTF-8 byte order), which only a misbehaving node can cause. */
  merge(other: LwwRegister): void {
    const order = compareTimestamps(other.stamp, this.stamp);
    let take = order > 0;
    if (order === 0) take = compareBytes(utf8(jsonText(other.value)), utf8(jsonText(this.value))) > 0;
    if (take) {
      this.value = other.value;
      this.stamp = other.stamp;
    }
  }

  clone(): LwwRegister {
    return new LwwRegister(this.value, this.stamp);
  }

  equals(other: LwwRegister): boolean {
    return compareTimestamps(this.stamp, other.stamp) === 0 && jsonText(this.value) === jsonText(other.value);
  }

  write(enc: Encoder): void {
    writeTimestamp(enc, this.stamp);
    enc.varString(jsonText(this.value));
  }

  static read(dec: Decoder): LwwRegister {
    const stamp = readTimestamp(dec);
    return new LwwRegister(readJson(dec), stamp);
  }
}

/** Reads a varstring of JSON text within the size and depth limits. */
export function readJson(dec: Decoder): unknown {
  const text = dec.varString('json value', MAX_JSON_BYTES);
  checkDepth(text);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new DecodeError('InvalidJson', `register value is not valid json: ${(e as Error).message}`);
  }
}

function checkDepth(text: string): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '[' || c === '{') {
      if (++depth > MAX_JSON_DEPTH) throw new DecodeError('InvalidJson', 'register value is not valid json: recursion limit exceeded');
    } else if (c === ']' || c === '}') {
      depth--;
    }
  }
}
