//! Group commit: appends from every room gathered into one transaction at most.
//!
//! Each commit costs a synchronous disk flush (SQLite's fsync, PostgreSQL's WAL flush), so rooms
//! that commit at the same moment share one. A single task per store drains the queue; rooms
//! wait for their own reply, so strict durability is unchanged.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::Error;

/// Appends gathered into one transaction at most.
const MAX_GROUP: usize = 256;
/// Appends waiting for the task; senders wait (backpressure) when it is full.
const QUEUE: usize = 1024;

/// One room's append, waiting for its group.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) room: String,
    pub(crate) updates: Vec<Bytes>,
    reply: oneshot::Sender<Result<u64, Error>>,
}

/// A database that can commit a group of appends in one transaction, returning each request's
/// last sequence number in order. Rooms are locked in name order (`by_room`), so two
/// processes committing groups into one PostgreSQL never deadlock on each other.
#[async_trait]
pub(crate) trait GroupWriter: Send + Sync + 'static {
    async fn commit_group(&self, group: &[&AppendRequest]) -> Result<Vec<u64>, Error>;
}

/// The sending side of a store's group-commit task; the task ends when every clone is gone.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<AppendRequest>,
}

impl GroupCommit {
    pub(crate) fn spawn(writer: impl GroupWriter) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, rx));
        GroupCommit { queue }
    }

    /// Appends `updates` to `room` with the next group; returns the last update's seq.
    pub(crate) async fn append(&self, room: &str, updates: &[Bytes]) -> Result<u64, Error> {
        if updates.is_empty() {
            return Err(Error::Corrupt("append of no updates".into()));
        }
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            room: room.to_owned(),
            updates: updates.to_vec(),
            reply,
        };
        let closed = || Error::GroupCommit("the store is closed".into());
        self.queue.send(request).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(writer: impl GroupWriter, mut rx: mpsc::Receiver<AppendRequest>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        // Lock order: by room name; the stable sort keeps one room's appends in arrival order.
        group.sort_by(|a: &AppendRequest, b: &AppendRequest| a.room.cmp(&b.room));
        let refs: Vec<&AppendRequest> = group.iter().collect();
        match writer.commit_group(&refs).await {
            Ok(seqs) => {
                for (req, seq) in group.drain(..).zip(seqs) {
                    let _ = req.reply.send(Ok(seq));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(Error::GroupCommit(msg.clone())));
                }
            }
        }
    }
}
