//! Durable storage for plait rooms.
//!
//! Components, in reading order:
//! - [`Store`]: the trait the server uses, with its record types ([`StoredRoom`], [`Snapshot`]).
//! - [`sqlite`]: the embedded default ([`SqliteStore`]).
//! - [`postgres`]: the production store ([`PgStore`]).
//! - [`memory`]: an in-process store for tests ([`MemoryStore`]).
//! - [`open`]: picks an implementation from a URL.
//!
//! Architecture invariant: storage knows nothing about yrs or the CRDT values. It keeps opaque
//! update, snapshot and value bytes plus metadata; merging them is the server's business (for
//! values the server passes its merge to [`Store::put_values`] as a [`MergeValue`]).

mod error;
mod group;
pub mod memory;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::Error;
pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Why a snapshot was taken; decides what may be deleted beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// The log up to the snapshot was merged into it and deleted; only the newest is kept.
    Compaction,
    /// The content right after an admin restore changed the document (`up_to_seq` is the
    /// restore's edit); kept like a history point, and what tells webhooks of the restore.
    Restored,
    /// Kept on a schedule as a restore point.
    History,
}

impl SnapshotKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Compaction => "compaction",
            SnapshotKind::Restored => "restored",
            SnapshotKind::History => "history",
        }
    }

    /// Parses a stored name.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "compaction" => Ok(SnapshotKind::Compaction),
            "restored" => Ok(SnapshotKind::Restored),
            "history" => Ok(SnapshotKind::History),
            other => Err(Error::Corrupt(format!("unknown snapshot kind {other:?}"))),
        }
    }
}

/// A full document state that covers the log up to and including `up_to_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last log sequence number merged into `data`.
    pub up_to_seq: u64,
    /// Why it was taken.
    pub kind: SnapshotKind,
    /// The document as one Yjs v1 update.
    pub data: Bytes,
    /// The document's encoded state vector, so that it can be compared without decoding `data`.
    pub state_vector: Bytes,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The room's CRDT values when it was written, encoded by the server (opaque here);
    /// `None` for snapshots written before values were kept with them.
    pub values: Option<Bytes>,
}

/// One entry of the update log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedUpdate {
    /// The room's sequence number, assigned by the store inside the commit.
    pub seq: u64,
    /// A Yjs v1 update.
    pub data: Bytes,
}

/// What loading a room returns: the newest snapshot and the log after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRoom {
    /// The newest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Updates with `seq` above the snapshot's `up_to_seq`, in order.
    pub updates: Vec<LoggedUpdate>,
    /// The last sequence number the room has handed out (0 for a new room).
    pub last_seq: u64,
}

/// Tokens taken back by an operator: those of a user, the one with an id, or every token
/// issued before a time. A revocation names one of the three.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revocation {
    /// Every token naming this user.
    pub user: Option<String>,
    /// The token with this `jti`.
    pub jti: Option<String>,
    /// Every token issued (`iat`) before this time, in seconds since the Unix epoch.
    pub issued_before: Option<u64>,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// A snapshot as listed by [`Store::list_snapshots`], without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its id, for [`Store::load_snapshot`].
    pub id: i64,
    /// The last log sequence number merged into it.
    pub up_to_seq: u64,
    /// Why it was taken.
    pub kind: SnapshotKind,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Size of its data in bytes.
    pub bytes: u64,
}

/// A room as listed by [`Store::list_rooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room name.
    pub name: String,
    /// The last sequence number handed out.
    pub last_seq: u64,
    /// Updates in the log, not yet compacted.
    pub n_updates: u64,
    /// Bytes of the newest snapshot plus the log after it.
    pub stored_bytes: u64,
    /// When the room last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// One CRDT value of a room, as stored: its kind name and encoded state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// The value's name within the room.
    pub name: String,
    /// Its kind ("gcounter", "pncounter", "lww"); fixed by the first write.
    pub kind: String,
    /// The encoded state (`plait_crdt::Value::encode`).
    pub state: Bytes,
}

/// How [`Store::put_values`] combines a stored value with a new one of the same name: called
/// with `(stored, new)`, it returns the state to store. The server supplies it (a CRDT merge);
/// the store only calls it inside the transaction that holds the row. An `Err` aborts the
/// whole `put_values` with [`Error::Merge`].
pub type MergeValue = dyn Fn(&StoredValue, &StoredValue) -> Result<Bytes, String> + Sync;

/// Durable storage of rooms. Implementations must make [`Store::append_updates`] atomic and
/// durable when it returns: the server broadcasts only what this call has committed.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Loads the newest snapshot of `room` and the log after it (empty for an unknown room).
    async fn load_room(&self, room: &str) -> Result<StoredRoom, Error>;

    /// Appends `updates` to the room's log in one transaction and returns the sequence number
    /// given to the last one. Sequence numbers are assigned here, inside the commit.
    async fn append_updates(&self, room: &str, updates: &[Bytes]) -> Result<u64, Error>;

    /// Writes a snapshot. A [`SnapshotKind::Compaction`] snapshot deletes, in the same
    /// transaction, the log entries it covers and the older compaction snapshots; one that
    /// covers no more than the newest compaction already does is stale (another process
    /// compacted further) and writes nothing.
    async fn write_snapshot(&self, room: &str, snapshot: &Snapshot) -> Result<(), Error>;

    /// The room's snapshots, oldest first.
    async fn list_snapshots(&self, room: &str) -> Result<Vec<SnapshotInfo>, Error>;

    /// One snapshot with its data, if it exists.
    async fn load_snapshot(&self, room: &str, id: i64) -> Result<Option<Snapshot>, Error>;

    /// Log entries of `room` with `seq > after_seq` written at or before `until_ms`, in order.
    async fn load_updates_until(
        &self,
        room: &str,
        after_seq: u64,
        until_ms: i64,
    ) -> Result<Vec<LoggedUpdate>, Error>;

    /// Deletes history snapshots of `room` written before `before_ms`, keeping the newest one;
    /// returns how many were deleted.
    async fn prune_history(&self, room: &str, before_ms: i64) -> Result<u64, Error>;

    /// Every CRDT value of `room`.
    async fn load_values(&self, room: &str) -> Result<Vec<StoredValue>, Error>;

    /// Stores values of `room` in one transaction: a new name is inserted as given; a stored
    /// one is replaced by `merge(stored, new)`, read and written under the row's lock, so that
    /// several processes storing the same value concurrently never lose each other's writes.
    /// A stored row keeps its kind (fixed by the first write). Returns the rows as stored
    /// after the merge, ordered by name.
    ///
    /// # Errors
    /// [`Error::Merge`] if `merge` refuses (nothing is written); database errors.
    async fn put_values(
        &self,
        room: &str,
        values: &[StoredValue],
        merge: &MergeValue,
    ) -> Result<Vec<StoredValue>, Error>;

    /// Deletes everything stored of `room` in one transaction: its log, every snapshot (restore
    /// points included) and its values. Returns whether anything was stored. A later append
    /// starts the room again at seq 1.
    async fn delete_room(&self, room: &str) -> Result<bool, Error>;

    /// Lists every stored room.
    async fn list_rooms(&self) -> Result<Vec<RoomSummary>, Error>;

    /// Records a revocation (kept for good: revocations are few, and a token's expiry is
    /// its own business).
    async fn add_revocation(&self, revocation: &Revocation) -> Result<(), Error>;

    /// Every revocation, oldest first.
    async fn list_revocations(&self) -> Result<Vec<Revocation>, Error>;

    /// How far a webhook target has been told about each room: `(room, seq)` pairs.
    async fn webhook_cursors(&self, target: &str) -> Result<Vec<(String, u64)>, Error>;

    /// Sets a target's cursor for a room; `None` removes it (the room is gone).
    async fn set_webhook_cursor(
        &self,
        target: &str,
        room: &str,
        seq: Option<u64>,
    ) -> Result<(), Error>;

    /// Takes or renews the lease `name` for `holder` until `ttl_ms` from now, if it is free,
    /// expired or already `holder`'s; answers whether `holder` holds it now. Atomic across
    /// processes sharing the store. A holder hands its lease back with a `ttl_ms` of 0.
    async fn claim_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, Error>;

    /// Answers when the store can be reached (for readiness).
    async fn ping(&self) -> Result<(), Error>;
}

/// The row [`Store::put_values`] writes for `new`: `new` itself for a new name, else the stored
/// row's name and kind with the state `merge(stored, new)`.
pub(crate) fn merged_row(
    stored: Option<StoredValue>,
    new: &StoredValue,
    merge: &MergeValue,
) -> Result<StoredValue, Error> {
    let Some(stored) = stored else {
        return Ok(new.clone());
    };
    let state = merge(&stored, new).map_err(|reason| Error::Merge {
        name: new.name.clone(),
        reason,
    })?;
    Ok(StoredValue {
        name: stored.name,
        kind: stored.kind,
        state,
    })
}

/// The values of one `put_values` call in the order they are written: by name (the lock order
/// across processes), the given order kept for a repeated name.
pub(crate) fn in_lock_order(values: &[StoredValue]) -> Vec<&StoredValue> {
    let mut sorted: Vec<&StoredValue> = values.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
}

/// How hard a store works to keep a commit across failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Survive a crash of the process and of the machine (SQLite `synchronous=FULL`).
    Full,
    /// Survive a crash of the process; a power loss may lose the last commits
    /// (SQLite `synchronous=NORMAL` in WAL mode).
    Normal,
}

/// How to open a store.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How hard SQLite works to keep a commit (PostgreSQL always uses its own settings).
    pub sync: SyncMode,
    /// Most connections in the PostgreSQL pool.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync: SyncMode::Full,
            max_connections: 10,
        }
    }
}

/// Opens the store a URL names: `sqlite://PATH` (created if missing), `postgres://...`, or
/// `memory:`. Migrations are applied.
///
/// # Errors
/// [`Error::InvalidUrl`] for an unsupported scheme; database errors when it cannot be opened.
pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn Store>, Error> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open(path, options.sync).await?))
    } else if url == "memory:" {
        Ok(Arc::new(MemoryStore::default()))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url, options.max_connections).await?))
    } else {
        Err(Error::InvalidUrl(format!(
            "{}: expected sqlite://PATH, postgres://USER@HOST/DB or memory:",
            redact(url)
        )))
    }
}

/// Hides a password in a database URL, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, for record timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
