// G-Counter: one monotonic u64 entry per replica; merge = pointwise max; value = checked sum.
// Twin of crates/plait-crdt/src/gcounter.rs. Encoding: varuint n, then n × (varuint replica,
// varuint count), replicas strictly ascending, counts non-zero.

import { DecodeError, Decoder, Encoder, U64_MAX } from './encoding.ts';

/** `code` is `entry_overflow` or `value_overflow`. */
export class CounterError extends Error {
  constructor(
    readonly code: 'entry_overflow' | 'value_overflow',
    message: string,
  ) {
    super(message);
    this.name = 'CounterError';
  }
}

export class GCounter {
  readonly kind = 'gcounter' as const;
  /** Replica -> count; zero entries are never stored. */
  private readonly map = new Map<bigint, bigint>();

  static fromEntries(entries: Iterable<readonly [bigint, bigint]>): GCounter {
    const c = new GCounter();
    for (const [replica, count] of entries) c.mergeEntry(replica, count);
    return c;
  }

  /** Entries by ascending replica. */
  entries(): [bigint, bigint][] {
    return [...this.map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  get(replica: bigint): bigint {
    return this.map.get(replica) ?? 0n;
  }

  isEmpty(): boolean {
    return this.map.size === 0;
  }

  /** The sum; throws `value_overflow` past u64. */
  value(): bigint {
    let sum = 0n;
    for (const c of this.map.values()) sum += c;
    if (sum > U64_MAX) throw new CounterError('value_overflow', 'counter value overflows');
    return sum;
  }

  /** Adds `delta` to `replica`'s entry; returns the delta state. Unchanged on error. */
  increment(replica: bigint, delta: bigint): GCounter {
    if (delta < 0n || delta > U64_MAX) throw new RangeError(`delta ${delta}`);
    if (delta === 0n) return new GCounter();
    const entry = this.get(replica) + delta;
    if (entry > U64_MAX) throw new CounterError('entry_overflow', `increment overflows the entry of replica ${replica}`);
    if (this.value() + delta > U64_MAX) throw new CounterError('value_overflow', 'counter value overflows');
    this.map.set(replica, entry);
    return GCounter.fromEntries([[replica, entry]]);
  }

  merge(other: GCounter): void {
    for (const [replica, count] of other.map) this.mergeEntry(replica, count);
  }

  clone(): GCounter {
    return GCounter.fromEntries(this.map);
  }

  equals(other: GCounter): boolean {
    if (this.map.size !== other.map.size) return false;
    for (const [r, c] of this.map) if (other.map.get(r) !== c) return false;
    return true;
  }

  private mergeEntry(replica: bigint, count: bigint): void {
    if (count === 0n) return;
    const current = this.map.get(replica) ?? 0n;
    if (count > current) this.map.set(replica, count);
  }

  write(enc: Encoder): void {
    const entries = this.entries();
    enc.varUint(BigInt(entries.length));
    for (const [replica, count] of entries) {
      enc.varUint(replica);
      enc.varUint(count);
    }
  }

  static read(dec: Decoder): GCounter {
    const n = dec.count(2);
    const c = new GCounter();
    let previous: bigint | undefined;
    for (let i = 0; i < n; i++) {
      const replica = dec.varUint();
      const count = dec.varUint();
      if (previous !== undefined && replica <= previous) {
        throw new DecodeError('UnsortedReplicas', 'counter replicas are not strictly ascending');
      }
      if (count === 0n) throw new DecodeError('ZeroEntry', `counter entry for replica ${replica} is zero`);
      previous = replica;
      c.map.set(replica, count);
    }
    return c;
  }
}
