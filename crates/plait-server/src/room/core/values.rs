//! The room core's CRDT values: loading them, applying ops in two halves around the store
//! write, answering the HTTP API, taking back what `put_values` merged, and queueing states for
//! the bus. Same rules as the rest of the core: no I/O, the shell stores.

use std::collections::BTreeMap;

use bytes::Bytes;
use plait_crdt::{
    Action, ApplyError, Hlc, Kind, Op, ReplicaId, ServerMessage, SystemClock,
    Update as ValueUpdate, Value, ValueError,
};
use plait_store::StoredValue;
use tracing::{debug, error, warn};

use super::{BusOut, RoomCore};
use crate::metrics as m;
use crate::room::{
    conn_replica, current, values_frame, ValueSource, ValuesError, ValuesReply, ValuesRequest,
};

/// Value changes applied in memory and waiting for the store (see
/// [`RoomCore::finish_value_ops`]).
#[derive(Debug)]
pub(crate) struct ValueBatch {
    before: BTreeMap<String, Option<Value>>,
    frames: Vec<Bytes>,
    done: Vec<(ValueSource, String)>,
}

impl RoomCore {
    /// Every changed value as a row for `put_values`.
    pub(in crate::room) fn dirty_rows(&self) -> Vec<StoredValue> {
        self.dirty_values
            .iter()
            .filter_map(|name| {
                self.values.get(name).map(|v| StoredValue {
                    name: name.clone(),
                    kind: v.kind().as_str().to_owned(),
                    state: Bytes::from(v.encode()),
                })
            })
            .collect()
    }

    /// `put_values` stored the changed values and answered the merged rows.
    pub(in crate::room) fn values_stored(&mut self, stored: Vec<StoredValue>) {
        self.dirty_values.clear();
        self.changed_since_history = true;
        // What is stored now may hold other processes' changes too.
        self.adopt_stored(stored);
    }

    /// Merges the stored values and restores the clock's high-water mark from them, so new
    /// timestamps are greater than every stored one. A row that does not decode is skipped and
    /// reported, never allowed to stop the room from loading.
    pub(in crate::room) fn load_values(&mut self, stored: Vec<StoredValue>) {
        let (values, skipped) = crate::stored_values::from_rows(&stored);
        for reason in skipped {
            error!(%reason, "skipping stored value that does not load");
            metrics::counter!(m::STORED_UPDATES_SKIPPED).increment(1);
        }
        self.values = values;
        if let Some(high_water) = self.values.max_timestamp() {
            let fresh = Hlc::new(ReplicaId(self.instance_id), SystemClock);
            self.hlc = std::mem::replace(&mut self.hlc, fresh).with_high_water(high_water);
        }
    }

    /// Turns an HTTP API request into the op to apply, or `Err` with the answer to give now.
    pub(in crate::room) fn values_request(
        &self,
        req: ValuesRequest,
    ) -> Result<Op, Result<ValuesReply, ValuesError>> {
        match req {
            ValuesRequest::Get => Err(Ok(ValuesReply::All(
                self.values
                    .iter()
                    .map(|(name, value)| (name.to_owned(), value.kind(), current(value)))
                    .collect(),
            ))),
            ValuesRequest::AddToCounter { name, add, kind } => {
                let existing = self.values.get(&name).map(Value::kind);
                let kind = kind
                    .or(existing.filter(|k| *k == Kind::PnCounter))
                    .unwrap_or(Kind::GCounter);
                let action = match kind {
                    Kind::PnCounter => Action::Add(add),
                    _ if add < 0 => return Err(Err(ValuesError::NegativeGCounter { name })),
                    _ => Action::Increment(add.unsigned_abs()),
                };
                Ok(Op { name, action })
            }
            ValuesRequest::SetRegister { name, value } => Ok(Op {
                name,
                action: Action::Set(value),
            }),
        }
    }

    /// Applies a batch of value ops; returns the changes, which the shell stores (strict
    /// durability: before anyone hears of them, and a failed store undoes the whole batch)
    /// and hands to [`RoomCore::finish_value_ops`]. Refusals go back to their sender alone.
    pub(in crate::room) fn apply_value_ops(
        &mut self,
        ops: Vec<(ValueSource, Op)>,
    ) -> Option<ValueBatch> {
        let mut before: BTreeMap<String, Option<Value>> = BTreeMap::new();
        let mut frames = Vec::new();
        let mut done = Vec::new();
        for (source, op) in ops {
            let writer = match &source {
                ValueSource::Conn(conn) => {
                    if !self.members.get(conn).is_some_and(|m| m.link.values) {
                        continue;
                    }
                    conn_replica(self.instance_id, *conn)
                }
                ValueSource::Api(_) => self.hlc.replica(),
            };
            if !before.contains_key(&op.name) {
                before.insert(op.name.clone(), self.values.get(&op.name).cloned());
            }
            match self.values.apply_from(&op, &mut self.hlc, writer) {
                Ok(update) => {
                    self.dirty_values.insert(op.name.clone());
                    frames.push(values_frame(&ServerMessage::State(update)));
                    done.push((source, op.name));
                }
                Err(e) => {
                    debug!(name = %op.name, error = %e, "value op refused");
                    self.answer_value_op(source, &op.name, Err(e.into()));
                }
            }
        }
        if done.is_empty() {
            return None;
        }
        Some(ValueBatch {
            before,
            frames,
            done,
        })
    }

    /// The second half of [`RoomCore::apply_value_ops`], once the shell knows whether the
    /// changed values were stored (strict durability; relaxed stores them later and passes
    /// `stored: true`): sends the states, or undoes the batch and says why.
    pub(in crate::room) fn finish_value_ops(&mut self, batch: ValueBatch, stored: bool) {
        let ValueBatch {
            before,
            frames,
            done,
        } = batch;
        if !stored {
            for (name, value) in before {
                self.values.restore(&name, value);
                self.dirty_values.remove(&name);
            }
            for (source, name) in done {
                self.answer_value_op(source, &name, Err(ValuesError::StoreUnavailable));
            }
            return;
        }
        for frame in &frames {
            self.broadcast_where(frame, |_, member| member.link.values);
        }
        self.bus_values(done.iter().map(|(_, name)| name));
        for (source, name) in done {
            self.answer_value_op(source, &name, Ok(()));
        }
    }

    /// Tells the source of an op how it went: the HTTP API gets the value or the error; a
    /// connection only hears of a refusal (its change reaches it as a state, like everyone's).
    pub(in crate::room) fn answer_value_op(
        &mut self,
        source: ValueSource,
        name: &str,
        outcome: Result<(), ValuesError>,
    ) {
        match (source, outcome) {
            (ValueSource::Api(reply), Ok(())) => {
                let answer = match self.values.get(name) {
                    Some(v) => Ok(ValuesReply::One(name.to_owned(), v.kind(), current(v))),
                    None => Err(ValuesError::StoreUnavailable),
                };
                let _ = reply.send(answer);
            }
            (ValueSource::Api(reply), Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (ValueSource::Conn(_), Ok(())) => {}
            (ValueSource::Conn(conn), Err(e)) => {
                let rejected = ServerMessage::Rejected {
                    name: name.to_owned(),
                    reason: e.to_string(),
                };
                self.send(conn, values_frame(&rejected));
            }
        }
    }

    /// Merges the rows `put_values` answered into the room's values, and sends the states
    /// that changed (other processes' changes merged in, or the kind another process stored
    /// first) to the members that opted in.
    pub(in crate::room) fn adopt_stored(&mut self, rows: Vec<StoredValue>) {
        for row in rows {
            let value = match Value::decode(&row.state) {
                Ok(value) => value,
                Err(e) => {
                    warn!(name = %row.name, error = %e, "stored value does not decode; keeping the one in memory");
                    continue;
                }
            };
            let before = self.values.get(&row.name).cloned();
            if before.as_ref() == Some(&value) {
                continue;
            }
            let update = ValueUpdate {
                name: row.name,
                value,
            };
            let merged = match self.values.merge_remote(&update, &mut self.hlc) {
                Err(ApplyError::Value(ValueError::KindMismatch { .. })) => {
                    warn!(name = %update.name, kind = %update.value.kind(),
                        "another process stored this value first as another kind; taking the stored one");
                    self.values
                        .restore(&update.name, Some(update.value.clone()));
                    Ok(())
                }
                // Already durable: take it even if its timestamp is further ahead than this
                // clock accepts from a peer (this clock's next writes then lose to it).
                Err(ApplyError::Clock(_)) => self.values.merge(&update),
                other => other,
            };
            if let Err(e) = merged {
                warn!(name = %update.name, error = %e, "stored value not merged");
                continue;
            }
            if let Some(now) = self.values.get(&update.name) {
                if before.as_ref() != Some(now) {
                    let frame = values_frame(&ServerMessage::State(ValueUpdate {
                        name: update.name.clone(),
                        value: now.clone(),
                    }));
                    self.broadcast_where(&frame, |_, member| member.link.values);
                }
            }
        }
    }

    /// Queues for the bus the full states of values this process changed (and stored).
    pub(in crate::room) fn bus_values<'a>(&mut self, names: impl Iterator<Item = &'a String>) {
        if !self.clustered {
            return;
        }
        let states: Vec<(String, plait_crdt::Value)> = names
            .filter_map(|n| self.values.get(n).map(|v| (n.clone(), v.clone())))
            .collect();
        if !states.is_empty() {
            self.outgoing.push(BusOut::Values(states));
        }
    }

    pub(in crate::room) fn fan_out_value(&mut self, name: &str) {
        let Some(value) = self.values.get(name) else {
            return;
        };
        let frame = values_frame(&ServerMessage::State(plait_crdt::Update {
            name: name.to_owned(),
            value: value.clone(),
        }));
        self.broadcast_where(&frame, |_, member| member.link.values);
    }
}
