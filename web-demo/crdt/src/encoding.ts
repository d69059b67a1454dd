// lib0-style variable-length integers and strings, and a bounded decoder for untrusted bytes.
// Twin of crates/plait-crdt/src/encoding.rs: decoding is strict (shortest integer forms only,
// no negative zero, no trailing bytes) and never allocates more than its input.

export const U64_MAX = (1n << 64n) - 1n;
export const I64_MIN = -(1n << 63n);
export const I64_MAX = (1n << 63n) - 1n;

/** Why a byte string could not be decoded (`code` names the Rust `DecodeError` variant). */
export class DecodeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'DecodeError';
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** Appends bytes; `finish()` returns them. */
export class Encoder {
  private bytes: number[] = [];

  u8(b: number): void {
    this.bytes.push(b & 0xff);
  }

  raw(bytes: Uint8Array): void {
    for (const b of bytes) this.bytes.push(b);
  }

  varUint(n: bigint): void {
    if (n < 0n || n > U64_MAX) throw new RangeError(`varuint out of range: ${n}`);
    while (n >= 0x80n) {
      this.bytes.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.bytes.push(Number(n));
  }

  varInt(n: bigint): void {
    if (n < I64_MIN || n > I64_MAX) throw new RangeError(`varint out of range: ${n}`);
    const negative = n < 0n;
    let magnitude = negative ? -n : n;
    let first = Number(magnitude & 0x3fn) | (negative ? 0x40 : 0);
    magnitude >>= 6n;
    if (magnitude > 0n) first |= 0x80;
    this.bytes.push(first);
    if (magnitude > 0n) this.varUint(magnitude);
  }

  varBytes(bytes: Uint8Array): void {
    this.varUint(BigInt(bytes.length));
    this.raw(bytes);
  }

  varString(s: string): void {
    this.varBytes(utf8(s));
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/** A cursor over untrusted bytes; every read is bounds-checked. */
export class Decoder {
  private pos = 0;

  constructor(private readonly buf: Uint8Array) {}

  remaining(): number {
    return this.buf.length - this.pos;
  }

  /** Throws unless every byte was consumed. */
  finish(): void {
    const n = this.remaining();
    if (n !== 0) throw new DecodeError('TrailingBytes', `${n} trailing bytes after the end of the value`);
  }

  u8(): number {
    if (this.pos >= this.buf.length) throw new DecodeError('UnexpectedEnd', 'unexpected end of input');
    return this.buf[this.pos++]!;
  }

  exact(len: number): Uint8Array {
    if (len > this.remaining()) throw new DecodeError('UnexpectedEnd', 'unexpected end of input');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  private groups(acc: bigint, shift: bigint): bigint {
    for (;;) {
      const byte = this.u8();
      const group = BigInt(byte & 0x7f);
      if (shift >= 64n || group > U64_MAX >> shift) {
        throw new DecodeError('IntegerOverflow', 'variable-length integer overflows 64 bits');
      }
      acc |= group << shift;
      shift += 7n;
      if ((byte & 0x80) === 0) {
        if (group === 0n) throw new DecodeError('NonCanonical', 'non-canonical variable-length integer');
        return acc;
      }
    }
  }

  varUint(): bigint {
    const first = this.u8();
    if ((first & 0x80) === 0) return BigInt(first);
    return this.groups(BigInt(first & 0x7f), 7n);
  }

  varInt(): bigint {
    const first = this.u8();
    const negative = (first & 0x40) !== 0;
    const low = BigInt(first & 0x3f);
    const magnitude = (first & 0x80) === 0 ? low : this.groups(low, 6n);
    if (negative) {
      if (magnitude === 0n) throw new DecodeError('NonCanonical', 'non-canonical variable-length integer');
      if (magnitude > 1n << 63n) throw new DecodeError('IntegerOverflow', 'variable-length integer overflows 64 bits');
      return -magnitude;
    }
    if (magnitude > I64_MAX) throw new DecodeError('IntegerOverflow', 'variable-length integer overflows 64 bits');
    return magnitude;
  }

  /** A varuint length and that many bytes, refusing lengths beyond `max`. */
  varBytes(what: string, max: number): Uint8Array {
    const declared = this.varUint();
    const remaining = this.remaining();
    if (declared > BigInt(remaining)) {
      throw new DecodeError('LengthExceedsInput', `declared length ${declared} exceeds the ${remaining} remaining bytes`);
    }
    const len = Number(declared);
    if (len > max) throw new DecodeError('TooLong', `${what} of ${len} bytes exceeds the limit of ${max}`);
    return this.exact(len);
  }

  varString(what: string, max: number): string {
    const bytes = this.varBytes(what, max);
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      throw new DecodeError('InvalidUtf8', 'string is not valid utf-8');
    }
  }

  /** A varuint count of entries of at least `minEntryBytes` each that the input can hold. */
  count(minEntryBytes: number): number {
    const declared = this.varUint();
    const remaining = this.remaining();
    if (declared * BigInt(minEntryBytes) > BigInt(remaining)) {
      throw new DecodeError('CountExceedsInput', `declared count ${declared} exceeds what the ${remaining} remaining bytes can hold`);
    }
    return Number(declared);
  }
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Byte-wise comparison (-1, 0, 1), like Rust's ordering of byte strings. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}
