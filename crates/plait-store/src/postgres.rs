//! PostgreSQL: the production store, shareable by several plait processes.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Row};

use crate::group::{AppendRequest, GroupCommit, GroupWriter, Layout};
use crate::rows::{self, to_u64};
use crate::{
    in_lock_order, merged_row, now_ms, Error, LoggedUpdate, MergeValue, Revocation, RoomSummary,
    Snapshot, SnapshotInfo, SnapshotKind, Store, StoredRoom, StoredValue,
};

/// How long to wait for a pooled connection, or for the group commit's own connection to open,
/// before an operation fails (and is retried by the room, which holds its updates meanwhile).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Appends from every room, committed a group per transaction (one WAL flush for many
    /// rooms; each room's row lock still makes its seqs consecutive across processes).
    appends: GroupCommit,
}

/// Commits groups through a connection of its own, outside the pool.
#[derive(Debug)]
struct PgGroupWriter {
    options: PgConnectOptions,
    /// Opened at the first group and again after a failed one. Nothing else uses it, so it is
    /// never inside someone else's transaction and its statement commits on its own; a pooled
    /// connection cost a `BEGIN`, a `COMMIT` and the pool's ping on every return, each a round
    /// trip.
    conn: Option<PgConnection>,
}

#[async_trait]
impl GroupWriter for PgGroupWriter {
    /// One group, one statement whatever the number of rooms, committed on its own: the
    /// rooms' upsert bumps each room's last seq, locking the rooms' rows in the group's order
    /// (by name) until commit, so concurrent appenders to one room, in this process or
    /// another, get consecutive ranges; the updates take their seqs from the upsert's new last
    /// seqs.
    async fn commit_group(&mut self, group: &[&AppendRequest]) -> Result<Vec<u64>, Error> {
        let layout = Layout::new(group);
        let reused = self.conn.is_some();
        match self.write(&layout).await {
            Err(Error::Database(e)) if reused && connection_lost(&e) => {
                // The connection kept since the last group is gone (a server restart, a
                // proxy's idle timeout): one more try on a new one, rather than failing every
                // room of the group for its retry's delay. If the statement did commit before
                // the connection broke, this writes the group twice, as the rooms' own retry
                // would: the log then holds those updates twice, and Yjs applies them once.
                tracing::debug!(error = %e, "the group connection was lost; reconnecting");
                self.write(&layout).await
            }
            written => written,
        }
    }
}

impl PgGroupWriter {
    /// Writes a group on the kept connection, opening one first if there is none; after a
    /// failure the next call opens another.
    async fn write(&mut self, layout: &Layout<'_>) -> Result<Vec<u64>, Error> {
        let (rooms, added): (Vec<&str>, Vec<i64>) = layout.rooms().unzip();
        let mut update_rooms = Vec::new();
        let mut below = Vec::new();
        let mut data = Vec::new();
        for (room, distance, bytes) in layout.updates() {
            update_rooms.push(room);
            below.push(distance);
            data.push(bytes.as_ref());
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let opened = tokio::time::timeout(ACQUIRE_TIMEOUT, self.options.connect())
                    .await
                    .map_err(|_| {
                        Error::GroupCommit(format!(
                            "no connection to PostgreSQL within {} s; is it running and \
                             reachable?",
                            ACQUIRE_TIMEOUT.as_secs()
                        ))
                    })??;
                self.conn.insert(opened)
            }
        };
        let written = sqlx::query(
            "WITH bumped AS ( \
                 INSERT INTO rooms (name, last_seq, updated_at_ms) \
                 SELECT name, added, $3 FROM UNNEST($1::TEXT[], $2::BIGINT[]) \
                     WITH ORDINALITY AS t(name, added, n) ORDER BY n \
                 ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + EXCLUDED.last_seq, \
                     updated_at_ms = EXCLUDED.updated_at_ms \
                 RETURNING name, last_seq \
             ), written AS ( \
                 INSERT INTO updates (room, seq, data, created_at_ms) \
                 SELECT u.room, b.last_seq - u.below, u.data, $3 \
                 FROM UNNEST($4::TEXT[], $5::BIGINT[], $6::BYTEA[]) AS u(room, below, data) \
                 JOIN bumped b ON b.name = u.room \
             ) \
             SELECT name, last_seq FROM bumped",
        )
        .bind(&rooms)
        .bind(&added)
        .bind(now_ms())
        .bind(&update_rooms)
        .bind(&below)
        .bind(&data)
        .fetch_all(&mut *conn)
        .await;
        let lasts: HashMap<String, i64> = match written {
            Ok(rows) => rows
                .iter()
                .map(|row| (row.get("name"), row.get("last_seq")))
                .collect(),
            Err(e) => {
                // The connection may be what failed (the server restarted): the next group
                // opens another.
                self.conn = None;
                return Err(e.into());
            }
        };
        layout.request_seqs(|room| lasts.get(room).copied())
    }
}

/// Whether `e` says the connection itself is gone (the server closed it, or it broke), not
/// that the statement failed: PostgreSQL's class `57P0` (administrator command, crash
/// shutdown, cannot connect now, database dropped, idle session timeout), and I/O errors on
/// the socket.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("57P0")),
        _ => false,
    }
}

impl PgStore {
    /// Connects to `url` and applies migrations.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL sqlx cannot parse; database or migration errors.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, Error> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::InvalidUrl(format!("{}: {e}", crate::redact(url))))?;
        Self::open_with(options, max_connections).await
    }

    /// Connects with prepared options (tests use them to pick a schema) and migrates.
    ///
    /// # Errors
    /// Database or migration errors.
    pub async fn open_with(options: PgConnectOptions, max_connections: u32) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await?;
        let appends = GroupCommit::spawn(PgGroupWriter {
            options: pool.connect_options().as_ref().clone(),
            conn: None,
        });
        Ok(Self { pool, appends })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn load_room(&self, room: &str) -> Result<StoredRoom, Error> {
        let mut tx = self.pool.begin().await?;
        // One snapshot of the database for the snapshot row and the log after it.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let last_seq: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM rooms WHERE name = $1")
                .bind(room)
                .fetch_optional(&mut *tx)
                .await?;
        let snapshot = sqlx::query(
            "SELECT up_to_seq, kind, data, state_vector, created_at_ms, values_state FROM snapshots \
             WHERE room = $1 ORDER BY up_to_seq DESC, id DESC LIMIT 1",
        )
        .bind(room)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| rows::snapshot(&row))
        .transpose()?;
        let after = snapshot.as_ref().map_or(0, |s| s.up_to_seq as i64);
        let updates =
            sqlx::query("SELECT seq, data FROM updates WHERE room = $1 AND seq > $2 ORDER BY seq")
                .bind(room)
                .bind(after)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|row| rows::logged_update(&row))
                .collect::<Result<Vec<_>, Error>>()?;
        tx.commit().await?;
        Ok(StoredRoom {
            snapshot,
            updates,
            last_seq: to_u64(last_seq.unwrap_or(0), "room seq")?,
        })
    }

    async fn append_updates(&self, room: &str, updates: &[Bytes]) -> Result<u64, Error> {
        self.appends.append(room, updates).await
    }

    async fn write_snapshot(&self, room: &str, snapshot: &Snapshot) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        // Make sure the room exists and its seq never falls behind a snapshot. The upsert also
        // locks the room's row (PostgreSQL) or the database (SQLite), so the check below and
        // the writes after it see no concurrent compaction of the room.
        sqlx::query(
            "INSERT INTO rooms (name, last_seq, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_seq = GREATEST(rooms.last_seq, EXCLUDED.last_seq)",
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
                "SELECT MAX(up_to_seq) FROM snapshots WHERE room = $1 AND kind = 'compaction'",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
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
            sqlx::query(
                "DELETE FROM snapshots WHERE room = $1 AND kind = 'compaction' AND id <> $2",
            )
            .bind(room)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if snapshot.kind == SnapshotKind::Compaction {
            // The log the snapshot covers is deleted after the commit, not inside it: the heap
            // keeps rows in insertion order, so with many rooms writing, a room's rows lie one
            // per page and this delete dirties a page per row (20 ms for 1,000 rows after a
            // checkpoint, every page a full-page image in the WAL), all the while holding the
            // room's row lock, which every group commit touching the room waits for. Rows it
            // leaves (a crash, a failure) are never loaded, as they lie below the snapshot,
            // and the room's next compaction deletes them.
            if let Err(e) = sqlx::query("DELETE FROM updates WHERE room = $1 AND seq <= $2")
                .bind(room)
                .bind(snapshot.up_to_seq as i64)
                .execute(&self.pool)
                .await
            {
                tracing::warn!(room, error = %e, "the log below a compaction was not deleted (it is never loaded); the room's next compaction deletes it");
            }
        }
        Ok(())
    }

    async fn list_snapshots(&self, room: &str) -> Result<Vec<SnapshotInfo>, Error> {
        let rows = sqlx::query(
            "SELECT id, up_to_seq, kind, created_at_ms, CAST(length(data) AS BIGINT) AS bytes FROM snapshots \
             WHERE room = $1 ORDER BY created_at_ms, id",
        )
        .bind(room)
        .fetch_all(&self.pool)
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
             WHERE room = $1 AND id = $2",
        )
        .bind(room)
        .bind(id)
        .fetch_optional(&self.pool)
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
            "SELECT seq, data FROM updates WHERE room = $1 AND seq > $2 AND created_at_ms <= $3 \
             ORDER BY seq",
        )
        .bind(room)
        .bind(after_seq as i64)
        .bind(until_ms)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| rows::logged_update(&row))
        .collect()
    }

    async fn prune_history(&self, room: &str, before_ms: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM snapshots WHERE room = $1 AND kind = 'history' AND created_at_ms < $2 \
             AND id <> (SELECT max(id) FROM snapshots WHERE room = $3 AND kind = 'history')",
        )
        .bind(room)
        .bind(before_ms)
        .bind(room)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn load_values(&self, room: &str) -> Result<Vec<StoredValue>, Error> {
        sqlx::query("SELECT name, kind, state FROM crdt_values WHERE room = $1 ORDER BY name")
            .bind(room)
            .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let mut written = Vec::with_capacity(values.len());
        // Rows are locked in name order, so two processes storing overlapping sets wait for
        // each other instead of deadlocking.
        for new in in_lock_order(values) {
            let mut attempts = 0;
            let row = loop {
                attempts += 1;
                // The row lock holds until commit: another process storing this value waits
                // here and then merges with what this transaction wrote.
                let stored = sqlx::query(
                    "SELECT name, kind, state FROM crdt_values \
                     WHERE room = $1 AND name = $2 FOR UPDATE",
                )
                .bind(room)
                .bind(&new.name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| rows::stored_value(&row))
                .transpose()?;
                if stored.is_some() {
                    let row = merged_row(stored, new, merge)?;
                    sqlx::query(
                        "UPDATE crdt_values SET state = $3, updated_at_ms = $4 \
                         WHERE room = $1 AND name = $2",
                    )
                    .bind(room)
                    .bind(&row.name)
                    .bind(row.state.as_ref())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    break row;
                }
                // A new name. If another process inserts it first, this insert waits for its
                // commit and does nothing; the next round then locks and merges that row.
                let inserted = sqlx::query(
                    "INSERT INTO crdt_values (room, name, kind, state, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room, name) DO NOTHING",
                )
                .bind(room)
                .bind(&new.name)
                .bind(&new.kind)
                .bind(new.state.as_ref())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 1 {
                    break new.clone();
                }
                if attempts >= 3 {
                    return Err(Error::Corrupt(format!(
                        "value {:?} neither inserts nor locks",
                        new.name
                    )));
                }
            };
            written.push(row);
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn delete_room(&self, room: &str) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for table in ["updates", "snapshots", "crdt_values"] {
            let sql = format!("DELETE FROM {table} WHERE room = $1");
            deleted += sqlx::query(&sql)
                .bind(room)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        deleted += sqlx::query("DELETE FROM rooms WHERE name = $1")
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
             VALUES ($1, $2, $3, $4)",
        )
        .bind(revocation.user.as_deref())
        .bind(revocation.jti.as_deref())
        .bind(
            revocation
                .issued_before
                .map(|t| t.min(i64::MAX as u64) as i64),
        )
        .bind(revocation.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_revocations(&self) -> Result<Vec<Revocation>, Error> {
        let found = sqlx::query(
            "SELECT user_name, jti, issued_before, created_at_ms FROM revocations ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::revocation).collect()
    }

    async fn webhook_cursors(&self, target: &str) -> Result<Vec<(String, u64)>, Error> {
        let found = sqlx::query("SELECT room, seq FROM webhook_cursors WHERE target = $1")
            .bind(target)
            .fetch_all(&self.pool)
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
                "INSERT INTO webhook_cursors (target, room, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (target, room) DO UPDATE SET seq = EXCLUDED.seq",
            )
            .bind(target)
            .bind(room)
            .bind(seq as i64),
            None => sqlx::query("DELETE FROM webhook_cursors WHERE target = $1 AND room = $2")
                .bind(target)
                .bind(room),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, Error> {
        let now = crate::now_ms();
        // One statement: a row that is someone else's and not expired is left as it is, and
        // no row is written.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at_ms = excluded.expires_at_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_at_ms < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_rooms(&self) -> Result<Vec<RoomSummary>, Error> {
        // Only the log after the newest snapshot, as a load reads it: the rows below it stay
        // until the compaction's delete, which runs after the snapshot commits (or the next
        // compaction's, if that one failed).
        let rows = sqlx::query(
            "SELECT r.name, r.last_seq, r.updated_at_ms, log.n AS n_updates, \
               (log.bytes + coalesce(s.bytes, 0))::BIGINT AS stored_bytes \
             FROM rooms r \
             LEFT JOIN LATERAL (SELECT s.up_to_seq, length(s.data) AS bytes FROM snapshots s \
               WHERE s.room = r.name ORDER BY s.up_to_seq DESC, s.id DESC LIMIT 1) s ON true \
             CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(length(u.data)), 0) AS bytes \
               FROM updates u WHERE u.room = r.name AND u.seq > coalesce(s.up_to_seq, 0)) log \
             ORDER BY r.name",
        )
        .fetch_all(&self.pool)
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
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
