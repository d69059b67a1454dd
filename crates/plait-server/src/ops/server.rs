//! [`RoomOps`] inside a running server: each operation is a command to the room's actor (the
//! room is loaded for it if needed), so connected clients see what it changes, after it is
//! stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plait_store::Revocation;
use tokio::sync::oneshot;
use tracing::{info, warn};
use yrs::{StateVector, Update};

use super::{
    check_revocation, state_at, Changed, Exported, OpsError, RestoreFrom, RestorePoint, Revoked,
    RoomInfo, RoomOps,
};
use crate::docs::TextAs;
use crate::room::{AdminOp, DocumentView, Edit, RestoreTarget, RoomCmd, RoomError, Written};
use crate::room_name::check_room_name;
use crate::snapshot_file::{Format, SnapshotFile};
use crate::Shared;

/// How long a revocation may wait for the store before the caller is told to try again.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

impl From<RoomError> for OpsError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::Invalid(_) => OpsError::Invalid(e.to_string()),
            RoomError::StoreFailing | RoomError::Held(_) | RoomError::Unstored => {
                OpsError::Unavailable(e.to_string())
            }
        }
    }
}

/// The rooms of this process, through their actors.
#[derive(Clone)]
pub(crate) struct ServerOps {
    shared: Arc<Shared>,
}

impl ServerOps {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ServerOps { shared }
    }

    /// Runs an operation in the room's actor, loading the room if needed; `op` builds it
    /// around the channel its answer comes back on.
    async fn ask<T>(
        &self,
        room: &str,
        op: impl FnOnce(oneshot::Sender<Result<T, RoomError>>) -> AdminOp,
    ) -> Result<T, OpsError> {
        self.check_name(room)?;
        let unloading = || OpsError::Unavailable("the room was unloading; try again".into());
        let handle = self
            .shared
            .hub
            .get_or_spawn(room, &self.shared)
            .await
            .map_err(|e| OpsError::Unavailable(format!("room unavailable ({e:?}); try again")))?;
        let (reply, answer) = oneshot::channel();
        handle
            .tx
            .send(RoomCmd::Admin(Box::new(op(reply))))
            .await
            .map_err(|_| unloading())?;
        Ok(answer.await.map_err(|_| unloading())??)
    }

    fn check_name(&self, room: &str) -> Result<(), OpsError> {
        check_room_name(room, self.shared.max_room_name_bytes)
            .map_err(|e| OpsError::Invalid(e.status().1.to_owned()))
    }

    /// The document as JSON with its seq and state vector.
    pub(crate) async fn read(&self, room: &str, text_as: TextAs) -> Result<DocumentView, OpsError> {
        let view = self
            .ask(room, |reply| AdminOp::Read(text_as, reply))
            .await?;
        if view.written {
            Ok(view)
        } else {
            Err(OpsError::NotFound(format!("no room named {room:?}")))
        }
    }

    /// What a state vector lacks, as one Yjs v1 update.
    pub(crate) async fn diff(&self, room: &str, sv: StateVector) -> Result<Vec<u8>, OpsError> {
        self.ask(room, |reply| AdminOp::Diff(sv, reply)).await
    }

    /// A backend's update (validated by the caller), applied like a client's edit.
    pub(crate) async fn apply(
        &self,
        room: &str,
        update: Update,
        raw: Bytes,
    ) -> Result<Written, OpsError> {
        self.ask(room, |reply| AdminOp::Apply(update, raw, reply))
            .await
    }

    /// JSON edits, in one transaction and one commit.
    pub(crate) async fn patch(&self, room: &str, edits: Vec<Edit>) -> Result<Written, OpsError> {
        self.ask(room, |reply| AdminOp::Patch(edits, reply)).await
    }
}

impl RoomOps for ServerOps {
    async fn rooms(&self) -> Result<Vec<RoomInfo>, OpsError> {
        let rooms = self.shared.store.list_rooms().await?;
        Ok(rooms
            .into_iter()
            .map(|r| RoomInfo {
                connected: Some(self.shared.hub.members(&r.name) as u64),
                name: r.name,
                last_seq: r.last_seq,
                updates_since_snapshot: r.n_updates,
                stored_bytes: r.stored_bytes,
                updated_at_ms: r.updated_at_ms,
            })
            .collect())
    }

    async fn inspect(&self, room: &str) -> Result<serde_json::Value, OpsError> {
        Ok(self.read(room, TextAs::String).await?.content)
    }

    async fn export(&self, room: &str, at: Option<i64>) -> Result<Exported, OpsError> {
        match at {
            Some(at) => {
                self.check_name(room)?;
                let past = state_at(self.shared.store.as_ref(), room, at).await?;
                let (values, note) = match past.values {
                    Ok(values) => (values, None),
                    Err(why) => (Vec::new(), Some(why)),
                };
                Ok(Exported {
                    file: SnapshotFile {
                        update: past.update,
                        values,
                    },
                    point_ms: Some(past.point_ms),
                    note,
                })
            }
            None => match self.ask(room, AdminOp::Export).await? {
                Some(file) => Ok(Exported {
                    file,
                    point_ms: None,
                    note: None,
                }),
                None => Err(OpsError::NotFound(format!("no room named {room:?}"))),
            },
        }
    }

    async fn import(&self, room: &str, file: SnapshotFile) -> Result<Changed, OpsError> {
        let merged = self.ask(room, |reply| AdminOp::Import(file, reply)).await?;
        Ok(Changed::new(merged.document, merged.values, None))
    }

    async fn history(&self, room: &str) -> Result<Vec<RestorePoint>, OpsError> {
        self.check_name(room)?;
        let list = self.shared.store.list_snapshots(room).await?;
        Ok(list.into_iter().map(RestorePoint::from).collect())
    }

    async fn restore(&self, room: &str, from: RestoreFrom) -> Result<Changed, OpsError> {
        let (target, point) = match from {
            RestoreFrom::At(at) => {
                self.check_name(room)?;
                let past = state_at(self.shared.store.as_ref(), room, at).await?;
                let target = RestoreTarget {
                    update: past.update,
                    values: past.values,
                };
                (target, Some(past.point_ms))
            }
            RestoreFrom::File(file, format) => {
                let values = match format {
                    Format::Plait => Ok(file.values),
                    Format::Yjs => {
                        Err("the file is a bare Yjs update and holds no CRDT values".into())
                    }
                };
                let target = RestoreTarget {
                    update: file.update,
                    values,
                };
                (target, None)
            }
        };
        let merged = self
            .ask(room, |reply| AdminOp::Restore(target, reply))
            .await?;
        Ok(Changed::new(merged.document, merged.values, point))
    }

    async fn compact(&self, room: &str) -> Result<(), OpsError> {
        self.ask(room, AdminOp::Compact).await
    }

    async fn delete(&self, room: &str) -> Result<bool, OpsError> {
        self.ask(room, AdminOp::Delete).await
    }

    /// Recorded in the store (so it outlives restarts and reaches every process of a
    /// cluster, within [`crate::access::REVOCATIONS_POLL`]); the sessions it covers here are
    /// closed with 4401 at once.
    async fn revoke(&self, revocation: Revocation) -> Result<Revoked, OpsError> {
        check_revocation(&revocation)?;
        let store = &self.shared.store;
        let stored = async {
            store.add_revocation(&revocation).await?;
            store.list_revocations().await
        };
        let all = match tokio::time::timeout(REVOKE_TIMEOUT, stored).await {
            Ok(Ok(all)) => all,
            Ok(Err(e)) => {
                warn!(error = %e, "storing a revocation failed");
                return Err(OpsError::Unavailable(
                    "the store is failing: nothing was revoked; try again".into(),
                ));
            }
            Err(_) => {
                return Err(OpsError::Unavailable(
                    "the store did not answer: try again".into(),
                ))
            }
        };
        let closed = self.shared.access.set_revocations(all);
        info!(?revocation, closed, "tokens revoked");
        Ok(Revoked { closed })
    }
}
