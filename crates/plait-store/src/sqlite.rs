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

/// Rows in `updates_recent` after which the group-commit task moves them into `updates`. A move
/// writes each room's rows onto that room's pages together, a page per room or so however
/// many rows it has; fewer moves cost fewer pages, but every read of a room's log scans the
/// whole of `updates_recent` (it has no index, which would cost a page per room per commit
/// again).
const MOVE_AFTER_ROWS: u64 = 2_000;
/// Bytes in `updates_recent` after which the group-commit task moves them (a load reads them
/// all).
const MOVE_AFTER_BYTES: u64 = 1 << 20;
/// An update this big (a page) goes straight into `updates`: it writes pages of its own
/// wherever it goes, and through `updates_recent` it would be written twice.
const WRITTEN_DIRECT_BYTES: usize = 4096;

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
struct SqliteGroupWriter {
    writer: Writer,
    /// What `updates_recent` holds: counted at open, then by this process's commits (another
    /// process writing the same file makes it an estimate, which only moves rows early or late).
    recent: Recent,
}

/// Rows and bytes in `updates_recent`.
#[derive(Debug, Default, Clone, Copy)]
struct Recent {
    rows: u64,
    bytes: u64,
}

#[async_trait]
impl GroupWriter for SqliteGroupWriter {
    async fn commit_group(&mut self, group: &[&AppendRequest]) -> Result<Vec<u64>, Error> {
        let (seqs, added) = commit_group(&self.writer, group).await?;
        self.recent.rows += added.rows;
        self.recent.bytes += added.bytes;
        Ok(seqs)
    }

    /// Moves `updates_recent` into `updates` once it is big enough. A failed move (a seq
    /// already in `updates`, which only a change made outside plait can cause) leaves the rows
    /// where they are, still read by every load, and is tried again after as many rows more:
    /// the appends go on either way.
    async fn after_group(&mut self) {
        if self.recent.rows < MOVE_AFTER_ROWS && self.recent.bytes < MOVE_AFTER_BYTES {
            return;
        }
        let started = std::time::Instant::now();
        let moved = move_recent(&self.writer).await;
        tracing::debug!(
            rows = self.recent.rows,
            bytes = self.recent.bytes,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "moved the newest updates into the room-ordered log"
        );
        if let Err(e) = moved {
            tracing::error!(
                error = %e,
                "could not move the newest updates into the room-ordered log; they stay in \
                 `updates_recent`, are still read, and the move is tried again later; if the \
                 error names a UNIQUE constraint, a seq was written twice (the database was \
                 changed outside plait): `plait compact` folds the logs into snapshots and \
                 clears it"
            );
        }
        self.recent = Recent::default();
    }
}

/// Moves every row of `updates_recent` into `updates`, in one transaction.
async fn move_recent(writer: &Writer) -> Result<(), Error> {
    let mut conn = writer.lock().await;
    let mut tx = conn.begin().await?;
    // `OR FAIL` for the reason the group's writes are (`commit_group`). No `ORDER BY`: in key
    // order the move wrote as many pages (about 430 for 2,000 rows of 100 rooms) and took 5%
    // longer, for the sort.
    sqlx::query(
        "INSERT OR FAIL INTO updates (room, seq, data, created_at_ms) \
         SELECT room, seq, data, created_at_ms FROM updates_recent",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM updates_recent")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// One group, one query whatever the number of rooms: begin, one upsert of every room
/// (returning each one's new last seq), one insert of the small updates into `updates_recent`
/// and one of the big ones into `updates` (per `ROWS_PER_INSERT`, each row's seq read from its
/// room's new last seq), commit. A query is a round trip to the connection's thread, and on
/// this machine each cost 0.1 to 0.4 ms of waiting for a thread to wake (four per group did):
/// the commit is opened and closed in the SQL rather than by a sqlx `Transaction`, which would
/// cost a round trip each. The thread answers the whole query in one message
/// (`vendor/sqlx-sqlite`), so the group-commit task is woken once per group, after the fsync.
///
/// Both writes are `OR FAIL`: with the default (`ABORT`), SQLite keeps a statement journal of
/// every page a multi-row statement inside a transaction changes, to undo that statement
/// alone, and spills it to a temporary file past 64 KiB: for strict durability in 100 rooms
/// that was as many `pwrite`s as the WAL itself. A failed statement here fails the whole
/// group, whose transaction is rolled back, so there is nothing to undo a statement for.
/// Returns each request's last seq, and what the group added to `updates_recent`.
async fn commit_group(
    writer: &Writer,
    group: &[&AppendRequest],
) -> Result<(Vec<u64>, Recent), Error> {
    let now = now_ms();
    let layout = Layout::new(group);
    let (direct, recent): (Vec<_>, Vec<_>) = layout
        .updates()
        .partition(|(_, _, data)| data.len() >= WRITTEN_DIRECT_BYTES);
    let added = Recent {
        rows: recent.len() as u64,
        bytes: recent.iter().map(|(_, _, data)| data.len() as u64).sum(),
    };
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
    let chunks = [("updates_recent", recent), ("updates", direct)];
    for (table, chunk) in chunks
        .iter()
        .flat_map(|(table, rows)| rows.chunks(ROWS_PER_INSERT).map(move |c| (table, c)))
    {
        query.push(format_args!(
            "INSERT OR FAIL INTO {table} (room, seq, data, created_at_ms) \
             SELECT u.column1, (SELECT last_seq FROM rooms WHERE name = u.column1) - u.column2, \
             u.column3, "
        ));
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
    let seqs = layout.request_seqs(|room| lasts.get(room).copied())?;
    Ok((seqs, added))
}

/// `room`'s log after `after_seq`, of updates written at or before `until_ms`, in seq order,
/// from both tables. The caller holds a read transaction, so a move cannot pass between the
/// two reads.
async fn read_log(
    conn: &mut SqliteConnection,
    room: &str,
    after_seq: u64,
    until_ms: i64,
) -> Result<Vec<LoggedUpdate>, Error> {
    let mut log = Vec::new();
    for sql in [
        "SELECT seq, data FROM updates WHERE room = ? AND seq > ? AND created_at_ms <= ? \
         ORDER BY seq",
        // Rowid order is a room's seq order (rows go in as their seqs are handed out); an
        // ORDER BY seq would copy every row, big ones too, through a sorter.
        "SELECT seq, data FROM updates_recent WHERE room = ? AND seq > ? AND created_at_ms <= ? \
         ORDER BY rowid",
    ] {
        for row in sqlx::query(sql)
            .bind(room)
            .bind(after_seq as i64)
            .bind(until_ms)
            .fetch_all(&mut *conn)
            .await?
        {
            log.push(rows::logged_update(&row)?);
        }
    }
    // Two sorted runs (a big update written straight into `updates` can follow a small one
    // still in `updates_recent`): the sort merges them in linear time.
    log.sort_by_key(|update| update.seq);
    Ok(log)
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
        let (rows, bytes): (i64, i64) =
            sqlx::query_as("SELECT count(*), coalesce(sum(length(data)), 0) FROM updates_recent")
                .fetch_one(&mut writer)
                .await?;
        let recent = Recent {
            rows: to_u64(rows, "row count")?,
            bytes: to_u64(bytes, "byte count")?,
        };
        let writer = Writer(Arc::new(Mutex::new(writer)));
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.read_only(true))
            .await?;
        let appends = GroupCommit::spawn(SqliteGroupWriter {
            writer: writer.clone(),
            recent,
        });
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
            let after = snapshot.as_ref().map_or(0, |s| s.up_to_seq);
            let updates = read_log(&mut conn, room, after, i64::MAX).await?;
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
            for sql in [
                "DELETE FROM updates WHERE room = ? AND seq <= ?",
                "DELETE FROM updates_recent WHERE room = ? AND seq <= ?",
            ] {
                sqlx::query(sql)
                    .bind(room)
                    .bind(snapshot.up_to_seq as i64)
                    .execute(&mut *tx)
                    .await?;
            }
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
        // One read transaction: a move between the two tables' reads would hide its rows.
        let mut conn = self.reader.begin().await?;
        let log = read_log(&mut conn, room, after_seq, until_ms).await;
        conn.commit().await?;
        log
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
        for table in ["updates", "updates_recent", "snapshots", "crdt_values"] {
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
               (SELECT count(*) FROM updates u WHERE u.room = r.name) \
                 + coalesce(recent.n, 0) AS n_updates, \
               (SELECT coalesce(sum(length(u.data)), 0) FROM updates u WHERE u.room = r.name) \
                 + coalesce(recent.bytes, 0) \
                 + coalesce((SELECT length(s.data) FROM snapshots s WHERE s.room = r.name \
                   ORDER BY s.up_to_seq DESC, s.id DESC LIMIT 1), 0) AS stored_bytes \
             FROM rooms r LEFT JOIN \
               (SELECT room, count(*) AS n, sum(length(data)) AS bytes FROM updates_recent \
                GROUP BY room) AS recent ON recent.room = r.name \
             ORDER BY r.name",
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
