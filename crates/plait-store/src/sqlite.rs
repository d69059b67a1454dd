//! SQLite: the embedded default store.
//!
//! WAL mode. Writes go through one connection behind a lock, so that rooms committing at the
//! same time queue instead of failing with `SQLITE_BUSY`; reads use a pool.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqlitePool};
use tokio::sync::{Mutex, MutexGuard};

use crate::group::{AppendRequest, GroupCommit, GroupWriter, Layout};
use crate::rows::{self, to_u64};
use crate::{
    in_lock_order, merged_row, now_ms, Error, LoggedUpdate, MergeValue, Revocation, RoomSummary,
    Snapshot, SnapshotInfo, SnapshotKind, Store, StoredRoom, StoredValue, SyncMode,
};

/// How long a statement waits for SQLite's file lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections; reads never block the writer in WAL mode.
const READ_CONNECTIONS: u32 = 4;

/// WAL pages written before a commit also copies them into the database (SQLite's default is
/// 1,000). The copy runs inside the commit that crosses the mark, and it copies each page once
/// however many times the WAL holds it: with many rooms writing, each room's last page is
/// rewritten by every group, so a longer WAL copies fewer pages per commit and stalls commits
/// less often. The WAL file then stays about 40 MB, reused after each copy (41.7 MB at its
/// largest in a strict 100-room run, against 8.2 MB with the default).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Rows per multi-row INSERT (SQLite allows 32,766 bound parameters per statement; 3 per row).
const ROWS_PER_INSERT: usize = 500;

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Every write transaction queues here.
    writer: Writer,
    /// Several connections for loads and listings.
    reader: SqlitePool,
    /// Appends from every room, committed a group per transaction (SQLite has one writer
    /// anyway, and each commit costs an fsync).
    appends: GroupCommit,
}

/// The one write connection, behind a fair lock. SQLite admits one writer at a time; a pool of
/// one connection queued writers too, but sqlx's pool sends the connection's thread a ping on
/// every checkout and another on every return, and the next checkout waits for the return's:
/// in 100 rooms under strict durability that was about 0.4 ms of a group commit's 2.2 ms.
#[derive(Debug, Clone)]
struct Writer(Arc<Mutex<SqliteConnection>>);

impl Writer {
    /// The connection, once every earlier writer is done with it. A writer abandoned half-way
    /// (its caller's deadline) leaves nothing open: its dropped `Transaction` queues a rollback
    /// ahead of the next writer's statements on the connection's thread, and a `BEGIN` nobody
    /// waited for is rolled back there too.
    async fn lock(&self) -> MutexGuard<'_, SqliteConnection> {
        self.0.lock().await
    }
}

/// Commits groups through the one write connection.
#[derive(Debug)]
struct SqliteGroupWriter(Writer);

#[async_trait]
impl GroupWriter for SqliteGroupWriter {
    async fn commit_group(&mut self, group: &[&AppendRequest]) -> Result<Vec<u64>, Error> {
        commit_group(&self.0, group).await
    }
}

/// One group, one query whatever the number of rooms: begin, one upsert of every room
/// (returning each one's new last seq), one insert of every update (per `ROWS_PER_INSERT`,
/// each row's seq read from its room's new last seq), commit. A query is a round trip to the
/// connection's thread, and on this machine each cost 0.1 to 0.4 ms of waiting for a thread to
/// wake (four per group did): the commit is opened and closed in the SQL rather than by a
/// sqlx `Transaction`, which would cost a round trip each.
///
/// Both writes are `OR FAIL`: with the default (`ABORT`), SQLite keeps a statement journal of
/// every page a multi-row statement inside a transaction changes, to undo that statement
/// alone, and spills it to a temporary file past 64 KiB: for strict durability in 100 rooms
/// that was as many `pwrite`s as the WAL itself. A failed statement here fails the whole
/// group, whose transaction is rolled back, so there is nothing to undo a statement for.
async fn commit_group(writer: &Writer, group: &[&AppendRequest]) -> Result<Vec<u64>, Error> {
    let now = now_ms();
    let layout = Layout::new(group);
    let rows: Vec<_> = layout.updates().collect();
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "BEGIN; INSERT OR FAIL INTO rooms (name, last_seq, updated_at_ms) ",
    );
    query.push_values(layout.rooms(), |mut row, (room, added)| {
        row.push_bind(room).push_bind(added).push_bind(now);
    });
    query.push(
        " ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + excluded.last_seq, \
         updated_at_ms = excluded.updated_at_ms RETURNING name, last_seq; ",
    );
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        query.push(
            "INSERT OR FAIL INTO updates (room, seq, data, created_at_ms) \
             SELECT u.column1, (SELECT last_seq FROM rooms WHERE name = u.column1) - u.column2, \
             u.column3, ",
        );
        query.push_bind(now).push(" FROM (");
        query.push_values(chunk, |mut row, &(room, below, data)| {
            row.push_bind(room)
                .push_bind(below)
                .push_bind(data.as_ref());
        });
        query.push(") AS u; ");
    }
    query.push("COMMIT");
    let mut conn = writer.lock().await;
    // This function runs to its end (the group-commit task awaits it), so a failure is the
    // only way to leave the transaction open.
    let written = query.build().fetch_all(&mut *conn).await;
    let returned = match written {
        Ok(returned) => returned,
        Err(e) => {
            if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                // "No transaction is active" when BEGIN or COMMIT itself failed.
                tracing::debug!(error = %rollback, "rollback after a failed group");
            }
            return Err(e.into());
        }
    };
    let lasts: HashMap<String, i64> = returned
        .iter()
        .map(|row| (row.get("name"), row.get("last_seq")))
        .collect();
    layout.request_seqs(|room| lasts.get(room).copied())
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and applies migrations.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created; database or migration errors.
    pub async fn open(path: &str, sync: SyncMode) -> Result<Self, Error> {
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SyncMode::Full => SqliteSynchronous::Full,
                SyncMode::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(BUSY_TIMEOUT);
        let mut writer = options
            .clone()
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .connect()
            .await?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&mut writer)
            .await?;
        let writer = Writer(Arc::new(Mutex::new(writer)));
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.read_only(true))
            .await?;
        let appends = GroupCommit::spawn(SqliteGroupWriter(writer.clone()));
        Ok(Self {
            writer,
            reader,
            appends,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load_room(&self, room: &str) -> Result<StoredRoom, Error> {
        // One read transaction, so the snapshot and the log are seen at the same instant. A
        // `Transaction` rolls back when dropped: a load abandoned half-way (its deadline) must
        // not hand its pooled connection back inside a transaction (a raw BEGIN did, and every
        // later load on that connection failed).
        let mut conn = self.reader.begin().await?;
        let result = async {
            let last_seq: Option<i64> =
                sqlx::query_scalar("SELECT last_seq FROM rooms WHERE name = ?")
                    .bind(room)
                    .fetch_optional(&mut *conn)
                    .await?;
            let snapshot = sqlx::query(
                "SELECT up_to_seq, kind, data, state_vector, created_at_ms, values_state FROM snapshots \
                 WHERE room = ? ORDER BY up_to_seq DESC, id DESC LIMIT 1",
            )
            .bind(room)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| rows::snapshot(&row))
            .transpose()?;
            let after = snapshot.as_ref().map_or(0, |s| s.up_to_seq as i64);
            let updates = sqlx::query(
                "SELECT seq, data FROM updates WHERE room = ? AND seq > ? ORDER BY seq",
            )
            .bind(room)
            .bind(after)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|row| rows::logged_update(&row))
            .collect::<Result<Vec<_>, Error>>()?;
            Ok::<_, Error>(StoredRoom {
                snapshot,
                updates,
                last_seq: to_u64(last_seq.unwrap_or(0), "room seq")?,
            })
        }
        .await;
        conn.commit().await?;
        result
    }

    async fn append_updates(&self, room: &str, updates: &[Bytes]) -> Result<u64, Error> {
        self.appends.append(room, updates).await
    }

    async fn write_snapshot(&self, room: &str, snapshot: &Snapshot) -> Result<(), Error> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        // Make sure the room exists and its seq never falls behind a snapshot. The upsert also
        // locks the room's row (PostgreSQL) or the database (SQLite), so the check below and
        // the writes after it see no concurrent compaction of the room.
        sqlx::query(
            "INSERT INTO rooms (name, last_seq, updated_at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET last_seq = max(rooms.last_seq, excluded.last_seq)",
        )
        .bind(room)
        .bind(snapshot.up_to_seq as i64)
        .bind(snapshot.created_at_ms)
        .execute(&mut *tx)
        .await?;
        if snapshot.kind == SnapshotKind::Compaction {
            // A compaction never moves the room's snapshot backwards: one already covering as
            // much or more makes this one stale (another process compacted further), and the
            // rows between the two live only in the newer snapshot.
            let newest: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(up_to_seq) FROM snapshots WHERE room = ? AND kind = 'compaction'",
            )
            .bind(room)
            .fetch_one(&mut *tx)
            .await?;
            if newest.is_some_and(|seq| seq >= snapshot.up_to_seq as i64) {
                tx.commit().await?;
                return Ok(());
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO snapshots \
             (room, up_to_seq, kind, data, state_vector, created_at_ms, values_state) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(room)
        .bind(snapshot.up_to_seq as i64)
        .bind(snapshot.kind.as_str())
        .bind(snapshot.data.as_ref())
        .bind(snapshot.state_vector.as_ref())
        .bind(snapshot.created_at_ms)
        .bind(snapshot.values.as_deref())
        .fetch_one(&mut *tx)
        .await?;
        if snapshot.kind == SnapshotKind::Compaction {
            sqlx::query("DELETE FROM updates WHERE room = ? AND seq <= ?")
                .bind(room)
                .bind(snapshot.up_to_seq as i64)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM snapshots WHERE room = ? AND kind = 'compaction' AND id <> ?")
                .bind(room)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_snapshots(&self, room: &str) -> Result<Vec<SnapshotInfo>, Error> {
        let rows = sqlx::query(
            "SELECT id, up_to_seq, kind, created_at_ms, CAST(length(data) AS BIGINT) AS bytes FROM snapshots \
             WHERE room = ? ORDER BY created_at_ms, id",
        )
        .bind(room)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(SnapshotInfo {
                    id: row.get("id"),
                    up_to_seq: to_u64(row.get("up_to_seq"), "snapshot seq")?,
                    kind: SnapshotKind::parse(row.get("kind"))?,
                    created_at_ms: row.get("created_at_ms"),
                    bytes: to_u64(row.get::<i64, _>("bytes"), "snapshot size")?,
                })
            })
            .collect()
    }

    async fn load_snapshot(&self, room: &str, id: i64) -> Result<Option<Snapshot>, Error> {
        sqlx::query(
            "SELECT up_to_seq, kind, data, state_vector, created_at_ms, values_state FROM snapshots \
             WHERE room = ? AND id = ?",
        )
        .bind(room)
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .map(|row| rows::snapshot(&row))
        .transpose()
    }

    async fn load_updates_until(
        &self,
        room: &str,
        after_seq: u64,
        until_ms: i64,
    ) -> Result<Vec<LoggedUpdate>, Error> {
        sqlx::query(
            "SELECT seq, data FROM updates WHERE room = ? AND seq > ? AND created_at_ms <= ? \
             ORDER BY seq",
        )
        .bind(room)
        .bind(after_seq as i64)
        .bind(until_ms)
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(|row| rows::logged_update(&row))
        .collect()
    }

    async fn prune_history(&self, room: &str, before_ms: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM snapshots WHERE room = ? AND kind = 'history' AND created_at_ms < ? \
             AND id <> (SELECT max(id) FROM snapshots WHERE room = ? AND kind = 'history')",
        )
        .bind(room)
        .bind(before_ms)
        .bind(room)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(done.rows_affected())
    }

    async fn load_values(&self, room: &str) -> Result<Vec<StoredValue>, Error> {
        sqlx::query("SELECT name, kind, state FROM crdt_values WHERE room = ? ORDER BY name")
            .bind(room)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(rows::stored_value)
            .collect()
    }

    async fn put_values(
        &self,
        room: &str,
        values: &[StoredValue],
        merge: &MergeValue,
    ) -> Result<Vec<StoredValue>, Error> {
        let now = now_ms();
        // SQLite has one writer (the one write connection): nothing changes a row between
        // the read and the write of one transaction.
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let mut written = Vec::with_capacity(values.len());
        for new in in_lock_order(values) {
            let stored = sqlx::query(
                "SELECT name, kind, state FROM crdt_values WHERE room = ? AND name = ?",
            )
            .bind(room)
            .bind(&new.name)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| rows::stored_value(&row))
            .transpose()?;
            let row = merged_row(stored, new, merge)?;
            sqlx::query(
                "INSERT INTO crdt_values (room, name, kind, state, updated_at_ms) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (room, name) DO UPDATE SET state = excluded.state, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(room)
            .bind(&row.name)
            .bind(&row.kind)
            .bind(row.state.as_ref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            written.push(row);
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn delete_room(&self, room: &str) -> Result<bool, Error> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let mut deleted = 0;
        for table in ["updates", "snapshots", "crdt_values"] {
            let sql = format!("DELETE FROM {table} WHERE room = ?");
            deleted += sqlx::query(&sql)
                .bind(room)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        deleted += sqlx::query("DELETE FROM rooms WHERE name = ?")
            .bind(room)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn add_revocation(&self, revocation: &Revocation) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO revocations (user_name, jti, issued_before, created_at_ms) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(revocation.user.as_deref())
        .bind(revocation.jti.as_deref())
        .bind(
            revocation
                .issued_before
                .map(|t| t.min(i64::MAX as u64) as i64),
        )
        .bind(revocation.created_at_ms)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    async fn list_revocations(&self) -> Result<Vec<Revocation>, Error> {
        let found = sqlx::query(
            "SELECT user_name, jti, issued_before, created_at_ms FROM revocations ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::revocation).collect()
    }

    async fn webhook_cursors(&self, target: &str) -> Result<Vec<(String, u64)>, Error> {
        let found = sqlx::query("SELECT room, seq FROM webhook_cursors WHERE target = ?")
            .bind(target)
            .fetch_all(&self.reader)
            .await?;
        found
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("room")?,
                    to_u64(row.try_get("seq")?, "webhook seq")?,
                ))
            })
            .collect()
    }

    async fn set_webhook_cursor(
        &self,
        target: &str,
        room: &str,
        seq: Option<u64>,
    ) -> Result<(), Error> {
        let query = match seq {
            Some(seq) => sqlx::query(
                "INSERT INTO webhook_cursors (target, room, seq) VALUES (?, ?, ?) \
                 ON CONFLICT (target, room) DO UPDATE SET seq = excluded.seq",
            )
            .bind(target)
            .bind(room)
            .bind(seq as i64),
            None => sqlx::query("DELETE FROM webhook_cursors WHERE target = ? AND room = ?")
                .bind(target)
                .bind(room),
        };
        query.execute(&mut *self.writer.lock().await).await?;
        Ok(())
    }

    async fn claim_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, Error> {
        let now = crate::now_ms();
        // One statement: a row that is someone else's and not expired is left as it is, and
        // no row is written.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at_ms = excluded.expires_at_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_at_ms < ?",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_rooms(&self) -> Result<Vec<RoomSummary>, Error> {
        let rows = sqlx::query(
            "SELECT r.name, r.last_seq, r.updated_at_ms, \
               (SELECT count(*) FROM updates u WHERE u.room = r.name) AS n_updates, \
               (SELECT coalesce(sum(length(u.data)), 0) FROM updates u WHERE u.room = r.name) \
                 + coalesce((SELECT length(s.data) FROM snapshots s WHERE s.room = r.name \
                   ORDER BY s.up_to_seq DESC, s.id DESC LIMIT 1), 0) AS stored_bytes \
             FROM rooms r ORDER BY r.name",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(RoomSummary {
                    name: row.get("name"),
                    last_seq: to_u64(row.get("last_seq"), "room seq")?,
                    n_updates: to_u64(row.get("n_updates"), "update count")?,
                    stored_bytes: to_u64(row.get("stored_bytes"), "stored bytes")?,
                    updated_at_ms: row.get("updated_at_ms"),
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
