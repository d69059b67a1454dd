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
}

/// Each room's connections: (id, queue to the connection's writer).
type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::Sender<Bytes>)>>>>;

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
        tokio::spawn(serve(stream, id, rooms.clone(), log.clone(), hold));
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
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_FRAMES);
    rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default()
        .push((id, tx.clone()));
    // The writer: every queued frame, then one flush.
    let writer = tokio::spawn(async move {
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
    });
    while let Some(Ok(message)) = source.next().await {
        let Message::Binary(frame) = message else {
            continue;
        };
        if frame.starts_with(&[0, 0]) {
            // An empty sync step 2, the answer to every sync step 1.
            if tx.try_send(crate::client::step2_empty()).is_err() {
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
            for (other, queue) in rooms.get(&room).into_iter().flatten() {
                if *other != id && queue.try_send(frame.clone()).is_err() {
                    slow.push(*other);
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

/// Removes connections from a room; dropping their queue ends their writer.
fn leave(rooms: &Rooms, room: &str, ids: &[u64]) {
    let mut rooms = rooms.lock().unwrap();
    if let Some(members) = rooms.get_mut(room) {
        members.retain(|(id, _)| !ids.contains(id));
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
