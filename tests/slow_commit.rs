//! A slow commit (here: another process holding SQLite's write lock) neither stalls the room
//! nor lets anyone read an update before it is durable. The room applies and relays presence
//! while its commit waits; edits, and sync answers that would contain them, wait for it.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use support::TestClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_commit_holds_edits_but_not_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plait.db");
    let server = binary::Server::start(&format!("sqlite://{}", db.display()), &[]).await;
    let url = server.url("slow");
    let a = TestClient::connect(&url).await;
    let b = TestClient::connect(&url).await;
    a.insert(0, "a");
    b.wait_text("a").await;

    // Hold the database's write lock: the room's next commit waits for it.
    let mut locker = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let locked_at = Instant::now();
    a.insert(1, "b");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The room is not blocked by its commit: presence goes through at once (a blocked room
    // would relay it only after the commit gives up, 2 s later).
    b.set_awareness(77, 1, r#"{"user":"b"}"#);
    a.wait(
        |s, _| s.awareness.iter().any(|e| e.client == 77),
        "presence while a commit waits",
    )
    .await;
    assert!(
        locked_at.elapsed() < Duration::from_millis(1500),
        "presence took {:?}: the room waited for its commit",
        locked_at.elapsed()
    );
    // A second edit is applied meanwhile, and neither is relayed before it is durable.
    a.insert(2, "c");
    // A newcomer's sync waits for the commit too (its step 2 would contain the edits).
    let newcomer = tokio::spawn({
        let url = url.clone();
        async move { TestClient::connect(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.text(), "a", "an edit was relayed before it was committed");
    assert!(
        !newcomer.is_finished(),
        "a newcomer was synced with uncommitted edits"
    );

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    b.wait_text("abc").await;
    let c = newcomer.await.unwrap();
    c.wait_text("abc").await;

    // Both edits are durable: a restart on the same database has them.
    drop((a, b, c));
    server.terminate().await;
    let server = binary::Server::start(&format!("sqlite://{}", db.display()), &[]).await;
    let d = TestClient::connect(&server.url("slow")).await;
    assert_eq!(d.text(), "abc");
    server.terminate().await;
}
