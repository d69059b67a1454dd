//! The administrative operations on rooms, as one typed interface, [`RoomOps`], written once
//! and implemented twice:
//!
//! - [`ServerOps`], inside a running server: through each room's actor, so connected clients
//!   see a change and it is durable before they do. The admin API and the document API call it.
//! - [`StoreOps`], directly on a store, for when no server runs (the CLI's offline path).
//!
//! The CLI reaches a running server through a client of the admin API (`src/remote.rs` in the
//! `plait` binary), which answers with these same types (serde), so each command is written
//! once, over `impl RoomOps`, whichever way it goes.

use axum::http::StatusCode;
use plait_store::{Revocation, SnapshotInfo};
use serde::{Deserialize, Serialize};

use crate::snapshot_file::{Format, SnapshotFile};
use crate::stored_values::ValuesOutcome;

mod past;
mod server;
mod store;

pub use past::{state_at, PastState};
pub(crate) use server::ServerOps;
pub use store::{encoded_values, snapshot_of, StoreOps};

/// A stored room, as `plait rooms` and `GET /api/admin/rooms` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// The last sequence number stored.
    pub last_seq: u64,
    /// Updates in the log, not yet merged into a snapshot.
    pub updates_since_snapshot: u64,
    /// Bytes of the newest snapshot plus the log after it.
    pub stored_bytes: u64,
    /// When the room last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Connections to it on the server answering; unknown (`None`) without a server.
    pub connected: Option<u64>,
}

/// A restore point, as `plait history` and `GET /api/admin/rooms/{room}/history` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    pub id: i64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// `history` (on a schedule), `compaction` (the log merged into it), `restored` (right
    /// after an admin restore).
    pub kind: String,
    /// The last sequence number it holds.
    pub up_to_seq: u64,
    pub bytes: u64,
}

impl From<SnapshotInfo> for RestorePoint {
    fn from(s: SnapshotInfo) -> Self {
        RestorePoint {
            id: s.id,
            created_at_ms: s.created_at_ms,
            kind: s.kind.as_str().to_owned(),
            up_to_seq: s.up_to_seq,
            bytes: s.bytes,
        }
    }
}

/// A room (or its content at a past time) as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub file: SnapshotFile,
    /// The restore point reached, for an export at a time.
    pub point_ms: Option<i64>,
    /// Why the file holds no values though the room may have some (an old restore point).
    pub note: Option<String>,
}

/// What an import or a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// Whether anything changed, document or values.
    pub changed: bool,
    pub document_changed: bool,
    /// The values whose state changed.
    pub values_changed: Vec<String>,
    /// What was left as it was, and why.
    pub notes: Vec<String>,
    /// The restore point reached (a restore at a time).
    pub restored_point_ms: Option<i64>,
}

impl Changed {
    pub(crate) fn new(document: bool, values: ValuesOutcome, point: Option<i64>) -> Self {
        Changed {
            changed: document || !values.changed.is_empty(),
            document_changed: document,
            values_changed: values.changed,
            notes: values.notes,
            restored_point_ms: point,
        }
    }
}

/// What a restore sets a room back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// A file's content: a plait snapshot file (document and values) or a bare Yjs update
    /// (the document alone: values are left as they are).
    File(SnapshotFile, Format),
    /// The content at this time (milliseconds since the Unix epoch), from the restore points.
    At(i64),
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Sessions closed at once (on the server answering; others, and every process of a
    /// cluster, close theirs when they next read the revocations).
    pub closed: usize,
}

/// Why an operation failed, in words for the operator, kept apart by what the caller should
/// do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    /// No such room, or no restore point that old.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a file that does not decode, a bad room name).
    #[error("{0}")]
    Invalid(String),
    /// Nothing was changed (or the change is held and retried); trying again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The caller may not do this (no admin API, a wrong token).
    #[error("{0}")]
    Denied(String),
    /// Anything else: a store error, an answer the caller did not expect.
    #[error("{0}")]
    Failed(String),
}

impl OpsError {
    /// The HTTP status the APIs answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            OpsError::NotFound(_) => StatusCode::NOT_FOUND,
            OpsError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpsError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpsError::Denied(_) => StatusCode::UNAUTHORIZED,
            OpsError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error an API answer with `status` stands for (the inverse of [`OpsError::status`]),
    /// for clients of the APIs.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            404 => OpsError::NotFound(message),
            400 | 413 | 422 => OpsError::Invalid(message),
            503 => OpsError::Unavailable(message),
            401 | 403 => OpsError::Denied(format!("the server answered {status}: {message}")),
            _ => OpsError::Failed(format!("the server answered {status}: {message}")),
        }
    }
}

impl From<plait_store::Error> for OpsError {
    fn from(e: plait_store::Error) -> Self {
        OpsError::Failed(format!("store: {e}"))
    }
}

/// The operations on rooms an operator has, whichever way they reach the rooms.
///
/// Its futures are not required to be `Send`: callers use a concrete implementation (whose
/// futures are `Send` where its body is) or the CLI's single-threaded runtime.
#[allow(async_fn_in_trait)]
pub trait RoomOps {
    /// Every stored room.
    async fn rooms(&self) -> Result<Vec<RoomInfo>, OpsError>;
    /// The document as JSON (text as strings).
    async fn inspect(&self, room: &str) -> Result<serde_json::Value, OpsError>;
    /// The room as a file, now or as it was at a time.
    async fn export(&self, room: &str, at: Option<i64>) -> Result<Exported, OpsError>;
    /// Merges a file into the room: the document like a client's edit, the values with the
    /// CRDT merge (so importing the same file twice changes nothing).
    async fn import(&self, room: &str, file: SnapshotFile) -> Result<Changed, OpsError>;
    /// The room's restore points, oldest first.
    async fn history(&self, room: &str) -> Result<Vec<RestorePoint>, OpsError>;
    /// Sets the room's content back with a forward edit that connected clients merge, and its
    /// values where they can be (see [`crate::stored_values::restore_updates`]).
    async fn restore(&self, room: &str, from: RestoreFrom) -> Result<Changed, OpsError>;
    /// Merges the room's log into a snapshot.
    async fn compact(&self, room: &str) -> Result<(), OpsError>;
    /// Deletes the room and everything stored of it; whether anything was stored.
    async fn delete(&self, room: &str) -> Result<bool, OpsError>;
    /// Records a revocation; tokens it covers are refused from now on.
    async fn revoke(&self, revocation: Revocation) -> Result<Revoked, OpsError>;
}

/// Checks a revocation names exactly one thing.
///
/// # Errors
/// [`OpsError::Invalid`] otherwise.
pub fn check_revocation(r: &Revocation) -> Result<(), OpsError> {
    let named = usize::from(r.user.is_some())
        + usize::from(r.jti.is_some())
        + usize::from(r.issued_before.is_some());
    if named == 1 {
        Ok(())
    } else {
        Err(OpsError::Invalid(
            r#"send one of {"user": NAME}, {"jti": ID} or {"issued_before": UNIX_SECONDS}"#.into(),
        ))
    }
}
