//! Webhooks from the real binary, SIGKILLed while clients write and while deliveries are under
//! way (the receiver is slow, so kills land between a commit and its webhook and between a
//! delivery and its cursor): after a last restart every stored change has been delivered,
//! signed, gap-free and in order.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;

use std::time::Duration;

use support::receiver::receiver_with;
use support::TestClient;

const SECRET: &str = "crash-webhook-secret";

/// Cycles: `PLAIT_CRASH_CYCLES` (CI runs 50; this test takes a tenth of them), else 3.
fn cycles() -> u64 {
    std::env::var("PLAIT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(3, |n| (n / 10).max(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_commit_and_delivery_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    let (url, received) = receiver_with(0, 0, Duration::from_millis(150)).await;
    let args = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--webhook-debounce-ms",
        "50",
        "--admin-token",
        "admin",
    ];
    let mut seed = 0x2545_f491_u64;
    for cycle in 0..cycles() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let server = binary::Server::start(&store, &args).await;
        let writer = TestClient::connect(&server.url("hooked")).await;
        let observer = TestClient::connect(&server.url("hooked")).await;
        let first = format!("[{cycle}]");
        writer.insert(0, &first);
        observer
            .wait(|_, _| observer.text().contains(&first), "a first edit")
            .await;
        let typing = async {
            for i in 0.. {
                writer.insert(0, &format!("{cycle}.{i} "));
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(200 + seed % 600), typing).await;
        server.kill();
    }

    // A last run with nobody writing: it delivers whatever the killed ones had not.
    let server = binary::Server::start(&store, &args).await;
    let (status, rooms) = server.json("GET", "/api/admin/rooms", None).await;
    assert_eq!(status, 401, "the admin API wants its token: {rooms}");
    let last_seq = last_seq(&server).await;
    assert!(last_seq > cycles(), "too few edits were stored: {last_seq}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let covered = received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, _, body)| serde_json::from_str::<serde_json::Value>(body).ok())
            .filter_map(|e| e["seq_to"].as_u64())
            .max()
            .unwrap_or(0);
        if covered >= last_seq {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events reached seq {covered} of {last_seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.lock().unwrap().clone();
    // In order and gap-free: each event starts at most one past the furthest seq delivered
    // before it (a repeat after a crash may start earlier: at least once), and never ends
    // before it starts.
    let mut furthest = 0;
    for (id, signature, body) in &received {
        assert_eq!(
            *signature,
            plait_server::webhooks::signature(SECRET, body.as_bytes()),
            "a bad signature on {body}"
        );
        let event: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["type"], "room.changed");
        let (from, to) = (
            event["seq_from"].as_u64().unwrap(),
            event["seq_to"].as_u64().unwrap(),
        );
        assert!(
            from <= furthest + 1,
            "a gap before {body} (delivered up to {furthest})"
        );
        assert!(from <= to, "{body}");
        furthest = furthest.max(to);
    }
    assert_eq!(furthest, last_seq);
    eprintln!(
        "{} cycles: {} events for {last_seq} stored changes",
        cycles(),
        received.len()
    );
    server.kill();
}

/// The room's last stored seq, from the admin API.
async fn last_seq(server: &binary::Server) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    s.write_all(
        b"GET /api/admin/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    let rooms: serde_json::Value = serde_json::from_str(body).unwrap();
    rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hooked")
        .and_then(|r| r["last_seq"].as_u64())
        .unwrap()
}
