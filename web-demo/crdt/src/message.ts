// Payloads of the opt-in plait values message. Twin of crates/plait-crdt/src/message.rs.
//
//   op (client -> server):       varuint 0, varstring name, varuint kind, then
//                                gcounter: varuint delta | pncounter: varint delta | lww: varstring json
//   state (server -> client):    varuint 1, varstring name, varuint kind, kind state
//   rejected (server -> client): varuint 2, varstring name (may be empty), varstring reason
//   set at (client -> server):   varuint 3, varstring name, 8 bytes big-endian
//                                physical << 16 | logical (the client's HLC reading), varstring json

import { DecodeError, Decoder, Encoder, utf8 } from './encoding.ts';
import { jsonText, readJson } from './lww.ts';
import { KIND_TAGS, kindFromTag, readValue, writeValue, type Value } from './value.ts';

export const MAX_NAME_BYTES = 128;
export const MAX_REASON_BYTES = 256;

const MESSAGE_OP = 0n;
const MESSAGE_STATE = 1n;
const MESSAGE_REJECTED = 2n;
const MESSAGE_SET_AT = 3n;

/** A writer's own HLC reading; the server refuses one more than 500 ms ahead of its clock and
 * stamps the register with it and a replica id it assigns. */
export interface ClientClock {
  physical: number;
  logical: number;
}

export type Action =
  | { kind: 'gcounter'; delta: bigint }
  | { kind: 'pncounter'; delta: bigint }
  | { kind: 'lww'; value: unknown; at?: ClientClock };

export interface Op {
  name: string;
  action: Action;
}

export type ClientMessage = { type: 'op'; op: Op };

export type ServerMessage =
  | { type: 'state'; name: string; value: Value }
  | { type: 'rejected'; name: string; reason: string };

export function encodeClientMessage(m: ClientMessage): Uint8Array {
  const enc = new Encoder();
  const action = m.op.action;
  if (action.kind === 'lww' && action.at !== undefined) {
    enc.varUint(MESSAGE_SET_AT);
    enc.varString(m.op.name);
    const packed = ((BigInt(action.at.physical) & 0xffffffffffffn) << 16n) | BigInt(action.at.logical & 0xffff);
    for (let shift = 56n; shift >= 0n; shift -= 8n) enc.u8(Number((packed >> shift) & 0xffn));
    enc.varString(jsonText(action.value));
    return enc.finish();
  }
  enc.varUint(MESSAGE_OP);
  enc.varString(m.op.name);
  enc.varUint(BigInt(KIND_TAGS[action.kind]));
  if (action.kind === 'gcounter') enc.varUint(action.delta);
  else if (action.kind === 'pncounter') enc.varInt(action.delta);
  else enc.varString(jsonText(action.value));
  return enc.finish();
}

export function decodeClientMessage(bytes: Uint8Array): ClientMessage {
  const dec = new Decoder(bytes);
  const type = dec.varUint();
  if (type === MESSAGE_SET_AT) {
    const name = readName(dec);
    let packed = 0n;
    for (const b of dec.exact(8)) packed = (packed << 8n) | BigInt(b);
    const value = readJson(dec);
    dec.finish();
    const at = { physical: Number(packed >> 16n), logical: Number(packed & 0xffffn) };
    return { type: 'op', op: { name, action: { kind: 'lww', value, at } } };
  }
  if (type !== MESSAGE_OP) throw new DecodeError('UnknownMessage', `unknown message type ${type}`);
  const name = readName(dec);
  let action: Action;
  switch (kindFromTag(dec.varUint())) {
    case 'gcounter':
      action = { kind: 'gcounter', delta: dec.varUint() };
      break;
    case 'pncounter':
      action = { kind: 'pncounter', delta: dec.varInt() };
      break;
    case 'lww':
      action = { kind: 'lww', value: readJson(dec) };
      break;
  }
  dec.finish();
  return { type: 'op', op: { name, action } };
}

export function encodeServerMessage(m: ServerMessage): Uint8Array {
  const enc = new Encoder();
  if (m.type === 'state') {
    enc.varUint(MESSAGE_STATE);
    enc.varString(m.name);
    writeValue(enc, m.value);
  } else {
    enc.varUint(MESSAGE_REJECTED);
    enc.varString(m.name);
    enc.varBytes(truncateUtf8(m.reason, MAX_REASON_BYTES));
  }
  return enc.finish();
}

export function decodeServerMessage(bytes: Uint8Array): ServerMessage {
  const dec = new Decoder(bytes);
  const type = dec.varUint();
  let m: ServerMessage;
  if (type === MESSAGE_STATE) {
    const name = readName(dec);
    m = { type: 'state', name, value: readValue(dec) };
  } else if (type === MESSAGE_REJECTED) {
    const name = dec.varString('name', MAX_NAME_BYTES);
    m = { type: 'rejected', name, reason: dec.varString('reason', MAX_REASON_BYTES) };
  } else {
    throw new DecodeError('UnknownMessage', `unknown message type ${type}`);
  }
  dec.finish();
  return m;
}

function readName(dec: Decoder): string {
  const name = dec.varString('name', MAX_NAME_BYTES);
  if (name.length === 0) throw new DecodeError('EmptyName', 'empty value name');
  return name;
}

/** The longest prefix of `s` of at most `max` UTF-8 bytes ending on a character boundary. */
function truncateUtf8(s: string, max: number): Uint8Array {
  const bytes = utf8(s);
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}
