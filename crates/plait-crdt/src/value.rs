//! [`Value`]: one named CRDT value of any kind, as stored and sent.
//!
//! State encoding (storage, and full state for late joiners): `varuint kind` (0 gcounter,
//! 1 pncounter, 2 lww), then that kind's state encoding.

use std::fmt;

use serde_json::Value as Json;
use thiserror::Error;

use crate::encoding::{write_var_u64, DecodeError, Reader};
use crate::gcounter::{CounterError, GCounter};
use crate::hlc::Timestamp;
use crate::lww::LwwRegister;
use crate::pncounter::PnCounter;

/// Why two values could not be combined.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A merge or an operation named a value of another kind.
    #[error("kind mismatch: value is {expected}, got {found}")]
    KindMismatch {
        /// The kind of the value already there.
        expected: Kind,
        /// The kind that was offered.
        found: Kind,
    },
}

/// The kind of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`GCounter`], tag 0.
    GCounter,
    /// [`PnCounter`], tag 1.
    PnCounter,
    /// [`LwwRegister`], tag 2.
    Lww,
}

impl Kind {
    /// Every kind, by tag.
    pub const ALL: [Kind; 3] = [Kind::GCounter, Kind::PnCounter, Kind::Lww];

    /// The name used in storage and JSON: `"gcounter"`, `"pncounter"` or `"lww"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GCounter => "gcounter",
            Kind::PnCounter => "pncounter",
            Kind::Lww => "lww",
        }
    }

    /// The kind named `name` (see [`Kind::as_str`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The wire tag.
    pub fn tag(self) -> u64 {
        match self {
            Kind::GCounter => 0,
            Kind::PnCounter => 1,
            Kind::Lww => 2,
        }
    }

    /// The kind with wire tag `tag`.
    pub fn from_tag(tag: u64) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.tag() == tag)
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<Kind, DecodeError> {
        let tag = reader.read_var_u64()?;
        Self::from_tag(tag).ok_or(DecodeError::UnknownKind(tag))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CRDT value of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A grow-only counter.
    GCounter(GCounter),
    /// An up-down counter.
    PnCounter(PnCounter),
    /// A last-writer-wins JSON register.
    Lww(LwwRegister),
}

impl Value {
    /// Which kind this is.
    pub fn kind(&self) -> Kind {
        match self {
            Value::GCounter(_) => Kind::GCounter,
            Value::PnCounter(_) => Kind::PnCounter,
            Value::Lww(_) => Kind::Lww,
        }
    }

    /// Merges `other` in (commutative, associative and idempotent within one kind).
    ///
    /// # Errors
    /// [`ValueError::KindMismatch`] if `other` is of another kind; `self` is unchanged.
    pub fn merge(&mut self, other: &Value) -> Result<(), ValueError> {
        match (self, other) {
            (Value::GCounter(a), Value::GCounter(b)) => a.merge(b),
            (Value::PnCounter(a), Value::PnCounter(b)) => a.merge(b),
            (Value::Lww(a), Value::Lww(b)) => a.merge(b),
            (this, other) => {
                return Err(ValueError::KindMismatch {
                    expected: this.kind(),
                    found: other.kind(),
                })
            }
        }
        Ok(())
    }

    /// The current value as JSON: a number for counters, the stored JSON for a register.
    ///
    /// # Errors
    /// [`CounterError::ValueOverflow`] if a counter's value does not fit (`u64` for a
    /// G-Counter, `i64` for a PN-Counter).
    pub fn current(&self) -> Result<Json, CounterError> {
        Ok(match self {
            Value::GCounter(c) => Json::from(c.value()?),
            Value::PnCounter(c) => Json::from(c.value()?),
            Value::Lww(r) => r.value().clone(),
        })
    }

    /// The greatest HLC timestamp inside (registers only), to restore [`crate::Hlc`]'s
    /// high-water mark after loading values from storage.
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        match self {
            Value::Lww(r) => Some(r.stamp()),
            Value::GCounter(_) | Value::PnCounter(_) => None,
        }
    }

    /// Encodes `varuint kind` then the kind's state: the bytes to store.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one value state.
    ///
    /// # Errors
    /// A [`DecodeError`] on an unknown kind or truncated, non-canonical or trailing input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(value)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        write_var_u64(out, self.kind().tag());
        match self {
            Value::GCounter(c) => c.encode_into(out),
            Value::PnCounter(c) => c.encode_into(out),
            Value::Lww(r) => r.encode_into(out),
        }
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match Kind::decode_from(reader)? {
            Kind::GCounter => Value::GCounter(GCounter::decode_from(reader)?),
            Kind::PnCounter => Value::PnCounter(PnCounter::decode_from(reader)?),
            Kind::Lww => Value::Lww(LwwRegister::decode_from(reader)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hlc::ReplicaId;

    #[test]
    fn kinds_have_names_and_tags() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
            assert_eq!(Kind::from_tag(kind.tag()), Some(kind));
        }
        assert_eq!(Kind::from_tag(3), None);
        assert_eq!(Value::decode(&[3]), Err(DecodeError::UnknownKind(3)));
    }

    #[test]
    fn merge_refuses_a_kind_mismatch_and_changes_nothing() {
        let mut v = Value::GCounter(GCounter::from_entries([(ReplicaId(1), 2)]));
        let before = v.clone();
        assert_eq!(
            v.merge(&Value::PnCounter(PnCounter::new())),
            Err(ValueError::KindMismatch {
                expected: Kind::GCounter,
                found: Kind::PnCounter
            })
        );
        assert_eq!(v, before);
    }

    #[test]
    fn current_is_json() {
        let mut pn = PnCounter::new();
        pn.add(ReplicaId(1), -5).unwrap();
        assert_eq!(Value::PnCounter(pn).current(), Ok(json!(-5)));
        assert_eq!(Value::GCounter(GCounter::new()).current(), Ok(json!(0)));
        let stamp = Timestamp::new(1, 0, ReplicaId(1)).unwrap();
        let reg = Value::Lww(LwwRegister::new(json!({"a": [1]}), stamp));
        assert_eq!(reg.current(), Ok(json!({"a": [1]})));
        assert_eq!(reg.max_timestamp(), Some(stamp));
        assert_eq!(Value::decode(&reg.encode()), Ok(reg));
    }
}
