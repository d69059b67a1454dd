//! LWW-Register: the JSON value written with the greatest HLC timestamp wins.
//!
//! Timestamps from different nodes never tie (the node id is part of the order), and one node
//! never issues the same timestamp twice, so equal timestamps mean the same write. A
//! misbehaving node could still send two different values under one timestamp; merge then keeps
//! the value whose JSON text is greater (byte order), so replicas converge regardless.
//!
//! State encoding: the timestamp ([`crate::Timestamp::encode`]), then the value as a
//! `varstring` of compact JSON text, at most [`MAX_JSON_BYTES`] bytes.

use std::cmp::Ordering;

use serde_json::Value as Json;

use crate::encoding::{write_var_string, DecodeError, Reader};
use crate::hlc::Timestamp;

/// The largest JSON text a register may hold, in bytes; larger writes and states are refused.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// A last-writer-wins register holding any JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwRegister {
    /// The current value.
    value: Json,
    /// When (and by whom) the current value was written.
    stamp: Timestamp,
}

impl LwwRegister {
    /// A register holding `value` written at `stamp`.
    pub fn new(value: Json, stamp: Timestamp) -> Self {
        Self { value, stamp }
    }

    /// The current value.
    pub fn value(&self) -> &Json {
        &self.value
    }

    /// The timestamp of the current value.
    pub fn stamp(&self) -> Timestamp {
        self.stamp
    }

    /// Merges `other` in: the greater timestamp wins. Commutative, associative, idempotent.
    pub fn merge(&mut self, other: &LwwRegister) {
        let take = match other.stamp.cmp(&self.stamp) {
            Ordering::Greater => true,
            Ordering::Less => false,
            // Only a misbehaving node reuses a timestamp; break the tie deterministically.
            Ordering::Equal => {
                other.value != self.value && json_text(&other.value) > json_text(&self.value)
            }
        };
        if take {
            *self = other.clone();
        }
    }

    /// Encodes the state (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one state.
    ///
    /// # Errors
    /// A [`DecodeError`] on truncated or trailing input, or a value that is not JSON.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let register = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(register)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        self.stamp.encode_into(out);
        write_var_string(out, &self.value.to_string());
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let stamp = Timestamp::decode_from(reader)?;
        let value = read_json(reader)?;
        Ok(Self { value, stamp })
    }
}

/// The compact JSON text of `value`, as encoded.
fn json_text(value: &Json) -> String {
    value.to_string()
}

/// Reads a `varstring` of JSON text of at most [`MAX_JSON_BYTES`].
pub(crate) fn read_json(reader: &mut Reader<'_>) -> Result<Json, DecodeError> {
    let text = reader.read_var_string("json value", MAX_JSON_BYTES)?;
    // serde_json refuses nesting deeper than 128, so hostile depth cannot overflow the stack.
    serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hlc::{Hlc, ManualClock, ReplicaId};

    const T0: u64 = 1_700_000_000_000;

    /// Two nodes whose physical clocks are 200 ms apart: the later HLC wins on both sides.
    #[test]
    fn two_clocks_200_ms_apart_pick_the_greater_hlc() {
        let mut slow = Hlc::new(ReplicaId(1), ManualClock::new(T0));
        let mut fast = Hlc::new(ReplicaId(2), ManualClock::new(T0 + 200));
        // The fast node writes first in real time; the slow node writes after, having seen it.
        let first = LwwRegister::new(json!("fast"), fast.now().unwrap());
        slow.observe(first.stamp()).unwrap();
        let second = LwwRegister::new(json!("slow, but later"), slow.now().unwrap());
        assert!(second.stamp() > first.stamp());

        let mut a = first.clone();
        a.merge(&second);
        let mut b = second.clone();
        b.merge(&first);
        assert_eq!(a, b);
        assert_eq!(a.value(), &json!("slow, but later"));

        // Concurrent writes without observation: the greater HLC (the fast clock) wins.
        let c1 = LwwRegister::new(json!(1), slow.now().unwrap());
        let mut fast2 = Hlc::new(ReplicaId(2), ManualClock::new(T0 + 200));
        let c2 = LwwRegister::new(json!(2), fast2.now().unwrap());
        let mut m = c1.clone();
        m.merge(&c2);
        assert_eq!(
            m.value(),
            &json!(if c2.stamp() > c1.stamp() { 2 } else { 1 })
        );
    }

    #[test]
    fn equal_timestamps_converge_on_the_greater_text() {
        let stamp = Timestamp::new(T0, 0, ReplicaId(1)).unwrap();
        let x = LwwRegister::new(json!("a"), stamp);
        let y = LwwRegister::new(json!("b"), stamp);
        let mut xy = x.clone();
        xy.merge(&y);
        let mut yx = y.clone();
        yx.merge(&x);
        assert_eq!(xy, yx);
    }

    #[test]
    fn encoding_round_trips_unicode_and_refuses_bad_json() {
        let stamp = Timestamp::new(T0, 1, ReplicaId(7)).unwrap();
        let r = LwwRegister::new(json!({"emoji": "😀", "ß": [1, null, true]}), stamp);
        assert_eq!(LwwRegister::decode(&r.encode()), Ok(r));
        let mut bad = stamp.encode();
        bad.extend_from_slice(&[2, b'{', b'x']);
        assert!(matches!(
            LwwRegister::decode(&bad),
            Err(DecodeError::InvalidJson(_))
        ));
        let mut deepest = stamp.encode();
        write_var_string(&mut deepest, &("[".repeat(127) + &"]".repeat(127)));
        assert!(LwwRegister::decode(&deepest).is_ok());
        let mut deep = stamp.encode();
        let text = "[".repeat(128) + &"]".repeat(128);
        write_var_string(&mut deep, &text);
        assert!(matches!(
            LwwRegister::decode(&deep),
            Err(DecodeError::InvalidJson(_))
        ));
    }
}
