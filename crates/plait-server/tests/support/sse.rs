//! A Server-Sent Events reader for the change feed tests.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads Server-Sent Events from `path` on `addr` (resuming after `last_event_id`) until `n`
/// have arrived: (id, data) pairs. Fails after 10 s.
pub async fn read_events(
    addr: SocketAddr,
    path: &str,
    last_event_id: Option<u64>,
    n: usize,
) -> Vec<(u64, serde_json::Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{resume}\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 64 * 1024];
    let read_all = async {
        loop {
            let events: Vec<(u64, serde_json::Value)> = text
                .split("\n\n")
                .filter_map(|block| {
                    let id = block.lines().find_map(|l| l.strip_prefix("id: "))?;
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                    Some((id.trim().parse().ok()?, serde_json::from_str(data).ok()?))
                })
                .collect();
            if events.len() >= n {
                return events;
            }
            let got = stream.read(&mut buf).await.unwrap();
            assert!(got > 0, "the feed ended: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..got]));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
        .await
        .expect("events did not arrive")
}
