//! [`RoomOps`] directly on a store, for when no server runs. A server that has the room loaded
//! does not see these changes until it reloads the room: the CLI comes here only when no
//! server answers, or with `--offline`.

use std::sync::Arc;

use plait_store::{Revocation, Snapshot, SnapshotKind, Store, StoredRoom};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact};

use super::{
    check_revocation, state_at, Changed, Exported, OpsError, RestoreFrom, RestorePoint, Revoked,
    RoomInfo, RoomOps,
};
use crate::docs;
use crate::snapshot_file::{self, Format, SnapshotFile};
use crate::stored_values::{self, ValuesOutcome};

/// The rooms of a store, with no server in between.
#[derive(Clone)]
pub struct StoreOps {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for StoreOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOps").finish_non_exhaustive()
    }
}

impl StoreOps {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreOps { store }
    }

    /// The stored room; [`OpsError::NotFound`] when nothing was ever stored of it.
    async fn existing(&self, room: &str) -> Result<StoredRoom, OpsError> {
        let stored = self.store.load_room(room).await?;
        if stored.last_seq == 0 && stored.snapshot.is_none() {
            return Err(OpsError::NotFound(format!("no room named {room:?}")));
        }
        Ok(stored)
    }

    /// Merges into the stored values of `room` what `change` decides, with the CRDT merge.
    async fn change_values(
        &self,
        room: &str,
        change: impl FnOnce(&stored_values::RoomValues) -> Vec<plait_crdt::Update>,
    ) -> Result<ValuesOutcome, OpsError> {
        let (mut values, skipped) = stored_values::from_rows(&self.store.load_values(room).await?);
        let incoming = change(&values);
        let (mut outcome, _) =
            stored_values::merge_updates(&mut values, incoming, |values, update| {
                values.merge(update)
            });
        if !outcome.changed.is_empty() {
            let rows = stored_values::to_rows(
                outcome
                    .changed
                    .iter()
                    .filter_map(|n| values.get(n).map(|v| (n.as_str(), v))),
            );
            self.store
                .put_values(room, &rows, &stored_values::merge_stored)
                .await?;
        }
        outcome.notes.extend(skipped);
        Ok(outcome)
    }
}

/// The stored values of `room` in the snapshot encoding (rows that do not decode left out).
///
/// # Errors
/// The store's.
pub async fn encoded_values(store: &dyn Store, room: &str) -> Result<Vec<u8>, plait_store::Error> {
    let (values, _) = stored_values::from_rows(&store.load_values(room).await?);
    Ok(snapshot_file::encode_values(values.iter()))
}

/// A snapshot of `doc` holding the log up to `up_to_seq`, taken now.
pub fn snapshot_of(
    doc: &yrs::Doc,
    up_to_seq: u64,
    kind: SnapshotKind,
    values: Vec<u8>,
) -> Snapshot {
    Snapshot {
        up_to_seq,
        kind,
        data: docs::encode_state(doc).into(),
        state_vector: doc.transact().state_vector().encode_v1().into(),
        created_at_ms: plait_store::now_ms(),
        values: Some(values.into()),
    }
}

impl RoomOps for StoreOps {
    async fn rooms(&self) -> Result<Vec<RoomInfo>, OpsError> {
        Ok(self
            .store
            .list_rooms()
            .await?
            .into_iter()
            .map(|r| RoomInfo {
                name: r.name,
                last_seq: r.last_seq,
                updates_since_snapshot: r.n_updates,
                stored_bytes: r.stored_bytes,
                updated_at_ms: r.updated_at_ms,
                connected: None,
            })
            .collect())
    }

    async fn inspect(&self, room: &str) -> Result<serde_json::Value, OpsError> {
        let stored = self.existing(room).await?;
        Ok(docs::to_json(&docs::doc_from_stored(&stored).0))
    }

    async fn export(&self, room: &str, at: Option<i64>) -> Result<Exported, OpsError> {
        if let Some(at) = at {
            let past = state_at(self.store.as_ref(), room, at).await?;
            let (values, note) = match past.values {
                Ok(values) => (values, None),
                Err(why) => (Vec::new(), Some(why)),
            };
            return Ok(Exported {
                file: SnapshotFile {
                    update: past.update,
                    values,
                },
                point_ms: Some(past.point_ms),
                note,
            });
        }
        let rows = self.store.load_values(room).await?;
        let stored = self.store.load_room(room).await?;
        if stored.last_seq == 0 && stored.snapshot.is_none() && rows.is_empty() {
            return Err(OpsError::NotFound(format!("no room named {room:?}")));
        }
        let (values, skipped) = stored_values::from_rows(&rows);
        for why in skipped {
            // A stored value that does not decode is left out of the file; the rest are in it.
            tracing::warn!(room, "{why}");
        }
        Ok(Exported {
            file: SnapshotFile {
                update: docs::encode_state(&docs::doc_from_stored(&stored).0),
                values: stored_values::named(&values),
            },
            point_ms: None,
            note: None,
        })
    }

    async fn import(&self, room: &str, file: SnapshotFile) -> Result<Changed, OpsError> {
        let incoming = stored_values::updates(file.values);
        let values = self.change_values(room, |_| incoming).await?;
        let stored = self.store.load_room(room).await?;
        let (doc, _) = docs::doc_from_stored(&stored);
        let before = doc.transact().state_vector();
        docs::apply(&doc, &file.update).map_err(|e| OpsError::Invalid(e.to_string()))?;
        let document = doc.transact().state_vector() != before;
        if document {
            self.store
                .append_updates(room, &[file.update.into()])
                .await?;
        }
        Ok(Changed::new(document, values, None))
    }

    async fn history(&self, room: &str) -> Result<Vec<RestorePoint>, OpsError> {
        let list = self.store.list_snapshots(room).await?;
        Ok(list.into_iter().map(RestorePoint::from).collect())
    }

    async fn restore(&self, room: &str, from: RestoreFrom) -> Result<Changed, OpsError> {
        let stored = self.existing(room).await?;
        let (state, past_values, point) = match from {
            RestoreFrom::File(file, Format::Plait) => (file.update, Ok(file.values), None),
            RestoreFrom::File(file, Format::Yjs) => (
                file.update,
                Err("the file is a bare Yjs update and holds no CRDT values".to_owned()),
                None,
            ),
            RestoreFrom::At(at) => {
                let past = state_at(self.store.as_ref(), room, at).await?;
                (past.update, past.values, Some(past.point_ms))
            }
        };
        let values = match past_values {
            Ok(past) => {
                let mut notes = Vec::new();
                let mut outcome = self
                    .change_values(room, |current| {
                        let mut hlc = stored_values::offline_hlc(current);
                        let (updates, restore_notes) =
                            stored_values::restore_updates(current, &past, &mut hlc);
                        notes = restore_notes;
                        updates
                    })
                    .await?;
                notes.append(&mut outcome.notes);
                outcome.notes = notes;
                outcome
            }
            Err(why) if !self.store.load_values(room).await?.is_empty() => ValuesOutcome {
                changed: Vec::new(),
                notes: vec![format!("{why}: the values were left as they are")],
            },
            Err(_) => ValuesOutcome::default(),
        };
        let (current, _) = docs::doc_from_stored(&stored);
        let target = docs::doc_from_update(&state).map_err(|e| OpsError::Invalid(e.to_string()))?;
        let document = match docs::restore_edit(&current, &target) {
            Some(edit) => {
                let seq = self.store.append_updates(room, &[edit.into()]).await?;
                let values = encoded_values(self.store.as_ref(), room).await?;
                self.store
                    .write_snapshot(
                        room,
                        &snapshot_of(&current, seq, SnapshotKind::Restored, values),
                    )
                    .await?;
                true
            }
            None => false,
        };
        Ok(Changed::new(document, values, point))
    }

    async fn compact(&self, room: &str) -> Result<(), OpsError> {
        let stored = self.existing(room).await?;
        let (doc, _) = docs::doc_from_stored(&stored);
        let values = encoded_values(self.store.as_ref(), room).await?;
        self.store
            .write_snapshot(
                room,
                &snapshot_of(&doc, stored.last_seq, SnapshotKind::Compaction, values),
            )
            .await?;
        Ok(())
    }

    async fn delete(&self, room: &str) -> Result<bool, OpsError> {
        Ok(self.store.delete_room(room).await?)
    }

    /// Recorded in the store; running servers close the sessions it covers when they next
    /// read the revocations (within [`crate::access::REVOCATIONS_POLL`]).
    async fn revoke(&self, revocation: Revocation) -> Result<Revoked, OpsError> {
        check_revocation(&revocation)?;
        self.store.add_revocation(&revocation).await?;
        Ok(Revoked { closed: 0 })
    }
}
