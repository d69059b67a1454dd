//! A connection's outbox: frames on their way to its writer task, bounded in frames and in
//! bytes.
//!
//! Counting frames alone lets a reader that never drains hold `--outbox-frames` frames of up
//! to `--max-message-bytes` each (gigabytes); the byte bound (`--max-outbox-bytes`) is what
//! keeps a slow reader's cost small. A frame that finds the outbox empty always goes, so one
//! large sync step 2 is never refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};

use crate::room::Close;

/// The reason a connection closes, set once by whoever decides first (its room, its reader, an
/// admin kick, token expiry) and sent by the writer as the close frame. A channel would do,
/// but costs about 1 KiB per connection; this is a few dozen bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloseSignal(Arc<CloseSlot>);

#[derive(Debug, Default)]
struct CloseSlot {
    reason: OnceLock<Close>,
    notify: Notify,
}

impl CloseSignal {
    /// Asks the writer to close with `reason`, unless another reason came first.
    pub(crate) fn close(&self, reason: Close) {
        if self.0.reason.set(reason).is_ok() {
            // Stores a permit if the writer is not waiting yet, so the wake-up is not lost.
            self.0.notify.notify_one();
        }
    }

    /// The reason, once one is set.
    pub(crate) async fn closed(&self) -> Close {
        loop {
            if let Some(reason) = self.0.reason.get() {
                return *reason;
            }
            self.0.notify.notified().await;
        }
    }
}

/// The sending side; cloned by the room and the connection's reader.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The writer task's side.
#[derive(Debug)]
pub(crate) struct OutboxRx {
    rx: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// An outbox of at most `frames` frames and about `max_bytes` bytes.
pub(crate) fn channel(frames: usize, max_bytes: usize) -> (Outbox, OutboxRx) {
    let (tx, rx) = mpsc::channel(frames);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            queued: queued.clone(),
            max_bytes,
        },
        OutboxRx { rx, queued },
    )
}

impl Outbox {
    /// Queues a frame without waiting; `Full` when either bound would be passed.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return Err(TrySendError::Full(frame));
        }
        self.tx.try_send(frame).inspect_err(|_| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        })
    }
}

impl OutboxRx {
    /// Receives up to `limit` frames; 0 once every sender is gone and the queue is empty.
    pub(crate) async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }

    /// Releases `bytes` from the byte bound once they have left for the socket.
    pub(crate) fn written(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_bytes_but_never_refuses_into_an_empty_outbox() {
        let (tx, mut rx) = channel(100, 10);
        // Larger than the byte bound, but the outbox is empty: it goes.
        tx.try_send(Bytes::from(vec![0; 25])).unwrap();
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"x")),
            Err(TrySendError::Full(_))
        ));
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 1);
        rx.written(25);
        for _ in 0..10 {
            tx.try_send(Bytes::from_static(b"x")).unwrap();
        }
        assert!(tx.try_send(Bytes::from_static(b"x")).is_err());
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
