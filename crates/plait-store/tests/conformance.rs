//! One storage test suite, run against every implementation.

use bytes::Bytes;
use plait_store::{MemoryStore, Snapshot, SnapshotKind, SqliteStore, Store, SyncMode};

async fn stores() -> (Vec<(&'static str, Box<dyn Store>)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/plait.db");
    let sqlite = SqliteStore::open(path.to_str().unwrap(), SyncMode::Full)
        .await
        .unwrap();
    (
        vec![
            ("memory", Box::new(MemoryStore::default()) as Box<dyn Store>),
            ("sqlite", Box::new(sqlite)),
        ],
        dir,
    )
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
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
        let snap = Snapshot {
            up_to_seq: 2,
            kind: SnapshotKind::Compaction,
            data: b("state@2"),
            state_vector: b("sv@2"),
            created_at_ms: 5,
        };
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
    let err = plait_store::open("mysql://x", SyncMode::Full)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expected sqlite://PATH"), "{err}");
}
