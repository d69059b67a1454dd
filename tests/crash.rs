//! The real binary, SIGKILLed while clients write: everything any client received from the
//! server is still there after a restart.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;
mod pg;

use std::time::Duration;

use support::TestClient;
use yrs::{ReadTxn, StateVector, Transact};

/// Whether `have` includes every (client, clock) of `need`.
fn covers(have: &StateVector, need: &StateVector) -> bool {
    need.iter()
        .all(|(client, clock)| have.get(client) >= *clock)
}

/// Cycles per store: `PLAIT_CRASH_CYCLES` (CI runs 50), else a quick 5.
fn cycles() -> u64 {
    std::env::var("PLAIT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Writers type concurrently; the server is SIGKILLed after a pseudo-random time; after a
/// restart, everything an observing client had received must be in the room.
async fn crash_cycles(store: &str) {
    let n = cycles();
    let mut seed = 0x9e37_79b9_u64;
    let mut lost_cycles = 0;
    let started = std::time::Instant::now();
    for cycle in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let server = binary::Server::start(store, &[]).await;
        // A room per cycle keeps cycles equally fast (the document does not grow across them).
        let room = format!("crash-{cycle}");
        let url = server.url(&room);
        let observer = TestClient::connect(&url).await;
        let writers: Vec<TestClient> =
            futures_util::future::join_all((0..3).map(|_| TestClient::connect(&url))).await;
        // One edit through before the clock starts: on a loaded machine the first commit can
        // take longer than the shortest typing window, and a cycle where the observer saw
        // nothing checks nothing.
        writers[0].insert(0, "start ");
        observer.wait_text("start ").await;
        let typing = async {
            for i in 0.. {
                for (w, c) in writers.iter().enumerate() {
                    c.insert(0, &format!("{cycle}.{w}.{i} "));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(100 + seed % 400), typing).await;
        server.kill();
        // Let frames already in the observer's socket arrive, then freeze what it saw.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = observer.doc.transact().state_vector();
        assert!(
            seen.iter().count() > 0,
            "the observer received edits before the kill"
        );
        let server = binary::Server::start(store, &[]).await;
        let fresh = TestClient::connect(&server.url(&room)).await;
        let stored = fresh.doc.transact().state_vector();
        if !covers(&stored, &seen) {
            lost_cycles += 1;
            eprintln!("cycle {cycle}: lost updates: stored {stored:?}, seen {seen:?}");
        }
        server.kill();
    }
    eprintln!(
        "{n} SIGKILL cycles on {} in {:?}: {lost_cycles} lost anything",
        store.split(':').next().unwrap_or(""),
        started.elapsed()
    );
    assert_eq!(
        lost_cycles, 0,
        "updates that clients had received were lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_that_was_broadcast_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_cycles(&format!("sqlite://{}/plait.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_that_was_broadcast_postgres() {
    let Some(url) = pg::fresh_database("plait_crash").await else {
        return;
    };
    crash_cycles(&url).await;
}

/// SIGTERM with many loaded rooms holding unflushed edits (relaxed durability, so they are
/// not yet committed): shutdown commits every room within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_every_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    let relaxed = [
        "--durability",
        "relaxed-may-lose-recent-edits",
        "--flush-interval-ms",
        "600000",
    ];
    let server = binary::Server::start(&store, &relaxed).await;
    let mut clients = Vec::new();
    for i in 0..40 {
        let url = server.url(&format!("room-{i}"));
        let writer = TestClient::connect(&url).await;
        let reader = TestClient::connect(&url).await;
        writer.insert(0, &format!("unflushed {i}"));
        clients.push((writer, reader));
    }
    for (i, (_, reader)) in clients.iter().enumerate() {
        reader.wait_text(&format!("unflushed {i}")).await;
    }
    let started = std::time::Instant::now();
    assert!(server.terminate().await.success());
    eprintln!(
        "shutdown with 40 unflushed rooms took {:?}",
        started.elapsed()
    );
    let server = binary::Server::start(&store, &[]).await;
    for i in 0..40 {
        let fresh = TestClient::connect(&server.url(&format!("room-{i}"))).await;
        assert_eq!(fresh.text(), format!("unflushed {i}"), "room {i}");
    }
    server.kill();
}

/// Issue 13: the crash test covers the cluster. Two processes share one PostgreSQL and one
/// Redis, with writers on both and compaction after a handful of updates (so compactions of
/// the two processes race, the defect of a stale compaction deleting a newer one). Each cycle
/// SIGKILLs one of them at a pseudo-random moment while everyone types, and restarts it;
/// everything any client had received must then be in the store, read by a fresh process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_either_cluster_process_loses_nothing() {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        assert!(!pg::required(), "Redis is required at 127.0.0.1:6379");
        eprintln!("SKIPPED: no Redis at 127.0.0.1:6379");
        return;
    }
    let Some(db) = pg::fresh_database("plait_crash_cluster").await else {
        return;
    };
    let prefix = format!("crash-cluster-{}", std::process::id());
    let args = [
        "--redis",
        "redis://127.0.0.1:6379",
        "--redis-prefix",
        prefix.as_str(),
        "--compact-after-updates",
        "8",
        "--compact-after-bytes",
        "2048",
    ];
    let n = cycles();
    let mut seed = 0x2545_f491_u64;
    let mut servers = [
        binary::Server::start(&db, &args).await,
        binary::Server::start(&db, &args).await,
    ];
    let mut lost_cycles = 0;
    let started = std::time::Instant::now();
    for cycle in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A room per cycle keeps cycles equally fast; each still sees hundreds of updates, so
        // dozens of compactions by both processes.
        let room = format!("cluster-crash-{cycle}");
        let urls = [servers[0].url(&room), servers[1].url(&room)];
        let observers = [
            TestClient::connect(&urls[0]).await,
            TestClient::connect(&urls[1]).await,
        ];
        let writers: Vec<TestClient> =
            futures_util::future::join_all((0..4).map(|w| TestClient::connect(&urls[w % 2]))).await;
        let typing = async {
            for i in 0.. {
                for (w, c) in writers.iter().enumerate() {
                    c.insert(0, &format!("{cycle}.{w}.{i} "));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(100 + seed % 400), typing).await;
        let victim = (seed >> 9) as usize % 2;
        let restarted = binary::Server::start(&db, &args).await;
        std::mem::replace(&mut servers[victim], restarted).kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut seen = observers[0].doc.transact().state_vector();
        seen.merge(observers[1].doc.transact().state_vector());
        drop(writers);
        drop(observers);
        // A process that never had the room loaded reads it from the store alone.
        let fresh_process = binary::Server::start(&db, &args).await;
        let fresh = TestClient::connect(&fresh_process.url(&room)).await;
        let stored = fresh.doc.transact().state_vector();
        if !covers(&stored, &seen) {
            lost_cycles += 1;
            eprintln!("cycle {cycle}: lost updates: stored {stored:?}, seen {seen:?}");
        }
        fresh_process.kill();
    }
    eprintln!(
        "{n} SIGKILL cycles of a two-process cluster in {:?}: {lost_cycles} lost anything",
        started.elapsed()
    );
    assert_eq!(
        lost_cycles, 0,
        "updates that clients had received were lost"
    );
}
