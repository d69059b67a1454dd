// TypeScript twin of crates/plait-crdt: same types, merge rules and wire encoding, checked
// against the shared vectors in crates/plait-crdt/vectors/. Imported from source (no build).
// u64 and i64 quantities (replica ids, counts, deltas) are bigints.

export * from './encoding.ts';
export * from './hlc.ts';
export * from './gcounter.ts';
export * from './pncounter.ts';
export * from './lww.ts';
export * from './value.ts';
export * from './message.ts';
export * from './client.ts';
