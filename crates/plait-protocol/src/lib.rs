//! The y-websocket wire protocol, sans IO: bytes in, messages out, and back.
//!
//! Components, in reading order:
//! - [`lib0`]: the primitive encoding Yjs uses (variable-length integers, byte arrays, strings).
//! - [`validate`]: pre-scans of state vectors and v1 updates that bound every declared count,
//!   length and nesting depth *before* the bytes reach yrs, which trusts them.
//! - [`awareness`]: awareness updates (client id, clock, JSON state), decoded and encoded.
//! - [`message`]: the message catalogue ([`Message`]) with `decode` and the `encode_*` family.
//! - [`hocuspocus`]: the `@hocuspocus/provider` framing (a document address on every message),
//!   reusing the sync and awareness payloads and their validation.
//!
//! Architecture invariant: nothing here performs I/O or knows about rooms. A y-websocket message
//! carries no room name (the server derives it from the URL); a Hocuspocus message carries a
//! document name, which the server maps to a room (see [`hocuspocus`]).

pub mod awareness;
pub mod error;
pub mod hocuspocus;
pub mod lib0;
pub mod message;
pub mod validate;

pub use awareness::{AwarenessEntry, AwarenessUpdate};
pub use error::Error;
pub use message::{Limits, Message, Messages, SyncMessage};
