// A small client for the opt-in plait values message on a y-websocket socket.
//
// Opt in by adding `plait-values=1` to the WebSocket URL's query (with y-websocket:
// `new WebsocketProvider(url, room, doc, { params: { 'plait-values': '1' } })`); the server
// then sends every value's state on join and each change after, in frames of
// `varuint PLAIT_CRDT_MESSAGE ‖ varUint8Array(payload)`. Without the opt-in it sends none.

import { Decoder, Encoder } from './encoding.ts';
import {
  decodeServerMessage,
  encodeClientMessage,
  type Action,
  type ServerMessage,
} from './message.ts';
import { cloneValue, currentValue, mergeValue, type Value } from './value.ts';

/** The y-websocket message type of the extension (stock types are 0..3). */
export const PLAIT_CRDT_MESSAGE = 100;
/** The query parameter that opts a connection in. */
export const PLAIT_VALUES_PARAM = 'plait-values';

/** `url` with `plait-values=1` added to its query. */
export function withValuesOptIn(url: string): string {
  const u = new URL(url);
  u.searchParams.set(PLAIT_VALUES_PARAM, '1');
  return u.toString();
}

/** Frames an op as `varuint 100 ‖ varUint8Array(payload)`. */
export function frameOp(name: string, action: Action): Uint8Array {
  const enc = new Encoder();
  enc.varUint(BigInt(PLAIT_CRDT_MESSAGE));
  enc.varBytes(encodeClientMessage({ type: 'op', op: { name, action } }));
  return enc.finish();
}

/** Decodes a frame if it carries the extension's type; `undefined` for other message types.
 * Throws a DecodeError on a malformed frame of the extension's type. */
export function parseFrame(data: ArrayBuffer | Uint8Array): ServerMessage | undefined {
  const dec = new Decoder(data instanceof Uint8Array ? data : new Uint8Array(data));
  if (dec.varUint() !== BigInt(PLAIT_CRDT_MESSAGE)) return undefined;
  const payload = dec.varBytes('payload', Number.MAX_SAFE_INTEGER);
  dec.finish();
  return decodeServerMessage(payload);
}

/** The part of a WebSocket this helper uses (a browser WebSocket, or y-websocket's provider.ws). */
export interface SocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: Uint8Array): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  removeEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
}

/** The y-websocket provider fields this helper uses. */
export interface ProviderLike {
  ws: SocketLike | null;
  messageHandlers: unknown[];
}

/** A local mirror of a room's values: merges what the server sends and sends ops. */
export class PlaitValues {
  private readonly values = new Map<string, Value>();
  private readonly listeners = new Set<(name: string, value: Value) => void>();
  /** Called with each rejection from the server. */
  onRejected: (name: string, reason: string) => void = () => {};

  get(name: string): Value | undefined {
    return this.values.get(name);
  }

  /** The current value of `name` (bigint for counters, JSON for registers), or undefined. */
  current(name: string): unknown {
    const v = this.values.get(name);
    return v === undefined ? undefined : currentValue(v);
  }

  names(): string[] {
    return [...this.values.keys()];
  }

  /** Calls `listener(name, value)` after each change; returns an unsubscribe function. */
  subscribe(listener: (name: string, value: Value) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Applies a decoded server message. */
  receive(m: ServerMessage): void {
    if (m.type === 'rejected') {
      this.onRejected(m.name, m.reason);
      return;
    }
    const existing = this.values.get(m.name);
    if (existing === undefined) this.values.set(m.name, cloneValue(m.value));
    else mergeValue(existing, m.value);
    const merged = this.values.get(m.name)!;
    for (const l of this.listeners) l(m.name, merged);
  }

  /** Handles a raw frame; returns true if it was an extension message. Malformed ones are
   * dropped (returns true) rather than thrown into the socket's event loop. */
  receiveFrame(data: ArrayBuffer | Uint8Array): boolean {
    let m: ServerMessage | undefined;
    try {
      m = parseFrame(data);
    } catch {
      return true;
    }
    if (m === undefined) return false;
    this.receive(m);
    return true;
  }
}

/** Listens on a plain WebSocket; returns a function that stops listening. */
export function attachToSocket(ws: SocketLike, values: PlaitValues): () => void {
  ws.binaryType = 'arraybuffer';
  const listener = (event: { data: unknown }) => {
    if (event.data instanceof ArrayBuffer || event.data instanceof Uint8Array) values.receiveFrame(event.data);
  };
  ws.addEventListener('message', listener);
  return () => ws.removeEventListener('message', listener);
}

/** Registers the extension with a y-websocket provider (so it neither logs "Unable to compute
 * message" nor drops our frames) for every socket it opens, reconnects included. */
export function attachToProvider(provider: ProviderLike, values: PlaitValues): void {
  // y-websocket calls handler(encoder, decoder, provider, emitSynced, messageType) with a lib0
  // decoder ({ arr, pos }) positioned after the message type; we read the payload and advance it.
  provider.messageHandlers[PLAIT_CRDT_MESSAGE] = (_encoder: unknown, decoder: { arr: Uint8Array; pos: number }) => {
    const dec = new Decoder(decoder.arr.subarray(decoder.pos));
    try {
      const payload = dec.varBytes('payload', Number.MAX_SAFE_INTEGER);
      decoder.pos = decoder.arr.length - dec.remaining();
      values.receive(decodeServerMessage(payload));
    } catch {
      decoder.pos = decoder.arr.length;
    }
  };
}

/** Sends an op if the socket is open; returns whether it was sent. */
export function sendOp(ws: SocketLike | null, name: string, action: Action): boolean {
  if (ws === null || ws.readyState !== 1) return false;
  ws.send(frameOp(name, action));
  return true;
}
