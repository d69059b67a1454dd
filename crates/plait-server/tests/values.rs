//! CRDT values over the WebSocket opt-in message and the HTTP API (issue 4).

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plait_crdt::{Action, Op};
use plait_store::{MemoryStore, Store};
use serde_json::json;
use support::{TestClient, TestServer};

fn op(name: &str, action: Action) -> Op {
    Op {
        name: name.to_owned(),
        action,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Issue 4: 10 clients incrementing concurrently, some disconnecting and reconnecting midway,
/// end with exactly the sum of all increments, on the server and in every client.
#[tokio::test]
async fn concurrent_increments_with_reconnects_sum_exactly() {
    const CLIENTS: usize = 10;
    const PER_CLIENT: u64 = 30;
    let server = Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = TestClient::connect_values(&server, "likes").await;
            for n in 0..PER_CLIENT {
                // Every third client drops its connection twice along the way.
                if i % 3 == 0 && n > 0 && n % 10 == 0 {
                    client.close();
                    client = TestClient::connect_values(&server, "likes").await;
                }
                client.send_op(op("likes", Action::Increment(1)));
                if n % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let total = json!(CLIENTS as u64 * PER_CLIENT);
    for c in &clients {
        c.wait_value("likes", total.clone()).await;
    }
    let (status, body) = server.http("GET", "/api/rooms/likes/values", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"likes": {"kind": "gcounter", "value": total}}));
    // A late joiner gets the sum too.
    let late = TestClient::connect_values(&server, "likes").await;
    late.wait_value("likes", total).await;
    for c in clients {
        c.close();
    }
    Arc::into_inner(server).unwrap().stop().await;
}

/// Stock y-websocket clients log errors on unknown message types: a connection that did not
/// opt in never receives tag 100, and the tag-100 messages it sends are ignored.
#[tokio::test]
async fn clients_that_did_not_opt_in_never_see_values_messages() {
    let server = TestServer::start().await;
    let plain = TestClient::connect(&server.url("mixed")).await;
    let opted = TestClient::connect_values(&server, "mixed").await;
    plain.send_op(op("n", Action::Increment(100)));
    opted.send_op(op("n", Action::Increment(1)));
    opted.wait_value("n", json!(1)).await;
    plain.insert(0, "still in sync");
    opted.wait_text("still in sync").await;
    let late_plain = TestClient::connect(&server.url("mixed")).await;
    late_plain.wait_text("still in sync").await;
    opted.send_op(op("n", Action::Increment(1)));
    opted.wait_value("n", json!(2)).await;
    for c in [&plain, &late_plain] {
        assert!(c.is_open());
        assert!(c.seen.lock().unwrap().values_messages.is_empty());
    }
    let (_, body) = server.http("GET", "/api/rooms/mixed/values", None).await;
    assert_eq!(body["n"]["value"], json!(2));
    server.stop().await;
}

/// Issue 4: with clients 200 ms apart, the register holds the write with the greatest HLC,
/// not the one that arrived last.
#[tokio::test]
async fn lww_with_skewed_clocks_picks_the_greatest_hlc() {
    let server = TestServer::start().await;
    let ahead = TestClient::connect_values(&server, "lww").await;
    let behind = TestClient::connect_values(&server, "lww").await;
    let now = now_ms();
    ahead.send_op(op(
        "title",
        Action::SetAt {
            value: json!("from the client 100 ms ahead"),
            physical_ms: now + 100,
            logical: 0,
        },
    ));
    behind
        .wait_value("title", json!("from the client 100 ms ahead"))
        .await;
    // Later in real time, but earlier by its (slow) clock: it loses.
    behind.send_op(op(
        "title",
        Action::SetAt {
            value: json!("from the client 100 ms behind"),
            physical_ms: now_ms() - 100,
            logical: 0,
        },
    ));
    for c in [&ahead, &behind] {
        c.wait(
            |s, _| s.values_messages.len() >= 2,
            "both writes to be broadcast",
        )
        .await;
        assert_eq!(
            c.seen.lock().unwrap().value("title"),
            Some(json!("from the client 100 ms ahead"))
        );
    }
    let (_, body) = server.http("GET", "/api/rooms/lww/values", None).await;
    assert_eq!(
        body["title"]["value"],
        json!("from the client 100 ms ahead")
    );
    // Once its clock passes the other's, the slow client's write wins.
    tokio::time::sleep(Duration::from_millis(250)).await;
    behind.send_op(op(
        "title",
        Action::SetAt {
            value: json!("later by both clocks"),
            physical_ms: now_ms() - 100,
            logical: 0,
        },
    ));
    ahead
        .wait_value("title", json!("later by both clocks"))
        .await;
    server.stop().await;
}

/// Issue 4: a client whose clock is an hour ahead is refused with a clear error, and nothing
/// is stored.
#[tokio::test]
async fn a_client_an_hour_ahead_is_refused_and_nothing_is_stored() {
    let store = Arc::new(MemoryStore::default());
    let server = TestServer::start_with(store.clone(), |_| {}).await;
    let client = TestClient::connect_values(&server, "skew").await;
    let other = TestClient::connect_values(&server, "skew").await;
    client.send_op(op(
        "title",
        Action::SetAt {
            value: json!("from the future"),
            physical_ms: now_ms() + 3_600_000,
            logical: 0,
        },
    ));
    client
        .wait(|s, _| !s.rejections().is_empty(), "a rejection")
        .await;
    let reason = client.seen.lock().unwrap().rejections()[0].clone();
    assert!(reason.contains("ahead of local time"), "{reason}");
    assert!(client.is_open(), "a refused op does not close the socket");
    assert!(client.seen.lock().unwrap().values.is_empty());
    assert!(store.load_values("skew").await.unwrap().is_empty());
    let (_, body) = server.http("GET", "/api/rooms/skew/values", None).await;
    assert_eq!(body, json!({}));
    // The rejection went to the sender only.
    assert!(other.seen.lock().unwrap().values_messages.is_empty());
    server.stop().await;
}

/// Values are stored with the room: they survive a restart of the server and an idle unload.
#[tokio::test]
async fn values_survive_a_restart_and_an_idle_unload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("values.db");
    let open = || support::sqlite_store(&path);
    let server = TestServer::start_with(open().await, |c| c.room_idle_ms = 100).await;
    let client = TestClient::connect_values(&server, "keep").await;
    for _ in 0..5 {
        client.send_op(op("likes", Action::Increment(1)));
    }
    client.send_op(op("score", Action::Add(-7)));
    client.send_op(op("title", Action::Set(json!({"text": "Notes"}))));
    client.wait_value("title", json!({"text": "Notes"})).await;
    client.wait_value("likes", json!(5)).await;
    client.close();
    // Idle unload, then a reload from the store.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = TestClient::connect_values(&server, "keep").await;
    again.wait_value("likes", json!(5)).await;
    again.wait_value("score", json!(-7)).await;
    again.send_op(op("likes", Action::Increment(1)));
    again.wait_value("likes", json!(6)).await;
    again.close();
    server.stop().await;

    let server = TestServer::start_with(open().await, |_| {}).await;
    let after = TestClient::connect_values(&server, "keep").await;
    after.wait_value("likes", json!(6)).await;
    after.wait_value("score", json!(-7)).await;
    after.wait_value("title", json!({"text": "Notes"})).await;
    // A new process increments under a new replica id; the sum stays exact.
    after.send_op(op("likes", Action::Increment(1)));
    after.wait_value("likes", json!(7)).await;
    let (_, body) = server.http("GET", "/api/rooms/keep/values", None).await;
    assert_eq!(
        body,
        json!({
            "likes": {"kind": "gcounter", "value": 7},
            "score": {"kind": "pncounter", "value": -7},
            "title": {"kind": "lww", "value": {"text": "Notes"}},
        })
    );
    server.stop().await;
}

/// The HTTP API: kinds, a negative add to a G-Counter (400), a kind conflict (409), bad
/// bodies, percent-decoded room names, and changes visible to connected clients.
#[tokio::test]
async fn http_api_changes_values_that_clients_see() {
    let server = TestServer::start().await;
    let client = TestClient::connect_values(&server, "team%20a/notes").await;

    let (status, body) = server
        .http(
            "POST",
            "/api/rooms/team%20a%2Fnotes/counters/likes",
            Some(json!({"add": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "likes", "kind": "gcounter", "value": 2})
    );
    client.wait_value("likes", json!(2)).await;

    let path = |rest: &str| format!("/api/rooms/team%20a%2Fnotes/{rest}");
    let (status, body) = server
        .http("POST", &path("counters/likes"), Some(json!({"add": -1})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("only grows"),
        "{body}"
    );

    let (status, body) = server
        .http(
            "POST",
            &path("counters/likes"),
            Some(json!({"add": -1, "kind": "pncounter"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("is a gcounter"),
        "{body}"
    );

    let (status, body) = server
        .http(
            "POST",
            &path("counters/score"),
            Some(json!({"add": -3, "kind": "pncounter"})),
        )
        .await;
    assert_eq!((status, body["value"].clone()), (200, json!(-3)));
    // Without a kind, an existing PN-Counter stays one.
    let (status, body) = server
        .http("POST", &path("counters/score"), Some(json!({"add": -1})))
        .await;
    assert_eq!((status, body["value"].clone()), (200, json!(-4)));
    client.wait_value("score", json!(-4)).await;

    let (status, body) = server
        .http(
            "PUT",
            &path("registers/title"),
            Some(json!({"value": {"text": "Plan", "n": [1, 2]}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "title", "kind": "lww", "value": {"text": "Plan", "n": [1, 2]}})
    );
    client
        .wait_value("title", json!({"text": "Plan", "n": [1, 2]}))
        .await;

    let (status, body) = server
        .http("PUT", &path("registers/likes"), Some(json!({"value": 1})))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = server
        .http("POST", &path("counters/title"), Some(json!({"add": 1})))
        .await;
    assert_eq!(status, 409);

    for (method, rest, body) in [
        ("POST", "counters/likes", json!({"add": "one"})),
        ("POST", "counters/likes", json!({"add": 1, "kind": "lww"})),
        ("PUT", "registers/title", json!({"text": "no value field"})),
    ] {
        let (status, body) = server.http(method, &path(rest), Some(body)).await;
        assert_eq!(status, 400, "{method} {rest}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    let (status, body) = server.http("GET", &path("values"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "likes": {"kind": "gcounter", "value": 2},
            "score": {"kind": "pncounter", "value": -4},
            "title": {"kind": "lww", "value": {"text": "Plan", "n": [1, 2]}},
        })
    );
    // A refused HTTP change never reaches clients as a rejection.
    assert!(client.seen.lock().unwrap().rejections().is_empty());
    server.stop().await;
}

/// A malformed values message from a client that opted in closes it with 1007, like any
/// other malformed input.
#[tokio::test]
async fn a_malformed_values_message_closes_with_1007() {
    let server = TestServer::start().await;
    let client = TestClient::connect_values(&server, "bad").await;
    client.send(plait_protocol::message::encode_custom(100, &[0, 0, 0, 1]));
    let (code, _) = client.wait_closed().await;
    assert_eq!(code, 1007);
    server.stop().await;
}
