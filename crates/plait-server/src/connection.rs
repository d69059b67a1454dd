//! One WebSocket connection: a reader that decodes frames and forwards them to the room, and a
//! writer that drains the connection's outbox, many frames per flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use plait_crdt::{ClientMessage, PLAIT_CRDT_MESSAGE};
use plait_protocol::{Message, SyncMessage};
use tokio::sync::oneshot;
use tracing::{debug, info, Instrument};
use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

use crate::access::{self, Access, ConnPermit, ConnPolicy, Grant};
use crate::conn::{Close, ConnId};
use crate::hub::HubError;
use crate::metrics as m;
use crate::outbox::{self, CloseSignal, CloseWatch, OutboxRx};
use crate::room::{Confirm, Inbound, Joining, MemberLink, RoomCmd, RoomHandle};
use crate::Shared;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A connection id no other connection (or Hocuspocus document) of this process has.
pub(crate) fn next_conn_id() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// How long a closing connection waits for the peer's close frame (or for its own writer)
/// before the socket is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

const PROTOCOL_ERROR: Close = Close {
    code: 1007,
    reason: "malformed message",
};
pub(crate) const TOO_BIG: Close = Close {
    code: 1009,
    reason: "message too big",
};
pub(crate) const ROOMS_FULL: Close = Close {
    code: 1013,
    reason: "server at room capacity: try again later",
};
const DEAD_PEER: Close = Close {
    code: 1001,
    reason: "no pong",
};
/// Set when a write passes its deadline. Never reaches the peer (its socket is not taking
/// bytes); it stops the reader forwarding and names the reason in the logs.
const WRITE_TIMEOUT: Close = Close {
    code: 1013,
    reason: "write timed out: reconnect to resync",
};

/// The slowest link a write is sized for: each write's deadline is `--write-timeout-ms` plus
/// one second per this many bytes in flight, so a large sync step 2 to an honest slow client
/// (a 4 MiB document over 512 kbit/s) is not cut off, while a peer that reads nothing is
/// dropped after at most `--write-timeout-ms` plus 64 s per MiB of its largest frame.
const MIN_WRITE_BYTES_PER_SEC: u64 = 64 * 1024;

/// The keepalive: an awareness update with no entries. Every y-protocols client applies it
/// as a no-op, and its watchdog counts it as a message received.
pub(crate) const KEEPALIVE: &[u8] = &[0x01, 0x01, 0x00];

/// What a client asked for in its WebSocket URL's query string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConnOptions {
    /// `plait-values=1`: the client speaks the CRDT values message ([`PLAIT_CRDT_MESSAGE`]).
    /// Without it the connection is never sent one and the ones it sends are ignored, since
    /// stock y-websocket clients log an error on unknown message types.
    pub(crate) values: bool,
}

impl ConnOptions {
    /// Reads the options from a URL query string (`a=1&plait-values=1`).
    pub(crate) fn from_query(query: Option<&str>) -> Self {
        let values = query
            .unwrap_or("")
            .split('&')
            .any(|pair| matches!(pair.split_once('='), Some(("plait-values", "1" | "true"))));
        ConnOptions { values }
    }
}

/// One connection's identity and options, for its reader.
#[derive(Debug, Clone, Copy)]
struct Peer {
    id: ConnId,
    options: ConnOptions,
}

/// Serves one upgraded socket until either side closes it.
///
/// Not an `async fn`: a connection's task is allocated at its future's largest size for as
/// long as the connection lives, and an async fn keeps its arguments (the socket before the
/// split is about 1 KiB) beside the locals they are moved into. Everything that needs no
/// waiting is set up here, so the future holds only what the connection uses while it lives.
pub(crate) fn serve(
    socket: WebSocket,
    room: String,
    options: ConnOptions,
    shared: Arc<Shared>,
    grant: Grant,
    permit: ConnPermit,
) -> impl std::future::Future<Output = ()> + Send {
    let conn: ConnId = next_conn_id();
    let span = tracing::info_span!("conn", conn, room = %room);
    let (sink, stream) = socket.split();
    let (outbox_tx, outbox_rx) = outbox::channel(shared.outbox_frames, shared.max_outbox_bytes);
    let control_tx = CloseSignal::default();
    // Milliseconds since `epoch` when the peer was last heard from; read by the writer to
    // find dead peers.
    let epoch = Instant::now();
    let last_heard = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(
        write_loop(
            sink,
            outbox_rx,
            control_tx.clone(),
            WriterConfig::new(
                &shared,
                epoch,
                last_heard.clone(),
                Arc::new(OnceLock::from(Bytes::from_static(KEEPALIVE))),
            ),
        )
        .instrument(span.clone()),
    );
    // The reader's clone of the outbox, for permission-denied notices; dropped with the
    // policy, before the writer is waited for.
    let mut policy = ConnPolicy::new(&shared.access.rates, &grant, outbox_tx.clone());
    let expiry = policy.expiry();
    // Lets an admin kick close this session; removed when the session ends.
    let session = Access::register(&shared, conn, &room, &grant, control_tx.clone());
    let mut link = Some(MemberLink {
        outbox: outbox_tx,
        control: control_tx.clone(),
        values: options.values,
        // The echo of its own update is a y-websocket client's confirmation.
        acks: false,
    });
    // The captured values are used in place, never rebound: a `let` of one would be a second
    // copy in the future.
    async move {
        // Holds this connection's place under the connection caps until the task ends.
        let _permit = &permit;
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        let writer_finished = std::sync::atomic::AtomicBool::new(false);
        // Once the writer has sent a close frame, a peer that never answers it is not waited
        // for beyond CLOSE_GRACE.
        {
            let writer_done = async {
                let _ = (&mut writer).await;
                writer_finished.store(true, Ordering::Relaxed);
                Box::pin(tokio::time::sleep(CLOSE_GRACE)).await;
            };
            tokio::pin!(writer_done);
            // Boxed: joining is done once, and its state is larger than what reading takes.
            match Box::pin(join(&shared, &room, conn, &mut link)).await {
                Ok(handle) => {
                    debug!("connected");
                    let reading = read_loop(
                        stream,
                        &handle,
                        Peer { id: conn, options },
                        &shared,
                        &control_tx,
                        epoch,
                        &last_heard,
                        &mut policy,
                    );
                    tokio::select! {
                        () = reading => {}
                        () = &mut writer_done => {}
                        () = expiry => {
                            info!("token expired; closing");
                            control_tx.close(access::TOKEN_EXPIRED);
                        }
                    }
                    let _ = handle.tx.send(RoomCmd::Leave { conn }).await;
                }
                Err(close) => {
                    metrics::counter!(m::REFUSED, "reason" => close.reason).increment(1);
                    info!(reason = close.reason, "refused");
                    control_tx.close(close);
                }
            }
        }
        drop(policy);
        drop(session);
        drop(link);
        drop(control_tx);
        if !writer_finished.load(Ordering::Relaxed) {
            let abort = writer.abort_handle();
            if tokio::time::timeout(CLOSE_GRACE, writer).await.is_err() {
                // Still in a write within its deadline: the socket is given up now rather
                // than left to a detached task.
                abort.abort();
            }
        }
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
        debug!("disconnected");
    }
    .instrument(span)
}

/// Joins the room, asking the hub again if the instance it found was unloading.
pub(crate) async fn join(
    shared: &Arc<Shared>,
    room: &str,
    conn: ConnId,
    link: &mut Option<MemberLink>,
) -> Result<RoomHandle, Close> {
    loop {
        let handle = shared
            .hub
            .get_or_spawn(room, shared)
            .await
            .map_err(|e| match e {
                HubError::Full => ROOMS_FULL,
                HubError::ShuttingDown => Close::GOING_AWAY,
            })?;
        let (joined_tx, joined_rx) = oneshot::channel();
        let Some(l) = link.take() else {
            return Err(Close::GOING_AWAY);
        };
        // Keep clones so a refused join can be retried with the same channels.
        let retry = MemberLink {
            outbox: l.outbox.clone(),
            control: l.control.clone(),
            values: l.values,
            acks: l.acks,
        };
        let cmd = RoomCmd::Join(Box::new(Joining {
            conn,
            link: l,
            joined: joined_tx,
        }));
        if handle.tx.send(cmd).await.is_ok() && joined_rx.await.is_ok() {
            return Ok(handle);
        }
        if shared.shutdown.is_cancelled() {
            return Err(Close::GOING_AWAY);
        }
        // A room that could not load closes its queued joiners (storage unavailable) before
        // dropping their `joined`: that is an answer, not an unloading room to retry.
        if retry.control.is_closed() {
            return Err(retry.control.closed().await);
        }
        *link = Some(retry);
        tokio::task::yield_now().await;
    }
}

/// Not an `async fn`, so its arguments are not kept twice in the connection's task (see
/// [`serve`]).
#[allow(clippy::too_many_arguments)] // `policy` was the eighth; a struct would hide the borrows.
#[allow(clippy::manual_async_fn)] // An async fn would keep its arguments twice.
fn read_loop<'a>(
    mut stream: SplitStream<WebSocket>,
    room: &'a RoomHandle,
    peer: Peer,
    shared: &'a Shared,
    control: &'a CloseSignal,
    epoch: Instant,
    last_heard: &'a AtomicU64,
    policy: &'a mut ConnPolicy,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    async move {
        loop {
            let data = match next_data(&mut stream, policy, epoch, last_heard, too_big).await {
                Incoming::Data(data) => data,
                Incoming::Ignored => continue,
                Incoming::Ended => return,
                Incoming::Failed(close) => {
                    control.close(close);
                    return;
                }
            };
            // A closing connection (kicked, refused, slow, expired) forwards nothing more: its
            // frames are read, so the peer's close reply completes the handshake, and dropped.
            if control.is_closed() {
                continue;
            }
            // The whole frame is decoded before any of it is forwarded: a frame is taken whole
            // or not at all.
            let messages = match decode(&data, shared, peer.options) {
                Ok(messages) => messages,
                Err(e) => {
                    metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "malformed").increment(1);
                    info!(error = %e, "malformed message; closing connection");
                    control.close(PROTOCOL_ERROR);
                    return;
                }
            };
            // The frame was charged as one message; each further one costs one more.
            if messages.len() > 1 {
                let wait = policy.charge(messages.len() - 1, 0);
                if !wait.is_zero() {
                    Box::pin(tokio::time::sleep(wait)).await;
                }
            }
            // Boxed: inline, the sends' state would be part of every idle connection's task.
            if Box::pin(forward(messages, room, peer.id, control, policy))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Sends a frame's messages to the room, each that `policy` admits. Fails when the room is
/// gone.
async fn forward(
    messages: Vec<Inbound>,
    room: &RoomHandle,
    conn: ConnId,
    control: &CloseSignal,
    policy: &mut ConnPolicy,
) -> Result<(), ()> {
    for inbound in messages {
        // Read-only refusal, awareness identity and rate: dropped messages never reach the
        // room.
        let Some(inbound) = policy.admit(inbound) else {
            continue;
        };
        // Checked first, and raced against a send that waits for room in the inbox: a close
        // decided meanwhile drops the message.
        tokio::select! {
            biased;
            _ = control.closed() => break,
            sent = room.send_inbound(conn, inbound) => if sent.is_err() {
                return Err(());
            },
        }
    }
    Ok(())
}

pub(crate) fn is_capacity_error(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<tungstenite::Error>() {
            return matches!(t, tungstenite::Error::Capacity(_));
        }
        source = s.source();
    }
    false
}

/// What the reader got from the peer.
pub(crate) enum Incoming {
    /// A binary frame: a protocol message.
    Data(Bytes),
    /// A frame that carries no message (text, ping, pong): read on.
    Ignored,
    /// The peer closed or the stream ended: stop reading.
    Ended,
    /// The connection must close with this reason (logged here).
    Failed(Close),
}

/// Reads the next frame from the peer, both endpoints' way: the handshake deadline, the time
/// the peer was last heard from, the rate limits' pause, and the frames no protocol message is
/// in. `too_big` counts a frame over the message limit. Not an `async fn`, so its arguments
/// are not kept twice in the connection's task (see [`serve`]).
#[allow(clippy::manual_async_fn)] // An async fn would keep its arguments twice.
pub(crate) fn next_data<'a>(
    stream: &'a mut SplitStream<WebSocket>,
    policy: &'a mut ConnPolicy,
    epoch: Instant,
    last_heard: &'a AtomicU64,
    too_big: fn(),
) -> impl std::future::Future<Output = Incoming> + Send + 'a {
    async move {
        let frame = match policy.next_frame(stream).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Incoming::Ended,
            Err(close) => {
                info!(reason = close.reason, "closing connection");
                return Incoming::Failed(close);
            }
        };
        last_heard.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let len = match &frame {
            Ok(WsMessage::Binary(b) | WsMessage::Ping(b) | WsMessage::Pong(b)) => b.len(),
            Ok(WsMessage::Text(t)) => t.len(),
            _ => 0,
        };
        let wait = policy.charge(1, len);
        // Boxed: an idle connection's task then holds only what waiting for a frame takes.
        if !wait.is_zero() {
            Box::pin(tokio::time::sleep(wait)).await;
        }
        match frame {
            Ok(WsMessage::Binary(data)) => {
                m::hot().bytes_in.increment(data.len() as u64);
                Incoming::Data(data)
            }
            Ok(WsMessage::Close(_)) => Incoming::Ended,
            Ok(WsMessage::Text(_)) => {
                // Not part of the protocol; the reference server ignores it too.
                debug!("ignoring text frame");
                Incoming::Ignored
            }
            Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => Incoming::Ignored,
            Err(e) if is_capacity_error(&e) => {
                too_big();
                info!(error = %e, "closing connection");
                Incoming::Failed(TOO_BIG)
            }
            Err(_) => Incoming::Ended,
        }
    }
}

/// Counts a y-websocket frame over the message limit.
fn too_big() {
    metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "too_big").increment(1);
}

/// Decodes and validates every message of one frame into what the room needs, in order;
/// messages the server ignores (auth from a client, unknown extensions, values messages from a
/// connection that did not opt in) are left out. Any malformed message fails the whole frame.
fn decode(data: &Bytes, shared: &Shared, options: ConnOptions) -> Result<Vec<Inbound>, String> {
    let mut out = Vec::new();
    for message in Message::decode_all(data, &shared.limits) {
        let message = message.map_err(|e| e.to_string())?;
        if let Some(inbound) = decode_message(message, data.len(), options)? {
            out.push(inbound);
        }
    }
    Ok(out)
}

/// Bytes of message framing around an update (type, sub-type, length) that a frame holding just
/// that update may have beside it.
const FRAME_HEADER_SLACK: usize = 16;

/// One decoded message as the room takes it; `None` for messages the server ignores.
fn decode_message(
    message: Message,
    frame_len: usize,
    options: ConnOptions,
) -> Result<Option<Inbound>, String> {
    Ok(Some(match message {
        Message::Sync(SyncMessage::Step1(sv)) => {
            m::hot().in_sync_step1.increment(1);
            Inbound::Step1(StateVector::decode_v1(&sv).map_err(|e| e.to_string())?)
        }
        Message::Sync(SyncMessage::Step2(u) | SyncMessage::Update(u)) => {
            m::hot().in_update.increment(1);
            let decoded = Update::decode_v1(&u).map_err(|e| e.to_string())?;
            // The room keeps an update until it is stored and counts its length against
            // `--max-uncommitted-bytes`; a slice of a frame that holds more (other messages)
            // would keep the whole frame alive. Counted bytes must be held bytes: copy it out.
            let u = if u.len() + FRAME_HEADER_SLACK < frame_len {
                Bytes::copy_from_slice(&u)
            } else {
                u
            };
            // The echo is a y-websocket client's confirmation; it asks for no other.
            Inbound::Update(decoded, u, Confirm::Once)
        }
        Message::Awareness(a) => {
            m::hot().in_awareness.increment(1);
            Inbound::Awareness(a.entries)
        }
        Message::QueryAwareness => {
            m::hot().in_query_awareness.increment(1);
            Inbound::QueryAwareness
        }
        Message::Custom {
            tag: PLAIT_CRDT_MESSAGE,
            body,
        } if options.values => {
            m::hot().in_values.increment(1);
            let mut reader = plait_protocol::lib0::Reader::new(&body);
            let payload = reader.read_buf().map_err(|e| e.to_string())?;
            Inbound::Value(ClientMessage::decode(payload).map_err(|e| e.to_string())?)
        }
        Message::Auth | Message::Custom { .. } => {
            m::hot().in_ignored.increment(1);
            return Ok(None);
        }
    }))
}

/// What the writer needs besides its channels.
pub(crate) struct WriterConfig {
    pub(crate) epoch: Instant,
    /// Milliseconds after `epoch` when the reader last heard from the peer.
    pub(crate) last_heard: Arc<AtomicU64>,
    pub(crate) ping_interval: Duration,
    /// The deadline of one write, before the allowance for its size.
    pub(crate) write_timeout: Duration,
    /// Silence after which the peer is sent `keepalive_frame`; `None`: never.
    pub(crate) keepalive: Option<Duration>,
    /// The keepalive message ([`KEEPALIVE`] for y-websocket). Set later by a protocol that
    /// learns it from the peer (a Hocuspocus socket only knows once a document is attached);
    /// while unset, nothing is sent.
    pub(crate) keepalive_frame: Arc<OnceLock<Bytes>>,
}

impl WriterConfig {
    /// The server's write settings, with the connection's clock and keepalive message.
    pub(crate) fn new(
        shared: &Shared,
        epoch: Instant,
        last_heard: Arc<AtomicU64>,
        keepalive_frame: Arc<OnceLock<Bytes>>,
    ) -> Self {
        WriterConfig {
            epoch,
            last_heard,
            ping_interval: shared.ping_interval,
            write_timeout: shared.write_timeout,
            keepalive: shared.keepalive,
            keepalive_frame,
        }
    }

    /// When a write of `bytes` bytes starting now must have finished.
    fn deadline(&self, bytes: usize) -> tokio::time::Instant {
        let allowance = Duration::from_secs_f64(bytes as f64 / MIN_WRITE_BYTES_PER_SEC as f64);
        tokio::time::Instant::now() + self.write_timeout + allowance
    }
}

/// Why the writer gave up on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFailed {
    /// The socket returned an error (the peer is gone).
    Error,
    /// The write passed its deadline: the peer stopped reading.
    Timeout,
}

/// Runs one write to the socket under the deadline `deadline` gives. Most writes end at once,
/// the socket taking the bytes: those build no timer and read no clock (per frame that was
/// two clock reads and two timer entries, for a deadline that almost never fires); the
/// deadline is set, counted from then, when the socket first makes the write wait.
async fn write_within(
    deadline: impl FnOnce() -> tokio::time::Instant,
    write: impl std::future::Future<Output = Result<(), axum::Error>>,
) -> Result<(), WriteFailed> {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let written = match first {
        Poll::Ready(written) => written,
        Poll::Pending => tokio::time::timeout_at(deadline(), write)
            .await
            .map_err(|_| WriteFailed::Timeout)?,
    };
    written.map_err(|_| WriteFailed::Error)
}

/// Feeds `frames` to the socket and flushes them, each step under its own deadline, so the
/// time allowed follows the bytes in flight rather than the size of the whole batch (up to 64
/// frames of up to `--max-message-bytes` each). Feeding a frame may first push out the one
/// before it, so each step is allowed time for both.
async fn write_frames(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    frames: Vec<Bytes>,
    config: &WriterConfig,
) -> Result<(), WriteFailed> {
    let mut previous = 0;
    for frame in frames {
        let len = frame.len();
        let deadline = || config.deadline(previous + len);
        write_within(deadline, sink.feed(WsMessage::Binary(frame))).await?;
        previous = len;
    }
    write_within(|| config.deadline(previous), sink.flush()).await
}

/// Drains the outbox into the socket, feeding every queued frame before one flush, and sends
/// pings and keepalives. Every write has a deadline ([`WriterConfig::deadline`]): a peer that
/// stops reading while keeping its TCP connection open would otherwise hold this task, its
/// outbox and its socket forever. Ends after sending a close frame, when every sender of the
/// outbox is gone, or when a write fails or passes its deadline (the socket is then dropped
/// without a close frame, since it is not taking bytes).
///
/// Not an `async fn`, so its arguments are not kept twice in the task (see [`serve`]).
#[allow(clippy::manual_async_fn)] // An async fn would keep its arguments twice.
pub(crate) fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut outbox: OutboxRx,
    control: CloseSignal,
    config: WriterConfig,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // One timer for the pings and the keepalive: it fires at whichever is due first, and
        // each is checked when it fires. (A timer each was two polls on every turn of the
        // loop, once per frame written.) A keepalive is due `config.keepalive` after the last
        // frame sent; frames sent meanwhile only move it when the timer fires.
        let now = tokio::time::Instant::now();
        let mut next_ping = now + config.ping_interval;
        let mut last_sent = now;
        let next_keepalive =
            |last_sent: tokio::time::Instant| config.keepalive.map(|k| last_sent + k);
        let due = |next_ping, last_sent| {
            next_keepalive(last_sent).map_or(next_ping, |k| k.min(next_ping))
        };
        let timer = tokio::time::sleep_until(due(next_ping, last_sent));
        tokio::pin!(timer);
        // Allocated per wake-up and freed after the flush: an idle connection keeps no buffer.
        let mut batch = Vec::new();
        let mut closed = CloseWatch::new(control);
        let failed = loop {
            let close = tokio::select! {
                biased;
                close = std::future::poll_fn(|cx| closed.poll_closed(cx)) => Some(close),
                n = outbox.recv_many(&mut batch, 64) => {
                    if n == 0 {
                        None
                    } else {
                        let frames = std::mem::take(&mut batch);
                        let bytes = outbox.charged(&frames);
                        // Boxed, as every write below: an idle connection's task then holds only
                        // what waiting takes, not the largest write's state.
                        let write = Box::pin(write_frames(&mut sink, frames, &config));
                        if let Err(failed) = write.await {
                            break failed;
                        }
                        outbox.written(bytes);
                        last_sent = tokio::time::Instant::now();
                        continue;
                    }
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    let silent_ms = (config.epoch.elapsed().as_millis() as u64)
                        .saturating_sub(config.last_heard.load(Ordering::Relaxed));
                    let ping_due = now >= next_ping;
                    if ping_due && silent_ms > 2 * config.ping_interval.as_millis() as u64 {
                        Some(DEAD_PEER)
                    } else {
                        if ping_due {
                            let ping = sink.send(WsMessage::Ping(Bytes::new()));
                            let write = Box::pin(write_within(|| config.deadline(0), ping));
                            if let Err(failed) = write.await {
                                break failed;
                            }
                            next_ping = now + config.ping_interval;
                        }
                        if next_keepalive(last_sent).is_some_and(|k| k <= now) {
                            if let Some(frame) = config.keepalive_frame.get() {
                                let len = frame.len();
                                let deadline = || config.deadline(len);
                                let frame = WsMessage::Binary(frame.clone());
                                let write = Box::pin(write_within(deadline, sink.send(frame)));
                                if let Err(failed) = write.await {
                                    break failed;
                                }
                            }
                            last_sent = tokio::time::Instant::now();
                        }
                        timer.as_mut().reset(due(next_ping, last_sent));
                        continue;
                    }
                }
            };
            let frame = close.map(|c| CloseFrame {
                code: c.code,
                reason: c.reason.into(),
            });
            // The close frame gets a short deadline: the connection is ending either way.
            let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
            let _ = Box::pin(tokio::time::timeout_at(deadline, async {
                let _ = sink.send(WsMessage::Close(frame)).await;
                let _ = sink.close().await;
            }))
            .await;
            return;
        };
        if failed == WriteFailed::Timeout {
            metrics::counter!(m::WRITE_TIMEOUTS).increment(1);
            info!("a write passed its deadline: the peer stopped reading; dropping the socket");
            closed.signal().close(WRITE_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `serve` returns, without calling it.
    fn connection_future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(WebSocket, String, ConnOptions, Arc<Shared>, Grant, ConnPermit) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The size of the future `write_loop` returns, without calling it.
    fn writer_future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(SplitSink<WebSocket, WsMessage>, OutboxRx, CloseSignal, WriterConfig) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// A connection's two tasks are allocated at their futures' largest sizes for as long as
    /// the connection lives, idle or not. They were 1,752 and 760 bytes: each async fn kept its
    /// arguments twice, and the reader's sends were inline.
    #[test]
    fn a_connections_tasks_hold_only_what_waiting_takes() {
        let connection = connection_future_size(serve);
        let writer = writer_future_size(write_loop);
        eprintln!("connection future: {connection} bytes, writer future: {writer} bytes");
        assert!(
            connection <= 960,
            "the connection's future is {connection} bytes"
        );
        assert!(writer <= 640, "the writer's future is {writer} bytes");
    }

    /// Pins issue 13 item 6: an update is counted by its length while the room holds it, so it
    /// must not be a slice keeping a larger frame (with other messages in it) alive.
    #[test]
    fn an_update_sharing_its_frame_with_other_messages_is_copied_out() {
        use plait_protocol::message::{encode_awareness, encode_update};
        use yrs::{Text, Transact};
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let update = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "x");
            txn.encode_update_v1()
        };
        let awareness = plait_protocol::awareness::encode_entries(
            [plait_protocol::AwarenessEntry {
                client: 1,
                clock: 1,
                state: format!("{{\"pad\":\"{}\"}}", "p".repeat(50_000)),
            }]
            .iter(),
        );
        let frame = Bytes::from([encode_update(&update), encode_awareness(&awareness)].concat());
        let limits = plait_protocol::Limits::default();
        let first = Message::decode_all(&frame, &limits)
            .next()
            .unwrap()
            .unwrap();
        let Ok(Some(Inbound::Update(_, held, _))) =
            decode_message(first, frame.len(), ConnOptions::default())
        else {
            panic!("not an update");
        };
        assert_eq!(held.as_ref(), &update[..]);
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(
            !frame_range.contains(&(held.as_ptr() as usize)),
            "the held update is a slice of the whole frame"
        );
        // A frame of one update alone is not copied.
        let alone = encode_update(&update);
        let only = Message::decode_all(&alone, &limits)
            .next()
            .unwrap()
            .unwrap();
        let Ok(Some(Inbound::Update(_, held, _))) =
            decode_message(only, alone.len(), ConnOptions::default())
        else {
            panic!("not an update");
        };
        let alone_range = alone.as_ptr() as usize..alone.as_ptr() as usize + alone.len();
        assert!(alone_range.contains(&(held.as_ptr() as usize)));
    }

    #[test]
    fn values_opt_in_is_read_from_the_query() {
        let on = ConnOptions { values: true };
        assert_eq!(ConnOptions::from_query(Some("plait-values=1")), on);
        assert_eq!(
            ConnOptions::from_query(Some("token=x&plait-values=true")),
            on
        );
        assert_eq!(
            ConnOptions::from_query(Some("plait-values=0")),
            ConnOptions::default()
        );
        assert_eq!(
            ConnOptions::from_query(Some("xplait-values=1")),
            ConnOptions::default()
        );
        assert_eq!(ConnOptions::from_query(None), ConnOptions::default());
    }
}
