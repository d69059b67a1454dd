//! The payloads of the opt-in CRDT message on the y-websocket socket.
//!
//! A y-websocket frame carrying one is `varuint PLAIT_CRDT_MESSAGE ‖ varbytes payload`; this
//! module defines the payload. It starts with `varuint message`, then:
//!
//! | message | direction | rest |
//! |---|---|---|
//! | 0 op | client → server | `varstring name`, `varuint kind`, then by kind: gcounter `varuint delta`; pncounter `varint delta`; lww `varstring json` |
//! | 1 state | server → client | `varstring name`, then a [`Value`] state (`varuint kind` + state) |
//! | 2 rejected | server → client | `varstring name` (may be empty), `varstring reason` |
//! | 3 set at | client → server | `varstring name`, 8 bytes big-endian `physical << 16 \| logical` (the client's HLC reading), `varstring json` |
//!
//! Names are 1 to [`MAX_NAME_BYTES`] bytes of UTF-8 (a rejected message's name may be empty),
//! JSON texts at most [`crate::MAX_JSON_BYTES`], reasons at most [`MAX_REASON_BYTES`].
//! Encoding does not validate (the server only encodes names it accepted); decoding validates
//! everything and refuses trailing bytes.

use crate::encoding::{write_var_i64, write_var_string, write_var_u64, DecodeError, Reader};
use crate::hlc::MAX_PHYSICAL_MS;
use crate::lww::read_json;
use crate::op::{Action, Op, Update, MAX_NAME_BYTES};
use crate::value::{Kind, Value};

/// The y-websocket message type proposed for this extension (in the 100..127 range that
/// stock clients never use). Only clients that opted in are ever sent it.
pub const PLAIT_CRDT_MESSAGE: u64 = 100;

/// The longest reason in a rejected message, in bytes; [`ServerMessage::encode`] truncates
/// longer ones at a character boundary.
pub const MAX_REASON_BYTES: usize = 256;

/// Message type tags, the first `varuint` of a payload.
const MESSAGE_OP: u64 = 0;
const MESSAGE_STATE: u64 = 1;
const MESSAGE_REJECTED: u64 = 2;
const MESSAGE_SET_AT: u64 = 3;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Asks the server to apply an op.
    Op(Op),
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// A value's state (delta or full) to merge.
    State(Update),
    /// The server refused one of this client's ops.
    Rejected {
        /// The op's value name (empty if unknown).
        name: String,
        /// Why, in lowercase English.
        reason: String,
    },
}

impl ClientMessage {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ClientMessage::Op(Op {
                name,
                action:
                    Action::SetAt {
                        value,
                        physical_ms,
                        logical,
                    },
            }) => {
                write_var_u64(&mut out, MESSAGE_SET_AT);
                write_var_string(&mut out, name);
                // Like a timestamp's fixed part; the physical part is cut to 48 bits.
                let packed = ((*physical_ms & MAX_PHYSICAL_MS) << 16) | u64::from(*logical);
                out.extend_from_slice(&packed.to_be_bytes());
                write_var_string(&mut out, &value.to_string());
            }
            ClientMessage::Op(op) => {
                write_var_u64(&mut out, MESSAGE_OP);
                write_var_string(&mut out, &op.name);
                write_var_u64(&mut out, op.action.kind().tag());
                match &op.action {
                    Action::Increment(delta) => write_var_u64(&mut out, *delta),
                    Action::Add(delta) => write_var_i64(&mut out, *delta),
                    Action::Set(json) | Action::SetAt { value: json, .. } => {
                        write_var_string(&mut out, &json.to_string());
                    }
                }
            }
        }
        out
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// A [`DecodeError`] on any malformed input, an unknown or server-only message type, or
    /// trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let message = match reader.read_var_u64()? {
            MESSAGE_OP => {
                let name = read_name(&mut reader)?;
                let action = match Kind::decode_from(&mut reader)? {
                    Kind::GCounter => Action::Increment(reader.read_var_u64()?),
                    Kind::PnCounter => Action::Add(reader.read_var_i64()?),
                    Kind::Lww => Action::Set(read_json(&mut reader)?),
                };
                ClientMessage::Op(Op { name, action })
            }
            MESSAGE_SET_AT => {
                let name = read_name(&mut reader)?;
                let mut fixed = [0u8; 8];
                fixed.copy_from_slice(reader.read_exact(8)?);
                let packed = u64::from_be_bytes(fixed);
                let value = read_json(&mut reader)?;
                ClientMessage::Op(Op {
                    name,
                    action: Action::SetAt {
                        value,
                        physical_ms: packed >> 16,
                        logical: packed as u16,
                    },
                })
            }
            other => return Err(DecodeError::UnknownMessage(other)),
        };
        reader.finish()?;
        Ok(message)
    }
}

impl ServerMessage {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ServerMessage::State(update) => encode_state(&update.name, &update.value),
            ServerMessage::Rejected { name, reason } => {
                let mut out = Vec::new();
                write_var_u64(&mut out, MESSAGE_REJECTED);
                write_var_string(&mut out, name);
                write_var_string(&mut out, truncate(reason, MAX_REASON_BYTES));
                out
            }
        }
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// A [`DecodeError`] on any malformed input, an unknown or client-only message type, or
    /// trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let message = match reader.read_var_u64()? {
            MESSAGE_STATE => {
                let name = read_name(&mut reader)?;
                let value = Value::decode_from(&mut reader)?;
                ServerMessage::State(Update { name, value })
            }
            MESSAGE_REJECTED => {
                let name = reader.read_var_string("name", MAX_NAME_BYTES)?.to_owned();
                let reason = reader
                    .read_var_string("reason", MAX_REASON_BYTES)?
                    .to_owned();
                ServerMessage::Rejected { name, reason }
            }
            other => return Err(DecodeError::UnknownMessage(other)),
        };
        reader.finish()?;
        Ok(message)
    }
}

/// Encodes a state message without cloning the value (for sending every value to a joiner).
pub fn encode_state(name: &str, value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_var_u64(&mut out, MESSAGE_STATE);
    write_var_string(&mut out, name);
    value.encode_into(&mut out);
    out
}

fn read_name(reader: &mut Reader<'_>) -> Result<String, DecodeError> {
    let name = reader.read_var_string("name", MAX_NAME_BYTES)?;
    if name.is_empty() {
        return Err(DecodeError::EmptyName);
    }
    Ok(name.to_owned())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gcounter::GCounter;
    use crate::hlc::ReplicaId;

    #[test]
    fn op_bytes() {
        let inc = ClientMessage::Op(Op {
            name: "n".into(),
            action: Action::Increment(300),
        });
        assert_eq!(inc.encode(), [0, 1, b'n', 0, 0xac, 0x02]);
        let add = ClientMessage::Op(Op {
            name: "n".into(),
            action: Action::Add(-1),
        });
        assert_eq!(add.encode(), [0, 1, b'n', 1, 0x41]);
        let set = ClientMessage::Op(Op {
            name: "n".into(),
            action: Action::Set(json!([1])),
        });
        assert_eq!(set.encode(), [0, 1, b'n', 2, 3, b'[', b'1', b']']);
        let set_at = ClientMessage::Op(Op {
            name: "n".into(),
            action: Action::SetAt {
                value: json!(1),
                physical_ms: 0x0102,
                logical: 3,
            },
        });
        assert_eq!(
            set_at.encode(),
            [3, 1, b'n', 0, 0, 0, 0, 0x01, 0x02, 0, 3, 1, b'1']
        );
        for m in [inc, add, set, set_at] {
            assert_eq!(ClientMessage::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn state_and_rejected_bytes() {
        let state = ServerMessage::State(Update {
            name: "n".into(),
            value: Value::GCounter(GCounter::from_entries([(ReplicaId(1), 2)])),
        });
        assert_eq!(state.encode(), [1, 1, b'n', 0, 1, 1, 2]);
        let rejected = ServerMessage::Rejected {
            name: String::new(),
            reason: "no".into(),
        };
        assert_eq!(rejected.encode(), [2, 0, 2, b'n', b'o']);
        for m in [state, rejected] {
            assert_eq!(ServerMessage::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn direction_and_names_are_checked() {
        assert_eq!(
            ClientMessage::decode(&[1, 1, b'n', 0, 0]),
            Err(DecodeError::UnknownMessage(1))
        );
        assert_eq!(
            ServerMessage::decode(&[0, 1, b'n', 0, 1]),
            Err(DecodeError::UnknownMessage(0))
        );
        assert_eq!(
            ClientMessage::decode(&[0, 0, 0, 1]),
            Err(DecodeError::EmptyName)
        );
        assert_eq!(
            ClientMessage::decode(&[0, 1, b'n', 0, 1, 9]),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(200);
        let bytes = ServerMessage::Rejected {
            name: "n".into(),
            reason,
        }
        .encode();
        let ServerMessage::Rejected { reason, .. } = ServerMessage::decode(&bytes).unwrap() else {
            panic!("not a rejection");
        };
        assert_eq!(reason.len(), MAX_REASON_BYTES);
    }
}
