//! Lean y-websocket clients: raw frames over tokio-tungstenite, no yrs document.
//!
//! Writers hand-encode append-only text inserts (a valid Yjs v1 update, checked against yrs
//! in the tests) whose content is a 13-byte marker `~WWWWSSSSSSSS` (writer and sequence in
//! hex). Receivers find the markers in every update or sync step 2 they get, so an update
//! that merges several edits counts as several deliveries, and each marker maps to its send
//! time in the [`SendTable`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use plait_protocol::lib0::{write_buf, write_str, write_var};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::hocuspocus::{self, Inbound};
use crate::stats::{now_ns, Histogram};

/// The framing the server speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// y-websocket: one document per socket (the URL path), bare sync/awareness frames.
    #[default]
    YWebsocket,
    /// Hocuspocus: every message prefixed by the document name, an Auth message first.
    Hocuspocus,
}

/// One client connection. With y-websocket it is the WebSocket itself (every poll goes
/// straight through, no copy); with Hocuspocus it prefixes outgoing binary frames with the
/// document name, strips the name from incoming ones and drops Hocuspocus-only messages
/// (Authenticated, SyncStatus, ...), so scenarios see plain y-websocket frames either way.
/// PermissionDenied and CLOSE from the server come out as a `Message::Close`.
pub struct Ws {
    inner: WebSocketStream<TcpStream>,
    /// Hocuspocus only: the document name as a lib0 varString.
    address: Option<Bytes>,
}

impl Ws {
    /// Sends a close frame and flushes (as `WebSocketStream::close`).
    pub async fn close(&mut self, msg: Option<CloseFrame>) -> Result<(), WsError> {
        self.inner.close(msg).await
    }
}

impl Sink<Message> for Ws {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        let item = match (&this.address, item) {
            (Some(a), Message::Binary(b)) => Message::Binary(hocuspocus::wrap(a, &b)),
            (_, item) => item,
        };
        Pin::new(&mut this.inner).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

impl Stream for Ws {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let m = ready!(this.inner.poll_next_unpin(cx));
            let Some(a) = &this.address else {
                return Poll::Ready(m);
            };
            let Some(Ok(Message::Binary(b))) = m else {
                return Poll::Ready(m);
            };
            match hocuspocus::unwrap(a, b) {
                Inbound::Frame(f) => return Poll::Ready(Some(Ok(Message::Binary(f)))),
                // The socket's coop budget bounds this loop: a flood of acks still yields.
                Inbound::Skip(_) => continue,
                Inbound::Closed(reason) => {
                    return Poll::Ready(Some(Ok(Message::Close(Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: reason.into(),
                    })))))
                }
            }
        }
    }
}

/// Where the server is, and how clients spread over source addresses.
#[derive(Clone, Debug)]
pub struct Target {
    /// `ws://127.0.0.1:PORT` without a trailing slash.
    pub base: String,
    pub addr: SocketAddr,
    /// Clients bind to 127.0.0.1 ..= 127.0.0.<sources> to pass the ephemeral-port limit.
    pub sources: u8,
    pub protocol: Protocol,
}

static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

impl Target {
    pub fn parse(url: &str, sources: u8, protocol: Protocol) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("ws://")
            .context("--url must start with ws://")?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = hostport
            .parse()
            .with_context(|| format!("--url needs an IP:PORT, got {hostport}"))?;
        if !addr.ip().is_loopback() {
            bail!("plait-bench only runs against loopback addresses, not {addr}");
        }
        Ok(Target {
            base,
            addr,
            sources: sources.max(1),
            protocol,
        })
    }

    /// Opens a WebSocket to `room`, from the next source address in turn. With Hocuspocus the
    /// room is also the document name, and the Auth message (empty token) is sent at once.
    pub async fn connect(&self, room: &str) -> Result<Ws> {
        let i = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed);
        let socket = TcpSocket::new_v4()?;
        if self.addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) && self.sources > 1 {
            let src = Ipv4Addr::new(127, 0, 0, 1 + (i % self.sources as usize) as u8);
            socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        // Hocuspocus names the document in every frame, not in the URL: the URL is the
        // endpoint as given (any path for Hocuspocus itself, `/hocuspocus` for plait).
        let url = match self.protocol {
            Protocol::Hocuspocus => self.base.clone(),
            Protocol::YWebsocket => format!("{}/{}", self.base, room),
        };
        let (inner, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("websocket handshake")?;
        let mut ws = Ws {
            inner,
            address: None,
        };
        if self.protocol == Protocol::Hocuspocus {
            let address = hocuspocus::address(room);
            ws.inner
                .send(Message::Binary(hocuspocus::auth(&address, "")))
                .await
                .context("hocuspocus auth message")?;
            ws.address = Some(address);
        }
        Ok(ws)
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

/// `[0,0,sv]` with an empty state vector.
pub fn step1_empty() -> Bytes {
    Bytes::from_static(&[0, 0, 1, 0])
}

/// `[0,0,sv]` for a state vector with one client.
pub fn step1_for(client: u64, clock: u64) -> Bytes {
    let mut sv = Vec::new();
    write_var(&mut sv, 1);
    write_var(&mut sv, client);
    write_var(&mut sv, clock);
    let mut out = vec![0, 0];
    write_buf(&mut out, &sv);
    Bytes::from(out)
}

/// `[0,1,00 00]`: the empty step 2 a client with nothing new answers the server's step 1 with.
pub fn step2_empty() -> Bytes {
    Bytes::from_static(&[0, 1, 2, 0, 0])
}

pub const MARKER_LEN: u64 = 13;

pub fn marker(writer: u32, seq: u32) -> String {
    format!("~{writer:04x}{seq:08x}")
}

/// `[0,2,update]`: client `client` appends `text` (ASCII) to the root text `t`, at its own
/// clock `clock`, after its previous insert (which ended at `clock - 1`).
pub fn append_update(client: u64, clock: u64, text: &str) -> Bytes {
    let mut u = Vec::with_capacity(32 + text.len());
    write_var(&mut u, 1); // clients
    write_var(&mut u, 1); // structs of this client
    write_var(&mut u, client);
    write_var(&mut u, clock);
    if clock == 0 {
        u.push(4); // ContentString, no origin: parent follows
        write_var(&mut u, 1); // parent is a named root type
        write_str(&mut u, "t");
    } else {
        u.push(0x84); // ContentString with a left origin
        write_var(&mut u, client);
        write_var(&mut u, clock - 1);
    }
    write_str(&mut u, text);
    u.push(0); // empty delete set
    let mut out = Vec::with_capacity(u.len() + 6);
    out.push(0);
    out.push(2);
    write_buf(&mut out, &u);
    Bytes::from(out)
}

/// `[1, awareness]` with one entry.
pub fn awareness(client: u64, clock: u64, state: &str) -> Bytes {
    let mut a = Vec::with_capacity(16 + state.len());
    write_var(&mut a, 1);
    write_var(&mut a, client);
    write_var(&mut a, clock);
    write_str(&mut a, state);
    let mut out = vec![1];
    write_buf(&mut out, &a);
    Bytes::from(out)
}

/// Sync sub-type of a frame: `Some(0|1|2)` for type-0 frames.
pub fn sync_kind(frame: &[u8]) -> Option<u8> {
    if frame.len() >= 2 && frame[0] == 0 {
        Some(frame[1])
    } else {
        None
    }
}

fn hex(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u32),
        b'a'..=b'f' => Some((b - b'a' + 10) as u32),
        _ => None,
    }
}

/// Calls `f(writer, seq)` for every marker in `frame`.
pub fn scan_markers(frame: &[u8], mut f: impl FnMut(u32, u32)) {
    let mut i = 0;
    let n = frame.len();
    while i + MARKER_LEN as usize <= n {
        if frame[i] != b'~' {
            i += 1;
            continue;
        }
        let mut v: u64 = 0;
        let mut ok = true;
        for &b in &frame[i + 1..i + MARKER_LEN as usize] {
            match hex(b) {
                Some(h) => v = (v << 4) | h as u64,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            f((v >> 32) as u32, v as u32);
            i += MARKER_LEN as usize;
        } else {
            i += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Send times and completion counters

/// Send time of every (writer, seq), and per-edit delivery counters for closed loops.
#[derive(Debug)]
pub struct SendTable {
    pub sent_ns: Vec<Vec<AtomicU64>>,
    /// Ring of delivery counters per writer (closed loop only).
    pub done: Vec<Vec<AtomicU32>>,
    pub notify: Vec<tokio::sync::Notify>,
    /// Deliveries that complete an edit (receivers other than the author).
    pub expected: u32,
    /// Deliveries so far, all receivers together.
    pub delivered: AtomicU64,
}

pub const RING: usize = 8192;

impl SendTable {
    pub fn new(writers: usize, per_writer: usize, expected: u32, closed_loop: bool) -> Self {
        SendTable {
            sent_ns: (0..writers)
                .map(|_| (0..per_writer).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            done: (0..writers)
                .map(|_| {
                    (0..if closed_loop { RING } else { 0 })
                        .map(|_| AtomicU32::new(0))
                        .collect()
                })
                .collect(),
            notify: (0..writers).map(|_| tokio::sync::Notify::new()).collect(),
            expected,
            delivered: AtomicU64::new(0),
        }
    }
}

/// What one receiver saw.
#[derive(Debug, Default, Clone)]
pub struct RecvStats {
    pub deliveries: u64,
    pub frames: u64,
    pub bytes: u64,
    pub last_delivery_ns: u64,
    pub hist: Histogram,
    /// The server closed or reset the connection before the end.
    pub dropped: bool,
}

impl RecvStats {
    pub fn merge(&mut self, o: &RecvStats) {
        self.deliveries += o.deliveries;
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.last_delivery_ns = self.last_delivery_ns.max(o.last_delivery_ns);
        self.hist.merge(&o.hist);
        self.dropped |= o.dropped;
    }
}

/// Accounts one received frame: every marker of another writer is a delivery.
pub fn account(frame: &[u8], me: Option<u32>, table: &SendTable, st: &mut RecvStats) {
    st.frames += 1;
    st.bytes += frame.len() as u64;
    match sync_kind(frame) {
        Some(1 | 2) => {}
        _ => return,
    }
    let now = now_ns();
    let before = st.deliveries;
    scan_markers(frame, |w, seq| {
        if Some(w) == me {
            return;
        }
        let Some(row) = table.sent_ns.get(w as usize) else {
            return;
        };
        let Some(sent) = row.get(seq as usize) else {
            return;
        };
        let sent = sent.load(Ordering::Relaxed);
        if sent == 0 {
            return;
        }
        st.deliveries += 1;
        st.last_delivery_ns = now;
        st.hist.record_us(now.saturating_sub(sent) / 1000);
        if let Some(ring) = table.done.get(w as usize).filter(|r| !r.is_empty()) {
            let c = ring[seq as usize % RING].fetch_add(1, Ordering::AcqRel) + 1;
            if c == table.expected {
                table.notify[w as usize].notify_one();
            }
        }
    });
    if st.deliveries > before {
        table
            .delivered
            .fetch_add(st.deliveries - before, Ordering::Relaxed);
    }
}

/// Reads `ws` until `stop` fires or the server closes it, accounting every frame.
pub async fn receive_loop<S>(
    mut stream: S,
    me: Option<u32>,
    table: std::sync::Arc<SendTable>,
    stop: tokio_util::sync::CancellationToken,
) -> RecvStats
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut st = RecvStats::default();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => account(&b, me, &table, &mut st),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    st.dropped = !stop.is_cancelled();
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    st
}

/// Sends step 1 (empty state vector) and waits for the server's step 2. Returns the step 2
/// frame. Frames before it are ignored.
pub async fn handshake(ws: &mut Ws, step1: Bytes, timeout: Duration) -> Result<Bytes> {
    ws.send(Message::Binary(step1)).await?;
    let wait = async {
        while let Some(m) = ws.next().await {
            if let Message::Binary(b) = m? {
                if sync_kind(&b) == Some(1) {
                    return Ok(b);
                }
            }
        }
        bail!("closed before sync step 2")
    };
    tokio::time::timeout(timeout, wait)
        .await
        .context("no sync step 2 in time (a Hocuspocus server needs --protocol hocuspocus)")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};

    #[test]
    fn hand_encoded_appends_are_valid_yjs_updates() {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut clock = 0;
        let mut expect = String::new();
        for seq in 0..5 {
            let m = marker(3, seq);
            let frame = append_update(77, clock, &m);
            clock += MARKER_LEN;
            expect.push_str(&m);
            let u = &frame[3..]; // [0, 2, len(1 byte)]
            assert_eq!(frame[2] as usize, u.len());
            doc.transact_mut()
                .apply_update(yrs::Update::decode_v1(u).unwrap())
                .unwrap();
        }
        assert_eq!(text.get_string(&doc.transact()), expect);
        let frame = append_update(77, 0, &marker(3, 0));
        assert!(
            plait_protocol::Message::decode(&frame, &plait_protocol::Limits::default()).is_ok()
        );
    }

    #[test]
    fn markers_are_found_in_merged_strings() {
        let s = format!("xx{}{}~zz{}", marker(1, 2), marker(1, 3), marker(65535, 7));
        let mut got = Vec::new();
        scan_markers(s.as_bytes(), |w, q| got.push((w, q)));
        assert_eq!(got, vec![(1, 2), (1, 3), (65535, 7)]);
    }
}
