//! One storage test suite, run against every implementation.

use bytes::Bytes;
use plait_store::{
    Error, MemoryStore, PgStore, Snapshot, SnapshotKind, SqliteStore, Store, StoreOptions,
    StoredValue, SyncMode,
};

/// The PostgreSQL test database; each test gets a schema of its own in it.
fn postgres_url() -> String {
    std::env::var("PLAIT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store in a fresh, empty schema of the test database, or `None` (with a loud note) when
/// PostgreSQL is unreachable. `PLAIT_REQUIRE_POSTGRES=1` (set by .ci/run) turns that skip into
/// a failure.
async fn postgres() -> Option<PgStore> {
    Some(
        PgStore::open_with(postgres_schema().await?, 4)
            .await
            .unwrap(),
    )
}

/// Connect options for a fresh, empty schema (several stores opened with them share it, as
/// several plait processes share one database).
async fn postgres_schema() -> Option<sqlx::postgres::PgConnectOptions> {
    use sqlx::postgres::PgConnectOptions;
    use std::str::FromStr;
    let url = postgres_url();
    let admin = match sqlx::PgPool::connect(&url).await {
        Ok(pool) => pool,
        Err(e) => {
            if std::env::var("PLAIT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("PostgreSQL at {url} is required (PLAIT_REQUIRE_POSTGRES=1): {e}");
            }
            eprintln!("SKIPPED PostgreSQL: {url} unreachable ({e}); set PLAIT_TEST_POSTGRES_URL");
            return None;
        }
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&sql).execute(&admin).await.unwrap();
    }
    Some(
        PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]),
    )
}

async fn stores() -> (Vec<(&'static str, Box<dyn Store>)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/plait.db");
    let sqlite = SqliteStore::open(path.to_str().unwrap(), SyncMode::Full)
        .await
        .unwrap();
    let mut stores: Vec<(&'static str, Box<dyn Store>)> = vec![
        ("memory", Box::new(MemoryStore::default())),
        ("sqlite", Box::new(sqlite)),
    ];
    if let Some(pg) = postgres().await {
        stores.push(("postgres", Box::new(pg)));
    }
    (stores, dir)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A merge that keeps the new state, like the replacing store of old.
/// A compaction snapshot covering the log up to `seq`, its data naming the seq.
fn compaction_at(seq: u64) -> Snapshot {
    Snapshot {
        up_to_seq: seq,
        kind: SnapshotKind::Compaction,
        data: b(&format!("state@{seq}")),
        state_vector: b(&format!("sv@{seq}")),
        created_at_ms: seq as i64,
        values: None,
    }
}

fn replace(_stored: &StoredValue, new: &StoredValue) -> Result<Bytes, String> {
    Ok(new.state.clone())
}

/// A merge that records its arguments in order: `stored+new`.
fn join(stored: &StoredValue, new: &StoredValue) -> Result<Bytes, String> {
    let text = |v: &StoredValue| String::from_utf8_lossy(&v.state).into_owned();
    Ok(b(&format!("{}+{}", text(stored), text(new))))
}

/// A merge that adds decimal numbers: not idempotent, so a merge done against a stale read
/// (a lost update) shows in the sum.
fn sum(stored: &StoredValue, new: &StoredValue) -> Result<Bytes, String> {
    let n = |v: &StoredValue| -> Result<u64, String> {
        String::from_utf8_lossy(&v.state)
            .parse()
            .map_err(|e| format!("{e}"))
    };
    Ok(b(&(n(stored)? + n(new)?).to_string()))
}

fn value(name: &str, kind: &str, state: &str) -> StoredValue {
    StoredValue {
        name: name.into(),
        kind: kind.into(),
        state: b(state),
    }
}

#[tokio::test]
async fn unknown_room_loads_empty() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        let room = store.load_room("nope").await.unwrap();
        assert_eq!(room.last_seq, 0, "{name}");
        assert!(room.snapshot.is_none() && room.updates.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn appends_assign_consecutive_seqs_per_room() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        assert_eq!(
            store.append_updates("a", &[b("1"), b("2")]).await.unwrap(),
            2
        );
        assert_eq!(store.append_updates("b", &[b("x")]).await.unwrap(), 1);
        assert_eq!(store.append_updates("a", &[b("3")]).await.unwrap(), 3);
        let a = store.load_room("a").await.unwrap();
        assert_eq!(a.last_seq, 3, "{name}");
        let seqs: Vec<_> = a.updates.iter().map(|u| (u.seq, u.data.clone())).collect();
        assert_eq!(seqs, vec![(1, b("1")), (2, b("2")), (3, b("3"))], "{name}");
        assert!(store.append_updates("a", &[]).await.is_err(), "{name}");
    }
}

#[tokio::test]
async fn compaction_replaces_the_log_it_covers() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        store
            .append_updates("r", &[b("1"), b("2"), b("3")])
            .await
            .unwrap();
        let snap = compaction_at(2);
        store.write_snapshot("r", &snap).await.unwrap();
        let loaded = store.load_room("r").await.unwrap();
        assert_eq!(loaded.snapshot.as_ref(), Some(&snap), "{name}");
        assert_eq!(loaded.updates.len(), 1, "{name}");
        assert_eq!(loaded.updates[0].seq, 3, "{name}");
        let summary = store.list_rooms().await.unwrap();
        assert_eq!(summary.len(), 1, "{name}");
        assert_eq!(summary[0].n_updates, 1, "{name}");
        assert_eq!(summary[0].last_seq, 3, "{name}");
        assert_eq!(summary[0].stored_bytes, 1 + 7, "{name}");
        // A second compaction replaces the first.
        let snap2 = Snapshot {
            up_to_seq: 3,
            data: b("state@3"),
            ..snap
        };
        store.write_snapshot("r", &snap2).await.unwrap();
        let loaded = store.load_room("r").await.unwrap();
        assert_eq!(loaded.snapshot, Some(snap2), "{name}");
        assert!(loaded.updates.is_empty(), "{name}");
        // Seqs keep counting after compaction.
        assert_eq!(
            store.append_updates("r", &[b("4")]).await.unwrap(),
            4,
            "{name}"
        );
    }
}

/// Pins issue 13 item 1: process P2, whose document holds seqs up to 15, compacts after P1
/// compacted at 20. The stale compaction must not delete the newer one: seqs 16-20 live only in
/// P1's snapshot, so deleting it lost them for good.
#[tokio::test]
async fn a_stale_compaction_never_replaces_a_newer_one() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        let log: Vec<Bytes> = (1..=22).map(|i| b(&i.to_string())).collect();
        store.append_updates("r", &log).await.unwrap();
        store.write_snapshot("r", &compaction_at(20)).await.unwrap();
        store.write_snapshot("r", &compaction_at(15)).await.unwrap();
        let loaded = store.load_room("r").await.unwrap();
        assert_eq!(loaded.snapshot, Some(compaction_at(20)), "{name}");
        let seqs: Vec<u64> = loaded.updates.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, vec![21, 22], "{name}");
        let kept = store.list_snapshots("r").await.unwrap();
        assert_eq!(
            kept.len(),
            1,
            "{name}: the stale snapshot is not kept beside it"
        );
        assert_eq!(kept[0].up_to_seq, 20, "{name}");
    }
}

#[tokio::test]
async fn sqlite_keeps_commits_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let path = path.to_str().unwrap();
    {
        let store = SqliteStore::open(path, SyncMode::Full).await.unwrap();
        store.append_updates("r", &[b("a"), b("b")]).await.unwrap();
    }
    let store = SqliteStore::open(path, SyncMode::Full).await.unwrap();
    let r = store.load_room("r").await.unwrap();
    assert_eq!(r.updates.len(), 2);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn bad_urls_are_refused_with_a_clear_message() {
    let err = plait_store::open("mysql://x", StoreOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expected sqlite://PATH"), "{err}");
    // An unreachable database is an error, and its password never appears in it.
    let err = plait_store::open(
        "postgres://u:secret@127.0.0.1:1/db",
        StoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(!format!("{err}").contains("secret"), "{err}");
}

#[tokio::test]
async fn values_are_upserted_per_room() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        let v = |n: &str, state: &str| value(n, "gcounter", state);
        store
            .put_values("r", &[v("likes", "1"), v("views", "2")], &replace)
            .await
            .unwrap();
        store
            .put_values("r", &[v("likes", "3")], &replace)
            .await
            .unwrap();
        store
            .put_values("other", &[v("likes", "9")], &replace)
            .await
            .unwrap();
        let got = store.load_values("r").await.unwrap();
        assert_eq!(got, vec![v("likes", "3"), v("views", "2")], "{name}");
        assert!(
            store.load_values("none").await.unwrap().is_empty(),
            "{name}"
        );
    }
}

/// `put_values` merges a stored value with the new one through the caller's merge, called as
/// `merge(stored, new)`; new names are inserted without it; a stored row keeps its kind; the
/// rows as stored come back by name.
#[tokio::test]
async fn put_values_merges_with_the_stored_row() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        let first = store
            .put_values("m", &[value("b", "gcounter", "1")], &join)
            .await
            .unwrap();
        assert_eq!(first, vec![value("b", "gcounter", "1")], "{name}");
        let written = store
            .put_values(
                "m",
                &[value("c", "lww", "x"), value("b", "lww", "2")],
                &join,
            )
            .await
            .unwrap();
        let expected = vec![value("b", "gcounter", "1+2"), value("c", "lww", "x")];
        assert_eq!(written, expected, "{name}");
        assert_eq!(store.load_values("m").await.unwrap(), expected, "{name}");
    }
}

/// A refused merge fails the whole call with `Error::Merge` and writes nothing of it, not
/// even the rows that came before the refused one.
#[tokio::test]
async fn a_refused_merge_writes_nothing() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        store
            .put_values("m", &[value("z", "gcounter", "1")], &replace)
            .await
            .unwrap();
        let refuse = |_: &StoredValue, _: &StoredValue| -> Result<Bytes, String> {
            Err("kinds differ".into())
        };
        let err = store
            .put_values(
                "m",
                &[value("a", "gcounter", "new"), value("z", "gcounter", "2")],
                &refuse,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Merge { name, reason } if name == "z" && reason == "kinds differ"),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("kinds differ"), "{name}: {err}");
        assert_eq!(
            store.load_values("m").await.unwrap(),
            vec![value("z", "gcounter", "1")],
            "{name}"
        );
    }
}

/// Concurrent writers of one value (tasks here; processes in production) each merge with what
/// the others stored: with a non-idempotent merge (a sum) a lost update shows as a smaller
/// total. Two names written in both orders also exercise the lock order.
#[tokio::test]
async fn concurrent_put_values_lose_no_merge() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(store);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        let mut rows = vec![
                            value("hits", "gcounter", "1"),
                            value("alt", "gcounter", "2"),
                        ];
                        if i % 2 == 0 {
                            rows.reverse();
                        }
                        store.put_values("busy", &rows, &sum).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            store.load_values("busy").await.unwrap(),
            vec![
                value("alt", "gcounter", "160"),
                value("hits", "gcounter", "80")
            ],
            "{name}"
        );
    }
}

#[tokio::test]
async fn concurrent_appends_to_one_room_get_unique_seqs() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(store);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for j in 0..10 {
                        seqs.push(
                            store
                                .append_updates("shared", &[b(&format!("{i}-{j}"))])
                                .await
                                .unwrap(),
                        );
                    }
                    seqs
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=80).collect::<Vec<u64>>(), "{name}");
        assert_eq!(
            store.load_room("shared").await.unwrap().updates.len(),
            80,
            "{name}"
        );
    }
}

/// Many rooms appending at once, several appends in flight per room, land in one group
/// commit together: each append's returned seq must name its own updates, in order, and each
/// room's seqs must run 1..=n without a gap. On PostgreSQL the appends alternate between two
/// stores on one database, as two plait processes would.
#[tokio::test]
async fn appends_from_many_rooms_at_once_each_get_their_own_seqs() {
    let (mut stores, _dir) = stores().await;
    let mut second: Option<std::sync::Arc<dyn Store>> = None;
    if let Some(options) = postgres_schema().await {
        let first = PgStore::open_with(options.clone(), 4).await.unwrap();
        second = Some(std::sync::Arc::new(
            PgStore::open_with(options, 4).await.unwrap(),
        ));
        stores.retain(|(name, _)| *name != "postgres");
        stores.push(("postgres, two stores", Box::new(first)));
    }
    for (name, store) in stores {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(store);
        let other = if name.starts_with("postgres") {
            second.clone().unwrap()
        } else {
            store.clone()
        };
        let tasks: Vec<_> = (0..40)
            .map(|task| {
                let store = if task % 2 == 0 {
                    store.clone()
                } else {
                    other.clone()
                };
                // Rooms in both name orders, so two groups lock overlapping rooms.
                let room = format!(
                    "room-{}",
                    if task % 4 < 2 {
                        task % 10
                    } else {
                        9 - task % 10
                    }
                );
                tokio::spawn(async move {
                    let mut appended = Vec::new();
                    for j in 0..10 {
                        let updates: Vec<Bytes> = (0..=(task + j) % 3)
                            .map(|k| b(&format!("{task}/{j}/{k}")))
                            .collect();
                        let last = store.append_updates(&room, &updates).await.unwrap();
                        appended.push((room.clone(), last, updates));
                    }
                    appended
                })
            })
            .collect();
        let mut appended = Vec::new();
        for task in tasks {
            appended.extend(task.await.unwrap());
        }
        for room in (0..10).map(|i| format!("room-{i}")) {
            let stored = store.load_room(&room).await.unwrap();
            let seqs: Vec<u64> = stored.updates.iter().map(|u| u.seq).collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as u64).collect::<Vec<_>>(),
                "{name} {room}"
            );
            for (_, last, updates) in appended.iter().filter(|(r, ..)| *r == room) {
                let first = (*last as usize) - updates.len();
                let rows: Vec<&Bytes> = stored.updates[first..*last as usize]
                    .iter()
                    .map(|u| &u.data)
                    .collect();
                assert_eq!(rows, updates.iter().collect::<Vec<_>>(), "{name} {room}");
            }
        }
        let total: usize = appended.iter().map(|(_, _, u)| u.len()).sum();
        let mut stored_total = 0;
        for i in 0..10 {
            stored_total += store
                .load_room(&format!("room-{i}"))
                .await
                .unwrap()
                .updates
                .len();
        }
        assert_eq!(stored_total, total, "{name}");
    }
}

#[tokio::test]
async fn history_snapshots_are_listed_loaded_and_pruned() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        store.append_updates("h", &[b("1"), b("2")]).await.unwrap();
        for (t, seq) in [(1000, 1), (2000, 2), (3000, 2)] {
            let snap = Snapshot {
                up_to_seq: seq,
                kind: SnapshotKind::History,
                data: b(&format!("state@{t}")),
                state_vector: b("sv"),
                created_at_ms: t,
                values: (t != 1000).then(|| b(&format!("values@{t}"))),
            };
            store.write_snapshot("h", &snap).await.unwrap();
        }
        let list = store.list_snapshots("h").await.unwrap();
        assert_eq!(list.len(), 3, "{name}");
        assert_eq!(list[1].created_at_ms, 2000, "{name}");
        let second = store.load_snapshot("h", list[1].id).await.unwrap().unwrap();
        assert_eq!(second.data, b("state@2000"), "{name}");
        // Values travel with the snapshot; a snapshot without them reads back as None.
        assert_eq!(second.values, Some(b("values@2000")), "{name}");
        let first = store.load_snapshot("h", list[0].id).await.unwrap().unwrap();
        assert_eq!(first.values, None, "{name}");
        let newest = store.load_room("h").await.unwrap().snapshot.unwrap();
        assert_eq!(newest.values, Some(b("values@3000")), "{name}");
        // History snapshots do not remove the log.
        assert_eq!(
            store
                .load_updates_until("h", 0, i64::MAX)
                .await
                .unwrap()
                .len(),
            2,
            "{name}"
        );
        // Pruning keeps the newest history point even when it is old.
        assert_eq!(store.prune_history("h", 10_000).await.unwrap(), 2, "{name}");
        let left = store.list_snapshots("h").await.unwrap();
        assert_eq!(left.len(), 1, "{name}");
        assert_eq!(left[0].created_at_ms, 3000, "{name}");
    }
}

/// Issue 13 item 7: a `load_room` abandoned half-way (a room's load deadline) must not leave
/// its pooled SQLite connection inside a transaction, where every later load on it fails (or
/// reads an old snapshot of the database forever).
#[tokio::test]
async fn an_abandoned_load_leaves_no_open_transaction() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        store.append_updates("r", &[b("1")]).await.unwrap();
        for i in 0..200u32 {
            // Polled a few times, then dropped wherever it got to.
            let _ = tokio::time::timeout(
                std::time::Duration::from_micros(u64::from(i % 7) * 50),
                store.load_room("r"),
            )
            .await;
            let loaded = store.load_room("r").await;
            assert!(loaded.is_ok(), "{name}, round {i}: {loaded:?}");
        }
        store.append_updates("r", &[b("2")]).await.unwrap();
        for _ in 0..8 {
            let loaded = store.load_room("r").await.unwrap();
            assert_eq!(loaded.last_seq, 2, "{name}: a load saw an old snapshot");
        }
    }
}

#[tokio::test]
async fn deleting_a_room_removes_everything_of_it_and_nothing_else() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        store
            .append_updates("gone", &[b("1"), b("2")])
            .await
            .unwrap();
        store.append_updates("kept", &[b("x")]).await.unwrap();
        let snap = Snapshot {
            up_to_seq: 1,
            kind: SnapshotKind::History,
            data: b("state"),
            state_vector: b("sv"),
            created_at_ms: 1,
            values: None,
        };
        store.write_snapshot("gone", &snap).await.unwrap();
        store
            .put_values("gone", &[value("likes", "gcounter", "1")], &replace)
            .await
            .unwrap();
        assert!(store.delete_room("gone").await.unwrap(), "{name}");
        let loaded = store.load_room("gone").await.unwrap();
        assert_eq!(loaded.last_seq, 0, "{name}");
        assert!(
            loaded.snapshot.is_none() && loaded.updates.is_empty(),
            "{name}"
        );
        assert!(
            store.list_snapshots("gone").await.unwrap().is_empty(),
            "{name}"
        );
        assert!(
            store.load_values("gone").await.unwrap().is_empty(),
            "{name}"
        );
        assert!(!store.delete_room("gone").await.unwrap(), "{name}");
        // It starts again at seq 1; the other room is untouched.
        assert_eq!(
            store.append_updates("gone", &[b("new")]).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(store.load_room("kept").await.unwrap().last_seq, 1, "{name}");
    }
}

#[tokio::test]
async fn revocations_are_kept_in_order() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        assert!(store.list_revocations().await.unwrap().is_empty(), "{name}");
        let by_user = plait_store::Revocation {
            user: Some("ann".into()),
            created_at_ms: 1,
            ..Default::default()
        };
        let by_time = plait_store::Revocation {
            issued_before: Some(1_700_000_000),
            created_at_ms: 2,
            ..Default::default()
        };
        store.add_revocation(&by_user).await.unwrap();
        store.add_revocation(&by_time).await.unwrap();
        assert_eq!(
            store.list_revocations().await.unwrap(),
            vec![by_user, by_time],
            "{name}"
        );
    }
}

#[tokio::test]
async fn webhook_cursors_are_per_target_and_room() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        store.set_webhook_cursor("t1", "a", Some(3)).await.unwrap();
        store.set_webhook_cursor("t1", "a", Some(5)).await.unwrap();
        store.set_webhook_cursor("t1", "b", Some(1)).await.unwrap();
        store.set_webhook_cursor("t2", "a", Some(9)).await.unwrap();
        let mut t1 = store.webhook_cursors("t1").await.unwrap();
        t1.sort();
        assert_eq!(t1, vec![("a".into(), 5), ("b".into(), 1)], "{name}");
        store.set_webhook_cursor("t1", "a", None).await.unwrap();
        assert_eq!(
            store.webhook_cursors("t1").await.unwrap(),
            vec![("b".into(), 1)],
            "{name}"
        );
        assert_eq!(
            store.webhook_cursors("t2").await.unwrap(),
            vec![("a".into(), 9)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        assert!(
            store.claim_lease("job", "a", 60_000).await.unwrap(),
            "{name}"
        );
        // Held: another holder is refused, the holder renews.
        assert!(
            !store.claim_lease("job", "b", 60_000).await.unwrap(),
            "{name}"
        );
        assert!(
            store.claim_lease("job", "a", 60_000).await.unwrap(),
            "{name}"
        );
        // Another lease is independent.
        assert!(
            store.claim_lease("other", "b", 60_000).await.unwrap(),
            "{name}"
        );
        // Expired: taken over.
        assert!(store.claim_lease("short", "a", -1).await.unwrap(), "{name}");
        assert!(
            store.claim_lease("short", "b", 60_000).await.unwrap(),
            "{name}"
        );
        assert!(
            !store.claim_lease("short", "a", 60_000).await.unwrap(),
            "{name}"
        );
    }
}

/// Writes abandoned half-way (a caller's deadline) must not leave the SQLite write connection
/// inside a transaction: a `BEGIN` whose future was dropped before it answered leaves one that
/// no `Transaction` rolls back, and every later write would nest in it as a savepoint, commit
/// nothing, and vanish from other connections' reads.
#[tokio::test]
async fn an_abandoned_write_leaves_no_open_transaction() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        for i in 0..200u32 {
            let _ = tokio::time::timeout(
                std::time::Duration::from_micros(u64::from(i % 7) * 30),
                store.put_values("r", &[value("likes", "gcounter", "1")], &replace),
            )
            .await;
            let seq = store.append_updates("r", &[b("u")]).await.unwrap();
            // Loads read through other connections: they see only what was committed.
            let loaded = store.load_room("r").await.unwrap();
            assert_eq!(
                loaded.last_seq, seq,
                "{name}, round {i}: the append was not committed"
            );
        }
    }
}

/// The group commit's connection, dropped by the database (a restart, an administrator, a
/// proxy's idle timeout), is opened again, and the group that met the dead connection is
/// written on the new one: no append fails, and the log keeps every update once, in order.
/// (On `e141357` the first append after the drop failed, and its rooms waited for a retry.)
#[tokio::test]
async fn group_commits_survive_the_database_dropping_their_connection() {
    use sqlx::Connection;
    let Some(options) = postgres_schema().await else {
        return;
    };
    let app = format!("plait-test-{}-reconnect", std::process::id());
    let store = PgStore::open_with(options.application_name(&app), 2)
        .await
        .unwrap();
    assert_eq!(store.append_updates("r", &[b("1")]).await.unwrap(), 1);
    let mut admin = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    let dropped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS t",
    )
    .bind(&app)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(dropped >= 1, "no connection of the store was found to drop");
    let mut confirmed = vec![b("1")];
    for attempt in 2..=3_u64 {
        let update = b(&attempt.to_string());
        let appended = store
            .append_updates("r", std::slice::from_ref(&update))
            .await;
        assert_eq!(
            appended.unwrap(),
            attempt,
            "append {attempt}, after the drop"
        );
        confirmed.push(update);
    }
    let loaded = store.load_room("r").await.unwrap();
    let stored: Vec<_> = loaded.updates.iter().map(|u| u.data.clone()).collect();
    assert_eq!(stored, confirmed);
    assert_eq!(loaded.last_seq, confirmed.len() as u64);
}

/// A compaction on PostgreSQL deletes the log it covers after its snapshot is committed, so
/// appends to the room are not held up by that delete, which with many rooms writing dirties a
/// heap page per row. Here the delete is made to wait for a row lock another connection holds:
/// with the delete inside the snapshot's transaction, which holds the room's row, the append
/// waited for it too.
#[tokio::test]
async fn appends_to_a_room_go_on_while_its_compaction_deletes_the_log() {
    use sqlx::Connection;
    use std::time::Duration;
    let Some(options) = postgres_schema().await else {
        return;
    };
    let app = format!("plait-test-{}-trim", std::process::id());
    let store = std::sync::Arc::new(
        PgStore::open_with(options.clone().application_name(&app), 2)
            .await
            .unwrap(),
    );
    store
        .append_updates("r", &[b("1"), b("2"), b("3")])
        .await
        .unwrap();
    let mut holder = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT seq FROM updates WHERE room = 'r' AND seq = 1 FOR UPDATE")
        .execute(&mut *held)
        .await
        .unwrap();
    let snap = compaction_at(2);
    let compaction = tokio::spawn({
        let (store, snap) = (store.clone(), snap.clone());
        async move { store.write_snapshot("r", &snap).await }
    });
    // Until the compaction's delete waits for the held row.
    let mut admin = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    let mut waiting = false;
    for _ in 0..500 {
        waiting = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = $1 \
             AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM updates%'",
        )
        .bind(&app)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        waiting,
        "the compaction's delete never waited for the held row"
    );
    let appended =
        tokio::time::timeout(Duration::from_secs(5), store.append_updates("r", &[b("4")])).await;
    // Meanwhile the rows below the snapshot are still in the table (as they stay when the
    // delete fails): the listing counts only the log a load reads, the snapshot's and after.
    let listed = store.list_rooms().await;
    held.rollback().await.unwrap();
    assert_eq!(
        appended
            .expect("the append waited for the compaction's delete")
            .unwrap(),
        4
    );
    let listed = listed.unwrap();
    let r = listed.iter().find(|room| room.name == "r").unwrap();
    assert_eq!(
        (r.n_updates, r.stored_bytes),
        (2, snap.data.len() as u64 + 2),
        "the listing counted the log below the snapshot"
    );
    compaction.await.unwrap().unwrap();
    let loaded = store.load_room("r").await.unwrap();
    assert_eq!(loaded.snapshot, Some(snap));
    let seqs: Vec<u64> = loaded.updates.iter().map(|u| u.seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM updates WHERE room = 'r'")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(rows, 2, "the log below the snapshot was not deleted");
}

/// A group larger than one insert statement holds (SQLite writes 500 rows per statement):
/// every update stored once, in order, under the seqs its append was given.
#[tokio::test]
async fn an_append_of_more_updates_than_a_statement_holds_is_stored_in_order() {
    let (stores, _dir) = stores().await;
    for (name, store) in stores {
        let many: Vec<Bytes> = (0..1_201).map(|i| b(&format!("a{i}"))).collect();
        let few = [b("b0"), b("b1")];
        let (a, b_seq) = tokio::join!(
            store.append_updates("a", &many),
            store.append_updates("b", &few)
        );
        assert_eq!(a.unwrap(), 1_201, "{name}");
        assert_eq!(b_seq.unwrap(), 2, "{name}");
        for (room, expected) in [("a", &many[..]), ("b", &few[..])] {
            let loaded = store.load_room(room).await.unwrap();
            let stored: Vec<_> = loaded.updates.iter().map(|u| u.data.clone()).collect();
            assert_eq!(stored, expected, "{name}: room {room}");
            let seqs: Vec<u64> = loaded.updates.iter().map(|u| u.seq).collect();
            assert_eq!(
                seqs,
                (1..=expected.len() as u64).collect::<Vec<_>>(),
                "{name}"
            );
        }
    }
}
