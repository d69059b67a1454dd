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
        // A room that stopped waiting (its commit timed out while the store was stuck) will
        // write the same updates again with its retry: writing these too would log them twice.
        group.retain(|req| !req.reply.is_closed());
        if group.is_empty() {
            continue;
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// Records what it commits; its first commit waits until `release` is notified, like a
    /// database stuck on a lock.
    #[derive(Debug, Default)]
    struct Stuck {
        committed: Mutex<Vec<String>>,
        release: tokio::sync::Notify,
        first: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl GroupWriter for Arc<Stuck> {
        async fn commit_group(&self, group: &[&AppendRequest]) -> Result<Vec<u64>, Error> {
            if !self.first.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.release.notified().await;
            }
            let mut committed = self.committed.lock().unwrap();
            committed.extend(group.iter().map(|r| r.room.clone()));
            Ok((1..=group.len() as u64).collect())
        }
    }

    /// Pins issue 13 item 7: an append whose room stopped waiting (its commit timed out) was
    /// still written when the stuck store moved on, and the room's retry wrote it again.
    #[tokio::test]
    async fn an_abandoned_append_is_not_written() {
        let writer = Arc::new(Stuck::default());
        let group = GroupCommit::spawn(writer.clone());
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.append("stuck", &[Bytes::from_static(b"1")]).await }
        });
        // Let the first append reach the (stuck) writer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            group.append("gave-up", &[Bytes::from_static(b"2")]),
        )
        .await;
        assert!(abandoned.is_err(), "the stuck writer answered");
        writer.release.notify_one();
        first.await.unwrap().unwrap();
        group
            .append("later", &[Bytes::from_static(b"3")])
            .await
            .unwrap();
        let committed = writer.committed.lock().unwrap().clone();
        assert_eq!(committed, vec!["stuck".to_owned(), "later".to_owned()]);
    }
}
