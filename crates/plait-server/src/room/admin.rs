//! Administrative work on a loaded room: export, inspect, import, restore, compact, and the
//! history snapshots kept on a schedule. Run by the room actor like any other command, so a
//! change made here reaches connected clients and is durable before they see it. Imports and
//! restores carry the room's CRDT values as well as its document.

use std::time::Instant;

use bytes::Bytes;
use plait_crdt::ServerMessage;
use plait_store::{Snapshot, SnapshotKind};
use tokio::sync::oneshot;
use tracing::{info, warn};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use super::{deadline, values_frame, Confirm, Room, ADMIN_CONN, COMMIT_TIMEOUT};
use crate::config::Durability;
use crate::docs;
use crate::snapshot_file::{NamedValues, SnapshotFile};
use crate::stored_values::{self, ValuesOutcome};

/// An administrative request to one room, each with the channel its typed answer goes back
/// on (so no caller matches on a reply it did not ask for).
#[derive(Debug)]
pub(crate) enum AdminOp {
    /// The whole document as one Yjs v1 update, and every value; `None` for a room nothing
    /// was ever written to.
    Export(Reply<Option<SnapshotFile>>),
    /// Merge a file into the room: its document like an edit from a client, its values with
    /// the CRDT merge (so importing the same file twice changes nothing).
    Import(SnapshotFile, Reply<Merged>),
    /// Make the room's content equal to a past version with a forward edit, and set its
    /// values back (see [`stored_values::restore_updates`]).
    Restore(RestoreTarget, Reply<Merged>),
    /// Merge the log into a snapshot now.
    Compact(Reply<()>),
    /// Delete the room and everything stored of it; answers whether anything was stored.
    Delete(Reply<bool>),
    /// The document as JSON (text as a string or as a delta), with its seq and state vector
    /// (the REST API's read).
    Read(docs::TextAs, Reply<DocumentView>),
    /// What a state vector lacks, as one Yjs v1 update (everything for an empty one).
    Diff(StateVector, Reply<Vec<u8>>),
    /// A Yjs v1 update from a backend, validated by the caller: applied like a client's edit,
    /// answered once stored (strict durability).
    Apply(Update, Bytes, Reply<Written>),
    /// Small JSON edits from a backend without Yjs, applied in one transaction and stored as
    /// one update.
    Patch(Vec<Edit>, Reply<Written>),
}

/// One edit of `PATCH /api/rooms/{room}`.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Edit {
    /// Sets `key` of the map `map` to a JSON value.
    Set {
        map: String,
        key: String,
        value: serde_json::Value,
    },
    /// Removes `key` from the map `map`.
    Remove { map: String, key: String },
    /// Inserts `value` into the text `text` at `index` (in characters as Yjs counts them:
    /// UTF-16 code units).
    Insert {
        text: String,
        index: u32,
        value: String,
    },
    /// Deletes `length` characters of the text `text` from `index`.
    Delete {
        text: String,
        index: u32,
        length: u32,
    },
    /// Appends JSON values to the array `array`.
    Append {
        array: String,
        values: Vec<serde_json::Value>,
    },
}

impl Edit {
    /// The root the edit touches and the kind it must be.
    fn root(&self) -> (&str, docs::RootKind) {
        match self {
            Edit::Set { map, .. } | Edit::Remove { map, .. } => (map, docs::RootKind::Map),
            Edit::Insert { text, .. } | Edit::Delete { text, .. } => (text, docs::RootKind::Text),
            Edit::Append { array, .. } => (array, docs::RootKind::List),
        }
    }
}

/// A room's document for the REST API.
#[derive(Debug)]
pub(crate) struct DocumentView {
    /// Every root type as JSON.
    pub(crate) content: serde_json::Value,
    /// The last seq whose update the document holds.
    pub(crate) seq: u64,
    /// The document's state vector, v1 encoding.
    pub(crate) state_vector: Vec<u8>,
    /// Whether anything was ever written to the room.
    pub(crate) written: bool,
}

/// Where the room stands after a backend's write.
#[derive(Debug)]
pub(crate) struct Written {
    /// Whether the update added anything the document lacked.
    pub(crate) changed: bool,
    pub(crate) seq: u64,
    pub(crate) state_vector: Vec<u8>,
}

/// Where a room sends the answer to an [`AdminOp`].
pub(crate) type Reply<T> = oneshot::Sender<Result<T, RoomError>>;

/// Why a room refused or could not finish an administrative request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RoomError {
    /// The request's content is not what it must be (a Yjs update that does not decode).
    #[error("{0}")]
    Invalid(String),
    /// The store failed; nothing was changed.
    #[error("the store is failing: nothing was changed; try again later")]
    StoreFailing,
    /// The change is made in memory and held, and will be stored when the store recovers
    /// (it is not durable yet, so it is not confirmed).
    #[error("{0}, but the store is failing: the change is held and retried")]
    Held(&'static str),
    /// The store is failing and the room holds edits not yet stored, which must not leave it
    /// (strict durability).
    #[error("the store is failing and the room holds edits not yet stored; try again later")]
    Unstored,
}

/// What a restore sets the room back to.
#[derive(Debug)]
pub(crate) struct RestoreTarget {
    /// The document, as one Yjs v1 update.
    pub(crate) update: Vec<u8>,
    /// The values then, or why they are unknown (a bare Yjs file, an old restore point); then
    /// the room's values are left as they are.
    pub(crate) values: Result<NamedValues, String>,
}

/// What an import or a restore did: whether the document changed, and to the values.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) document: bool,
    pub(crate) values: ValuesOutcome,
}

impl Room {
    pub(super) async fn admin(&mut self, op: AdminOp) {
        // The room waited for its commits before this (`handle_batch`); if the store is
        // failing, the document holds edits it lacks, which must not leave the room.
        let unstored = self.core.strict() && !self.core.ledger.is_clean();
        match op {
            AdminOp::Export(reply) => {
                let written = self.core.last_seq > 0 || !self.core.values.is_empty();
                let _ = reply.send(if unstored {
                    Err(RoomError::Unstored)
                } else {
                    Ok(written.then(|| SnapshotFile {
                        update: docs::encode_state(&self.core.doc),
                        values: stored_values::named(&self.core.values),
                    }))
                });
            }
            AdminOp::Import(file, reply) => {
                let _ = reply.send(self.import(file).await);
            }
            AdminOp::Restore(target, reply) => {
                let _ = reply.send(self.restore(target).await);
            }
            AdminOp::Read(text_as, reply) => {
                let _ = reply.send(if unstored {
                    Err(RoomError::Unstored)
                } else {
                    Ok(DocumentView {
                        content: docs::to_json_as(&self.core.doc, text_as),
                        seq: self.core.last_seq,
                        state_vector: self.core.doc.transact().state_vector().encode_v1(),
                        written: self.core.last_seq > 0,
                    })
                });
            }
            AdminOp::Diff(sv, reply) => {
                let _ = reply.send(if unstored {
                    Err(RoomError::Unstored)
                } else {
                    Ok(self.core.doc.transact().encode_state_as_update_v1(&sv))
                });
            }
            AdminOp::Apply(update, raw, reply) => {
                let _ = reply.send(self.apply_backend_update(update, raw).await);
            }
            AdminOp::Patch(edits, reply) => {
                let _ = reply.send(self.patch(edits).await);
            }
            AdminOp::Delete(reply) => {
                let _ = reply.send(self.delete().await);
            }
            AdminOp::Compact(reply) => {
                let done = if self.commit().await {
                    self.compact().await;
                    Ok(())
                } else {
                    Err(RoomError::StoreFailing)
                };
                let _ = reply.send(done);
            }
        }
    }

    /// Merges the values first: if the store fails they are undone and nothing changed.
    async fn import(&mut self, file: SnapshotFile) -> Result<Merged, RoomError> {
        let update = Update::decode_v1(&file.update)
            .map_err(|e| RoomError::Invalid(format!("not a valid Yjs update: {e}")))?;
        let values = self
            .merge_values(stored_values::updates(file.values), true)
            .await?;
        let before = self.core.doc.transact().state_vector();
        self.apply_updates(vec![(
            ADMIN_CONN,
            update,
            Bytes::from(file.update),
            Confirm::Never,
        )])
        .await;
        let document = self.core.doc.transact().state_vector() != before;
        if document && !self.commit().await {
            return Err(RoomError::Held("imported"));
        }
        Ok(Merged { document, values })
    }

    /// Deletes the room from the store, then drops what it holds in memory (edits not yet
    /// stored included: they belong to the deleted document) and closes its connections with
    /// 4404. The shell then unloads the room, so the next connection loads it empty.
    async fn delete(&mut self) -> Result<bool, RoomError> {
        // A write under way lands before the delete, not after it.
        self.settle_commit().await;
        let delete = self.shared.store.delete_room(&self.name);
        let existed = deadline(COMMIT_TIMEOUT, delete).await.map_err(|e| {
            warn!(error = %e, "deleting the room failed");
            RoomError::StoreFailing
        })?;
        info!(existed, "room deleted");
        self.core.delete();
        self.deleted = true;
        Ok(existed)
    }

    /// A backend's update, applied like a client's (the same admission rules, no echo to
    /// anyone but the members) and stored before the answer.
    async fn apply_backend_update(
        &mut self,
        update: Update,
        raw: Bytes,
    ) -> Result<Written, RoomError> {
        let before = self.core.doc.transact().state_vector();
        self.apply_updates(vec![(ADMIN_CONN, update, raw, Confirm::Never)])
            .await;
        let changed = self.core.doc.transact().state_vector() != before;
        if changed && !self.commit().await {
            return Err(RoomError::Held("applied"));
        }
        Ok(Written {
            changed,
            seq: self.core.last_seq,
            state_vector: self.core.doc.transact().state_vector().encode_v1(),
        })
    }

    /// Applies JSON edits in one transaction, checked first (root kinds, bounds, the document
    /// size), stored as one update like a restore's forward edit.
    async fn patch(&mut self, edits: Vec<Edit>) -> Result<Written, RoomError> {
        let roots = docs::roots(&self.core.doc);
        let mut added = 0usize;
        for edit in &edits {
            let (name, kind) = edit.root();
            if roots.get(name).is_some_and(|k| *k != kind) {
                return Err(RoomError::Invalid(format!(
                    "{name:?} is not a {kind:?} in this document"
                )));
            }
            added += match edit {
                Edit::Set { value, .. } => value.to_string().len(),
                Edit::Insert { value, .. } => value.len(),
                Edit::Append { values, .. } => values.iter().map(|v| v.to_string().len()).sum(),
                Edit::Remove { .. } | Edit::Delete { .. } => 0,
            };
        }
        if self.core.doc_bytes + added > self.shared.room.max_document_bytes {
            return Err(RoomError::Invalid("document size limit reached".into()));
        }
        // A dry run on a copy first: a transaction cannot be rolled back, so an edit refused
        // half-way must not leave the room's document changed and that change unstored.
        let copy = docs::doc_from_update(&docs::encode_state(&self.core.doc))
            .map_err(|e| RoomError::Invalid(e.to_string()))?;
        {
            let mut txn = copy.transact_mut();
            for edit in &edits {
                apply_edit(&mut txn, edit)?;
            }
        }
        let update = {
            let mut txn = self.core.doc.transact_mut();
            for edit in &edits {
                // The same edits on the same content: they pass here too. Whatever they did is
                // stored below either way.
                if apply_edit(&mut txn, edit).is_err() {
                    break;
                }
            }
            txn.encode_update_v1()
        };
        let changed = update.len() > 2;
        if changed {
            self.core.record(Bytes::from(update), Vec::new());
            if !self.commit().await && self.core.strict() {
                return Err(RoomError::Held("edited in memory"));
            }
        }
        Ok(Written {
            changed,
            seq: self.core.last_seq,
            state_vector: self.core.doc.transact().state_vector().encode_v1(),
        })
    }

    async fn restore(&mut self, target: RestoreTarget) -> Result<Merged, RoomError> {
        let target_doc =
            docs::doc_from_update(&target.update).map_err(|e| RoomError::Invalid(e.to_string()))?;
        let values = match target.values {
            Ok(past) => {
                let (updates, mut notes) =
                    stored_values::restore_updates(&self.core.values, &past, &mut self.core.hlc);
                let mut outcome = self.merge_values(updates, false).await?;
                notes.append(&mut outcome.notes);
                outcome.notes = notes;
                outcome
            }
            Err(why) if !self.core.values.is_empty() => ValuesOutcome {
                changed: Vec::new(),
                notes: vec![format!("{why}: the values were left as they are")],
            },
            Err(_) => ValuesOutcome::default(),
        };
        let Some(edit) = docs::restore_edit(&self.core.doc, &target_doc) else {
            return Ok(Merged {
                document: false,
                values,
            });
        };
        info!(bytes = edit.len(), "restoring with a forward edit");
        self.core.record(Bytes::from(edit), Vec::new());
        if !self.commit().await {
            if self.core.strict() {
                return Err(RoomError::Held("restored in memory"));
            }
        } else {
            // A restore point of the restored content, which also tells the webhooks
            // (`room.restored`, at the restore's seq).
            let snapshot = self.core.snapshot(SnapshotKind::Restored);
            let write = self.shared.store.write_snapshot(&self.name, &snapshot);
            if let Err(e) = deadline(COMMIT_TIMEOUT, write).await {
                warn!(error = %e, "writing the restored restore point failed");
            }
        }
        Ok(Merged {
            document: true,
            values,
        })
    }

    /// Merges value states (an import, a restore) like a batch of ops: stored before anyone
    /// hears of them (strict durability; a failed store undoes them all), then sent to the
    /// members that opted in and to the other processes. With `observe`, register timestamps
    /// are first observed by the room's clock, which refuses one too far ahead (noted).
    async fn merge_values(
        &mut self,
        updates: Vec<plait_crdt::Update>,
        observe: bool,
    ) -> Result<ValuesOutcome, RoomError> {
        let hlc = &mut self.core.hlc;
        let (outcome, before) =
            stored_values::merge_updates(&mut self.core.values, updates, |values, update| {
                if observe {
                    values.merge_remote(update, hlc)
                } else {
                    values.merge(update)
                }
            });
        if outcome.changed.is_empty() {
            return Ok(outcome);
        }
        self.core
            .dirty_values
            .extend(outcome.changed.iter().cloned());
        if self.shared.room.durability == Durability::Strict && !self.store_values().await {
            for (name, value) in before {
                self.core.values.restore(&name, value);
                self.core.dirty_values.remove(&name);
            }
            return Err(RoomError::StoreFailing);
        }
        for name in &outcome.changed {
            if let Some(value) = self.core.values.get(name) {
                let frame = values_frame(&ServerMessage::State(plait_crdt::Update {
                    name: name.clone(),
                    value: value.clone(),
                }));
                self.core
                    .broadcast_where(&frame, |_, member| member.link.values);
            }
        }
        self.core.bus_values(outcome.changed.iter());
        Ok(outcome)
    }

    /// Writes a history snapshot when the interval has passed since the last one and the room
    /// changed meanwhile, then drops history points older than the retention.
    /// `reuse`: a snapshot of the current state just written for compaction, kept as the
    /// restore point instead of encoding the document again.
    pub(super) async fn history_tick(
        &mut self,
        now: Instant,
        force: bool,
        reuse: Option<Snapshot>,
    ) {
        let interval = self.shared.room.history_interval;
        if interval.is_zero() || !self.core.changed_since_history || !self.core.ledger.is_clean() {
            return;
        }
        if !force && now.duration_since(self.last_history) < interval {
            return;
        }
        let snapshot = match reuse {
            Some(s) => Snapshot {
                kind: SnapshotKind::History,
                ..s
            },
            None => self.core.snapshot(SnapshotKind::History),
        };
        let created_at_ms = snapshot.created_at_ms;
        let write = self.shared.store.write_snapshot(&self.name, &snapshot);
        match deadline(COMMIT_TIMEOUT, write).await {
            Ok(()) => {
                self.last_history = now;
                self.core.changed_since_history = false;
                if let Some(retention) = self.shared.room.history_retention {
                    let before = created_at_ms - retention.as_millis() as i64;
                    let prune = self.shared.store.prune_history(&self.name, before);
                    if let Err(e) = deadline(COMMIT_TIMEOUT, prune).await {
                        warn!(error = %e, "pruning old history snapshots failed");
                    }
                }
            }
            Err(e) => warn!(error = %e, "history snapshot failed; retrying next interval"),
        }
    }
}

/// Applies one edit, checking it first (yrs panics on an index past the end). Text indexes
/// count UTF-16 code units, as Yjs does; the document counts UTF-8 bytes.
fn apply_edit(txn: &mut yrs::TransactionMut<'_>, edit: &Edit) -> Result<(), RoomError> {
    use yrs::{Array, GetString, Map, Text, WriteTxn};
    let any = |value: &serde_json::Value| {
        yrs::Any::from_json(&value.to_string())
            .map_err(|e| RoomError::Invalid(format!("value not storable: {e}")))
    };
    match edit {
        Edit::Set { map, key, value } => {
            let value = any(value)?;
            txn.get_or_insert_map(map.as_str())
                .insert(txn, key.as_str(), value);
        }
        Edit::Remove { map, key } => {
            txn.get_or_insert_map(map.as_str()).remove(txn, key);
        }
        Edit::Insert { text, index, value } => {
            let t = txn.get_or_insert_text(text.as_str());
            let at = byte_offset(&t.get_string(txn), *index, text)?;
            t.insert(txn, at, value);
        }
        Edit::Delete {
            text,
            index,
            length,
        } => {
            let t = txn.get_or_insert_text(text.as_str());
            let current = t.get_string(txn);
            let from = byte_offset(&current, *index, text)?;
            let end = index
                .checked_add(*length)
                .ok_or_else(|| RoomError::Invalid("index + length overflows".into()))?;
            let to = byte_offset(&current, end, text)?;
            t.remove_range(txn, from, to - from);
        }
        Edit::Append { array, values } => {
            let values = values.iter().map(any).collect::<Result<Vec<_>, _>>()?;
            let a = txn.get_or_insert_array(array.as_str());
            for value in values {
                let len = a.len(txn);
                a.insert(txn, len, value);
            }
        }
    }
    Ok(())
}

/// The UTF-8 offset of the UTF-16 index `utf16` in `s`; an index past the end or inside a
/// surrogate pair is refused.
fn byte_offset(s: &str, utf16: u32, text: &str) -> Result<u32, RoomError> {
    let mut units = 0u32;
    for (at, c) in s.char_indices() {
        if units == utf16 {
            return Ok(at as u32);
        }
        units += c.len_utf16() as u32;
        if units > utf16 {
            return Err(RoomError::Invalid(format!(
                "index {utf16} of {text:?} falls inside a character"
            )));
        }
    }
    if units == utf16 {
        Ok(s.len() as u32)
    } else {
        Err(RoomError::Invalid(format!(
            "index {utf16} is past the end of {text:?} ({units})"
        )))
    }
}
