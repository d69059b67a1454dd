//! SQLite's schema and group commit: what a migration keeps, and what a failed group leaves.

use std::str::FromStr;

use bytes::Bytes;
use plait_store::{Snapshot, SnapshotKind, SqliteStore, Store, SyncMode};
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
    let (_dir, path) = temp_db("old");
    let path = path.as_str();
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
/// append whose second update fails to insert stores neither update, and the room's last seq
/// does not move.
#[tokio::test]
async fn a_group_that_fails_part_way_stores_none_of_it() {
    let (_dir, path) = temp_db("p");
    let path = path.as_str();
    let store = SqliteStore::open(path, SyncMode::Full).await.unwrap();
    store
        .append_updates("a", &[Bytes::from_static(b"a1")])
        .await
        .unwrap();
    let pool = raw(path).await;
    // A trigger behind the store's back fails the insert of room b's seq 2 without undoing
    // the statement (`RAISE(FAIL)`), so b's first append (seqs 1 and 2) writes seq 1, then
    // fails.
    sqlx::query(
        "CREATE TRIGGER refuse_b2 BEFORE INSERT ON updates_recent \
         WHEN NEW.room = 'b' AND NEW.seq = 2 BEGIN SELECT RAISE(FAIL, 'b2 refused'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let failed = store
        .append_updates("b", &[Bytes::from_static(b"b1"), Bytes::from_static(b"b2")])
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(failed.unwrap_err().to_string().contains("b2 refused"));
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM updates_recent WHERE room = 'b'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "the failed group's first row was kept");
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

/// A database file `name` in a new temporary directory (removed when the guard drops).
fn temp_db(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.db"));
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// Rows in each table, of one room.
async fn rows_of(pool: &SqlitePool, room: &str) -> (i64, i64) {
    let mut counts = [0; 2];
    for (count, table) in counts.iter_mut().zip(["updates", "updates_recent"]) {
        *count = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE room = ?"))
            .bind(room)
            .fetch_one(pool)
            .await
            .unwrap();
    }
    (counts[0], counts[1])
}

fn numbered(room: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<Bytes> {
    seqs.map(|seq| Bytes::from(format!("{room}{seq}")))
        .collect()
}

/// Appends `room`'s updates numbered `seqs` (a room's whole log from seq 1 on, or the next
/// part of it) 100 to an append, each append a group of its own.
async fn append_numbered(store: &SqliteStore, room: &str, seqs: std::ops::RangeInclusive<u64>) {
    let seqs: Vec<u64> = seqs.collect();
    for part in seqs.chunks(100) {
        let (first, last) = (part[0], part[part.len() - 1]);
        let appended = store
            .append_updates(room, &numbered(room, first..=last))
            .await;
        assert_eq!(appended.unwrap(), last, "room {room}");
    }
}

fn compaction_at(seq: u64) -> Snapshot {
    Snapshot {
        up_to_seq: seq,
        kind: SnapshotKind::Compaction,
        data: Bytes::from(format!("state@{seq}")),
        state_vector: Bytes::from(format!("sv@{seq}")),
        created_at_ms: 0,
        values: None,
    }
}

/// Returns once a move the last append set off is over: the group-commit task runs it before
/// it takes the next group (this append, to a room of its own).
async fn settle(store: &SqliteStore) {
    store
        .append_updates("settle", &[Bytes::from_static(b"s")])
        .await
        .unwrap();
}

/// Small updates are written in insertion order and moved into the room-ordered log in
/// batches; big ones go straight there. Wherever a room's updates lie, every read sees the
/// whole log once, in order: a load, a load up to a time, the listing, a compaction, a
/// deleted room written again.
#[tokio::test]
async fn a_log_split_between_recent_and_room_ordered_rows_reads_whole_and_in_order() {
    let (_dir, path) = temp_db("split");
    let path = path.as_str();
    let store = SqliteStore::open(path, SyncMode::Normal).await.unwrap();
    let pool = raw(path).await;
    let big = Bytes::from(vec![7u8; 5_000]);
    // 1,500 small updates in each of two rooms, interleaved, and a big one in a after the
    // first move: it lands in `updates` above a's rows still waiting in `updates_recent`.
    let mut expected_a = Vec::new();
    let mut expected_b = Vec::new();
    for batch in 0..15u64 {
        let seqs = batch * 100 + 1..=batch * 100 + 100;
        let mut a = numbered("a", seqs.clone());
        if batch == 13 {
            a.push(big.clone());
        }
        store.append_updates("a", &a).await.unwrap();
        expected_a.extend(a);
        let b = numbered("b", seqs);
        store.append_updates("b", &b).await.unwrap();
        expected_b.extend(b);
    }
    let (moved, recent) = rows_of(&pool, "a").await;
    assert!(
        moved > 0 && recent > 0,
        "a's log is in one table: {moved} / {recent}"
    );
    let big_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM updates WHERE length(data) = 5000")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(big_rows, 1);
    for (room, expected) in [("a", &expected_a), ("b", &expected_b)] {
        let loaded = store.load_room(room).await.unwrap();
        let seqs: Vec<u64> = loaded.updates.iter().map(|u| u.seq).collect();
        assert_eq!(
            seqs,
            (1..=expected.len() as u64).collect::<Vec<_>>(),
            "{room}"
        );
        let data: Vec<Bytes> = loaded.updates.into_iter().map(|u| u.data).collect();
        assert_eq!(&data, expected, "{room}");
        let until = store.load_updates_until(room, 10, i64::MAX).await.unwrap();
        assert_eq!(until.len(), expected.len() - 10, "{room}");
        assert!(until.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "{room}");
    }
    let listed = store.list_rooms().await.unwrap();
    let a = listed.iter().find(|r| r.name == "a").unwrap();
    assert_eq!(a.n_updates, expected_a.len() as u64);
    assert_eq!(
        a.stored_bytes,
        expected_a.iter().map(|u| u.len() as u64).sum::<u64>()
    );

    // A compaction deletes the log below it in both tables.
    let last = expected_a.len() as u64;
    store
        .write_snapshot("a", &compaction_at(last - 5))
        .await
        .unwrap();
    let (moved, recent) = rows_of(&pool, "a").await;
    assert_eq!(moved + recent, 5);
    let loaded = store.load_room("a").await.unwrap();
    let seqs: Vec<u64> = loaded.updates.iter().map(|u| u.seq).collect();
    assert_eq!(seqs, (last - 4..=last).collect::<Vec<_>>());

    // A deleted room leaves nothing in either table; written again, it starts at seq 1 and the
    // next moves meet no seq of its old log.
    assert!(store.delete_room("b").await.unwrap());
    assert_eq!(rows_of(&pool, "b").await, (0, 0));
    append_numbered(&store, "b", 1..=3).await;
    append_numbered(&store, "c", 1..=2_500).await;
    let (moved_b, _) = rows_of(&pool, "b").await;
    assert_eq!(
        moved_b, 3,
        "the move after the delete did not take b's new rows"
    );
    let b = store.load_room("b").await.unwrap();
    assert_eq!(b.last_seq, 3);
    assert_eq!(
        b.updates.into_iter().map(|u| u.data).collect::<Vec<_>>(),
        numbered("b", 1..=3)
    );
}

/// A store opened on a file with rows waiting in `updates_recent` (a process stopped before
/// moving them) reads them, counts them, and moves them with its own.
#[tokio::test]
async fn rows_left_waiting_by_another_process_are_read_and_moved() {
    let (_dir, path) = temp_db("left");
    let path = path.as_str();
    {
        let store = SqliteStore::open(path, SyncMode::Normal).await.unwrap();
        append_numbered(&store, "a", 1..=1_900).await;
    }
    let pool = raw(path).await;
    assert_eq!(rows_of(&pool, "a").await, (0, 1_900));
    let store = SqliteStore::open(path, SyncMode::Normal).await.unwrap();
    assert_eq!(store.load_room("a").await.unwrap().updates.len(), 1_900);
    // 100 more cross the mark only when counted with those already waiting.
    store
        .append_updates("b", &numbered("b", 1..=100))
        .await
        .unwrap();
    settle(&store).await;
    assert_eq!(rows_of(&pool, "a").await, (1_900, 0));
    assert_eq!(rows_of(&pool, "b").await, (100, 0));
}

/// A move that meets a seq already in the room-ordered log (only a change made outside plait
/// can put one there) fails alone: appends go on, loads still read the waiting rows, and a
/// compaction of the room clears the way for the next move.
#[tokio::test]
async fn a_move_that_meets_a_taken_seq_fails_without_stopping_appends() {
    let (_dir, path) = temp_db("taken");
    let path = path.as_str();
    let store = SqliteStore::open(path, SyncMode::Normal).await.unwrap();
    let pool = raw(path).await;
    sqlx::query("INSERT INTO updates (room, seq, data, created_at_ms) VALUES ('b', 2, x'00', 0)")
        .execute(&pool)
        .await
        .unwrap();
    append_numbered(&store, "b", 1..=2).await;
    append_numbered(&store, "a", 1..=2_000).await;
    settle(&store).await;
    assert_eq!(
        rows_of(&pool, "a").await,
        (0, 2_000),
        "the move went through"
    );
    assert_eq!(store.load_room("a").await.unwrap().updates.len(), 2_000);
    store.write_snapshot("b", &compaction_at(2)).await.unwrap();
    assert_eq!(rows_of(&pool, "b").await, (0, 0));
    append_numbered(&store, "a", 2_001..=4_000).await;
    settle(&store).await;
    assert_eq!(rows_of(&pool, "a").await, (4_000, 0));
    let loaded = store.load_room("a").await.unwrap();
    assert_eq!(
        loaded
            .updates
            .into_iter()
            .map(|u| u.data)
            .collect::<Vec<_>>(),
        numbered("a", 1..=4_000)
    );
}
