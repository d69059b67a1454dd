//! Operations from clients, and [`Values`]: a room's named values that apply them.
//!
//! Clients never send state. They send small [`Op`]s ("increment `likes` by 1", "set `title`
//! to …"); the server applies each with its own [`Hlc`], whose [`crate::ReplicaId`] is the
//! server instance's id, and gets back the delta state ([`Update`]) to persist and broadcast.
//!
//! **Architecture Invariant:** replica ids and timestamps come from the server's [`Hlc`], never
//! from a client, and every op is bounded (a delta of at most [`Limits::max_delta`], a
//! JSON text of at most [`MAX_JSON_BYTES`], a name of at most [`MAX_NAME_BYTES`], at most
//! [`Limits::max_values`] values per room) (PROTOCOL.md, hostile input 23). A refused op changes
//! nothing, not even the clock.

use std::collections::btree_map::{self, BTreeMap};

use serde_json::Value as Json;
use thiserror::Error;

use crate::gcounter::{CounterError, GCounter};
use crate::hlc::{Clock, ClockError, Hlc, ReplicaId, Timestamp};
use crate::lww::{LwwRegister, MAX_JSON_BYTES};
use crate::pncounter::PnCounter;
use crate::value::{Kind, Value, ValueError};

/// The default cap on one op's delta (magnitude); larger deltas are refused, not clamped.
pub const MAX_DELTA: u64 = 1 << 32;

/// The default cap on the number of values in one room; ops creating more are refused.
pub const MAX_VALUES: usize = 1024;

/// The longest value name, in bytes; longer names are refused (names are never empty).
pub const MAX_NAME_BYTES: usize = 128;

/// Why an op or an update was refused; the values and the clock are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The value name is empty or longer than [`MAX_NAME_BYTES`].
    #[error("value name must be 1 to {MAX_NAME_BYTES} bytes, got {0}")]
    InvalidName(usize),
    /// An op's delta magnitude exceeds [`Limits::max_delta`].
    #[error("delta {delta} exceeds the per-op cap of {max}")]
    DeltaTooLarge {
        /// The magnitude of the refused delta.
        delta: u64,
        /// The cap.
        max: u64,
    },
    /// A register write's JSON text exceeds [`MAX_JSON_BYTES`].
    #[error("json value of {len} bytes exceeds the limit of {max}")]
    JsonTooLarge {
        /// The JSON text's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The op would create a value beyond [`Limits::max_values`].
    #[error("too many values (limit {max})")]
    TooManyValues {
        /// The limit.
        max: usize,
    },
    /// The op or update names an existing value of another kind.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A counter would overflow.
    #[error(transparent)]
    Counter(#[from] CounterError),
    /// The clock refused (a remote timestamp too far ahead, or logical overflow).
    #[error(transparent)]
    Clock(#[from] ClockError),
}

/// What an op does; its variant decides the kind of value it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Adds to a [`GCounter`].
    Increment(u64),
    /// Adds (negative: subtracts) to a [`PnCounter`].
    Add(i64),
    /// Writes a [`LwwRegister`], stamped by the server's clock.
    Set(Json),
    /// Writes a [`LwwRegister`] at the writer's own HLC reading (physical milliseconds and
    /// logical counter). The server observes it with its [`Hlc`], refusing one too far
    /// ahead, and stamps the register with it and the writer's server-assigned replica id.
    SetAt {
        /// The JSON value.
        value: Json,
        /// The writer's physical milliseconds (at most [`crate::MAX_PHYSICAL_MS`]).
        physical_ms: u64,
        /// The writer's logical counter.
        logical: u16,
    },
}

impl Action {
    /// The kind of value this action applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Action::Increment(_) => Kind::GCounter,
            Action::Add(_) => Kind::PnCounter,
            Action::Set(_) | Action::SetAt { .. } => Kind::Lww,
        }
    }
}

/// A client's request to change one named value; a missing value is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The value's name within the room.
    pub name: String,
    /// What to do to it.
    pub action: Action,
}

/// A named state: the delta produced by an op, or a full state for a late joiner or storage.
/// Receivers merge it; merging is idempotent, so a delta and a full state are handled alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The value's name within the room.
    pub name: String,
    /// The (delta) state.
    pub value: Value,
}

/// Bounds on what ops may do, per room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest delta magnitude of one op (default [`MAX_DELTA`]).
    pub max_delta: u64,
    /// The most values one room may hold (default [`MAX_VALUES`]).
    pub max_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_delta: MAX_DELTA,
            max_values: MAX_VALUES,
        }
    }
}

/// The CRDT values of one room, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    /// The values, by name.
    values: BTreeMap<String, Value>,
    /// Bounds checked by [`Values::apply`] and the merges.
    limits: Limits,
}

impl Values {
    /// No values, with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            values: BTreeMap::new(),
            limits,
        }
    }

    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// Every value, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.values.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The greatest timestamp of any register, for [`Hlc::with_high_water`] after loading.
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        self.values.values().filter_map(Value::max_timestamp).max()
    }

    /// Applies a client's op, stamped with `hlc` (its replica id and, for registers, a fresh
    /// timestamp), and returns the delta state to persist and broadcast. An
    /// [`Action::SetAt`] is stamped with its own clock reading and `hlc`'s replica id.
    ///
    /// # Errors
    /// An [`ApplyError`] if the op breaks a bound, names a value of another kind, would
    /// overflow a counter, or the clock refuses; nothing changes then.
    pub fn apply<C: Clock>(&mut self, op: &Op, hlc: &mut Hlc<C>) -> Result<Update, ApplyError> {
        let replica = hlc.replica();
        self.apply_from(op, hlc, replica)
    }

    /// As [`Values::apply`], for an op from `writer`, a replica id the server assigned to the
    /// connection or caller (never one a client chose). Counters are still kept under `hlc`'s
    /// replica id; an [`Action::SetAt`] is observed by `hlc` (refused if more than its
    /// maximum offset ahead) and the register is stamped `(physical_ms, logical, writer)`.
    ///
    /// # Errors
    /// As [`Values::apply`].
    pub fn apply_from<C: Clock>(
        &mut self,
        op: &Op,
        hlc: &mut Hlc<C>,
        writer: ReplicaId,
    ) -> Result<Update, ApplyError> {
        self.admit(&op.name, op.action.kind())?;
        let replica = hlc.replica();
        let delta = match (&op.action, self.values.get_mut(&op.name)) {
            (&Action::Increment(delta), existing) => {
                self.limits.check_delta(delta)?;
                let mut fresh = GCounter::new();
                let counter = match existing {
                    Some(Value::GCounter(c)) => c,
                    _ => &mut fresh,
                };
                Value::GCounter(counter.increment(replica, delta)?)
            }
            (&Action::Add(delta), existing) => {
                self.limits.check_delta(delta.unsigned_abs())?;
                let mut fresh = PnCounter::new();
                let counter = match existing {
                    Some(Value::PnCounter(c)) => c,
                    _ => &mut fresh,
                };
                Value::PnCounter(counter.add(replica, delta)?)
            }
            (Action::Set(json), _) => {
                check_json(json)?;
                Value::Lww(LwwRegister::new(json.clone(), hlc.now()?))
            }
            (
                Action::SetAt {
                    value,
                    physical_ms,
                    logical,
                },
                _,
            ) => {
                check_json(value)?;
                let stamp = Timestamp::new(*physical_ms, *logical, writer)?;
                hlc.observe(stamp)?;
                Value::Lww(LwwRegister::new(value.clone(), stamp))
            }
        };
        let update = Update {
            name: op.name.clone(),
            value: delta,
        };
        // Counters already hold the delta (merging it again is a no-op); a new value is the delta.
        self.merge(&update)?;
        Ok(update)
    }

    /// Puts a value back as it was before a batch (`None`: absent), for rolling back changes
    /// whose commit failed. No merge and no checks: `value` must have come from [`Values::get`].
    pub fn restore(&mut self, name: &str, value: Option<Value>) {
        match value {
            Some(v) => {
                self.values.insert(name.to_owned(), v);
            }
            None => {
                self.values.remove(name);
            }
        }
    }

    /// Merges a state that this node made or already accepted (loading from storage), without
    /// consulting a clock.
    ///
    /// # Errors
    /// An [`ApplyError`] on an invalid name, a kind mismatch, or too many values.
    pub fn merge(&mut self, update: &Update) -> Result<(), ApplyError> {
        self.admit(&update.name, update.value.kind())?;
        match self.values.entry(update.name.clone()) {
            btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&update.value)?,
            btree_map::Entry::Vacant(e) => {
                e.insert(update.value.clone());
            }
        }
        Ok(())
    }

    /// Merges a state from another server (the cluster bus): its register timestamp is first
    /// observed by `hlc`, which refuses one too far in the future.
    ///
    /// # Errors
    /// As [`Values::merge`], plus [`ApplyError::Clock`] if `hlc` refuses the timestamp.
    pub fn merge_remote<C: Clock>(
        &mut self,
        update: &Update,
        hlc: &mut Hlc<C>,
    ) -> Result<(), ApplyError> {
        self.admit(&update.name, update.value.kind())?;
        if let Some(stamp) = update.value.max_timestamp() {
            hlc.observe(stamp)?;
        }
        self.merge(update)
    }

    /// Merges a state another server already stored (the cluster bus, a catch-up from the
    /// store). Its register timestamp is observed by `hlc` when `hlc` accepts it, and the state
    /// is merged either way: it is durable, so refusing it (a peer whose clock runs a few
    /// milliseconds ahead accepted a stamp at the edge of the allowed offset) would only leave
    /// this server disagreeing with the store and with every other server.
    ///
    /// # Errors
    /// As [`Values::merge`].
    pub fn merge_durable<C: Clock>(
        &mut self,
        update: &Update,
        hlc: &mut Hlc<C>,
    ) -> Result<(), ApplyError> {
        self.admit(&update.name, update.value.kind())?;
        if let Some(stamp) = update.value.max_timestamp() {
            // Refused: the clock is not dragged ahead of the allowed offset, but the value
            // still converges.
            let _ = hlc.observe(stamp);
        }
        self.merge(update)
    }

    /// Checks the name, the kind against an existing value, and room for a new value.
    fn admit(&self, name: &str, kind: Kind) -> Result<(), ApplyError> {
        check_name(name)?;
        match self.values.get(name) {
            Some(existing) if existing.kind() != kind => Err(ValueError::KindMismatch {
                expected: existing.kind(),
                found: kind,
            }
            .into()),
            Some(_) => Ok(()),
            None if self.values.len() >= self.limits.max_values => Err(ApplyError::TooManyValues {
                max: self.limits.max_values,
            }),
            None => Ok(()),
        }
    }
}

impl Limits {
    fn check_delta(&self, delta: u64) -> Result<(), ApplyError> {
        if delta > self.max_delta {
            return Err(ApplyError::DeltaTooLarge {
                delta,
                max: self.max_delta,
            });
        }
        Ok(())
    }
}

/// Checks that a register write's JSON text is at most [`MAX_JSON_BYTES`].
fn check_json(json: &Json) -> Result<(), ApplyError> {
    let len = json.to_string().len();
    if len > MAX_JSON_BYTES {
        return Err(ApplyError::JsonTooLarge {
            len,
            max: MAX_JSON_BYTES,
        });
    }
    Ok(())
}

/// Checks that a value name is 1 to [`MAX_NAME_BYTES`] bytes.
pub(crate) fn check_name(name: &str) -> Result<(), ApplyError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApplyError::InvalidName(name.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hlc::ManualClock;

    const T0: u64 = 1_700_000_000_000;

    fn op(name: &str, action: Action) -> Op {
        Op {
            name: name.to_owned(),
            action,
        }
    }

    fn hlc(replica: u64) -> Hlc<ManualClock> {
        Hlc::new(ReplicaId(replica), ManualClock::new(T0))
    }

    /// Pins issue 13 item 11: process A accepts a client's register stamp at the edge of the
    /// allowed offset and publishes the stored state; process B, whose clock is a few
    /// milliseconds behind A's, refused it on the bus (`merge_remote`), so the two disagreed
    /// for good. A durable state is merged whatever the stamp.
    #[test]
    fn a_stored_state_from_a_peer_slightly_ahead_converges() {
        let a_clock = ManualClock::new(T0 + 5);
        let mut a_hlc = Hlc::new(ReplicaId(1), a_clock.clone());
        let mut b_hlc = hlc(2);
        let edge = T0 + 5 + a_hlc.max_offset().as_millis() as u64;
        let mut a = Values::default();
        let update = a
            .apply(
                &op(
                    "title",
                    Action::SetAt {
                        value: json!("edge"),
                        physical_ms: edge,
                        logical: 0,
                    },
                ),
                &mut a_hlc,
            )
            .unwrap();
        let mut b = Values::default();
        assert!(
            b.merge_remote(&update, &mut b_hlc).is_err(),
            "the old bus path refuses it"
        );
        b.merge_durable(&update, &mut b_hlc).unwrap();
        assert_eq!(b.get("title"), a.get("title"));
    }

    #[test]
    fn ops_return_deltas_stamped_by_the_server() {
        let mut values = Values::default();
        let mut clock = hlc(9);
        values
            .apply(&op("likes", Action::Increment(2)), &mut clock)
            .unwrap();
        let update = values
            .apply(&op("likes", Action::Increment(3)), &mut clock)
            .unwrap();
        assert_eq!(
            update.value,
            Value::GCounter(GCounter::from_entries([(ReplicaId(9), 5)]))
        );
        assert_eq!(values.get("likes").unwrap().current(), Ok(json!(5)));

        let update = values
            .apply(&op("title", Action::Set(json!("hi"))), &mut clock)
            .unwrap();
        assert_eq!(update.value.max_timestamp(), Some(clock.last()));
        assert_eq!(values.max_timestamp(), Some(clock.last()));

        values
            .apply(&op("score", Action::Add(-4)), &mut clock)
            .unwrap();
        assert_eq!(values.get("score").unwrap().current(), Ok(json!(-4)));
    }

    /// Pins PROTOCOL.md hostile input 23: huge deltas are refused, not clamped or wrapped.
    #[test]
    fn bounds_are_enforced_and_refusals_change_nothing() {
        let mut values = Values::new(Limits {
            max_delta: 10,
            max_values: 1,
        });
        let mut clock = hlc(1);
        assert_eq!(
            values.apply(&op("n", Action::Increment(11)), &mut clock),
            Err(ApplyError::DeltaTooLarge { delta: 11, max: 10 })
        );
        assert_eq!(
            values.apply(&op("n", Action::Add(i64::MIN)), &mut clock),
            Err(ApplyError::DeltaTooLarge {
                delta: 1 << 63,
                max: 10
            })
        );
        assert!(values.is_empty());
        values
            .apply(&op("n", Action::Increment(1)), &mut clock)
            .unwrap();
        let before_clock = clock.last();
        assert!(matches!(
            values.apply(&op("n", Action::Set(json!(1))), &mut clock),
            Err(ApplyError::Value(ValueError::KindMismatch { .. }))
        ));
        assert_eq!(clock.last(), before_clock);
        assert_eq!(
            values.apply(&op("m", Action::Increment(1)), &mut clock),
            Err(ApplyError::TooManyValues { max: 1 })
        );
        assert_eq!(
            values.apply(&op("", Action::Increment(1)), &mut clock),
            Err(ApplyError::InvalidName(0))
        );
        let big = json!("x".repeat(MAX_JSON_BYTES));
        let mut roomy = Values::default();
        assert!(matches!(
            roomy.apply(&op("r", Action::Set(big)), &mut clock),
            Err(ApplyError::JsonTooLarge { .. })
        ));
        assert_eq!(values.get("n").unwrap().current(), Ok(json!(1)));
    }

    #[test]
    fn remote_updates_from_the_future_are_refused() {
        let mut far = Hlc::new(ReplicaId(2), ManualClock::new(T0 + 3_600_000));
        let mut theirs = Values::default();
        let update = theirs
            .apply(&op("title", Action::Set(json!("mine"))), &mut far)
            .unwrap();
        let mut ours = Values::default();
        let mut clock = hlc(1);
        assert!(matches!(
            ours.merge_remote(&update, &mut clock),
            Err(ApplyError::Clock(ClockError::RemoteTooFarAhead { .. }))
        ));
        assert!(ours.is_empty());
        // A later local write beats an accepted remote one.
        let mut near = Hlc::new(ReplicaId(2), ManualClock::new(T0 + 400));
        let update = theirs
            .apply(&op("title", Action::Set(json!("theirs"))), &mut near)
            .unwrap();
        ours.merge_remote(&update, &mut clock).unwrap();
        ours.apply(&op("title", Action::Set(json!("ours"))), &mut clock)
            .unwrap();
        assert_eq!(ours.get("title").unwrap().current(), Ok(json!("ours")));
    }

    /// Pins issue 4: a client's clock orders its register writes (the greatest HLC wins, not
    /// the last to arrive), under a replica id the server assigns; one an hour ahead is
    /// refused and changes nothing, not even the clock.
    #[test]
    fn set_at_uses_the_writer_clock_and_refuses_one_far_ahead() {
        let mut values = Values::default();
        let mut clock = hlc(1);
        let set_at = |value: Json, physical_ms: u64| {
            op(
                "title",
                Action::SetAt {
                    value,
                    physical_ms,
                    logical: 0,
                },
            )
        };
        let ahead = values
            .apply_from(&set_at(json!("ahead"), T0 + 100), &mut clock, ReplicaId(7))
            .unwrap();
        assert_eq!(
            ahead.value.max_timestamp(),
            Some(Timestamp::new(T0 + 100, 0, ReplicaId(7)).unwrap())
        );
        values
            .apply_from(&set_at(json!("behind"), T0 - 100), &mut clock, ReplicaId(8))
            .unwrap();
        assert_eq!(values.get("title").unwrap().current(), Ok(json!("ahead")));
        let before = (values.clone(), clock.last());
        assert!(matches!(
            values.apply_from(
                &set_at(json!("x"), T0 + 3_600_000),
                &mut clock,
                ReplicaId(8)
            ),
            Err(ApplyError::Clock(ClockError::RemoteTooFarAhead { .. }))
        ));
        assert_eq!((values.clone(), clock.last()), before);
        values.restore("title", None);
        assert!(values.is_empty());
    }
}
