//! Administrative work on a loaded room: export, inspect, import, restore, compact, and the
//! history snapshots kept on a schedule. Run by the room actor like any other command, so a
//! change made here reaches connected clients and is durable before they see it.

use std::time::Instant;

use bytes::Bytes;
use plait_protocol::message::encode_update;
use plait_store::SnapshotKind;
use tokio::sync::oneshot;
use tracing::{info, warn};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, Transact, Update};

use super::{Room, ADMIN_CONN};
use crate::config::Durability;
use crate::docs;

/// An administrative request to one room.
#[derive(Debug)]
pub(crate) enum AdminOp {
    /// The whole document as one Yjs v1 update.
    Export,
    /// The document as JSON.
    Inspect,
    /// Merge a Yjs v1 update into the room, like an edit from a client.
    Import(Bytes),
    /// Make the room's content equal to this state (a Yjs v1 update) with a forward edit.
    Restore(Bytes),
    /// Merge the log into a snapshot now.
    Compact,
}

/// What a room answers.
#[derive(Debug)]
pub(crate) enum AdminReply {
    State(Vec<u8>),
    Json(serde_json::Value),
    /// Whether the request changed the document.
    Changed(bool),
}

pub(crate) type AdminResult = Result<AdminReply, String>;

impl Room {
    pub(super) async fn admin(&mut self, op: AdminOp, reply: oneshot::Sender<AdminResult>) {
        let result = match op {
            AdminOp::Export => Ok(AdminReply::State(docs::encode_state(&self.doc))),
            AdminOp::Inspect => Ok(AdminReply::Json(docs::to_json(&self.doc))),
            AdminOp::Import(bytes) => self.import(bytes).await,
            AdminOp::Restore(bytes) => self.restore(&bytes).await,
            AdminOp::Compact => {
                if self.commit().await {
                    self.compact().await;
                    Ok(AdminReply::Changed(false))
                } else {
                    Err("the store is failing; try again later".into())
                }
            }
        };
        let _ = reply.send(result);
    }

    async fn import(&mut self, bytes: Bytes) -> AdminResult {
        plait_protocol::validate::update_v1(&bytes, plait_protocol::Limits::default().max_depth)
            .map_err(|e| format!("not a valid Yjs update: {e}"))?;
        let update =
            Update::decode_v1(&bytes).map_err(|e| format!("not a valid Yjs update: {e}"))?;
        let before = self.doc.transact().state_vector();
        self.apply_updates(vec![(ADMIN_CONN, update, bytes)]).await;
        let changed = self.doc.transact().state_vector() != before;
        if changed && !self.uncommitted.is_empty() {
            return Err(
                "imported, but the store is failing: the change is held and retried".into(),
            );
        }
        Ok(AdminReply::Changed(changed))
    }

    async fn restore(&mut self, target: &[u8]) -> AdminResult {
        let target = docs::doc_from_update(target).map_err(|e| e.to_string())?;
        let Some(edit) = docs::restore_edit(&self.doc, &target) else {
            return Ok(AdminReply::Changed(false));
        };
        info!(bytes = edit.len(), "restoring with a forward edit");
        let frame = encode_update(&edit);
        self.uncommitted_bytes += edit.len();
        self.uncommitted.push(Bytes::from(edit));
        match self.shared.room.durability {
            Durability::Strict => {
                self.held.push((frame, None));
                if !self.commit().await {
                    return Err(
                        "restored in memory, but the store is failing: the edit is held and retried"
                            .into(),
                    );
                }
            }
            Durability::RelaxedMayLoseRecentEdits => {
                self.broadcast(&frame, None);
                self.commit().await;
            }
        }
        Ok(AdminReply::Changed(true))
    }

    /// Writes a history snapshot when the interval has passed since the last one and the room
    /// changed meanwhile, then drops history points older than the retention.
    pub(super) async fn history_tick(&mut self, now: Instant, force: bool) {
        let interval = self.shared.room.history_interval;
        if interval.is_zero() || !self.changed_since_history || !self.uncommitted.is_empty() {
            return;
        }
        if !force && now.duration_since(self.last_history) < interval {
            return;
        }
        let snapshot = self.snapshot(SnapshotKind::History);
        let created_at_ms = snapshot.created_at_ms;
        match self
            .shared
            .store
            .write_snapshot(&self.name, &snapshot)
            .await
        {
            Ok(()) => {
                self.last_history = now;
                self.changed_since_history = false;
                if let Some(retention) = self.shared.room.history_retention {
                    let before = created_at_ms - retention.as_millis() as i64;
                    if let Err(e) = self.shared.store.prune_history(&self.name, before).await {
                        warn!(error = %e, "pruning old history snapshots failed");
                    }
                }
            }
            Err(e) => warn!(error = %e, "history snapshot failed; retrying next interval"),
        }
    }
}
