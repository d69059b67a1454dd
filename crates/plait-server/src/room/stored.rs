//! Values as stored. `put_values` merges a room's states with what is stored (another process
//! sharing the store may have stored the same value meanwhile) and answers the merged rows;
//! the room takes them back, so that its memory and the store agree.

use plait_crdt::{ApplyError, ServerMessage, Update, Value, ValueError};
use plait_store::StoredValue;
use tracing::warn;

use super::{values_frame, Room};

impl Room {
    /// Merges the rows `put_values` answered into the room's values, and sends the states
    /// that changed (other processes' changes merged in, or the kind another process stored
    /// first) to the members that opted in.
    pub(super) fn adopt_stored(&mut self, rows: Vec<StoredValue>) {
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
            let update = Update {
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
                    let frame = values_frame(&ServerMessage::State(Update {
                        name: update.name.clone(),
                        value: now.clone(),
                    }));
                    self.broadcast_where(&frame, |_, member| member.link.values);
                }
            }
        }
    }
}
