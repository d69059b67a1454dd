import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  Decoder,
  Encoder,
  GCounter,
  Hlc,
  LwwRegister,
  MAX_JSON_BYTES,
  ManualClock,
  PLAIT_CRDT_MESSAGE,
  PnCounter,
  PlaitValues,
  attachToProvider,
  attachToSocket,
  compareTimestamps,
  decodeClientMessage,
  decodeServerMessage,
  decodeValue,
  encodeServerMessage,
  encodeValue,
  frameOp,
  mergeValue,
  parseFrame,
  sendOp,
  valuesEqual,
  withValuesOptIn,
  type SocketLike,
  type Value,
} from '../src/index.ts';

const T0 = 1_700_000_000_000;

/** A small deterministic PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomValue(r: () => number, kind: number): Value {
  const counter = () =>
    GCounter.fromEntries(Array.from({ length: Math.floor(r() * 4) }, () => [BigInt(Math.floor(r() * 4)), BigInt(Math.floor(r() * 10))] as const));
  if (kind === 0) return counter();
  if (kind === 1) return new PnCounter(counter(), counter());
  const t = { physical: T0 + Math.floor(r() * 3), logical: Math.floor(r() * 3), replica: BigInt(Math.floor(r() * 3)) };
  return new LwwRegister(['a', 'b', { x: 1 }, null, 'ü'][Math.floor(r() * 5)], t);
}

const merged = (a: Value, b: Value): Value => {
  const out = a.clone();
  mergeValue(out, b);
  return out;
};

test('merge is commutative, associative and idempotent', () => {
  const r = rng(42);
  for (let i = 0; i < 2000; i++) {
    const kind = i % 3;
    const [a, b, c] = [randomValue(r, kind), randomValue(r, kind), randomValue(r, kind)];
    assert.ok(valuesEqual(merged(a, b), merged(b, a)));
    assert.ok(valuesEqual(merged(merged(a, b), c), merged(a, merged(b, c))));
    assert.ok(valuesEqual(merged(a, a), a));
    assert.ok(valuesEqual(decodeValue(encodeValue(a)), a));
  }
});

test('ten replicas incrementing concurrently, merged in random orders, sum exactly', () => {
  const r = rng(7);
  const deltas: GCounter[] = [];
  let total = 0n;
  for (let replica = 0n; replica < 10n; replica++) {
    const local = new GCounter();
    for (let i = 0; i < 20; i++) {
      const d = BigInt(Math.floor(r() * 2 ** 32));
      deltas.push(local.increment(replica, d));
      total += d;
    }
  }
  for (let round = 0; round < 5; round++) {
    const order = [...deltas].sort(() => r() - 0.5);
    const acc = new GCounter();
    for (const d of order) acc.merge(d);
    assert.equal(acc.value(), total);
  }
});

test('the clock is monotonic and refuses a remote an hour ahead', () => {
  const clock = new ManualClock(T0);
  const hlc = new Hlc(1n, clock);
  const r = rng(3);
  let previous = hlc.last();
  for (let i = 0; i < 500; i++) {
    clock.set(T0 + Math.floor(r() * 2000) - 1000);
    const remote = { physical: T0 + Math.floor(r() * 3000) - 1000, logical: Math.floor(r() * 5), replica: 2n };
    let ts;
    if (r() < 0.5) ts = hlc.now();
    else {
      try {
        ts = hlc.observe(remote);
        assert.ok(compareTimestamps(ts, remote) > 0);
      } catch {
        assert.ok(remote.physical > clock.ms + 500);
        assert.deepEqual(hlc.last(), previous);
        continue;
      }
    }
    assert.ok(compareTimestamps(ts, previous) > 0);
    assert.ok(ts.physical >= clock.ms);
    previous = ts;
  }
  assert.throws(() => hlc.observe({ physical: clock.ms + 3_600_000, logical: 0, replica: 2n }));
});

test('LWW with two clocks 200 ms apart picks the greater HLC', () => {
  const slow = new Hlc(1n, new ManualClock(T0));
  const fast = new Hlc(2n, new ManualClock(T0 + 200));
  const a = new LwwRegister('slow', slow.now());
  const b = new LwwRegister('fast', fast.now());
  const ab = a.clone();
  ab.merge(b);
  const ba = b.clone();
  ba.merge(a);
  assert.equal(ab.value, 'fast');
  assert.ok(ab.equals(ba));
});

test('decoding random bytes never throws anything but a DecodeError', () => {
  const r = rng(11);
  for (let i = 0; i < 5000; i++) {
    const bytes = Uint8Array.from({ length: Math.floor(r() * 24) }, () => Math.floor(r() * 256));
    for (const decode of [decodeValue, decodeClientMessage, decodeServerMessage]) {
      try {
        decode(bytes);
      } catch (e) {
        assert.equal((e as Error).name, 'DecodeError', `${e} on ${bytes}`);
      }
    }
  }
});

test('json limits: depth 127 and 64 KiB pass, more is refused', () => {
  const withJson = (text: string) => {
    const enc = new Encoder();
    enc.varUint(0n);
    enc.varString('n');
    enc.varUint(2n);
    enc.varString(text);
    return enc.finish();
  };
  assert.doesNotThrow(() => decodeClientMessage(withJson('['.repeat(127) + ']'.repeat(127))));
  assert.throws(() => decodeClientMessage(withJson('['.repeat(128) + ']'.repeat(128))));
  assert.throws(() => decodeClientMessage(withJson('"[[[' + '['.repeat(200) + '"' + ']'.repeat(0) + 'x')));
  assert.doesNotThrow(() => decodeClientMessage(withJson(JSON.stringify('[{'.repeat(200)))));
  const big = JSON.stringify('x'.repeat(MAX_JSON_BYTES - 2));
  assert.doesNotThrow(() => decodeClientMessage(withJson(big)));
  assert.throws(() => decodeClientMessage(withJson(big + ' ')));
});

test('frames carry the op payload behind tag 100, and other tags are ignored', () => {
  const frame = frameOp('likes', { kind: 'gcounter', delta: 1n });
  const dec = new Decoder(frame);
  assert.equal(dec.varUint(), BigInt(PLAIT_CRDT_MESSAGE));
  const payload = dec.varBytes('payload', 1 << 20);
  dec.finish();
  assert.deepEqual(decodeClientMessage(payload), { type: 'op', op: { name: 'likes', action: { kind: 'gcounter', delta: 1n } } });
  assert.equal(parseFrame(Uint8Array.of(0, 0, 1, 0)), undefined);
  assert.equal(withValuesOptIn('ws://localhost:1234/room?token=x'), 'ws://localhost:1234/room?token=x&plait-values=1');
});

function stateFrame(name: string, value: Value): Uint8Array {
  const enc = new Encoder();
  enc.varUint(BigInt(PLAIT_CRDT_MESSAGE));
  enc.varBytes(encodeServerMessage({ type: 'state', name, value }));
  return enc.finish();
}

test('a plain socket: ops go out, states merge in', () => {
  let listener: ((e: { data: unknown }) => void) | undefined;
  const sent: Uint8Array[] = [];
  const ws: SocketLike = {
    readyState: 1,
    binaryType: 'blob',
    send: (d) => sent.push(d),
    addEventListener: (_t, l) => (listener = l),
    removeEventListener: () => (listener = undefined),
  };
  const values = new PlaitValues();
  const seen: string[] = [];
  values.subscribe((name) => seen.push(name));
  const detach = attachToSocket(ws, values);
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.ok(sendOp(ws, 'score', { kind: 'pncounter', delta: -2n }));
  assert.equal(sent.length, 1);
  const send = (f: Uint8Array) => listener!({ data: f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength) });
  send(stateFrame('likes', GCounter.fromEntries([[1n, 3n]])));
  send(stateFrame('likes', GCounter.fromEntries([[2n, 4n]])));
  send(Uint8Array.of(100, 3, 9, 9, 9)); // malformed: dropped, not thrown
  send(Uint8Array.of(0, 0, 1, 0)); // a sync message: not ours
  assert.equal(values.current('likes'), 7n);
  assert.deepEqual(seen, ['likes', 'likes']);
  detach();
  assert.equal(listener, undefined);
});

test('a y-websocket provider: the handler reads the payload and advances the decoder', () => {
  const provider = { ws: null, messageHandlers: [] as unknown[] };
  const values = new PlaitValues();
  let rejected = '';
  values.onRejected = (_name, reason) => (rejected = reason);
  attachToProvider(provider, values);
  const handler = provider.messageHandlers[PLAIT_CRDT_MESSAGE] as (e: unknown, d: { arr: Uint8Array; pos: number }) => void;
  const frame = stateFrame('t', new LwwRegister({ a: 'ü' }, { physical: T0, logical: 0, replica: 1n }));
  const decoder = { arr: frame, pos: 1 };
  handler(null, decoder);
  assert.equal(decoder.pos, frame.length);
  assert.deepEqual(values.current('t'), { a: 'ü' });
  const rej = new Encoder();
  rej.varUint(BigInt(PLAIT_CRDT_MESSAGE));
  rej.varBytes(encodeServerMessage({ type: 'rejected', name: 't', reason: 'no' }));
  handler(null, { arr: rej.finish(), pos: 1 });
  assert.equal(rejected, 'no');
  assert.equal(sendOp(provider.ws, 't', { kind: 'lww', value: 1 }), false);
});
