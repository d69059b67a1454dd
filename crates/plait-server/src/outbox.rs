//! A connection's outbox: frames on their way to its writer task, bounded in frames and in
//! bytes.
//!
//! Counting frames alone lets a reader that never drains hold `--outbox-frames` frames of up
//! to `--max-message-bytes` each (gigabytes); the byte bound (`--max-outbox-bytes`) is what
//! keeps a slow reader's cost small. A frame that finds the outbox empty always goes, so one
//! large sync step 2 is never refused, and a frame larger than the whole bound goes when what
//! is queued ahead of it is within a quarter of the bound: a 30 MiB update relayed to a reader
//! that has a few presence frames queued is not a slow consumer (closing it would make it
//! resync the whole document, into the same situation). Such a frame counts as a quarter of
//! the bound, not its size, so the presence and edits that follow it still fit: counted whole,
//! a 50 MB step 2 made the client's own presence echo close it as slow, and its reconnects
//! failed the same way until one won the race (a cold load of a 50 MB document took 1 to 60
//! s). A slow reader so holds at most the bound plus two such frames.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;

use crate::conn::Close;

/// The reason a connection closes, set once by whoever decides first (its room, its reader, an
/// admin kick, token expiry) and sent by the writer as the close frame. A channel would do,
/// but costs about 1 KiB per connection; this is a few dozen bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloseSignal(Arc<CloseSlot>);

#[derive(Debug, Default)]
struct CloseSlot {
    reason: OnceLock<Close>,
    /// Wakes every task waiting in [`CloseSignal::closed`] (the reader, and whoever else
    /// waits for the close).
    notify: Notify,
    /// The writer, waiting in [`CloseWatch::poll_closed`]: it looks on every turn of its
    /// loop, once per batch written, and a `Notify` takes a lock each time it is polled.
    writer: AtomicWaker,
}

impl CloseSignal {
    /// Asks the writer to close with `reason`, unless another reason came first.
    pub(crate) fn close(&self, reason: Close) {
        if self.0.reason.set(reason).is_ok() {
            self.0.notify.notify_waiters();
            self.0.writer.wake();
        }
    }

    /// Whether a close reason is set: from then on the connection's reader forwards nothing.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.reason.get().is_some()
    }

    /// The reason, once one is set.
    pub(crate) async fn closed(&self) -> Close {
        loop {
            // Registered before the check, so a close between the check and the wait still
            // wakes this task (`notify_waiters` stores no permit).
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.0.reason.get() {
                return *reason;
            }
            notified.await;
        }
    }
}

/// The writer's side of a [`CloseSignal`] (only one task, the connection's writer, may watch
/// it). The writer looks on every turn of its loop, once per batch written, and registering its
/// waker each time (two atomic operations) was about 2% of the server's CPU in a 500-client room
/// at 100 edits/s: the waker last registered is kept, and registered again only when it
/// changed. Only a close takes it out of the slot, and a close is looked at first.
#[derive(Debug)]
pub(crate) struct CloseWatch {
    signal: CloseSignal,
    registered: Option<Waker>,
}

impl CloseWatch {
    pub(crate) fn new(signal: CloseSignal) -> Self {
        CloseWatch {
            signal,
            registered: None,
        }
    }

    /// The signal watched, to set a reason on.
    pub(crate) fn signal(&self) -> &CloseSignal {
        &self.signal
    }

    /// The reason, once one is set; until then wakes the task polling it when one is.
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Close> {
        let slot = &self.signal.0;
        if let Some(reason) = slot.reason.get() {
            return Poll::Ready(*reason);
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        self.registered = Some(cx.waker().clone());
        slot.writer.register(cx.waker());
        // Looked at again: a close between the first look and the registration woke no one.
        match slot.reason.get() {
            Some(reason) => Poll::Ready(*reason),
            None => Poll::Pending,
        }
    }
}

/// The sending side; cloned by the room and the connection's reader.
#[derive(Debug)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

/// The writer task's side.
#[derive(Debug)]
pub(crate) struct OutboxRx {
    shared: Arc<Shared>,
}

/// A mutex-guarded queue rather than a tokio channel: a bounded mpsc allocates its channel
/// state and a first block of 32 slots up front (about 1.5 KiB per connection, a sixth of an
/// idle connection's memory), while an empty `VecDeque` allocates nothing.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes queued or handed to the writer and not yet written, a frame larger than the
    /// bound counted as a quarter of it ([`Shared::charge`]).
    bytes: usize,
    senders: usize,
    receiver_alive: bool,
    /// The writer, while it waits for a frame or for the last sender to go. Kept under the
    /// queue's lock, which every send takes anyway: a `Notify` took a lock of its own on each
    /// send and each wait, a tenth of plait's user-space time per delivery in a 500-client
    /// room.
    writer: Option<Waker>,
}

/// An outbox of at most `frames` frames and about `max_bytes` bytes.
pub(crate) fn channel(frames: usize, max_bytes: usize) -> (Outbox, OutboxRx) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            frames: VecDeque::new(),
            bytes: 0,
            senders: 1,
            receiver_alive: true,
            writer: None,
        }),
        max_frames: frames,
        max_bytes,
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxRx { shared },
    )
}

impl Shared {
    /// What a frame of `len` bytes counts against the byte bound.
    fn charge(&self, len: usize) -> usize {
        if len >= self.max_bytes {
            self.max_bytes / 4
        } else {
            len
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the queue consistent (each critical section
        // is a push, a drain or a counter update), so a poisoned lock is used as is.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let writer = {
            let mut q = self.shared.lock();
            q.senders -= 1;
            if q.senders == 0 {
                q.writer.take()
            } else {
                None
            }
        };
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}

/// What [`Outbox::try_send_or_merge`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Behind what was queued.
    Appended,
    /// Into the last queued frame, which the writer had not taken yet; it grew by `grew`
    /// bytes (what the connection will be sent beyond what was already queued).
    Merged { grew: usize },
}

impl Outbox {
    /// Queues a frame without waiting; `Full` when either bound would be passed, `Closed`
    /// once the writer is gone.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        self.try_send_or_merge(frame, |_| None).map(|_| ())
    }

    /// As [`Outbox::try_send`], but first offers `merge` the last frame still queued (not yet
    /// taken by the writer): if it returns a frame, that frame replaces the last one and
    /// `frame` is not queued. Nothing can come between the two, so the peer receives the same
    /// messages in the same order, in one frame. `merge` runs under the queue's lock.
    pub(crate) fn try_send_or_merge(
        &self,
        frame: Bytes,
        merge: impl FnOnce(&Bytes) -> Option<Bytes>,
    ) -> Result<Queued, TrySendError<Bytes>> {
        let writer = {
            let mut q = self.shared.lock();
            if !q.receiver_alive {
                return Err(TrySendError::Closed(frame));
            }
            let max = self.shared.max_bytes;
            let bound = |len: usize| if len >= max { max / 2 } else { max };
            let queue = &mut *q;
            if let Some(last) = queue.frames.back_mut() {
                if let Some(merged) = merge(last) {
                    let rest = queue.bytes.saturating_sub(self.shared.charge(last.len()));
                    let charge = self.shared.charge(merged.len());
                    if rest == 0 || rest + charge <= bound(merged.len()) {
                        queue.bytes = rest + charge;
                        let grew = merged.len().saturating_sub(last.len());
                        *last = merged;
                        return Ok(Queued::Merged { grew });
                    }
                }
            }
            let charge = self.shared.charge(frame.len());
            // A large frame (charged a quarter) goes while at most a quarter is queued ahead.
            if q.frames.len() >= self.shared.max_frames
                || (q.bytes > 0 && q.bytes + charge > bound(frame.len()))
            {
                return Err(TrySendError::Full(frame));
            }
            q.bytes += charge;
            q.frames.push_back(frame);
            // A writer not waiting looks at the queue before it waits again. (A merge wakes
            // no one: the frame it replaced was announced when it was queued.)
            q.writer.take()
        };
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(Queued::Appended)
    }
}

impl OutboxRx {
    /// Receives up to `limit` frames; 0 once every sender is gone and the queue is empty.
    pub(crate) async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> usize {
        std::future::poll_fn(|cx| {
            let mut q = self.shared.lock();
            if !q.frames.is_empty() {
                let n = q.frames.len().min(limit);
                buf.extend(q.frames.drain(..n));
                if q.frames.is_empty() && q.frames.capacity() > KEPT_CAPACITY {
                    // A burst is over: give its memory back.
                    q.frames = VecDeque::new();
                }
                return Poll::Ready(n);
            }
            if q.senders == 0 {
                return Poll::Ready(0);
            }
            // Registered under the lock the senders take, so no frame queued after the check
            // goes unannounced.
            if !q.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                q.writer = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Takes every queued frame without waiting, releasing their bytes (the room simulation
    /// plays the writer).
    #[cfg(test)]
    pub(crate) fn drain_now(&mut self) -> Vec<Bytes> {
        let mut q = self.shared.lock();
        q.bytes = 0;
        q.frames.drain(..).collect()
    }

    /// What `frames` count against the byte bound: what the writer hands back to
    /// [`OutboxRx::written`] once they have left.
    pub(crate) fn charged(&self, frames: &[Bytes]) -> usize {
        frames.iter().map(|f| self.shared.charge(f.len())).sum()
    }

    /// Releases `bytes` (as [`OutboxRx::charged`] counted them) from the byte bound once
    /// they have left for the socket.
    pub(crate) fn written(&self, bytes: usize) {
        let mut q = self.shared.lock();
        q.bytes = q.bytes.saturating_sub(bytes);
    }
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        let writer = {
            let mut q = self.shared.lock();
            q.receiver_alive = false;
            q.frames = VecDeque::new();
            q.writer.take()
        };
        // A waker keeps its task's memory allocated: the writer's, ended, would otherwise be
        // held until the room lets go of the outbox.
        drop(writer);
    }
}

/// Queue capacity kept after a burst drains.
const KEPT_CAPACITY: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiting writer's waker holds its task's memory: when the writer ends, the outbox's
    /// receiving side lets go of it then, not when the room drops the sending side.
    #[test]
    fn a_dropped_receiver_lets_go_of_its_writers_waker() {
        struct Task;
        impl std::task::Wake for Task {
            fn wake(self: Arc<Self>) {}
        }
        let task = Arc::new(Task);
        let waker = Waker::from(task.clone());
        let (tx, mut rx) = channel(8, 1 << 20);
        let mut buf = Vec::new();
        {
            let waiting = std::pin::pin!(rx.recv_many(&mut buf, 8));
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(std::future::Future::poll(waiting, &mut cx).is_pending());
        }
        drop(waker);
        assert_eq!(
            Arc::strong_count(&task),
            2,
            "the waiting writer's waker is kept"
        );
        drop(rx);
        assert_eq!(
            Arc::strong_count(&task),
            1,
            "the ended writer's waker is still held"
        );
        drop(tx);
    }

    #[tokio::test]
    async fn bounds_bytes_but_never_refuses_into_an_empty_outbox() {
        let (tx, mut rx) = channel(100, 10);
        // Larger than the byte bound, but the outbox is empty: it goes.
        tx.try_send(Bytes::from(vec![0; 25])).unwrap();
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 1);
        rx.written(rx.charged(&buf));
        for _ in 0..10 {
            tx.try_send(Bytes::from_static(b"x")).unwrap();
        }
        assert!(tx.try_send(Bytes::from_static(b"x")).is_err());
    }

    /// A client syncing a 50 MB document was closed as slow by its own presence echo, queued
    /// while the step 2 was still being written: the step 2 counted as 50 MB against a 16
    /// MiB bound. It counts as a quarter of the bound now, so what follows it fits in the
    /// rest, and nothing more.
    #[tokio::test]
    async fn frames_behind_a_large_one_fit_in_the_rest_of_the_bound() {
        let (tx, mut rx) = channel(100, 40);
        tx.try_send(Bytes::from(vec![0; 500])).unwrap();
        for _ in 0..3 {
            tx.try_send(Bytes::from(vec![1; 10])).unwrap();
        }
        assert!(
            tx.try_send(Bytes::from(vec![1; 10])).is_err(),
            "past the bound"
        );
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 4);
        assert_eq!(rx.charged(&buf), 40);
        rx.written(rx.charged(&buf));
        // Everything written: the bound is whole again.
        for _ in 0..4 {
            tx.try_send(Bytes::from(vec![1; 10])).unwrap();
        }
        assert!(tx.try_send(Bytes::from_static(b"x")).is_err());
    }

    /// Two large frames may queue (one being written, the next behind it), not a third.
    #[tokio::test]
    async fn at_most_two_large_frames_wait() {
        let (tx, _rx) = channel(100, 40);
        tx.try_send(Bytes::from(vec![0; 500])).unwrap();
        tx.try_send(Bytes::from(vec![0; 500])).unwrap();
        assert!(tx.try_send(Bytes::from(vec![0; 500])).is_err());
    }

    /// Pins issue 14 item 6: a frame larger than the bound (a relayed 30 MiB paste) was refused
    /// when anything at all was queued ahead of it, closing an honest reader as slow.
    #[tokio::test]
    async fn a_large_frame_goes_behind_a_little_but_not_behind_a_backlog() {
        let (tx, mut rx) = channel(100, 40);
        tx.try_send(Bytes::from_static(b"presence")).unwrap();
        tx.try_send(Bytes::from(vec![0; 100])).unwrap();
        assert!(tx.try_send(Bytes::from(vec![0; 100])).is_err());
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 2);
        rx.written(rx.charged(&buf));
        // A backlog of more than a quarter of the bound: a large frame is refused.
        for _ in 0..11 {
            tx.try_send(Bytes::from_static(b"x")).unwrap();
        }
        assert!(tx.try_send(Bytes::from(vec![0; 100])).is_err());
    }

    #[tokio::test]
    async fn the_first_close_wins() {
        let signal = CloseSignal::default();
        let writer = signal.clone();
        let waiting = tokio::spawn(async move { writer.closed().await });
        tokio::task::yield_now().await;
        signal.close(Close::SLOW_CONSUMER);
        signal.close(Close::GOING_AWAY);
        assert_eq!(waiting.await.unwrap(), Close::SLOW_CONSUMER);
        assert_eq!(signal.closed().await, Close::SLOW_CONSUMER);
        assert!(signal.is_closed());
    }

    /// The reader and the writer both wait for the close (the writer through
    /// a `CloseWatch`); all wake.
    #[tokio::test]
    async fn every_waiter_sees_the_close() {
        let signal = CloseSignal::default();
        let mut waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = signal.clone();
                tokio::spawn(async move { s.closed().await })
            })
            .collect();
        let mut writer = CloseWatch::new(signal.clone());
        waiters.push(tokio::spawn(async move {
            std::future::poll_fn(|cx| writer.poll_closed(cx)).await
        }));
        tokio::task::yield_now().await;
        assert!(!signal.is_closed());
        signal.close(Close::GOING_AWAY);
        for w in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), w).await;
            assert_eq!(woke.unwrap().unwrap(), Close::GOING_AWAY);
        }
    }

    /// The writer polls `poll_closed` once per batch written and registers its waker again
    /// only when the waker changed: a close still wakes it after polls that skipped the
    /// registration, and wakes the waker it was last polled with.
    #[test]
    fn a_close_wakes_the_writers_latest_waker_after_skipped_registrations() {
        #[derive(Default)]
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let woken = |c: &Count| c.0.load(std::sync::atomic::Ordering::SeqCst);
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (first_waker, second_waker) = (Waker::from(first.clone()), Waker::from(second.clone()));
        let signal = CloseSignal::default();
        let mut watch = CloseWatch::new(signal.clone());
        for _ in 0..3 {
            let mut cx = Context::from_waker(&first_waker);
            assert!(watch.poll_closed(&mut cx).is_pending());
        }
        signal.close(Close::GOING_AWAY);
        assert_eq!(
            woken(&first),
            1,
            "the registered waker is woken by the close"
        );
        let mut cx = Context::from_waker(&second_waker);
        assert_eq!(watch.poll_closed(&mut cx), Poll::Ready(Close::GOING_AWAY));

        let mut watch = CloseWatch::new(CloseSignal::default());
        for waker in [&first_waker, &second_waker, &second_waker] {
            let mut cx = Context::from_waker(waker);
            assert!(watch.poll_closed(&mut cx).is_pending());
        }
        watch.signal().close(Close::GOING_AWAY);
        assert_eq!(woken(&second), 1, "the latest waker is woken");
        assert_eq!(woken(&first), 1, "an earlier waker is not woken again");
    }

    #[tokio::test]
    async fn ends_when_every_sender_is_gone_and_refuses_after_the_writer() {
        let (tx, mut rx) = channel(10, 1 << 20);
        let tx2 = tx.clone();
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        drop(tx);
        let waiting = tokio::spawn(async move {
            let mut buf = Vec::new();
            let first = rx.recv_many(&mut buf, 10).await;
            let second = rx.recv_many(&mut buf, 10).await;
            (first, second, rx)
        });
        tokio::task::yield_now().await;
        drop(tx2);
        let (first, second, rx) = waiting.await.unwrap();
        assert_eq!((first, second), (1, 0));
        let (tx, rx2) = channel(10, 1 << 20);
        drop(rx2);
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"x")),
            Err(TrySendError::Closed(_))
        ));
        drop(rx);
    }

    /// Only a frame the writer has not taken can absorb the next one; what it becomes is
    /// counted against the byte bound in its place.
    #[tokio::test]
    async fn a_frame_merges_into_the_last_queued_one_only_before_the_writer_takes_it() {
        let (tx, mut rx) = channel(10, 1 << 20);
        let join = |last: &Bytes, next: &[u8]| Some(Bytes::from([last.as_ref(), next].concat()));
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let got = tx.try_send_or_merge(Bytes::from_static(b"b"), |last| join(last, b"b"));
        assert_eq!(got.unwrap(), Queued::Merged { grew: 1 });
        // `merge` declines: the frame is queued behind.
        let got = tx.try_send_or_merge(Bytes::from_static(b"c"), |_| None);
        assert_eq!(got.unwrap(), Queued::Appended);
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 2);
        assert_eq!(buf, [Bytes::from_static(b"ab"), Bytes::from_static(b"c")]);
        assert_eq!(rx.charged(&buf), 3);
        rx.written(rx.charged(&buf));
        // Nothing queued: nothing to merge into.
        let got = tx.try_send_or_merge(Bytes::from_static(b"d"), |_| panic!("offered nothing"));
        assert_eq!(got.unwrap(), Queued::Appended);
        let got = tx.try_send_or_merge(Bytes::from_static(b"e"), |last| join(last, b"e"));
        assert_eq!(got.unwrap(), Queued::Merged { grew: 1 });
        buf.clear();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 1);
        assert_eq!(buf, [Bytes::from_static(b"de")]);
        assert_eq!(rx.charged(&buf), 2);
    }

    /// A merge that would pass the byte bound is not made; the frame then meets the bound as
    /// any other would.
    #[tokio::test]
    async fn a_merge_past_the_byte_bound_is_refused_as_the_frame_would_be() {
        let (tx, _rx) = channel(10, 10);
        tx.try_send(Bytes::from_static(b"12345")).unwrap();
        tx.try_send(Bytes::from_static(b"678")).unwrap();
        let got = tx.try_send_or_merge(Bytes::from_static(b"9abc"), |last| {
            Some(Bytes::from([last.as_ref(), b"9abc"].concat()))
        });
        assert!(matches!(got, Err(TrySendError::Full(_))));
        let got = tx.try_send_or_merge(Bytes::from_static(b"9a"), |last| {
            Some(Bytes::from([last.as_ref(), b"9a"].concat()))
        });
        assert_eq!(got.unwrap(), Queued::Merged { grew: 2 });
    }

    #[tokio::test]
    async fn bounds_frames() {
        let (tx, _rx) = channel(2, 1 << 20);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.try_send(Bytes::from_static(b"b")).unwrap();
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"c")),
            Err(TrySendError::Full(_))
        ));
    }
}
