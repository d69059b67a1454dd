//! A room's content at a past time, from its restore points and its log.

use plait_store::{SnapshotKind, Store};

use super::OpsError;
use crate::snapshot_file::NamedValues;

/// A room's content at a past time, as [`state_at`] finds it.
#[derive(Debug)]
pub struct PastState {
    /// The document, as one Yjs v1 update.
    pub update: Vec<u8>,
    /// The CRDT values at the restore point (values keep no log, so they are as of the
    /// restore point even when the document is replayed further), or why they are unknown.
    pub values: Result<NamedValues, String>,
    /// The time of the restore point actually reached (`at_ms` when the log was replayed up
    /// to it), in milliseconds since the Unix epoch.
    pub point_ms: i64,
}

/// The room's content as it was at `at_ms`: the newest snapshot written at or before then,
/// plus the log entries after it up to then while the log still holds them without a gap;
/// the values kept with that snapshot.
///
/// # Errors
/// [`OpsError::NotFound`] when no restore point is that old; [`OpsError::Failed`] when the
/// store fails or a snapshot does not decode.
pub async fn state_at(store: &dyn Store, room: &str, at_ms: i64) -> Result<PastState, OpsError> {
    let snapshots = store.list_snapshots(room).await?;
    let base = snapshots
        .iter()
        .filter(|s| s.created_at_ms <= at_ms)
        .max_by_key(|s| (s.created_at_ms, s.id));
    let (doc, after_seq, mut point, values) = match base {
        Some(info) => {
            let snap = store.load_snapshot(room, info.id).await?.ok_or_else(|| {
                OpsError::Unavailable("the snapshot disappeared; try again".into())
            })?;
            let doc = crate::docs::doc_from_update(&snap.data)
                .map_err(|e| OpsError::Failed(format!("the restore point does not load: {e}")))?;
            let values = match &snap.values {
                Some(bytes) => crate::snapshot_file::decode_values(bytes).map_err(|e| {
                    format!("the restore point's CRDT values do not decode ({e})")
                }),
                None => Err(
                    "the restore point holds no CRDT values (it was written before plait kept them)"
                        .to_owned(),
                ),
            };
            (doc, snap.up_to_seq, snap.created_at_ms, values)
        }
        None => {
            // Without an older snapshot the log must start at the room's first update.
            let oldest = snapshots.iter().map(|s| s.created_at_ms).min();
            let compacted = snapshots.iter().any(|s| s.kind == SnapshotKind::Compaction);
            if compacted {
                return Err(OpsError::NotFound(match oldest {
                    Some(t) => format!("no restore point at or before {at_ms}; the oldest is {t} (ms since the epoch)"),
                    None => format!("no restore point at or before {at_ms}"),
                }));
            }
            let values =
                Err("no restore point at or before that time holds CRDT values".to_owned());
            (yrs::Doc::new(), 0, i64::MIN, values)
        }
    };
    let rows = store.load_updates_until(room, after_seq, at_ms).await?;
    for (expected, row) in (after_seq + 1..).zip(rows) {
        if row.seq != expected {
            break;
        }
        crate::docs::apply(&doc, &row.data).map_err(|e| {
            OpsError::Failed(format!("stored update {} does not apply: {e}", row.seq))
        })?;
        point = at_ms;
    }
    if point == i64::MIN {
        return Err(OpsError::NotFound(format!(
            "no restore point at or before {at_ms}: the room had no content then"
        )));
    }
    Ok(PastState {
        update: crate::docs::encode_state(&doc),
        values,
        point_ms: point,
    })
}
