//! One connection's reader and writer over real sockets: write deadlines, keepalives, several
//! messages in one frame, a closed connection's silence, bursts, and forged identity.

mod support;

use support::{TestClient, TestServer};

/// Issue 13 item 9: the identity check skipped parsing unless the raw JSON held the bytes
/// `verified`, so a JSON escape (`verifi\u0065d`) passed a forged `verified: true` to every
/// client. Any form of the key is now removed from an unverified connection's state.
#[tokio::test]
async fn an_escaped_verified_claim_is_removed() {
    let server = TestServer::start().await;
    let url = server.url("forged");
    let forger = TestClient::connect(&url).await;
    let observer = TestClient::connect(&url).await;
    forger.set_awareness(
        31,
        1,
        r#"{"user":{"name":"admin","verifi\u0065d":true,"v\u0065rified":true}}"#,
    );
    observer
        .wait(
            |s, _| s.awareness.iter().any(|e| e.client == 31),
            "the forger's state",
        )
        .await;
    let state: serde_json::Value = {
        let seen = observer.seen.lock().unwrap();
        let e = seen.awareness.iter().find(|e| e.client == 31).unwrap();
        serde_json::from_str(&e.state).unwrap()
    };
    assert_eq!(state["user"]["name"], "admin");
    assert!(
        state["user"].get("verified").is_none(),
        "forged identity passed: {state}"
    );
    server.stop().await;
}
