//! The two things every layer says about a connection: which one it is, and why the server
//! closes it. A leaf module, so the room, the outbox, awareness and the connection can all name
//! them without importing each other.

/// Identifies one WebSocket connection for the life of the process.
pub(crate) type ConnId = u64;

/// Why the server closes a connection: a WebSocket close code and a reason for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Close {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

impl Close {
    pub(crate) const SLOW_CONSUMER: Close = Close {
        code: 1013,
        reason: "slow consumer: reconnect to resync",
    };
    pub(crate) const GOING_AWAY: Close = Close {
        code: 1001,
        reason: "server shutting down",
    };
    pub(crate) const STORE_UNAVAILABLE: Close = Close {
        code: 1013,
        reason: "storage unavailable: try again later",
    };
    pub(crate) const BAD_UPDATE: Close = Close {
        code: 1007,
        reason: "update could not be applied",
    };
    /// The room was deleted: permanent (a client should not reconnect to it).
    pub(crate) const DELETED: Close = Close {
        code: 4404,
        reason: "document deleted: do not reconnect",
    };
    /// Transient on purpose: a client that reconnected before the server noticed its old
    /// socket was dead retries, and gets in once the old session's presence goes stale.
    pub(crate) const CLIENT_ID_IN_USE: Close = Close {
        code: 1013,
        reason: "client id in use by another connection: retry later",
    };
}

/// The frame a room puts in the outbox of a connection that asked for acks
/// ([`crate::room::MemberLink::acks`]) when one of its updates is stored. It is a word between
/// the room and that connection's writer, which turns it into its protocol's confirmation and
/// never sends it as it is (message type 127 is no y-websocket message).
pub(crate) fn stored_marker() -> bytes::Bytes {
    bytes::Bytes::from_static(&[STORED_MARKER_TAG])
}

/// The message type of [`stored_marker`].
pub(crate) const STORED_MARKER_TAG: u8 = 127;
