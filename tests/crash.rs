//! The real binary, SIGKILLed while clients write: everything any client received from the
//! server is still there after a restart.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;

use std::time::Duration;

use support::TestClient;
use yrs::{ReadTxn, StateVector, Transact};

/// Whether `have` includes every (client, clock) of `need`.
fn covers(have: &StateVector, need: &StateVector) -> bool {
    need.iter()
        .all(|(client, clock)| have.get(client) >= *clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_that_was_broadcast() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    for cycle in 0..3 {
        let server = binary::Server::start(&store, &[]).await;
        let url = server.url("crash");
        let observer = TestClient::connect(&url).await;
        let writers: Vec<TestClient> =
            futures_util::future::join_all((0..3).map(|_| TestClient::connect(&url))).await;
        // Writers type as fast as they can, pausing only to let the kill land mid-stream.
        let typing = async {
            for i in 0.. {
                for (w, c) in writers.iter().enumerate() {
                    c.insert(0, &format!("{cycle}{w}{i} "));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(300 + 150 * cycle), typing).await;
        server.kill();
        // Let any frames already in the observer's socket arrive, then freeze what it saw.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = observer.doc.transact().state_vector();
        assert!(
            seen.iter().count() > 0,
            "the observer received edits before the kill"
        );
        let server = binary::Server::start(&store, &[]).await;
        let fresh = TestClient::connect(&server.url("crash")).await;
        let stored = fresh.doc.transact().state_vector();
        assert!(
            covers(&stored, &seen),
            "cycle {cycle}: the restarted server lacks updates a client had received: \
             stored {stored:?}, seen {seen:?}"
        );
        server.kill();
    }
}
