//! G-Counter: a grow-only counter, one monotonic entry per replica.
//!
//! Merge is the pointwise maximum; the value is the sum of the entries, checked (a sum past
//! `u64::MAX` is [`CounterError::ValueOverflow`], never a wrap or a silent saturation).
//!
//! State encoding: `varuint n_entries`, then `n_entries` × (`varuint replica`,
//! `varuint count`), replicas strictly ascending, counts non-zero (an absent entry is the only
//! way to say zero), so each state has exactly one encoding.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::encoding::{write_var_u64, DecodeError, Reader};
use crate::hlc::ReplicaId;

/// Why a counter operation was refused; the counter is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CounterError {
    /// An increment would push one replica's entry past `u64::MAX`.
    #[error("increment overflows the entry of replica {0}")]
    EntryOverflow(ReplicaId),
    /// The counter's value does not fit: past `u64::MAX` for a G-Counter, outside `i64` for a
    /// PN-Counter.
    #[error("counter value overflows")]
    ValueOverflow,
}

/// A grow-only counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GCounter {
    /// Each replica's own total; zero entries are never stored.
    entries: BTreeMap<ReplicaId, u64>,
}

impl GCounter {
    /// An empty counter (value 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter from (replica, count) entries; zero counts are dropped and a repeated
    /// replica keeps its greatest count.
    pub fn from_entries(entries: impl IntoIterator<Item = (ReplicaId, u64)>) -> Self {
        let mut counter = Self::new();
        for (replica, count) in entries {
            counter.merge_entry(replica, count);
        }
        counter
    }

    /// The entries, by ascending replica.
    pub fn entries(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.entries.iter().map(|(&r, &c)| (r, c))
    }

    /// `replica`'s entry (0 if absent).
    pub fn get(&self, replica: ReplicaId) -> u64 {
        self.entries.get(&replica).copied().unwrap_or(0)
    }

    /// True if no replica ever incremented.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sum of all entries.
    ///
    /// # Errors
    /// [`CounterError::ValueOverflow`] if the sum exceeds `u64::MAX`.
    pub fn value(&self) -> Result<u64, CounterError> {
        self.entries
            .values()
            .try_fold(0u64, |sum, &c| sum.checked_add(c))
            .ok_or(CounterError::ValueOverflow)
    }

    /// Adds `delta` to `replica`'s entry and returns the delta state to broadcast (that one
    /// entry, or an empty counter when `delta` is 0).
    ///
    /// # Errors
    /// [`CounterError::EntryOverflow`] or [`CounterError::ValueOverflow`] if the entry or the
    /// value would pass `u64::MAX`; the counter is unchanged.
    pub fn increment(&mut self, replica: ReplicaId, delta: u64) -> Result<GCounter, CounterError> {
        if delta == 0 {
            return Ok(Self::new());
        }
        let entry = self
            .get(replica)
            .checked_add(delta)
            .ok_or(CounterError::EntryOverflow(replica))?;
        self.value()?
            .checked_add(delta)
            .ok_or(CounterError::ValueOverflow)?;
        self.entries.insert(replica, entry);
        Ok(Self::from_entries([(replica, entry)]))
    }

    /// Merges `other` in: the pointwise maximum. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &GCounter) {
        for (replica, count) in other.entries() {
            self.merge_entry(replica, count);
        }
    }

    fn merge_entry(&mut self, replica: ReplicaId, count: u64) {
        if count == 0 {
            return;
        }
        let entry = self.entries.entry(replica).or_insert(0);
        *entry = (*entry).max(count);
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
        write_var_u64(out, self.entries.len() as u64);
        for (replica, count) in self.entries() {
            write_var_u64(out, replica.0);
            write_var_u64(out, count);
        }
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // Each entry is at least two bytes (two one-byte varuints).
        let n_entries = reader.read_count(2)?;
        let mut entries = BTreeMap::new();
        let mut previous: Option<u64> = None;
        for _ in 0..n_entries {
            let replica = reader.read_var_u64()?;
            let count = reader.read_var_u64()?;
            if previous.is_some_and(|p| replica <= p) {
                return Err(DecodeError::UnsortedReplicas);
            }
            if count == 0 {
                return Err(DecodeError::ZeroEntry(replica));
            }
            previous = Some(replica);
            entries.insert(ReplicaId(replica), count);
        }
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    #[test]
    fn increments_merge_and_sum() {
        let mut a = GCounter::new();
        let mut b = GCounter::new();
        a.increment(A, 3).unwrap();
        b.increment(B, 4).unwrap();
        let delta = a.increment(A, 2).unwrap();
        assert_eq!(delta, GCounter::from_entries([(A, 5)]));
        b.merge(&delta);
        a.merge(&b);
        assert_eq!(a, b);
        assert_eq!(a.value(), Ok(9));
    }

    #[test]
    fn overflow_is_refused_and_leaves_the_counter_unchanged() {
        let mut c = GCounter::from_entries([(A, u64::MAX - 1)]);
        assert_eq!(c.increment(A, 2), Err(CounterError::EntryOverflow(A)));
        assert_eq!(c.increment(B, 2), Err(CounterError::ValueOverflow));
        assert_eq!(c.get(A), u64::MAX - 1);
        assert_eq!(c.get(B), 0);
        c.merge(&GCounter::from_entries([(B, 5)]));
        assert_eq!(c.value(), Err(CounterError::ValueOverflow));
    }

    #[test]
    fn zero_delta_changes_nothing() {
        let mut c = GCounter::new();
        assert!(c.increment(A, 0).unwrap().is_empty());
        assert!(c.is_empty());
    }

    #[test]
    fn encoding_is_canonical() {
        let c = GCounter::from_entries([(B, 1), (A, 300)]);
        assert_eq!(c.encode(), [2, 1, 0xac, 0x02, 2, 1]);
        assert_eq!(GCounter::decode(&c.encode()), Ok(c));
        assert_eq!(GCounter::new().encode(), [0]);
        assert_eq!(
            GCounter::decode(&[2, 2, 1, 1, 1]),
            Err(DecodeError::UnsortedReplicas)
        );
        assert_eq!(GCounter::decode(&[1, 1, 0]), Err(DecodeError::ZeroEntry(1)));
        assert!(matches!(
            GCounter::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecodeError::CountExceedsInput { .. })
        ));
    }
}
