//! `plait-bench relay`: the physical limit of a WebSocket fan-out on this machine, to measure
//! plait against. Rooms by URL path; every binary frame is relayed, as it came, to the room's
//! other connections: no yrs, no store, no awareness logic. The one thing it answers itself is
//! a sync step 1, with an empty step 2, because the generator's clients wait for one before
//! they count as connected.
//!
//! Like plait, each connection has a reader and a writer task and a bounded queue between the
//! room and the writer; a full queue drops that connection (plait closes it as a slow consumer),
//! so neither server can look faster by buffering without bound.
//!
//! `--durable DIR` makes it the floor under strict durability: each frame is appended to a log
//! file and synced by a thread of its own before it is relayed, as a store's writer thread
//! does, so what waiting on the disk and on another thread costs shows without yrs or SQLite.
//! `--hold-us` delays each frame on the runtime's timer instead: the wait without the thread.
//! `--durable DIR --inline` writes and syncs on the runtime thread that read the frame: the
//! disk without the other thread.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Frames queued per connection before it counts as a slow consumer (plait's
/// `--outbox-frames` default).
const QUEUE_FRAMES: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// The loopback port to listen on.
    #[arg(long, default_value_t = 1235)]
    port: u16,
    /// Make the relay durable: append every frame to a log file in this directory and
    /// `fdatasync` it before relaying it (the floor under a server with strict durability).
    #[arg(long)]
    durable: Option<std::path::PathBuf>,
    /// Hold every frame this many microseconds before relaying it, on a timer of the runtime
    /// (a delay as long as a commit's, with no other thread involved).
    #[arg(long)]
    hold_us: Option<u64>,
    /// With `--durable`: write and sync on the runtime thread that read the frame, blocking
    /// it, instead of on the log's own thread.
    #[arg(long, requires = "durable")]
    inline: bool,
    /// Write each frame straight to a receiver's socket from the sender's task when that
    /// receiver has nothing queued, instead of waking its writer task.
    #[arg(long)]
    direct: bool,
}

/// Each room's connections.
type Rooms = Arc<Mutex<HashMap<String, Vec<Peer>>>>;

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    Message,
>;

/// A connection as its room sees it.
#[derive(Clone)]
struct Peer {
    id: u64,
    /// The queue to the connection's writer.
    queue: mpsc::Sender<Bytes>,
    /// With `--direct`: the socket, and how many frames are queued or in the writer's hands
    /// (a frame is written directly only at 0, so no frame passes one queued before it).
    direct: Option<(
        Arc<tokio::sync::Mutex<Sink>>,
        Arc<std::sync::atomic::AtomicUsize>,
    )>,
}

/// Serves until killed.
pub async fn run(opts: &Opts) -> Result<()> {
    let log = match &opts.durable {
        Some(dir) if opts.inline => Some(Log::open_inline(dir)?),
        Some(dir) => Some(Log::open(dir)?),
        None => None,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, opts.port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    eprintln!("relay listening on {addr}");
    let rooms: Rooms = Arc::default();
    let hold = opts.hold_us.map(std::time::Duration::from_micros);
    let next = AtomicU64::new(1);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let id = next.fetch_add(1, Ordering::Relaxed);
        let served = serve(stream, id, rooms.clone(), log.clone(), hold, opts.direct);
        if opts.direct {
            // A direct fan-out writes to hundreds of sockets in one poll of the sender's task:
            // past tokio's cooperative budget (128 operations a poll) every socket would answer
            // "not now" and leave the frame to its writer after all.
            tokio::spawn(tokio::task::unconstrained(served));
        } else {
            tokio::spawn(served);
        }
    }
}

/// The durable relay's log: frames appended to a file and `fdatasync`ed before they are
/// relayed.
#[derive(Clone)]
enum Log {
    /// One thread writes and syncs, a group of frames per sync (whatever queued while the last
    /// sync ran), then answers each frame's sender, as a store's writer thread does.
    Thread(std::sync::mpsc::Sender<(Bytes, tokio::sync::oneshot::Sender<()>)>),
    /// The appending task writes and syncs itself, blocking its runtime thread meanwhile: no
    /// other thread to wake, and none to wake it.
    Inline(Arc<Mutex<std::fs::File>>),
}

impl Log {
    /// The log file in `dir` (made if missing), opened for appending.
    fn file(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::fs::File)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the relay's log directory {}", dir.display()))?;
        let path = dir.join(format!("relay-{}.log", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening the relay's log {}", path.display()))?;
        Ok((path, file))
    }

    /// A log written by the task that appends, on its runtime thread (`--inline`).
    fn open_inline(dir: &std::path::Path) -> Result<Self> {
        Ok(Self::Inline(Arc::new(Mutex::new(Self::file(dir)?.1))))
    }

    fn open(dir: &std::path::Path) -> Result<Self> {
        use std::io::Write;
        let (path, mut file) = Self::file(dir)?;
        let (tx, rx) = std::sync::mpsc::channel::<(Bytes, tokio::sync::oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name("relay-log".into())
            .spawn(move || {
                let mut answers = Vec::new();
                while let Ok(first) = rx.recv() {
                    let written = std::iter::once(first)
                        .chain(rx.try_iter())
                        .try_for_each(|(frame, answer)| {
                            answers.push(answer);
                            file.write_all(&frame)
                        })
                        .and_then(|()| file.sync_data());
                    if let Err(e) = written {
                        eprintln!("relay: writing {}: {e}", path.display());
                        std::process::exit(1);
                    }
                    for answer in answers.drain(..) {
                        let _ = answer.send(());
                    }
                }
            })?;
        Ok(Self::Thread(tx))
    }

    /// Returns once `frame` is on the disk.
    async fn append(&self, frame: Bytes) {
        match self {
            Self::Thread(log) => {
                let (answer, done) = tokio::sync::oneshot::channel();
                if log.send((frame, answer)).is_ok() {
                    let _ = done.await;
                }
            }
            Self::Inline(file) => {
                use std::io::Write;
                let mut file = file.lock().unwrap();
                if let Err(e) = file.write_all(&frame).and_then(|()| file.sync_data()) {
                    eprintln!("relay: writing the log: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

// The handshake callback's error type is tungstenite's, however large.
#[allow(clippy::result_large_err)]
async fn serve(
    stream: tokio::net::TcpStream,
    id: u64,
    rooms: Rooms,
    log: Option<Log>,
    hold: Option<std::time::Duration>,
    direct: bool,
) {
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().trim_start_matches('/').to_owned();
        Ok(resp)
    };
    // The buffer sizes plait gives tungstenite (its defaults allocate a 128 KiB read buffer
    // per socket up front, which would make the relay's memory the defaults', not the stack's).
    let config = WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(16 * 1024);
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let room = path;
    let (sink, mut source) = ws.split();
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE_FRAMES);
    let (writer, direct) = if direct {
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = tokio::spawn(write_shared(sink.clone(), pending.clone(), rx));
        (writer, Some((sink, pending)))
    } else {
        (tokio::spawn(write(sink, rx)), None)
    };
    let me = Peer {
        id,
        queue: tx,
        direct,
    };
    rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default()
        .push(me.clone());
    while let Some(Ok(message)) = source.next().await {
        let Message::Binary(frame) = message else {
            continue;
        };
        if frame.starts_with(&[0, 0]) {
            // An empty sync step 2, the answer to every sync step 1.
            if !me.send(&crate::client::step2_empty()) {
                break;
            }
            continue;
        }
        if let Some(log) = &log {
            log.append(frame.clone()).await;
        }
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        let mut slow = Vec::new();
        {
            let rooms = rooms.lock().unwrap();
            for peer in rooms.get(&room).into_iter().flatten() {
                if peer.id != id && !peer.send(&frame) {
                    slow.push(peer.id);
                }
            }
        }
        if !slow.is_empty() {
            leave(&rooms, &room, &slow);
        }
    }
    leave(&rooms, &room, &[id]);
    writer.abort();
}

/// The writer: every queued frame, then one flush.
async fn write(mut sink: Sink, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        for frame in batch.drain(..) {
            if sink.feed(Message::Binary(frame)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// The writer of a `--direct` connection: as [`write`], through the socket it shares with
/// senders; an empty frame asks it to flush what a sender could not.
async fn write_shared(
    sink: Arc<tokio::sync::Mutex<Sink>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        let taken = batch.len();
        let mut sink = sink.lock().await;
        for frame in batch.drain(..).filter(|frame| !frame.is_empty()) {
            if sink.feed(Message::Binary(frame)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        drop(sink);
        pending.fetch_sub(taken, Ordering::Release);
    }
}

impl Peer {
    /// Queues `frame` for the connection, or writes it now (`--direct`); false if the
    /// connection is too slow or gone.
    fn send(&self, frame: &Bytes) -> bool {
        let Some((sink, pending)) = &self.direct else {
            return self.queue.try_send(frame.clone()).is_ok();
        };
        if pending.load(Ordering::Acquire) == 0 {
            if let Ok(mut sink) = sink.try_lock() {
                match write_now(&mut sink, frame) {
                    Some(Ok(true)) => return true,
                    // Written but not flushed: the writer flushes it.
                    Some(Ok(false)) => return self.enqueue(pending, Bytes::new()),
                    Some(Err(())) => return false,
                    None => {}
                }
            }
        }
        self.enqueue(pending, frame.clone())
    }

    fn enqueue(&self, pending: &std::sync::atomic::AtomicUsize, frame: Bytes) -> bool {
        pending.fetch_add(1, Ordering::AcqRel);
        self.queue.try_send(frame).is_ok()
    }
}

/// Writes `frame` to the socket without waiting: `None` if the socket cannot take it now,
/// `Some(Ok(flushed))` once it is written, `Some(Err(()))` if the connection failed.
fn write_now(sink: &mut Sink, frame: &Bytes) -> Option<Result<bool, ()>> {
    use futures_util::Sink as _;
    use std::task::{Context, Poll};
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut sink = std::pin::Pin::new(sink);
    match sink.as_mut().poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(_)) => return Some(Err(())),
        Poll::Pending => return None,
    }
    if sink
        .as_mut()
        .start_send(Message::Binary(frame.clone()))
        .is_err()
    {
        return Some(Err(()));
    }
    Some(match sink.poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(_)) => Err(()),
        Poll::Pending => Ok(false),
    })
}

/// Removes connections from a room; dropping their queue ends their writer.
fn leave(rooms: &Rooms, room: &str, ids: &[u64]) {
    let mut rooms = rooms.lock().unwrap();
    if let Some(members) = rooms.get_mut(room) {
        members.retain(|peer| !ids.contains(&peer.id));
        if members.is_empty() {
            rooms.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The durable relay's whole point: a frame is relayed only once it is in the log, and
    /// frames appended together (one sync for the group) all land; written by the log's thread
    /// or inline alike.
    #[tokio::test]
    async fn a_frame_is_in_the_log_when_append_returns() -> Result<()> {
        for inline in [false, true] {
            let dir = std::env::temp_dir()
                .join(format!("plait-relay-log-{}-{inline}", std::process::id()));
            let log = if inline {
                Log::open_inline(&dir)?
            } else {
                Log::open(&dir)?
            };
            let file = dir.join(format!("relay-{}.log", std::process::id()));
            log.append(Bytes::from_static(b"first")).await;
            assert_eq!(std::fs::read(&file)?, b"first", "inline: {inline}");
            let frames = (0..20).map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(Bytes::from(format!("<{i}>"))).await })
            });
            for appended in frames.collect::<Vec<_>>() {
                appended.await?;
            }
            let written = String::from_utf8(std::fs::read(&file)?)?;
            for i in 0..20 {
                assert!(
                    written.contains(&format!("<{i}>")),
                    "frame {i} missing (inline: {inline}): {written}"
                );
            }
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}
