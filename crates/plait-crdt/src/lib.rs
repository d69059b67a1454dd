//! CRDT values for plait: a hybrid logical clock, counters and registers. Pure: no I/O, no
//! async, no yrs.
//!
//! Components, in reading order:
//!
//! - `encoding`: lib0-style `varuint`/`varint`/`varstring` and a bounded
//!   reader for untrusted bytes.
//! - `hlc`: [`Timestamp`], [`ReplicaId`], the [`Clock`] trait ([`SystemClock`],
//!   [`ManualClock`]) and the hybrid logical clock [`Hlc`] with its send rule ([`Hlc::now`])
//!   and receive rule ([`Hlc::observe`]).
//! - `gcounter`: [`GCounter`], a grow-only counter.
//! - `pncounter`: [`PnCounter`], an up-down counter made of two G-Counters.
//! - `lww`: [`LwwRegister`], a last-writer-wins JSON register ordered by HLC timestamps.
//! - `value`: [`Value`], any of the three, with its [`Kind`], `merge` and `current`.
//! - `op`: client [`Op`]s, and [`Values`], a room's named values, which applies ops with a
//!   server-assigned replica id and returns the delta [`Update`] to broadcast.
//! - `message`: the payloads of the opt-in y-websocket message ([`ClientMessage`],
//!   [`ServerMessage`]).
//!
//! Every type with a wire form has `encode(&self) -> Vec<u8>` and
//! `decode(&[u8]) -> Result<Self, DecodeError>`; decoding never panics and never allocates
//! more than its input. The TypeScript twin lives in `web-demo/crdt/` and both are checked
//! against the shared vectors in `vectors/`.
//!
//! **Architecture Invariant:** merges are commutative, associative and idempotent (property
//! tests in `tests/laws.rs`); nothing here reads the system clock except [`SystemClock`].

mod encoding;
mod gcounter;
mod hlc;
mod lww;
mod message;
mod op;
mod pncounter;
mod value;

pub use encoding::DecodeError;
pub use gcounter::{CounterError, GCounter};
pub use hlc::{
    Clock, ClockError, Hlc, ManualClock, ReplicaId, SystemClock, Timestamp, DEFAULT_MAX_OFFSET,
    MAX_PHYSICAL_MS,
};
pub use lww::{LwwRegister, MAX_JSON_BYTES};
pub use message::{
    encode_state, ClientMessage, ServerMessage, MAX_REASON_BYTES, PLAIT_CRDT_MESSAGE,
};
pub use op::{
    Action, ApplyError, Limits, Op, Update, Values, MAX_DELTA, MAX_NAME_BYTES, MAX_VALUES,
};
pub use pncounter::PnCounter;
pub use value::{Kind, Value, ValueError};
