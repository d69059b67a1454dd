//! CRDT values between a room, the store and files: the merge the store runs when it writes a
//! value ([`merge_stored`]), conversions between stored rows and values, merging imported
//! states, and what restoring a past version does to values ([`restore_updates`]). Shared by
//! the room actor and the admin CLI working on a store.

use std::collections::BTreeMap;

use bytes::Bytes;
use plait_crdt::{
    ApplyError, Clock, Hlc, LwwRegister, ReplicaId, SystemClock, Update, Value, Values,
};
use plait_store::StoredValue;
use tracing::warn;

use crate::snapshot_file::NamedValues;

/// The value types this module's functions take, for callers without a `plait-crdt` dependency.
pub use plait_crdt::{Update as ValueUpdate, Values as RoomValues};

/// What merging or restoring values did, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValuesOutcome {
    /// Names whose state changed, in order.
    pub changed: Vec<String>,
    /// What was left as it was, and why (one sentence each).
    pub notes: Vec<String>,
}

/// The merge the server passes to [`plait_store::Store::put_values`]: the CRDT merge of the
/// stored state and the new one, so a process storing its state never drops what another
/// process stored meanwhile.
///
/// A stored value of another kind wins: the first stored use fixed the name's kind, and the
/// writer adopts the stored value from `put_values`'s answer. A stored state that does not
/// decode is replaced by the new one.
///
/// # Errors
/// When the new state does not decode (the server encoded it, so this means a bug), or a
/// corrupt stored row is of another kind than the new one.
pub fn merge_stored(stored: &StoredValue, new: &StoredValue) -> Result<Bytes, String> {
    let new_value =
        Value::decode(&new.state).map_err(|e| format!("the new state does not decode: {e}"))?;
    let stored_value = match Value::decode(&stored.state) {
        Ok(v) if v.kind().as_str() == stored.kind => v,
        _ if stored.kind == new.kind => {
            warn!(name = %stored.name, "replacing a stored value that does not decode");
            return Ok(new.state.clone());
        }
        _ => {
            return Err(format!(
                "the stored {} state does not decode, and the new state is a {}",
                stored.kind, new.kind
            ))
        }
    };
    if stored_value.kind() != new_value.kind() {
        warn!(name = %stored.name, stored = %stored_value.kind(), new = %new_value.kind(),
            "value written as two kinds at once; the stored kind stays");
        return Ok(stored.state.clone());
    }
    let mut merged = stored_value;
    merged.merge(&new_value).map_err(|e| e.to_string())?;
    Ok(Bytes::from(merged.encode()))
}

/// Stored rows for `values`.
pub fn to_rows<'a>(values: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Vec<StoredValue> {
    values
        .into_iter()
        .map(|(name, value)| StoredValue {
            name: name.to_owned(),
            kind: value.kind().as_str().to_owned(),
            state: Bytes::from(value.encode()),
        })
        .collect()
}

/// The values of stored rows, merged into one [`Values`]; rows that do not decode (or hold
/// another kind than their row says) are skipped and described in the second value.
pub fn from_rows(rows: &[StoredValue]) -> (Values, Vec<String>) {
    let mut values = Values::default();
    let mut skipped = Vec::new();
    for row in rows {
        let merged = Value::decode(&row.state)
            .map_err(|e| e.to_string())
            .and_then(|value| {
                if value.kind().as_str() != row.kind {
                    return Err(format!(
                        "stored as {} but holds a {}",
                        row.kind,
                        value.kind()
                    ));
                }
                let update = Update {
                    name: row.name.clone(),
                    value,
                };
                values.merge(&update).map_err(|e| e.to_string())
            });
        if let Err(e) = merged {
            skipped.push(format!("{}: stored value skipped: {e}", row.name));
        }
    }
    (values, skipped)
}

/// The values as named states, by name.
pub fn named(values: &Values) -> NamedValues {
    values
        .iter()
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect()
}

/// States to merge for named values.
pub fn updates(values: NamedValues) -> Vec<Update> {
    values
        .into_iter()
        .map(|(name, value)| Update { name, value })
        .collect()
}

/// Merges `incoming` into `values` with `merge` (a plain merge, or one that first observes a
/// clock). A refused state (another kind, a timestamp too far ahead) is left out and noted.
/// Returns what changed and, for each changed name, its value before (to undo).
pub fn merge_updates(
    values: &mut Values,
    incoming: Vec<Update>,
    mut merge: impl FnMut(&mut Values, &Update) -> Result<(), ApplyError>,
) -> (ValuesOutcome, BTreeMap<String, Option<Value>>) {
    let mut outcome = ValuesOutcome::default();
    let mut before = BTreeMap::new();
    for update in incoming {
        let prior = values.get(&update.name).cloned();
        if let Err(e) = merge(values, &update) {
            outcome
                .notes
                .push(format!("{}: not merged: {e}", update.name));
            continue;
        }
        if values.get(&update.name) != prior.as_ref() && !before.contains_key(&update.name) {
            before.insert(update.name.clone(), prior);
            outcome.changed.push(update.name);
        }
    }
    (outcome, before)
}

/// The states that set `current` back to `past` for a restore, and notes on what stays:
///
/// - a last-writer-wins register is written again with its past value, stamped by `hlc` now,
///   so the restore wins over every earlier write;
/// - a PN-Counter is adjusted by the difference, under `hlc`'s replica;
/// - a G-Counter cannot go down: it is left (noted when it grew since);
/// - a value created since, or that changed kind, is left.
pub fn restore_updates<C: Clock>(
    current: &Values,
    past: &NamedValues,
    hlc: &mut Hlc<C>,
) -> (Vec<Update>, Vec<String>) {
    let mut updates = Vec::new();
    let mut notes = Vec::new();
    let mut put = |name: &str, value: Value| {
        updates.push(Update {
            name: name.to_owned(),
            value,
        });
    };
    for (name, then) in past {
        let Some(now) = current.get(name) else {
            // Values are never deleted, so this one was lost: merging its past state puts it back.
            match then {
                Value::Lww(r) => match hlc.now() {
                    Ok(stamp) => put(name, Value::Lww(LwwRegister::new(r.value().clone(), stamp))),
                    Err(e) => notes.push(format!("{name}: not restored: {e}")),
                },
                counter => put(name, counter.clone()),
            }
            continue;
        };
        match (now, then) {
            (Value::Lww(now_r), Value::Lww(then_r)) => {
                if now_r.value() != then_r.value() {
                    match hlc.now() {
                        Ok(stamp) => put(
                            name,
                            Value::Lww(LwwRegister::new(then_r.value().clone(), stamp)),
                        ),
                        Err(e) => notes.push(format!("{name}: not restored: {e}")),
                    }
                }
            }
            (Value::PnCounter(now_c), Value::PnCounter(then_c)) => {
                let diff = match (now_c.value(), then_c.value()) {
                    (Ok(n), Ok(t)) => t.checked_sub(n),
                    _ => None,
                };
                match diff {
                    Some(0) => {}
                    Some(diff) => {
                        let mut adjusted = now_c.clone();
                        match adjusted.add(hlc.replica(), diff) {
                            Ok(delta) => put(name, Value::PnCounter(delta)),
                            Err(e) => notes.push(format!("{name}: not restored: {e}")),
                        }
                    }
                    None => notes.push(format!(
                        "{name}: not restored: the difference to its past value does not fit"
                    )),
                }
            }
            (Value::GCounter(now_c), Value::GCounter(then_c)) => {
                // Merging the past state changes nothing unless entries were lost since.
                put(name, then.clone());
                if let (Ok(n), Ok(t)) = (now_c.value(), then_c.value()) {
                    if n > t {
                        notes.push(format!(
                            "{name}: a gcounter cannot go down; left at {n} (it was {t} then)"
                        ));
                    }
                }
            }
            (now, then) => notes.push(format!(
                "{name}: is a {} now but was a {} then; left as it is",
                now.kind(),
                then.kind()
            )),
        }
    }
    for (name, _) in current.iter() {
        if !past.iter().any(|(n, _)| n == name) {
            notes.push(format!("{name}: created after that time; left as it is"));
        }
    }
    (updates, notes)
}

/// A clock for changing values without a server (the CLI on the store): a fresh random
/// replica id, so it never writes under another process's, and a high-water mark at the
/// newest stored timestamp, so its writes win over every stored one.
pub fn offline_hlc(values: &Values) -> Hlc<SystemClock> {
    let hlc = Hlc::new(ReplicaId(crate::new_instance_id()), SystemClock);
    match values.max_timestamp() {
        Some(high_water) => hlc.with_high_water(high_water),
        None => hlc,
    }
}

#[cfg(test)]
mod tests {
    use plait_crdt::{Action, GCounter, ManualClock, Op, PnCounter};
    use serde_json::json;

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn op(values: &mut Values, hlc: &mut Hlc<ManualClock>, name: &str, action: Action) {
        let op = Op {
            name: name.to_owned(),
            action,
        };
        values.apply(&op, hlc).unwrap();
    }

    fn current(values: &Values, name: &str) -> serde_json::Value {
        values.get(name).unwrap().current().unwrap()
    }

    fn row(name: &str, value: &Value) -> StoredValue {
        to_rows([(name, value)]).remove(0)
    }

    #[test]
    fn stored_merge_is_the_crdt_merge() {
        let a = Value::GCounter(GCounter::from_entries([(ReplicaId(1), 3)]));
        let b = Value::GCounter(GCounter::from_entries([(ReplicaId(2), 4)]));
        let merged = merge_stored(&row("n", &a), &row("n", &b)).unwrap();
        assert_eq!(Value::decode(&merged).unwrap().current(), Ok(json!(7)));
        // Idempotent: storing the same state again changes nothing.
        let again = merge_stored(&row("n", &Value::decode(&merged).unwrap()), &row("n", &b));
        assert_eq!(again.unwrap(), merged);
    }

    #[test]
    fn stored_merge_keeps_the_stored_kind_and_replaces_a_corrupt_row() {
        let counter = Value::GCounter(GCounter::from_entries([(ReplicaId(1), 3)]));
        let stamp = plait_crdt::Timestamp::new(T0, 0, ReplicaId(1)).unwrap();
        let register = Value::Lww(LwwRegister::new(json!("x"), stamp));
        let kept = merge_stored(&row("n", &counter), &row("n", &register)).unwrap();
        assert_eq!(kept, Bytes::from(counter.encode()));
        let mut corrupt = row("n", &counter);
        corrupt.state = Bytes::from_static(&[9, 9]);
        let replaced = merge_stored(&corrupt, &row("n", &counter)).unwrap();
        assert_eq!(replaced, Bytes::from(counter.encode()));
        assert!(merge_stored(&corrupt, &row("n", &register)).is_err());
        let mut bad_new = row("n", &counter);
        bad_new.state = Bytes::from_static(&[9]);
        assert!(merge_stored(&row("n", &counter), &bad_new).is_err());
    }

    #[test]
    fn rows_round_trip_and_bad_rows_are_skipped_with_a_note() {
        let mut values = Values::default();
        let mut hlc = Hlc::new(ReplicaId(1), ManualClock::new(T0));
        op(&mut values, &mut hlc, "likes", Action::Increment(2));
        op(&mut values, &mut hlc, "title", Action::Set(json!("t")));
        let mut rows = to_rows(values.iter());
        let (back, skipped) = from_rows(&rows);
        assert_eq!(back, values);
        assert!(skipped.is_empty());
        rows[0].kind = "lww".into();
        let (back, skipped) = from_rows(&rows);
        assert!(back.get("likes").is_none());
        assert!(skipped[0].contains("stored as lww"), "{skipped:?}");
    }

    /// Merging the same export twice changes nothing the second time: counters do not double.
    #[test]
    fn merging_states_is_idempotent_and_notes_refusals() {
        let mut source = Values::default();
        let mut hlc = Hlc::new(ReplicaId(1), ManualClock::new(T0));
        op(&mut source, &mut hlc, "likes", Action::Increment(5));
        op(&mut source, &mut hlc, "mode", Action::Set(json!("dark")));
        let mut target = Values::default();
        let mut other = Hlc::new(ReplicaId(2), ManualClock::new(T0));
        op(&mut target, &mut other, "likes", Action::Increment(1));
        op(&mut target, &mut other, "mode", Action::Increment(1));
        let (first, before) =
            merge_updates(&mut target, updates(named(&source)), |v, u| v.merge(u));
        assert_eq!(first.changed, vec!["likes".to_owned()]);
        assert_eq!(before["likes"].as_ref().unwrap().current(), Ok(json!(1)));
        assert_eq!(first.notes.len(), 1);
        assert!(first.notes[0].starts_with("mode: not merged"), "{first:?}");
        assert_eq!(current(&target, "likes"), json!(6));
        let (second, _) = merge_updates(&mut target, updates(named(&source)), |v, u| v.merge(u));
        assert!(second.changed.is_empty());
        assert_eq!(current(&target, "likes"), json!(6));
    }

    #[test]
    fn restore_sets_registers_back_adjusts_pn_counters_and_leaves_the_rest() {
        let clock = ManualClock::new(T0);
        let mut hlc = Hlc::new(ReplicaId(1), clock.clone());
        let mut values = Values::default();
        op(&mut values, &mut hlc, "title", Action::Set(json!("old")));
        op(&mut values, &mut hlc, "score", Action::Add(5));
        op(&mut values, &mut hlc, "likes", Action::Increment(3));
        op(&mut values, &mut hlc, "same", Action::Set(json!(1)));
        let past = named(&values);

        clock.advance(1000);
        op(&mut values, &mut hlc, "title", Action::Set(json!("new")));
        op(&mut values, &mut hlc, "score", Action::Add(-12));
        op(&mut values, &mut hlc, "likes", Action::Increment(4));
        op(&mut values, &mut hlc, "fresh", Action::Increment(1));

        // Another server (replica 2) restores; its clock is behind, but its HLC has seen
        // the stored writes, so its register write still wins.
        let mut restorer = Hlc::new(ReplicaId(2), ManualClock::new(T0))
            .with_high_water(values.max_timestamp().unwrap());
        let (updates, notes) = restore_updates(&values, &past, &mut restorer);
        let (outcome, _) = merge_updates(&mut values, updates, |v, u| v.merge(u));
        assert_eq!(current(&values, "title"), json!("old"));
        assert_eq!(current(&values, "score"), json!(5));
        assert_eq!(
            current(&values, "likes"),
            json!(7),
            "a gcounter never goes down"
        );
        assert_eq!(current(&values, "fresh"), json!(1));
        assert_eq!(
            outcome.changed,
            vec!["score".to_owned(), "title".to_owned()]
        );
        assert_eq!(
            notes,
            vec![
                "likes: a gcounter cannot go down; left at 7 (it was 3 then)".to_owned(),
                "fresh: created after that time; left as it is".to_owned(),
            ]
        );
        // Restoring again changes nothing.
        let (again, _) = restore_updates(&values, &past, &mut restorer);
        let (outcome, _) = merge_updates(&mut values, again, |v, u| v.merge(u));
        assert!(outcome.changed.is_empty(), "{outcome:?}");
    }

    #[test]
    fn restore_leaves_a_value_that_changed_kind_and_recreates_a_lost_one() {
        let mut hlc = Hlc::new(ReplicaId(1), ManualClock::new(T0));
        let mut pn = PnCounter::new();
        pn.add(ReplicaId(1), 2).unwrap();
        let past: NamedValues = vec![
            ("gone".into(), Value::PnCounter(pn)),
            ("kind".into(), Value::GCounter(GCounter::new())),
        ];
        let mut values = Values::default();
        op(&mut values, &mut hlc, "kind", Action::Set(json!(true)));
        let (updates, notes) = restore_updates(&values, &past, &mut hlc);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].name, "gone");
        assert_eq!(
            notes,
            vec!["kind: is a lww now but was a gcounter then; left as it is".to_owned()]
        );
    }
}
