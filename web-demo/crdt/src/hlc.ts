// A hybrid logical clock (Kulkarni et al. 2014). Twin of crates/plait-crdt/src/hlc.rs.
// Timestamps order by (physical, logical, replica). Encoding: 8 bytes big-endian of
// physical << 16 | logical, then varuint replica.

import { Decoder, Encoder, U64_MAX } from './encoding.ts';

export const MAX_PHYSICAL_MS = 2 ** 48 - 1;
export const DEFAULT_MAX_OFFSET_MS = 500;

export interface Timestamp {
  /** Milliseconds since the Unix epoch, at most 2^48 - 1. */
  readonly physical: number;
  /** 0..65535. */
  readonly logical: number;
  /** The node (server instance) that made it, a u64. */
  readonly replica: bigint;
}

/** `code` is `remote_too_far_ahead`, `logical_overflow` or `physical_out_of_range`. */
export class ClockError extends Error {
  constructor(
    readonly code: 'remote_too_far_ahead' | 'logical_overflow' | 'physical_out_of_range',
    message: string,
  ) {
    super(message);
    this.name = 'ClockError';
  }
}

export function timestamp(physical: number, logical: number, replica: bigint): Timestamp {
  if (!Number.isInteger(physical) || physical < 0 || physical > MAX_PHYSICAL_MS) {
    throw new ClockError('physical_out_of_range', `physical time ${physical} ms does not fit in 48 bits`);
  }
  if (!Number.isInteger(logical) || logical < 0 || logical > 0xffff) throw new RangeError(`logical ${logical}`);
  if (replica < 0n || replica > U64_MAX) throw new RangeError(`replica ${replica}`);
  return { physical, logical, replica };
}

/** -1, 0 or 1. */
export function compareTimestamps(a: Timestamp, b: Timestamp): number {
  if (a.physical !== b.physical) return a.physical < b.physical ? -1 : 1;
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1;
  if (a.replica !== b.replica) return a.replica < b.replica ? -1 : 1;
  return 0;
}

export function writeTimestamp(enc: Encoder, t: Timestamp): void {
  const packed = (BigInt(t.physical) << 16n) | BigInt(t.logical);
  for (let shift = 56n; shift >= 0n; shift -= 8n) enc.u8(Number((packed >> shift) & 0xffn));
  enc.varUint(t.replica);
}

export function readTimestamp(dec: Decoder): Timestamp {
  const fixed = dec.exact(8);
  let packed = 0n;
  for (const b of fixed) packed = (packed << 8n) | BigInt(b);
  const replica = dec.varUint();
  return { physical: Number(packed >> 16n), logical: Number(packed & 0xffffn), replica };
}

export function encodeTimestamp(t: Timestamp): Uint8Array {
  const enc = new Encoder();
  writeTimestamp(enc, t);
  return enc.finish();
}

export function decodeTimestamp(bytes: Uint8Array): Timestamp {
  const dec = new Decoder(bytes);
  const t = readTimestamp(dec);
  dec.finish();
  return t;
}

/** A source of physical time in milliseconds since the Unix epoch. */
export interface Clock {
  nowMs(): number;
}

export const systemClock: Clock = { nowMs: () => Date.now() };

/** A clock that only moves when told to, for tests. */
export class ManualClock implements Clock {
  constructor(public ms = 0) {}
  nowMs(): number {
    return this.ms;
  }
  set(ms: number): void {
    this.ms = ms;
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

/** A hybrid logical clock owned by one node. Refusals leave it unchanged. */
export class Hlc {
  private lastPhysical = 0;
  private lastLogical = 0;
  maxOffsetMs = DEFAULT_MAX_OFFSET_MS;

  constructor(
    readonly replica: bigint,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Restores the high-water mark so the next timestamp is greater than `t`. */
  withHighWater(t: Timestamp): this {
    if (t.physical > this.lastPhysical || (t.physical === this.lastPhysical && t.logical > this.lastLogical)) {
      this.lastPhysical = t.physical;
      this.lastLogical = t.logical;
    }
    return this;
  }

  withMaxOffset(ms: number): this {
    this.maxOffsetMs = ms;
    return this;
  }

  last(): Timestamp {
    return { physical: this.lastPhysical, logical: this.lastLogical, replica: this.replica };
  }

  /** Send rule. */
  now(): Timestamp {
    const pt = this.physicalNow();
    if (pt > this.lastPhysical) return this.commit(pt, 0);
    if (this.lastLogical === 0xffff) {
      throw new ClockError('logical_overflow', `logical counter overflow at ${this.lastPhysical} ms`);
    }
    return this.commit(this.lastPhysical, this.lastLogical + 1);
  }

  /** Receive rule; refuses a remote more than `maxOffsetMs` ahead of local physical time. */
  observe(remote: Timestamp): Timestamp {
    const pt = this.physicalNow();
    if (remote.physical > pt + this.maxOffsetMs) {
      throw new ClockError(
        'remote_too_far_ahead',
        `remote timestamp at ${remote.physical} ms is more than ${this.maxOffsetMs} ms ahead of local time ${pt} ms`,
      );
    }
    const l = Math.max(this.lastPhysical, remote.physical, pt);
    const fromLocal = l === this.lastPhysical;
    const fromRemote = l === remote.physical;
    let base: number | undefined;
    if (fromLocal && fromRemote) base = Math.max(this.lastLogical, remote.logical);
    else if (fromLocal) base = this.lastLogical;
    else if (fromRemote) base = remote.logical;
    if (base === undefined) return this.commit(l, 0);
    if (base === 0xffff) throw new ClockError('logical_overflow', `logical counter overflow at ${l} ms`);
    return this.commit(l, base + 1);
  }

  private physicalNow(): number {
    const ms = Math.floor(this.clock.nowMs());
    if (ms > MAX_PHYSICAL_MS) {
      throw new ClockError('physical_out_of_range', `physical time ${ms} ms does not fit in 48 bits`);
    }
    return Math.max(ms, 0);
  }

  private commit(physical: number, logical: number): Timestamp {
    this.lastPhysical = physical;
    this.lastLogical = logical;
    return this.last();
  }
}
