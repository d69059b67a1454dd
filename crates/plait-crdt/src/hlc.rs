//! A hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).
//!
//! A [`Timestamp`] is 48 bits of physical milliseconds since the Unix epoch, a 16-bit logical
//! counter, and the [`ReplicaId`] of the node that made it. Timestamps are totally ordered by
//! (physical, logical, replica), so two different nodes never produce equal timestamps.
//!
//! [`Hlc::now`] is the paper's send (or local event) rule and [`Hlc::observe`] its receive
//! rule. The physical clock is injected through [`Clock`].
//!
//! **Architecture Invariant:** a remote timestamp is never adopted if its physical part is more
//! than `max_offset` ([`DEFAULT_MAX_OFFSET`], 500 ms) ahead of local physical time: otherwise one
//! node with a fast clock would win every last-writer-wins write (PROTOCOL.md, hostile input 22).
//! It is refused, not clamped. The logical counter never wraps: overflow is an error.
//!
//! Binary encoding of a timestamp: 8 bytes big-endian of `physical << 16 | logical`, then the
//! replica id as a `varuint` (9 to 18 bytes in all).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::encoding::{write_var_u64, DecodeError, Reader};

/// The largest physical time a timestamp can hold (48 bits of milliseconds, about year 10889).
pub const MAX_PHYSICAL_MS: u64 = (1 << 48) - 1;

/// How far ahead of local physical time a remote timestamp may be before it is refused.
pub const DEFAULT_MAX_OFFSET: Duration = Duration::from_millis(500);

/// Why the clock could not produce a timestamp; the clock's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClockError {
    /// A remote timestamp's physical part is more than `max_offset` ahead of local time.
    #[error(
        "remote timestamp at {remote_ms} ms is more than {max_offset_ms} ms ahead of local time {local_ms} ms"
    )]
    RemoteTooFarAhead {
        /// The remote timestamp's physical milliseconds.
        remote_ms: u64,
        /// Local physical milliseconds when it was observed.
        local_ms: u64,
        /// The configured maximum offset in milliseconds.
        max_offset_ms: u64,
    },
    /// More than 65,535 events happened within one millisecond of the clock's physical part.
    #[error("logical counter overflow at {physical_ms} ms")]
    LogicalOverflow {
        /// The physical part at which the counter ran out.
        physical_ms: u64,
    },
    /// A physical time does not fit in 48 bits.
    #[error("physical time {physical_ms} ms does not fit in 48 bits")]
    PhysicalOutOfRange {
        /// The offending physical milliseconds.
        physical_ms: u64,
    },
}

/// The identity of a writer: a server instance, assigned by the server, never by a client.
///
/// It is both the HLC node id and the G-Counter replica key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u64);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A hybrid logical clock timestamp, ordered by (physical, logical, replica).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    // Field order is the total order: the derived `Ord` compares them in this order.
    /// Milliseconds since the Unix epoch; at most [`MAX_PHYSICAL_MS`].
    physical_ms: u64,
    /// Events within the same physical millisecond.
    logical: u16,
    /// The node that made the timestamp; breaks ties.
    replica: ReplicaId,
}

impl Timestamp {
    /// The number of bytes of the fixed part of the encoding.
    const FIXED_BYTES: usize = 8;

    /// Makes a timestamp.
    ///
    /// # Errors
    /// [`ClockError::PhysicalOutOfRange`] if `physical_ms` exceeds 48 bits.
    pub fn new(physical_ms: u64, logical: u16, replica: ReplicaId) -> Result<Self, ClockError> {
        if physical_ms > MAX_PHYSICAL_MS {
            return Err(ClockError::PhysicalOutOfRange { physical_ms });
        }
        Ok(Self {
            physical_ms,
            logical,
            replica,
        })
    }

    /// Milliseconds since the Unix epoch.
    pub fn physical_ms(&self) -> u64 {
        self.physical_ms
    }

    /// The logical counter.
    pub fn logical(&self) -> u16 {
        self.logical
    }

    /// The node that made this timestamp.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// Encodes as 8 bytes big-endian `physical << 16 | logical`, then `varuint replica`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED_BYTES + 10);
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one timestamp.
    ///
    /// # Errors
    /// A [`DecodeError`] if the input is truncated, non-canonical or has trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let ts = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(ts)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let packed = (self.physical_ms << 16) | u64::from(self.logical);
        out.extend_from_slice(&packed.to_be_bytes());
        write_var_u64(out, self.replica.0);
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut fixed = [0u8; Self::FIXED_BYTES];
        fixed.copy_from_slice(reader.read_exact(Self::FIXED_BYTES)?);
        let packed = u64::from_be_bytes(fixed);
        let replica = ReplicaId(reader.read_var_u64()?);
        Ok(Self {
            physical_ms: packed >> 16,
            logical: packed as u16,
            replica,
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms, self.logical, self.replica)
    }
}

/// A source of physical time in milliseconds since the Unix epoch.
pub trait Clock: fmt::Debug {
    /// The current physical time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 reads as 0: the HLC then runs on its logical part alone.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to, for tests. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    /// Milliseconds since the Unix epoch, shared by every clone.
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(now_ms)),
        }
    }

    /// Sets the time (it may go backwards, as real clocks do).
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `by_ms`, saturating.
    pub fn advance(&self, by_ms: u64) {
        let now = self.now_ms.load(Ordering::SeqCst);
        self.now_ms
            .store(now.saturating_add(by_ms), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A hybrid logical clock owned by one node.
///
/// Deliberately not `Clone`: two copies would issue equal timestamps.
#[derive(Debug)]
pub struct Hlc<C = SystemClock> {
    /// Physical time source.
    clock: C,
    /// This node's id, stamped into every timestamp.
    replica: ReplicaId,
    /// The physical part of the last timestamp (the paper's `l.j`).
    last_physical_ms: u64,
    /// The logical part of the last timestamp (the paper's `c.j`).
    last_logical: u16,
    /// Remote timestamps further ahead of local physical time than this are refused.
    max_offset_ms: u64,
}

impl<C: Clock> Hlc<C> {
    /// A clock for `replica` that has produced nothing yet, with [`DEFAULT_MAX_OFFSET`].
    pub fn new(replica: ReplicaId, clock: C) -> Self {
        Self {
            clock,
            replica,
            last_physical_ms: 0,
            last_logical: 0,
            max_offset_ms: DEFAULT_MAX_OFFSET.as_millis() as u64,
        }
    }

    /// Restores the high-water mark after a restart, so the next timestamp is greater than
    /// `high_water` even if the physical clock went backwards meanwhile.
    ///
    /// Pass the greatest timestamp this node ever issued or observed (for example the
    /// greatest [`crate::Value::max_timestamp`] of the values loaded from storage). A mark
    /// lower than the clock's current state changes nothing.
    pub fn with_high_water(mut self, high_water: Timestamp) -> Self {
        let mark = (high_water.physical_ms, high_water.logical);
        if mark > (self.last_physical_ms, self.last_logical) {
            self.last_physical_ms = mark.0;
            self.last_logical = mark.1;
        }
        self
    }

    /// Sets how far ahead of local physical time a remote timestamp may be (saturating at
    /// `u64::MAX` milliseconds).
    pub fn with_max_offset(mut self, max_offset: Duration) -> Self {
        self.max_offset_ms = u64::try_from(max_offset.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// This node's id.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// The configured maximum offset.
    pub fn max_offset(&self) -> Duration {
        Duration::from_millis(self.max_offset_ms)
    }

    /// The last timestamp issued or observed: the high-water mark to persist.
    pub fn last(&self) -> Timestamp {
        Timestamp {
            physical_ms: self.last_physical_ms,
            logical: self.last_logical,
            replica: self.replica,
        }
    }

    /// A timestamp for a local or send event: greater than every earlier one, and never
    /// behind physical time.
    ///
    /// # Errors
    /// [`ClockError::LogicalOverflow`] if the logical counter would pass 65,535 (the physical
    /// clock is stuck behind the high-water mark), or [`ClockError::PhysicalOutOfRange`] if
    /// the physical clock reads beyond 48 bits. State is unchanged on error.
    pub fn now(&mut self) -> Result<Timestamp, ClockError> {
        let physical = self.physical_now()?;
        let (l, c) = if physical > self.last_physical_ms {
            (physical, 0)
        } else {
            let c = self
                .last_logical
                .checked_add(1)
                .ok_or(ClockError::LogicalOverflow {
                    physical_ms: self.last_physical_ms,
                })?;
            (self.last_physical_ms, c)
        };
        Ok(self.commit(l, c))
    }

    /// A timestamp for receiving `remote`: greater than both the previous local timestamp and
    /// `remote`, and never behind physical time.
    ///
    /// # Errors
    /// [`ClockError::RemoteTooFarAhead`] if `remote` is more than `max_offset` ahead of local
    /// physical time; [`ClockError::LogicalOverflow`] or [`ClockError::PhysicalOutOfRange`] as
    /// for [`Hlc::now`]. State is unchanged on error.
    pub fn observe(&mut self, remote: Timestamp) -> Result<Timestamp, ClockError> {
        let physical = self.physical_now()?;
        if remote.physical_ms > physical.saturating_add(self.max_offset_ms) {
            return Err(ClockError::RemoteTooFarAhead {
                remote_ms: remote.physical_ms,
                local_ms: physical,
                max_offset_ms: self.max_offset_ms,
            });
        }
        let l = self.last_physical_ms.max(remote.physical_ms).max(physical);
        let from_local = l == self.last_physical_ms;
        let from_remote = l == remote.physical_ms;
        let base = match (from_local, from_remote) {
            (true, true) => Some(self.last_logical.max(remote.logical)),
            (true, false) => Some(self.last_logical),
            (false, true) => Some(remote.logical),
            (false, false) => None,
        };
        let c = match base {
            None => 0,
            Some(base) => base
                .checked_add(1)
                .ok_or(ClockError::LogicalOverflow { physical_ms: l })?,
        };
        Ok(self.commit(l, c))
    }

    fn physical_now(&self) -> Result<u64, ClockError> {
        let physical_ms = self.clock.now_ms();
        if physical_ms > MAX_PHYSICAL_MS {
            return Err(ClockError::PhysicalOutOfRange { physical_ms });
        }
        Ok(physical_ms)
    }

    fn commit(&mut self, physical_ms: u64, logical: u16) -> Timestamp {
        self.last_physical_ms = physical_ms;
        self.last_logical = logical;
        self.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_A: ReplicaId = ReplicaId(1);
    const T0: u64 = 1_700_000_000_000;

    fn ts(physical_ms: u64, logical: u16, replica: u64) -> Timestamp {
        Timestamp::new(physical_ms, logical, ReplicaId(replica)).unwrap()
    }

    #[test]
    fn send_rule_follows_physical_time_and_counts_within_a_millisecond() {
        let clock = ManualClock::new(T0);
        let mut hlc = Hlc::new(NODE_A, clock.clone());
        assert_eq!(hlc.now().unwrap(), ts(T0, 0, 1));
        assert_eq!(hlc.now().unwrap(), ts(T0, 1, 1));
        clock.advance(5);
        assert_eq!(hlc.now().unwrap(), ts(T0 + 5, 0, 1));
        // The physical clock going backwards does not move timestamps backwards.
        clock.set(T0 - 1000);
        assert_eq!(hlc.now().unwrap(), ts(T0 + 5, 1, 1));
    }

    #[test]
    fn receive_rule_is_greater_than_local_and_remote() {
        let clock = ManualClock::new(T0);
        let mut hlc = Hlc::new(NODE_A, clock.clone());
        let local = hlc.now().unwrap();
        let remote = ts(T0 + 100, 7, 2);
        let got = hlc.observe(remote).unwrap();
        assert_eq!(got, ts(T0 + 100, 8, 1));
        assert!(got > local && got > remote);
        // Equal physical parts: max of both counters, plus one.
        let got = hlc.observe(ts(T0 + 100, 20, 2)).unwrap();
        assert_eq!(got, ts(T0 + 100, 21, 1));
        // Physical time ahead of both: the counter resets.
        clock.set(T0 + 200);
        assert_eq!(hlc.observe(ts(T0 + 150, 3, 2)).unwrap(), ts(T0 + 200, 0, 1));
    }

    /// Pins PROTOCOL.md hostile input 22: a remote clock an hour ahead is refused, not adopted.
    #[test]
    fn a_remote_timestamp_an_hour_ahead_is_refused_and_state_unchanged() {
        let clock = ManualClock::new(T0);
        let mut hlc = Hlc::new(NODE_A, clock);
        hlc.now().unwrap();
        let before = hlc.last();
        let hour_ahead = ts(T0 + 3_600_000, 0, 2);
        assert_eq!(
            hlc.observe(hour_ahead),
            Err(ClockError::RemoteTooFarAhead {
                remote_ms: T0 + 3_600_000,
                local_ms: T0,
                max_offset_ms: 500,
            })
        );
        assert_eq!(hlc.last(), before);
        // Exactly max_offset ahead is still accepted.
        assert!(hlc.observe(ts(T0 + 500, 0, 2)).is_ok());
        assert!(hlc.observe(ts(T0 + 501, 0, 2)).is_err());
    }

    #[test]
    fn logical_overflow_is_an_error_not_a_wrap() {
        let clock = ManualClock::new(T0);
        let mut hlc = Hlc::new(NODE_A, clock).with_high_water(ts(T0, u16::MAX - 1, 1));
        assert_eq!(hlc.now().unwrap(), ts(T0, u16::MAX, 1));
        assert_eq!(
            hlc.now(),
            Err(ClockError::LogicalOverflow { physical_ms: T0 })
        );
        assert_eq!(hlc.last(), ts(T0, u16::MAX, 1));
        assert!(hlc.observe(ts(T0, 3, 2)).is_err());
    }

    #[test]
    fn high_water_survives_a_restart_with_a_clock_that_went_back() {
        let clock = ManualClock::new(T0 + 10_000);
        let mut before = Hlc::new(NODE_A, clock.clone());
        let last = before.now().unwrap();
        clock.set(T0);
        let mut after = Hlc::new(NODE_A, clock).with_high_water(last);
        assert!(after.now().unwrap() > last);
    }

    #[test]
    fn ties_are_broken_by_replica() {
        assert!(ts(T0, 0, 2) > ts(T0, 0, 1));
        assert!(ts(T0, 1, 1) > ts(T0, 0, 2));
        assert!(ts(T0 + 1, 0, 0) > ts(T0, u16::MAX, u64::MAX));
    }

    #[test]
    fn encoding_is_big_endian_then_varuint() {
        let t = ts(0x0102_0304_0506, 0x0708, 300);
        assert_eq!(
            t.encode(),
            [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xac, 0x02]
        );
        assert_eq!(Timestamp::decode(&t.encode()), Ok(t));
        assert_eq!(Timestamp::decode(&[0; 7]), Err(DecodeError::UnexpectedEnd));
        assert!(Timestamp::new(MAX_PHYSICAL_MS + 1, 0, NODE_A).is_err());
    }
}
