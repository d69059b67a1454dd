//! Test support: an in-process server and a raw y-websocket client built on yrs.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use plait_crdt::{ClientMessage, Op, ServerMessage, Value, PLAIT_CRDT_MESSAGE};
use plait_protocol::message::{
    encode_awareness, encode_custom, encode_sync_step1, encode_sync_step2, encode_update,
};
use plait_protocol::{AwarenessEntry, AwarenessUpdate, Limits, Message, SyncMessage};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

pub mod receiver;
pub mod sse;

/// How long any wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A SQLite store in `path` (reopening the same path finds what an earlier store wrote).
pub async fn sqlite_store(path: &std::path::Path) -> Arc<dyn plait_store::Store> {
    Arc::new(
        plait_store::SqliteStore::open(path.to_str().unwrap(), plait_store::SyncMode::Full)
            .await
            .unwrap(),
    )
}

/// A server running in this process on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server over `store` with `adjust` applied to the default configuration.
    pub async fn start_with(
        store: Arc<dyn plait_store::Store>,
        adjust: impl FnOnce(&mut plait_server::Config),
    ) -> Self {
        let mut config = plait_server::Config::defaults();
        config.port = 0;
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            plait_server::run(listener, config, store, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// A server over a fresh in-memory store.
    pub async fn start() -> Self {
        Self::start_with(Arc::new(plait_store::MemoryStore::default()), |_| {}).await
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}/{}", self.addr, room)
    }

    /// The WebSocket URL of `room` for a client that opts in to CRDT values.
    pub fn values_url(&self, room: &str) -> String {
        format!("ws://{}/{}?plait-values=1", self.addr, room)
    }

    /// One HTTP/1.1 request with an optional JSON body; returns the status and the JSON body
    /// (null when the body is not JSON).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            // Only the first chunk: the JSON answers here are small.
            let (_, rest) = body.split_once("\r\n").unwrap_or(("", ""));
            rest.rsplit_once("\r\n0\r\n")
                .map_or(rest, |(b, _)| b)
                .trim_end()
                .to_owned()
        } else {
            body.to_owned()
        };
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Shuts down gracefully and waits for the server to return.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            tokio::time::timeout(WAIT, d).await.unwrap().unwrap();
        }
    }
}

/// What a client saw.
#[derive(Default, Debug)]
pub struct Seen {
    pub step2_count: usize,
    pub awareness: Vec<AwarenessEntry>,
    pub closed: Option<(u16, String)>,
    pub frames: usize,
    /// Permission-denied messages (`[2, 0, reason]`) received.
    pub denied: usize,
    /// Every CRDT values message (tag 100) received, in order.
    pub values_messages: Vec<ServerMessage>,
    /// The values, merged from the states received.
    pub values: BTreeMap<String, Value>,
}

impl Seen {
    /// The current JSON of value `name`, if any state of it arrived.
    pub fn value(&self, name: &str) -> Option<serde_json::Value> {
        self.values.get(name).map(|v| v.current().unwrap())
    }

    /// The reasons of the rejections received.
    pub fn rejections(&self) -> Vec<String> {
        self.values_messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Rejected { reason, .. } => Some(reason.clone()),
                ServerMessage::State(_) => None,
            })
            .collect()
    }
}

/// A y-websocket client: a yrs document kept in sync with the server by a reader task.
pub struct TestClient {
    pub doc: Doc,
    pub seen: Arc<Mutex<Seen>>,
    out: mpsc::UnboundedSender<WsMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl TestClient {
    /// Connects, performs the sync handshake and waits for the server's sync step 2.
    pub async fn connect(url: &str) -> Self {
        Self::connect_with_doc(url, Doc::new()).await
    }

    pub async fn connect_with_doc(url: &str, doc: Doc) -> Self {
        let client = Self::connect_raw(url, doc).await;
        let sv = client.doc.transact().state_vector().encode_v1();
        client.send(encode_sync_step1(&sv));
        client
            .wait(|s, _| s.step2_count >= 1, "first sync step 2")
            .await;
        client
    }

    /// Connects without sending anything.
    pub async fn connect_raw(url: &str, doc: Doc) -> Self {
        Self::connect_request(url, doc).await.unwrap()
    }

    /// Connects with a request (a URL, or an `http::Request` with headers) and performs the
    /// sync handshake; a refused upgrade is returned as the error.
    pub async fn connect_with_request(
        request: impl IntoClientRequest + Unpin,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let client = Self::connect_request(request, Doc::new()).await?;
        let sv = client.doc.transact().state_vector().encode_v1();
        client.send(encode_sync_step1(&sv));
        client
            .wait(|s, _| s.step2_count >= 1, "first sync step 2")
            .await;
        Ok(client)
    }

    /// Connects with a request without sending anything.
    pub async fn connect_request(
        request: impl IntoClientRequest + Unpin,
        doc: Doc,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        // Like browsers and `ws` (100 MiB), take whole documents in one frame: tungstenite's
        // default frame limit (16 MiB) is below the server's message limit.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_frame_size(None)
            .max_message_size(Some(256 << 20));
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let seen = Arc::new(Mutex::new(Seen::default()));
        let reader = {
            let seen = seen.clone();
            let doc = doc.clone();
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    match frame {
                        WsMessage::Binary(data) => {
                            let limits = Limits {
                                max_awareness_clients: 10_000,
                                ..Limits::default()
                            };
                            let msg = Message::decode(&data, &limits).expect("server sent garbage");
                            seen.lock().unwrap().frames += 1;
                            match msg {
                                Message::Sync(SyncMessage::Step1(sv)) => {
                                    let sv = StateVector::decode_v1(&sv).unwrap();
                                    let diff = doc.transact().encode_state_as_update_v1(&sv);
                                    let _ = out.send(WsMessage::Binary(encode_sync_step2(&diff)));
                                }
                                Message::Sync(SyncMessage::Step2(u)) => {
                                    let u = Update::decode_v1(&u).unwrap();
                                    doc.transact_mut().apply_update(u).unwrap();
                                    seen.lock().unwrap().step2_count += 1;
                                }
                                Message::Sync(SyncMessage::Update(u)) => {
                                    let u = Update::decode_v1(&u).unwrap();
                                    doc.transact_mut().apply_update(u).unwrap();
                                }
                                Message::Awareness(a) => {
                                    seen.lock().unwrap().awareness.extend(a.entries);
                                }
                                Message::Custom {
                                    tag: PLAIT_CRDT_MESSAGE,
                                    body,
                                } => {
                                    let mut r = plait_protocol::lib0::Reader::new(&body);
                                    let payload = r.read_buf().expect("values frame");
                                    let m = ServerMessage::decode(payload)
                                        .expect("server sent a bad values message");
                                    let mut s = seen.lock().unwrap();
                                    if let ServerMessage::State(u) = &m {
                                        match s.values.get_mut(&u.name) {
                                            Some(v) => v.merge(&u.value).unwrap(),
                                            None => {
                                                s.values.insert(u.name.clone(), u.value.clone());
                                            }
                                        }
                                    }
                                    s.values_messages.push(m);
                                }
                                Message::Auth => seen.lock().unwrap().denied += 1,
                                other => panic!("unexpected message {other:?}"),
                            }
                        }
                        WsMessage::Close(frame) => {
                            let _ = out.send(WsMessage::Close(frame.clone()));
                            let c = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            seen.lock().unwrap().closed = Some(c);
                            break;
                        }
                        _ => {}
                    }
                }
                let mut s = seen.lock().unwrap();
                if s.closed.is_none() {
                    s.closed = Some((1006, "connection dropped".into()));
                }
            })
        };
        Ok(TestClient {
            doc,
            seen,
            out,
            reader,
        })
    }

    pub fn send(&self, frame: Bytes) {
        let _ = self.out.send(WsMessage::Binary(frame));
    }

    /// Connects to `room` opted in to CRDT values and performs the sync handshake.
    pub async fn connect_values(server: &TestServer, room: &str) -> Self {
        Self::connect(&server.values_url(room)).await
    }

    /// Sends a CRDT values op (tag 100).
    pub fn send_op(&self, op: Op) {
        let payload = ClientMessage::Op(op).encode();
        self.send(encode_custom(PLAIT_CRDT_MESSAGE, &payload));
    }

    /// Waits until value `name` reads `expected`.
    pub async fn wait_value(&self, name: &str, expected: serde_json::Value) {
        let what = format!("{name} to be {expected}");
        self.wait(|s, _| s.value(name).as_ref() == Some(&expected), &what)
            .await;
    }

    pub fn send_raw(&self, msg: WsMessage) {
        let _ = self.out.send(msg);
    }

    /// Inserts text locally and sends the update.
    pub fn insert(&self, index: u32, s: &str) {
        let text = self.doc.get_or_insert_text("t");
        let update = {
            let mut txn = self.doc.transact_mut();
            text.insert(&mut txn, index, s);
            txn.encode_update_v1()
        };
        self.send(encode_update(&update));
    }

    /// Appends `chunk` to this client's document `n` times, one update each, and sends every
    /// update but the first: the server holds them all as pending (their dependency never
    /// arrives) until it asks for a resync. Returns the text length once the gap is filled.
    pub fn send_without_first_of(&self, n: u32, chunk: &str) -> usize {
        let text = self.doc.get_or_insert_text("t");
        let updates: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut txn = self.doc.transact_mut();
                text.insert(&mut txn, i * chunk.len() as u32, chunk);
                txn.encode_update_v1()
            })
            .collect();
        for u in &updates[1..] {
            self.send(encode_update(u));
        }
        n as usize * chunk.len()
    }

    pub fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("t");
        text.get_string(&self.doc.transact())
    }

    pub fn set_awareness(&self, client: u64, clock: u64, state: &str) {
        let update = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client,
                clock,
                state: state.into(),
            }],
        };
        self.send(encode_awareness(&update.encode()));
    }

    /// Waits until `pred` holds for what this client has seen and its document.
    pub async fn wait(&self, pred: impl Fn(&Seen, &Doc) -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if pred(&self.seen.lock().unwrap(), &self.doc) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; seen {:?}",
                    self.seen.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until this client's document holds everything `other` holds (by state vector):
    /// the edits arrived, however the room framed them (it may merge several into one frame).
    pub async fn wait_caught_up(&self, other: &Doc, what: &str) {
        let sent = other.transact().state_vector();
        self.wait(
            |_, doc| {
                let have = doc.transact().state_vector();
                sent.iter()
                    .all(|(client, clock)| have.get(client) >= *clock)
            },
            what,
        )
        .await;
    }

    pub async fn wait_text(&self, expected: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.text() == expected {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out: text is {:?}, expected {:?}",
                    self.text(),
                    expected
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_closed(&self) -> (u16, String) {
        self.wait(|s, _| s.closed.is_some(), "close").await;
        self.seen.lock().unwrap().closed.clone().unwrap()
    }

    pub fn close(self) {
        let _ = self.out.send(WsMessage::Close(None));
        self.reader.abort();
    }

    pub fn is_open(&self) -> bool {
        self.seen.lock().unwrap().closed.is_none()
    }
}

/// The close code as a number.
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}
