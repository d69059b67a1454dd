//! What the rest of the server holds of a room: its handle, the commands its inbox takes, and
//! the inbox's bounds (in messages and in bytes).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use plait_crdt::{ApplyError, ClientMessage, Kind};
use plait_protocol::AwarenessEntry;
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use yrs::{StateVector, Update};

use super::AdminOp;
use crate::budget::InflightBytes;
use crate::conn::ConnId;
use crate::outbox::{CloseSignal, Outbox};

/// Bound on the inbox. Connection readers `send().await` into it, so a full inbox pushes back
/// on their sockets (TCP flow control reaches the clients) instead of growing memory.
pub(crate) const INBOX_CAPACITY: usize = 1024;
/// Bound on the bytes of messages queued in a room's inbox (besides their count): a reader
/// waits, and so pushes back on its socket, while its message would pass it. A message larger
/// than the whole budget waits until it has the inbox to itself. Without it the count bound
/// alone let 1024 messages of up to `--max-message-bytes` each queue per room.
pub(crate) const INBOX_BYTES: usize = 32 << 20;

/// How a room reaches one member connection.
#[derive(Debug)]
pub(crate) struct MemberLink {
    /// Frames for the connection's writer task. The room sends with `try_send`: a full outbox
    /// marks a slow consumer, which is closed rather than waited for. Dropping it (on leave or
    /// close) ends the writer once it has drained.
    pub(crate) outbox: Outbox,
    /// Capacity 1, shared with the connection's reader: the first close wins, later ones are
    /// dropped by `try_send`.
    pub(crate) control: CloseSignal,
    /// Whether the connection opted in to CRDT values (`?plait-values=1`); only those are
    /// ever sent a [`PLAIT_CRDT_MESSAGE`] frame.
    pub(crate) values: bool,
    /// Whether the connection is told, with a [`crate::conn::stored_marker`] frame, each time
    /// one of its updates is stored (with strict durability; applied, with relaxed). A
    /// y-websocket client needs no such word: the echo of its update is its confirmation. The
    /// Hocuspocus provider's sync status is built from it.
    pub(crate) acks: bool,
}

impl Inbound {
    /// About how many bytes the message keeps alive while it waits in the inbox.
    fn queued_bytes(&self) -> usize {
        match self {
            Inbound::Update(_, raw, _) => raw.len(),
            Inbound::Awareness(entries) => entries.iter().map(|e| e.state.len() + 24).sum(),
            Inbound::Step1(_) | Inbound::QueryAwareness | Inbound::Value(_) => 64,
        }
    }
}

/// What a connection forwards to its room, already decoded and validated.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Sync step 1: answer with what the client lacks.
    Step1(StateVector),
    /// Sync step 2 or update (the same thing to the server): decoded, the bytes as sent, and
    /// whether its sender is told once it is stored.
    Update(Update, Bytes, Confirm),
    /// Awareness entries the client published.
    Awareness(Vec<AwarenessEntry>),
    /// Answer with every awareness state.
    QueryAwareness,
    /// A CRDT values message from a connection that opted in.
    Value(ClientMessage),
}

/// Whether a member that asked for acks ([`MemberLink::acks`]) is told that an update of its
/// is stored. A y-websocket client never is (its echo is its confirmation); a Hocuspocus
/// provider counts one unsynced change per update it sends, and one for the sync step 2 that
/// answers the server's step 1 after its own (the endpoint decides which is which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirm {
    /// Once, when the update and everything applied before it are stored, even if it added
    /// nothing to the document (then nothing of it is stored or relayed, but the sender
    /// still counts it).
    Once,
    /// Never: its sender does not count it, or counts it in a later message's confirmation.
    Never,
}

/// A connection asking to join (see [`RoomCmd::Join`]).
#[derive(Debug)]
pub(crate) struct Joining {
    pub(crate) conn: ConnId,
    pub(crate) link: MemberLink,
    pub(crate) joined: oneshot::Sender<()>,
}

/// A member's message in the inbox, holding its share of the inbox's byte budget until the
/// room has taken it out of the queue.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) conn: ConnId,
    pub(crate) msg: Inbound,
    pub(crate) _budget: InboxBudget,
}

/// The closed set of messages a room accepts. Every variant is at most two words (the large
/// ones boxed): each room's inbox allocates its first block of 32 commands up front.
#[derive(Debug)]
pub(crate) enum RoomCmd {
    /// A connection joins; `joined` fires once its first frames are queued. If the room is
    /// unloading it drops `joined` instead, and the connection asks the hub again.
    Join(Box<Joining>),
    /// A message from a member.
    Inbound(Box<Queued>),
    /// A member's socket closed.
    Leave { conn: ConnId },
    /// The hub needs room: unload now if idle.
    Evict,
    /// An administrative request (export, inspect, import, restore, compact).
    Admin(Box<AdminOp>),
    /// A CRDT values request from the HTTP API; answered once any change is stored.
    Values {
        req: Box<ValuesRequest>,
        reply: oneshot::Sender<Result<ValuesReply, ValuesError>>,
    },
}

impl RoomCmd {
    /// Whether answering this shows the document's content (not just its state vector).
    pub(super) fn reads_document(&self) -> bool {
        match self {
            RoomCmd::Inbound(queued) => matches!(queued.msg, Inbound::Step1(_)),
            RoomCmd::Admin(_) => true,
            _ => false,
        }
    }
}

/// What the HTTP API asks of a room's CRDT values.
#[derive(Debug)]
pub(crate) enum ValuesRequest {
    /// Every value.
    Get,
    /// Adds `add` to the counter `name`. `kind` None means the existing counter's kind, or a
    /// G-Counter for a new name.
    AddToCounter {
        name: String,
        add: i64,
        kind: Option<Kind>,
    },
    /// Writes the register `name`, stamped by the room's clock.
    SetRegister { name: String, value: Json },
}

/// A room's answer to a [`ValuesRequest`]: (name, kind, current value) triples.
#[derive(Debug)]
pub(crate) enum ValuesReply {
    /// Every value, by name.
    All(Vec<(String, Kind, Json)>),
    /// The changed value, after the change.
    One(String, Kind, Json),
}

/// Why a [`ValuesRequest`] was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ValuesError {
    /// The op broke a rule of the values (kind, bounds, overflow, clock).
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// A negative add to a G-Counter.
    #[error("{name:?} is a gcounter, which only grows: add must be 0 or more (use kind \"pncounter\" for a counter that goes down)")]
    NegativeGCounter { name: String },
    /// The store did not commit the change (strict durability); it was undone.
    #[error("storage unavailable: try again later")]
    StoreUnavailable,
    /// The room could not be loaded (room cap, shutdown, or a store failure while loading).
    #[error("room unavailable: try again later")]
    RoomUnavailable,
}

/// A cheap handle to a room; cloned into every connection of the room.
#[derive(Debug, Clone)]
pub(crate) struct RoomHandle {
    /// Unique per loaded instance, so an unloading room removes only its own registry entry.
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<RoomCmd>,
    /// Members right now, or [`LOADING`]; read by the hub to find idle rooms to evict.
    pub(crate) n_members: Arc<AtomicUsize>,
    /// The inbox's byte budget ([`INBOX_BYTES`]), taken by senders and given back when the
    /// room drops the message.
    pub(super) inbox_bytes: Arc<Semaphore>,
    /// The process-wide budget of large messages (`Shared::inflight`), taken before the
    /// inbox's and given back with it.
    pub(super) inflight: Arc<InflightBytes>,
}

impl RoomHandle {
    /// Sends a member's message, first waiting for room for its bytes in the inbox.
    ///
    /// # Errors
    /// The room is gone (unloading or shut down).
    pub(crate) async fn send_inbound(&self, conn: ConnId, msg: Inbound) -> Result<(), ()> {
        // The process-wide share first: a reader waiting for it holds no room's inbox bytes.
        let inflight = self.inflight.acquire(msg.queued_bytes()).await;
        let bytes = msg.queued_bytes().min(INBOX_BYTES) as u32;
        let permit = self
            .inbox_bytes
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| ())?;
        let budget = InboxBudget(permit, inflight);
        let cmd = RoomCmd::Inbound(Box::new(Queued {
            conn,
            msg,
            _budget: budget,
        }));
        self.tx.send(cmd).await.map_err(|_| ())
    }
}

/// A message's share of its room's inbox budget, and of the process-wide budget if it is
/// large; given back when dropped.
#[derive(Debug)]
pub(crate) struct InboxBudget(
    #[expect(dead_code, reason = "held for its Drop, which gives the bytes back")]
    OwnedSemaphorePermit,
    #[expect(dead_code, reason = "held for its Drop, which gives the bytes back")]
    Option<OwnedSemaphorePermit>,
);

/// `n_members` of a room still loading: the joins that made it load are queued, not counted,
/// so it must not look idle to the hub.
pub(crate) const LOADING: usize = usize::MAX;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Pins issue 13 item 6: the inbox was bounded by message count only (1024 messages of up
    /// to a whole frame each); a sender now waits while the queued bytes would pass the budget.
    /// Every room's inbox allocates its first block of 32 commands up front, idle or not: at
    /// 136 bytes a command that was 4.4 KiB of each room's memory. The large variants are
    /// boxed so the block stays under 1 KiB.
    #[test]
    fn a_room_command_is_small() {
        assert!(
            std::mem::size_of::<RoomCmd>() <= 24,
            "RoomCmd is {} bytes",
            std::mem::size_of::<RoomCmd>()
        );
    }

    #[tokio::test]
    async fn the_inbox_is_bounded_by_bytes() {
        let (tx, mut rx) = mpsc::channel(INBOX_CAPACITY);
        let handle = RoomHandle {
            id: 1,
            tx,
            n_members: Arc::new(AtomicUsize::new(0)),
            inbox_bytes: Arc::new(Semaphore::new(INBOX_BYTES)),
            inflight: Arc::new(InflightBytes::new(4 * INBOX_BYTES)),
        };
        let update = |len: usize| {
            let empty = Update::new();
            Inbound::Update(empty, Bytes::from(vec![0u8; len]), Confirm::Once)
        };
        handle
            .send_inbound(1, update(INBOX_BYTES - 100))
            .await
            .unwrap();
        let blocked = tokio::time::timeout(
            Duration::from_millis(100),
            handle.send_inbound(1, update(1_000)),
        )
        .await;
        assert!(
            blocked.is_err(),
            "a message past the byte budget was queued"
        );
        // The room takes the first message out: the next one goes.
        drop(rx.recv().await);
        tokio::time::timeout(
            Duration::from_secs(1),
            handle.send_inbound(1, update(1_000)),
        )
        .await
        .expect("the budget came back")
        .unwrap();
        // A message larger than the whole budget still goes, once the inbox is empty.
        drop(rx.recv().await);
        tokio::time::timeout(
            Duration::from_secs(1),
            handle.send_inbound(1, update(2 * INBOX_BYTES)),
        )
        .await
        .expect("an oversized message waited forever")
        .unwrap();
    }
}
