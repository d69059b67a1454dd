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

/// A group laid out for one multi-room statement per step: each room once, with the number of
/// updates it gains, and each update with its distance below the room's new last seq. A
/// dialect writes the rooms, learns each one's new last seq, writes the updates, and hands the
/// last seqs back to [`Layout::request_seqs`]; the statements per group stay the same however
/// many rooms it holds (a statement per room cost a round trip to the database, or to sqlx's
/// SQLite thread, each).
#[derive(Debug)]
pub(crate) struct Layout<'a> {
    group: &'a [&'a AppendRequest],
    /// Each room's run of consecutive requests in `group`: its name, where the run ends, and
    /// how many updates the run appends.
    runs: Vec<(&'a str, usize, i64)>,
}

impl<'a> Layout<'a> {
    /// `group` must be sorted by room, as the group-commit task sorts it.
    pub(crate) fn new(group: &'a [&'a AppendRequest]) -> Self {
        let mut runs: Vec<(&str, usize, i64)> = Vec::new();
        for (i, req) in group.iter().enumerate() {
            let added = req.updates.len() as i64;
            match runs.last_mut() {
                Some((room, end, total)) if *room == req.room => {
                    *end = i + 1;
                    *total += added;
                }
                _ => runs.push((&req.room, i + 1, added)),
            }
        }
        Layout { group, runs }
    }

    /// Each room once, in lock order, with the number of updates it gains.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = (&'a str, i64)> + '_ {
        self.runs.iter().map(|&(room, _, total)| (room, total))
    }

    /// Every update of the group in order: its room, how far its seq lies below the room's
    /// new last seq, and its bytes.
    pub(crate) fn updates(&self) -> impl Iterator<Item = (&'a str, i64, &'a Bytes)> + '_ {
        let group = self.group;
        let mut start = 0;
        self.runs.iter().flat_map(move |&(room, end, total)| {
            let requests = &group[start..end];
            start = end;
            requests
                .iter()
                .flat_map(|req| req.updates.iter())
                .enumerate()
                .map(move |(i, data)| (room, total - 1 - i as i64, data))
        })
    }

    /// Each request's last seq, from each room's new last seq (`last_seq(room)`).
    pub(crate) fn request_seqs(
        &self,
        last_seq: impl Fn(&str) -> Option<i64>,
    ) -> Result<Vec<u64>, Error> {
        let mut seqs = Vec::with_capacity(self.group.len());
        let mut start = 0;
        for &(room, end, total) in &self.runs {
            let last = last_seq(room)
                .ok_or_else(|| Error::Corrupt(format!("room {room:?} was not written")))?;
            let mut seq = last - total;
            for req in &self.group[start..end] {
                seq += req.updates.len() as i64;
                seqs.push(crate::rows::to_u64(seq, "room seq")?);
            }
            start = end;
        }
        Ok(seqs)
    }
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

    fn request(room: &str, updates: &[&'static str]) -> AppendRequest {
        AppendRequest {
            room: room.into(),
            updates: updates
                .iter()
                .map(|u| Bytes::from_static(u.as_bytes()))
                .collect(),
            reply: oneshot::channel().0,
        }
    }

    /// A room's appends in one group share one upsert: the room gains their total, the
    /// updates count down to the room's new last seq in order, and each append's seq is its
    /// own last update's.
    #[test]
    fn a_layout_gives_each_append_its_own_range() {
        let requests = [
            request("a", &["a1", "a2"]),
            request("a", &["a3"]),
            request("b", &["b1"]),
            request("c", &["c1", "c2", "c3"]),
            request("c", &["c4"]),
        ];
        let group: Vec<&AppendRequest> = requests.iter().collect();
        let layout = Layout::new(&group);
        assert_eq!(
            layout.rooms().collect::<Vec<_>>(),
            vec![("a", 3), ("b", 1), ("c", 4)]
        );
        let updates: Vec<(&str, i64, &[u8])> = layout
            .updates()
            .map(|(room, below, data)| (room, below, data.as_ref()))
            .collect();
        assert_eq!(
            updates,
            vec![
                ("a", 2, &b"a1"[..]),
                ("a", 1, b"a2"),
                ("a", 0, b"a3"),
                ("b", 0, b"b1"),
                ("c", 3, b"c1"),
                ("c", 2, b"c2"),
                ("c", 1, b"c3"),
                ("c", 0, b"c4"),
            ]
        );
        // Room a had 7 updates before, b none, c 10.
        let lasts = |room: &str| match room {
            "a" => Some(10),
            "b" => Some(1),
            "c" => Some(14),
            _ => None,
        };
        assert_eq!(layout.request_seqs(lasts).unwrap(), vec![9, 10, 1, 13, 14]);
        assert!(layout
            .request_seqs(|room| lasts(room).filter(|_| room != "b"))
            .is_err());
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
