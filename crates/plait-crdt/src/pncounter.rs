//! PN-Counter: a counter that goes up and down, made of two G-Counters.
//!
//! The value is `increments − decrements` as an `i64`; both sums are checked, and a value
//! outside `i64` is [`CounterError::ValueOverflow`]. Local adds are refused if they would make
//! the value unrepresentable, so only merges of independently grown states can overflow.
//!
//! State encoding: the increments G-Counter state, then the decrements G-Counter state.

use crate::encoding::{DecodeError, Reader};
use crate::gcounter::{CounterError, GCounter};
use crate::hlc::ReplicaId;

/// A counter that can be incremented and decremented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PnCounter {
    /// Sum of positive adds, per replica.
    increments: GCounter,
    /// Sum of the magnitudes of negative adds, per replica.
    decrements: GCounter,
}

impl PnCounter {
    /// An empty counter (value 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter from its two halves.
    pub fn from_parts(increments: GCounter, decrements: GCounter) -> Self {
        Self {
            increments,
            decrements,
        }
    }

    /// The positive half.
    pub fn increments(&self) -> &GCounter {
        &self.increments
    }

    /// The negative half (magnitudes).
    pub fn decrements(&self) -> &GCounter {
        &self.decrements
    }

    /// True if no replica ever added anything.
    pub fn is_empty(&self) -> bool {
        self.increments.is_empty() && self.decrements.is_empty()
    }

    /// Increments minus decrements.
    ///
    /// # Errors
    /// [`CounterError::ValueOverflow`] if either half overflows `u64` or the difference is
    /// outside `i64`.
    pub fn value(&self) -> Result<i64, CounterError> {
        let up = i128::from(self.increments.value()?);
        let down = i128::from(self.decrements.value()?);
        i64::try_from(up - down).map_err(|_| CounterError::ValueOverflow)
    }

    /// Adds `delta` (negative to decrement) for `replica` and returns the delta state to
    /// broadcast (empty when `delta` is 0).
    ///
    /// # Errors
    /// A [`CounterError`] if an entry, a half or the value would overflow; the counter is
    /// unchanged.
    pub fn add(&mut self, replica: ReplicaId, delta: i64) -> Result<PnCounter, CounterError> {
        let current = self.value()?;
        current
            .checked_add(delta)
            .ok_or(CounterError::ValueOverflow)?;
        let magnitude = delta.unsigned_abs();
        let mut out = Self::new();
        if delta > 0 {
            out.increments = self.increments.increment(replica, magnitude)?;
        } else if delta < 0 {
            out.decrements = self.decrements.increment(replica, magnitude)?;
        }
        Ok(out)
    }

    /// Merges `other` in, half by half. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &PnCounter) {
        self.increments.merge(&other.increments);
        self.decrements.merge(&other.decrements);
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
    /// A [`DecodeError`] on truncated, non-canonical or trailing input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let counter = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(counter)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        self.increments.encode_into(out);
        self.decrements.encode_into(out);
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let increments = GCounter::decode_from(reader)?;
        let decrements = GCounter::decode_from(reader)?;
        Ok(Self {
            increments,
            decrements,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    #[test]
    fn adds_and_subtracts_across_replicas() {
        let mut a = PnCounter::new();
        let mut b = PnCounter::new();
        a.add(A, 10).unwrap();
        let delta = b.add(B, -3).unwrap();
        assert_eq!(delta.value(), Ok(-3));
        a.merge(&delta);
        b.merge(&a);
        assert_eq!(a, b);
        assert_eq!(a.value(), Ok(7));
        assert!(a.add(A, 0).unwrap().is_empty());
    }

    #[test]
    fn extremes_are_refused_not_wrapped() {
        let mut c = PnCounter::new();
        c.add(A, i64::MIN).unwrap();
        assert_eq!(c.value(), Ok(i64::MIN));
        assert_eq!(c.add(A, -1), Err(CounterError::ValueOverflow));
        assert_eq!(c.value(), Ok(i64::MIN));
        let mut d = PnCounter::new();
        d.add(B, i64::MAX).unwrap();
        c.merge(&d);
        assert_eq!(c.value(), Ok(-1));
    }

    #[test]
    fn encoding_is_two_gcounters() {
        let mut c = PnCounter::new();
        c.add(A, 2).unwrap();
        c.add(B, -1).unwrap();
        assert_eq!(c.encode(), [1, 1, 2, 1, 2, 1]);
        assert_eq!(PnCounter::decode(&c.encode()), Ok(c));
        assert_eq!(PnCounter::new().encode(), [0, 0]);
    }
}
