//! A webhook receiver on loopback, for the webhook tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the receiver accepted: (event id header, signature header, body).
pub type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP receiver on loopback that answers 500 to its first `fail_first` requests, then 200.
pub async fn receiver(fail_first: usize) -> (String, Received) {
    receiver_on(0, fail_first).await
}

pub async fn receiver_on(port: u16, fail_first: usize) -> (String, Received) {
    receiver_with(port, fail_first, Duration::ZERO).await
}

/// As [`receiver_on`], taking `delay` over each answer (a slow receiver).
pub async fn receiver_with(port: u16, fail_first: usize, delay: Duration) -> (String, Received) {
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
            tokio::time::sleep(delay).await;
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
