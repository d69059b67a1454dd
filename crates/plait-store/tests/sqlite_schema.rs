//! SQLite's schema and group commit: what a migration keeps, and what a failed group leaves.

use std::str::FromStr;

use bytes::Bytes;
use plait_store::{SqliteStore, Store, SyncMode};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row, SqlitePool};

/// The migration that moved `updates` into (room, seq) order.
const UPDATES_BY_ROOM: i64 = 20261204000001;

async fn raw(path: &str) -> SqlitePool {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .unwrap()
        .create_if_missing(true);
    SqlitePool::connect_with(options).await.unwrap()
}

/// A database written before `updates` was a `WITHOUT ROWID` table keeps every update, in
/// order, and the log goes on from the room's last seq.
#[tokio::test]
async fn a_log_written_before_the_room_order_migration_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let path = path.to_str().unwrap();
    {
        let pool = raw(path).await;
        let mut migrator = sqlx::migrate!("../../migrations/sqlite");
        let older: Vec<_> = migrator
            .migrations
            .iter()
            .filter(|m| m.version < UPDATES_BY_ROOM)
            .cloned()
            .collect();
        assert!(older.len() < migrator.migrations.len());
        migrator.migrations = older.into();
        migrator.run(&pool).await.unwrap();
        // Two rooms written interleaved, as they are when both are busy.
        for seq in 1..=3i64 {
            for room in ["a", "b"] {
                sqlx::query(
                    "INSERT INTO updates (room, seq, data, created_at_ms) VALUES (?, ?, ?, 0)",
                )
                .bind(room)
                .bind(seq)
                .bind(format!("{room}{seq}").into_bytes())
                .execute(&pool)
                .await
                .unwrap();
            }
        }
        sqlx::query(
            "INSERT INTO rooms (name, last_seq, updated_at_ms) VALUES ('a', 3, 0), ('b', 3, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(path, SyncMode::Full).await.unwrap();
    for room in ["a", "b"] {
        let loaded = store.load_room(room).await.unwrap();
        assert_eq!(loaded.last_seq, 3);
        let log: Vec<(u64, Bytes)> = loaded
            .updates
            .iter()
            .map(|u| (u.seq, u.data.clone()))
            .collect();
        let expected: Vec<(u64, Bytes)> = (1..=3)
            .map(|seq| (seq, Bytes::from(format!("{room}{seq}"))))
            .collect();
        assert_eq!(log, expected, "room {room}");
    }
    assert_eq!(
        store
            .append_updates("a", &[Bytes::from_static(b"a4")])
            .await
            .unwrap(),
        4
    );
    let pool = raw(path).await;
    let sql: String = sqlx::query("SELECT sql FROM sqlite_master WHERE name = 'updates'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert!(sql.contains("WITHOUT ROWID"), "{sql}");
}

/// The group's writes are `OR FAIL` (no statement journal): a statement that fails part-way
/// keeps its first rows, so only the group's rollback stands between them and the log. An
/// append whose second update collides with a row already there stores neither update, and
/// the room's last seq does not move.
#[tokio::test]
async fn a_group_that_fails_part_way_stores_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let path = path.to_str().unwrap();
    let store = SqliteStore::open(path, SyncMode::Full).await.unwrap();
    store
        .append_updates("a", &[Bytes::from_static(b"a1")])
        .await
        .unwrap();
    let pool = raw(path).await;
    // Seq 2 of room b is taken behind the store's back, so b's first append (seqs 1 and 2)
    // writes seq 1, then fails.
    sqlx::query("INSERT INTO updates (room, seq, data, created_at_ms) VALUES ('b', 2, x'00', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let failed = store
        .append_updates("b", &[Bytes::from_static(b"b1"), Bytes::from_static(b"b2")])
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let seqs: Vec<i64> = sqlx::query("SELECT seq FROM updates WHERE room = 'b' ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(seqs, vec![2], "the failed group's first row was kept");
    let rooms: i64 = sqlx::query("SELECT count(*) FROM rooms WHERE name = 'b'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rooms, 0);
    // The writer is usable again: the next group commits.
    assert_eq!(
        store
            .append_updates("a", &[Bytes::from_static(b"a2")])
            .await
            .unwrap(),
        2
    );
}
