//! Webhooks (issue 16) against a real HTTP receiver that fails its first requests: every
//! change is delivered, in order per room, signed, and a deleted room is announced.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use plait_store::MemoryStore;
use sha2::Sha256;
use support::{TestClient, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-secret";

/// What the receiver accepted: (event id header, signature header, body).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP receiver on loopback that answers 500 to its first `fail_first` requests, then 200.
async fn receiver(fail_first: usize) -> (String, Received) {
    receiver_on(0, fail_first).await
}

async fn receiver_on(port: u16, fail_first: usize) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let accepted = received.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let (head, body) = loop {
                let got = socket.read(&mut buf).await.unwrap();
                data.extend_from_slice(&buf[..got]);
                let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if data.len() >= end + 4 + len {
                    break (
                        head,
                        String::from_utf8_lossy(&data[end + 4..end + 4 + len]).to_string(),
                    );
                }
            };
            n += 1;
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let status = if n <= fail_first {
                "500 Internal Server Error"
            } else {
                accepted.lock().unwrap().push((
                    header("x-plait-event-id"),
                    header("x-plait-signature"),
                    body,
                ));
                "200 OK"
            };
            let _ = socket
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, received)
}

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
