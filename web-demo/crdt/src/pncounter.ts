// PN-Counter: two G-Counters; value = increments - decrements as an i64 (checked).
// Twin of crates/plait-crdt/src/pncounter.rs. Encoding: increments state, decrements state.

import { I64_MAX, I64_MIN, type Decoder, type Encoder } from './encoding.ts';
import { CounterError, GCounter } from './gcounter.ts';

export class PnCounter {
  readonly kind = 'pncounter' as const;

  constructor(
    readonly increments = new GCounter(),
    readonly decrements = new GCounter(),
  ) {}

  isEmpty(): boolean {
    return this.increments.isEmpty() && this.decrements.isEmpty();
  }

  /** Throws `value_overflow` if a half passes u64 or the difference leaves i64. */
  value(): bigint {
    const v = this.increments.value() - this.decrements.value();
    if (v < I64_MIN || v > I64_MAX) throw new CounterError('value_overflow', 'counter value overflows');
    return v;
  }

  /** Adds `delta` (an i64; negative decrements); returns the delta state. Unchanged on error. */
  add(replica: bigint, delta: bigint): PnCounter {
    if (delta < I64_MIN || delta > I64_MAX) throw new RangeError(`delta ${delta}`);
    const next = this.value() + delta;
    if (next < I64_MIN || next > I64_MAX) throw new CounterError('value_overflow', 'counter value overflows');
    if (delta > 0n) return new PnCounter(this.increments.increment(replica, delta), new GCounter());
    if (delta < 0n) return new PnCounter(new GCounter(), this.decrements.increment(replica, -delta));
    return new PnCounter();
  }

  merge(other: PnCounter): void {
    this.increments.merge(other.increments);
    this.decrements.merge(other.decrements);
  }

  clone(): PnCounter {
    return new PnCounter(this.increments.clone(), this.decrements.clone());
  }

  equals(other: PnCounter): boolean {
    return this.increments.equals(other.increments) && this.decrements.equals(other.decrements);
  }

  write(enc: Encoder): void {
    this.increments.write(enc);
    this.decrements.write(enc);
  }

  static read(dec: Decoder): PnCounter {
    const increments = GCounter.read(dec);
    const decrements = GCounter.read(dec);
    return new PnCounter(increments, decrements);
  }
}
