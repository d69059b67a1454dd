//! PostgreSQL going away under a running server: it stays up, serves reads, holds writes up to
//! a bound, reports not-ready, closes writers past the bound with 1013, and after the database
//! returns everything converges and nothing is lost.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;
mod pg;

use std::time::Duration;

use support::TestClient;

async fn ready(server: &binary::Server) -> bool {
    server
        .get("/readyz")
        .await
        .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_loses_nothing() {
    let Some(cluster) = pg::Cluster::start() else {
        return;
    };
    // A small message limit too: the uncommitted bound is raised to at least one message.
    let server = binary::Server::start(
        &cluster.url(),
        &[
            "--max-uncommitted-bytes",
            "200000",
            "--max-message-bytes",
            "65536",
        ],
    )
    .await;
    let url = server.url("outage");
    let a = TestClient::connect(&url).await;
    let b = TestClient::connect(&url).await;
    a.insert(0, "before;");
    b.wait_text("before;").await;
    assert!(ready(&server).await);

    // A second room, loaded before the outage and never written.
    let _quiet_keeper = TestClient::connect(&server.url("outage-quiet")).await;
    cluster.down();
    a.insert(7, "during;");
    // Strict durability: the room now holds an edit the store lacks, so a newcomer is not
    // synced (its step 2 would carry that edit) until the store has it (issue 13 item 2: it
    // was answered from the document, so a client could hold an edit a crash then lost).
    let reader = TestClient::connect_raw(&url, yrs::Doc::new()).await;
    reader.send(plait_protocol::message::encode_sync_step1(
        &yrs::updates::encoder::Encode::encode_v1(&yrs::StateVector::default()),
    ));
    // Long enough for the commit under way to time out (2 s) and a retry to fail.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    assert!(
        !reader.text().contains("during;"),
        "a newcomer received an edit the store does not hold: {:?}",
        reader.text()
    );
    // A room with nothing unstored still syncs newcomers while the store is away.
    let quiet = TestClient::connect(&server.url("outage-quiet")).await;
    assert_eq!(quiet.text(), "");
    // Not ready while the store is away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ready(&server).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed 200 with the database down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Strict durability: nobody receives the held edit while it is not committed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.text(), "before;");

    // Past the bound, the writer is closed with "try again later" and keeps its edits.
    let big = "x".repeat(50_000);
    for _ in 0..40 {
        if !a.is_open() {
            break;
        }
        a.insert(0, &big);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _) = a.wait_closed().await;
    assert_eq!(code, 1013);

    cluster.up();
    // The held edits commit and reach b; the closed writer reconnects and resends the rest.
    b.wait(
        |_, _| b.text().contains("during;"),
        "held edit after the database returns",
    )
    .await;
    reader
        .wait(
            |_, _| reader.text().contains("before;during;"),
            "the deferred sync once the edit is stored",
        )
        .await;
    let a2 = TestClient::connect_with_doc(&url, a.doc.clone()).await;
    let expected = a2.text();
    b.wait_text(&expected).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ready(&server).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And all of it is durable.
    assert!(server.terminate().await.success());
    let server = binary::Server::start(&cluster.url(), &[]).await;
    let fresh = TestClient::connect(&server.url("outage")).await;
    assert_eq!(fresh.text(), expected);
    server.kill();
}
