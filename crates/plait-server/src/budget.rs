//! The process-wide budget of large messages in flight (`--max-inflight-bytes`).
//!
//! The message limit defaults to the document cap (tens of MiB), so that no honest client is
//! locked out by it. What protects memory instead is this budget: a connection reader that
//! holds a message larger than [`LARGE_MESSAGE_BYTES`] takes the message's size from it before
//! forwarding it to its room, and gives it back when the room has applied and dropped it.
//! While the budget is spent the reader waits, and reads nothing more from its socket, so TCP
//! pushes back on the client. Smaller messages are bounded by each room's inbox budget alone
//! (`room::INBOX_BYTES`).
//!
//! Architecture Invariant: a large message is forwarded to a room only with its share of this
//! budget, and the share lives exactly as long as the queued message (it travels in the
//! message's `InboxBudget`). What the budget does not cover: the one message per connection
//! that the WebSocket layer has read before the reader sees it (at most the message limit each;
//! the per-IP and total connection caps bound how many there are), and the sync step 2 a room
//! encodes for each joining client.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Messages up to this size do not take from the process-wide budget: the room's inbox budget
/// bounds them, and keystroke-sized traffic never waits on a large paste elsewhere.
pub(crate) const LARGE_MESSAGE_BYTES: usize = 1024 * 1024;

/// Bytes of large messages read and not yet applied, across every connection of the process.
#[derive(Debug)]
pub(crate) struct InflightBytes {
    /// One permit per byte. Held by the `InboxBudget` of a queued message; dropping that gives
    /// the bytes back. Never closed.
    sem: Arc<Semaphore>,
    /// The whole budget, in bytes (at most `u32::MAX`, one acquisition's largest count).
    total: u32,
}

impl InflightBytes {
    /// A budget of `total` bytes (capped at 4 GiB).
    pub(crate) fn new(total: usize) -> Self {
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        Self {
            sem: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Waits for a message of `len` bytes' share of the budget; `None` (at once) for a message
    /// of at most [`LARGE_MESSAGE_BYTES`]. A message larger than the whole budget waits until
    /// it has the budget to itself, so it still goes through.
    pub(crate) async fn acquire(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        if len <= LARGE_MESSAGE_BYTES {
            return None;
        }
        let n = u32::try_from(len).unwrap_or(u32::MAX).min(self.total);
        // The semaphore is never closed, so this only fails if that changes; a message then
        // goes without a share rather than never.
        self.sem.clone().acquire_many_owned(n).await.ok()
    }

    /// Bytes of the budget not taken right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.sem.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Large messages wait while the budget is spent and go once it comes back; small ones
    /// never wait; one larger than the whole budget goes when it has the budget alone.
    #[tokio::test]
    async fn large_messages_share_the_budget() {
        let budget = InflightBytes::new(8 << 20);
        assert!(budget.acquire(LARGE_MESSAGE_BYTES).await.is_none());
        let a = budget.acquire(6 << 20).await.expect("a share");
        assert_eq!(budget.available(), 2 << 20);
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), budget.acquire(3 << 20)).await;
        assert!(waiting.is_err(), "a message past the budget went");
        assert!(
            budget.acquire(100).await.is_none(),
            "a small message waited"
        );
        drop(a);
        let b = tokio::time::timeout(Duration::from_secs(1), budget.acquire(3 << 20))
            .await
            .expect("the budget came back");
        drop(b);
        let huge = tokio::time::timeout(Duration::from_secs(1), budget.acquire(100 << 20))
            .await
            .expect("a message larger than the budget waited forever");
        assert_eq!(budget.available(), 0);
        drop(huge);
        assert_eq!(budget.available(), 8 << 20);
    }
}
