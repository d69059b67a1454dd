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
/// Bytes of updates gathered into one transaction at most (one append may be larger). A group
/// is one statement on PostgreSQL, whose parameters are each limited to 1 GB, and a group that
/// failed for its size would fail again on every retry.
const MAX_GROUP_BYTES: usize = 64 << 20;
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
    /// `&mut self`: the group-commit task is the only caller, so a writer may keep a
    /// connection of its own.
    async fn commit_group(&mut self, group: &[&AppendRequest]) -> Result<Vec<u64>, Error>;

    /// Work between groups, once the last group's rooms have their replies: a store's
    /// housekeeping that must not delay them. Nothing by default.
    async fn after_group(&mut self) {}
}

/// A group laid out for one multi-room statement per step: each room once, with the number of
/// updates it gains, and each update with its distance below the room's new last seq. A
/// dialect writes the rooms, learns each one's new last seq, writes the updates, and hands the
/// last seqs back to [`Layout::request_seqs`]; the statements per group stay the same however
/// many rooms it holds (a statement per room cost a round trip to the database, or to sqlx's
/// SQLite thread, each).
#[derive(Debug)]
pub(crate) struct Layout<'a> {
    /// Each room's run of consecutive requests in the group: its name, the run's requests,
    /// and how many updates they append.
    runs: Vec<(&'a str, &'a [&'a AppendRequest], i64)>,
}

impl<'a> Layout<'a> {
    /// `group` must be sorted by room, as the group-commit task sorts it.
    pub(crate) fn new(group: &'a [&'a AppendRequest]) -> Self {
        let runs = group
            .chunk_by(|a, b| a.room == b.room)
            .map(|run| {
                let added = run.iter().map(|req| req.updates.len() as i64).sum();
                (run[0].room.as_str(), run, added)
            })
            .collect();
        Layout { runs }
    }

    /// Each room once, in lock order, with the number of updates it gains.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = (&'a str, i64)> + '_ {
        self.runs.iter().map(|&(room, _, total)| (room, total))
    }

    /// Every update of the group in order: its room, how far its seq lies below the room's
    /// new last seq, and its bytes.
    pub(crate) fn updates(&self) -> impl Iterator<Item = (&'a str, i64, &'a Bytes)> + '_ {
        self.runs.iter().flat_map(|&(room, run, total)| {
            run.iter()
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
        let mut seqs = Vec::new();
        for &(room, run, total) in &self.runs {
            let last = last_seq(room)
                .ok_or_else(|| Error::Corrupt(format!("room {room:?} was not written")))?;
            let mut seq = last - total;
            for req in run {
                seq += req.updates.len() as i64;
                seqs.push(crate::rows::to_u64(seq, "room seq")?);
            }
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
        Self::spawn_with(writer, MAX_GROUP_BYTES)
    }

    /// [`GroupCommit::spawn`] with another byte bound per group (tests).
    fn spawn_with(writer: impl GroupWriter, max_bytes: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, rx, max_bytes));
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

async fn run(
    mut writer: impl GroupWriter,
    mut rx: mpsc::Receiver<AppendRequest>,
    max_bytes: usize,
) {
    let mut received = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut received, MAX_GROUP).await > 0 {
        // A room that stopped waiting (its commit timed out while the store was stuck) will
        // write the same updates again with its retry: writing these too would log them twice.
        received.retain(|req| !req.reply.is_closed());
        // Groups of at most `max_bytes` (or one larger append), cut in arrival order, so one
        // room's appends keep their order across groups too.
        while !received.is_empty() {
            let mut bytes = 0;
            let n = received
                .iter()
                .take_while(|req| {
                    bytes += req.updates.iter().map(Bytes::len).sum::<usize>();
                    bytes <= max_bytes
                })
                .count()
                .max(1);
            let mut group: Vec<AppendRequest> = received.drain(..n).collect();
            // Lock order: by room name; the stable sort keeps one room's appends in arrival
            // order.
            group.sort_by(|a, b| a.room.cmp(&b.room));
            commit(&mut writer, group).await;
            writer.after_group().await;
        }
    }
}

async fn commit(writer: &mut impl GroupWriter, group: Vec<AppendRequest>) {
    let refs: Vec<&AppendRequest> = group.iter().collect();
    match writer.commit_group(&refs).await {
        Ok(seqs) => {
            for (req, seq) in group.into_iter().zip(seqs) {
                let _ = req.reply.send(Ok(seq));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for req in group {
                let _ = req.reply.send(Err(Error::GroupCommit(msg.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

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

    /// Records each group's rooms; its first commit waits until `release` is notified, like
    /// a database stuck on a lock (the appends sent meanwhile queue up and are received
    /// together).
    #[derive(Debug, Default)]
    struct Recorder {
        groups: Mutex<Vec<Vec<String>>>,
        release: tokio::sync::Notify,
        first: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl GroupWriter for Arc<Recorder> {
        async fn commit_group(&mut self, group: &[&AppendRequest]) -> Result<Vec<u64>, Error> {
            if !self.first.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.release.notified().await;
            }
            self.groups
                .lock()
                .unwrap()
                .push(group.iter().map(|r| r.room.clone()).collect());
            Ok((1..=group.len() as u64).collect())
        }
    }

    /// Appends queued together are cut into groups of at most the byte bound, in arrival
    /// order (an append larger than the bound is a group of its own), and every one is
    /// answered.
    #[tokio::test]
    async fn groups_are_bounded_in_bytes() {
        let writer = Arc::new(Recorder::default());
        let group = GroupCommit::spawn_with(writer.clone(), 100);
        let stuck = tokio::spawn({
            let group = group.clone();
            async move { group.append("first", &[Bytes::from_static(b"1")]).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let appends: Vec<_> = [("e", 60), ("d", 30), ("c", 30), ("b", 250), ("a", 10)]
            .into_iter()
            .map(|(room, bytes)| {
                let group = group.clone();
                tokio::spawn(
                    async move { group.append(room, &[Bytes::from(vec![0; bytes])]).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.release.notify_one();
        stuck.await.unwrap().unwrap();
        for append in appends {
            append.await.unwrap().unwrap();
        }
        let mut groups = writer.groups.lock().unwrap().clone();
        assert_eq!(groups.remove(0), vec!["first".to_owned()]);
        let rooms: Vec<String> = groups.iter().flatten().cloned().collect();
        assert_eq!(rooms.len(), 5, "{groups:?}");
        assert!(
            groups.len() >= 3,
            "the queued appends were not cut: {groups:?}"
        );
        for g in &groups {
            let bytes: usize = g
                .iter()
                .map(|r| match r.as_str() {
                    "e" => 60,
                    "d" | "c" => 30,
                    "b" => 250,
                    _ => 10,
                })
                .sum();
            assert!(bytes <= 100 || g.len() == 1, "{groups:?}");
        }
    }

    /// Pins issue 13 item 7: an append whose room stopped waiting (its commit timed out) was
    /// still written when the stuck store moved on, and the room's retry wrote it again.
    #[tokio::test]
    async fn an_abandoned_append_is_not_written() {
        let writer = Arc::new(Recorder::default());
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
        let committed: Vec<String> = writer.groups.lock().unwrap().concat();
        assert_eq!(committed, vec!["stuck".to_owned(), "later".to_owned()]);
    }

    /// A writer that fails every group with a database error.
    struct Failing;

    #[async_trait]
    impl GroupWriter for Failing {
        async fn commit_group(&mut self, _: &[&AppendRequest]) -> Result<Vec<u64>, Error> {
            Err(Error::Database(sqlx::Error::PoolTimedOut))
        }
    }

    /// A failed group reaches each of its rooms with the cause said once (it read "database
    /// error: database error: ..." in the logs).
    #[tokio::test]
    async fn a_failed_group_says_its_cause_once() {
        let group = GroupCommit::spawn(Failing);
        let failed = group
            .append("r", &[Bytes::from_static(b"1")])
            .await
            .unwrap_err();
        let cause = Error::Database(sqlx::Error::PoolTimedOut).to_string();
        assert_eq!(failed.to_string(), cause);
    }
}
