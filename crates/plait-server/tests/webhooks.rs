//! Webhooks (issue 16) against a real HTTP receiver that fails its first requests: every
//! change is delivered, in order per room, signed, and a deleted room is announced.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use plait_store::MemoryStore;
use sha2::Sha256;
use support::receiver::{receiver, receiver_on, Received};
use support::{TestClient, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-secret";

fn verify(signature: &str, body: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn wait_for(what: &str, pred: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_change_is_delivered_signed_and_in_order() {
    let (url, received) = receiver(2).await;
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.webhook_url = vec![url.clone()];
        c.webhook_secret = Some(SECRET.into());
        c.webhook_debounce_ms = 200;
        c.admin_token = Some("admin".into());
    })
    .await;
    let writer = TestClient::connect(&server.url("hooked")).await;
    let observer = TestClient::connect(&server.url("hooked")).await;
    let mut text = String::new();
    for i in 0..12 {
        let word = format!("{i};");
        writer.insert(text.chars().count() as u32, &word);
        text.push_str(&word);
        observer.wait_text(&text).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let covered = |received: &Received| {
        received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, _, body)| serde_json::from_str::<serde_json::Value>(body).ok())
            .filter(|e| e["type"] == "room.changed")
            .map(|e| e["seq_to"].as_u64().unwrap())
            .max()
            .unwrap_or(0)
    };
    wait_for("every change", || covered(&received) == 12).await;
    let events: Vec<serde_json::Value> = {
        let received = received.lock().unwrap();
        for (id, signature, body) in received.iter() {
            assert!(verify(signature, body), "a bad signature on {body}");
            let event: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(event["id"], id.as_str());
        }
        received
            .iter()
            .map(|(_, _, b)| serde_json::from_str(b).unwrap())
            .collect()
    };
    // Gap-free and in order: each event starts where the last one ended.
    let mut next = 1;
    for event in &events {
        assert_eq!(event["room"], "hooked");
        assert_eq!(event["seq_from"], next, "{events:?}");
        next = event["seq_to"].as_u64().unwrap() + 1;
    }
    assert!(
        events.len() < 12,
        "changes were not debounced: {} events",
        events.len()
    );
    // A deleted room is announced once.
    let (status, _) = server.http("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"DELETE /api/admin/rooms/hooked HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_for("room.deleted", || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, body)| body.contains("\"room.deleted\""))
    })
    .await;
    server.stop().await;
}

/// Events come from the store, not from memory: changes made while the receiver is down and
/// the server then stops (a crash between commit and delivery is the same for the store) are
/// delivered by the next server on the same store once the receiver is up.
#[tokio::test]
async fn changes_outlive_a_server_and_a_receiver_that_was_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let store = Arc::new(MemoryStore::default());
    let start = |store: Arc<MemoryStore>, url: String| {
        TestServer::start_with(store, move |c| {
            c.webhook_url = vec![url];
            c.webhook_secret = Some(SECRET.into());
            c.webhook_debounce_ms = 100;
            // Enough attempts that the first server cannot pass the event over before it stops.
            c.webhook_max_attempts = 10;
        })
    };
    let server = start(store.clone(), url.clone()).await;
    let writer = TestClient::connect(&server.url("offline")).await;
    let observer = TestClient::connect(&server.url("offline")).await;
    writer.insert(0, "while the receiver is down");
    observer.wait_text("while the receiver is down").await;
    server.stop().await;

    let (_, received) = receiver_on(port, 0).await;
    let server = start(store, url).await;
    wait_for("the change made before the restart", || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, signature, body)| verify(signature, body) && body.contains("\"seq_to\":1"))
    })
    .await;
    server.stop().await;
}

/// An admin restore is announced as `room.restored`, alone in its event at the restore's seq,
/// between the `room.changed` events of the edits before and after it.
#[tokio::test]
async fn a_restore_is_announced_as_room_restored() {
    let (url, received) = receiver(0).await;
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.webhook_url = vec![url.clone()];
        c.webhook_secret = Some(SECRET.into());
        c.webhook_debounce_ms = 100;
        c.admin_token = Some("admin".into());
    })
    .await;
    let writer = TestClient::connect(&server.url("undone")).await;
    let observer = TestClient::connect(&server.url("undone")).await;
    writer.insert(0, "first");
    observer.wait_text("first").await;
    writer.insert(5, " second");
    observer.wait_text("first second").await;
    // Restore to a document holding "first" alone (a bare Yjs update of another doc).
    let file = {
        use yrs::{Text, Transact};
        let doc = yrs::Doc::new();
        doc.get_or_insert_text("t")
            .insert(&mut doc.transact_mut(), 0, "first");
        plait_server::docs::encode_state(&doc)
    };
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/admin/rooms/undone/restore HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        file.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&file).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    observer.wait_text("first").await;
    writer.insert(5, "!");
    observer.wait_text("first!").await;

    let events = || -> Vec<serde_json::Value> {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, body)| serde_json::from_str(body).unwrap())
            .collect()
    };
    wait_for("every event", || {
        events().last().is_some_and(|e| e["seq_to"] == 4)
    })
    .await;
    let got: Vec<(String, u64, u64)> = events()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["seq_from"].as_u64().unwrap(),
                e["seq_to"].as_u64().unwrap(),
            )
        })
        .collect();
    // Debouncing may merge the edits before the restore into one event or not; the restore
    // is always its own event at seq 3, and the order is gap-free.
    let restored: Vec<_> = got.iter().filter(|e| e.0 == "room.restored").collect();
    assert_eq!(
        restored,
        vec![&("room.restored".to_owned(), 3, 3)],
        "{got:?}"
    );
    let mut next = 1;
    for (kind, from, to) in &got {
        assert_eq!(*from, next, "{got:?}");
        assert!(kind == "room.changed" || kind == "room.restored", "{got:?}");
        next = to + 1;
    }
    assert_eq!(next, 5, "{got:?}");
    server.stop().await;
}

/// Two processes on one store with the same target: one delivers (it holds the target's
/// lease), so the receiver gets each change once and in order, not once per process.
#[tokio::test]
async fn two_processes_deliver_each_event_once() {
    let (url, received) = receiver(0).await;
    let store = Arc::new(MemoryStore::default());
    let start = |store: Arc<MemoryStore>, url: String| {
        TestServer::start_with(store, move |c| {
            c.webhook_url = vec![url];
            c.webhook_secret = Some(SECRET.into());
            c.webhook_debounce_ms = 50;
        })
    };
    let a = start(store.clone(), url.clone()).await;
    let b = start(store, url).await;
    for (i, server) in [&a, &b, &a, &b].iter().enumerate() {
        let client = TestClient::connect(&server.url(&format!("room{i}"))).await;
        client.insert(0, "x");
        let check = TestClient::connect(&server.url(&format!("room{i}"))).await;
        check.wait_text("x").await;
    }
    wait_for("an event per room", || {
        let got = received.lock().unwrap();
        (0..4).all(|i| {
            got.iter()
                .any(|(_, _, body)| body.contains(&format!("\"room{i}\"")))
        })
    })
    .await;
    // Both processes scanned many times meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _, _)| id.clone())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an event was delivered twice: {ids:?}"
    );
    assert_eq!(ids.len(), 4, "{ids:?}");
    a.stop().await;
    b.stop().await;
}
