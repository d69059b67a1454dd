//! Hocuspocus framing (as read in `@hocuspocus/server` 4.7.0 and `@hocuspocus/common`).
//!
//! Hocuspocus multiplexes documents over one socket: every binary message, in both directions,
//! starts with the document name as a lib0 varString (`varUint(utf8 length) ++ utf8`), then a
//! varUint message type:
//!
//! | type | name | body | from |
//! |---:|---|---|---|
//! | 0 | Sync | y-protocols sync message (`0` step 1, `1` step 2, `2` update) | both |
//! | 1 | Awareness | varUint8Array awareness update | both |
//! | 2 | Auth | varUint sub-type: `0` Token + varString token (client; the server also sends a bare `0` to ask for a new token), `1` PermissionDenied + varString reason, `2` Authenticated + varString scope (`read-write` / `readonly`) | both |
//! | 3 | QueryAwareness | (none) | client |
//! | 4 | SyncReply | as Sync, but step 1 gets no step 1 back | client |
//! | 5 | Stateless | varString payload | both |
//! | 7 | CLOSE | varString reason | server |
//! | 8 | SyncStatus | varUint 1 (applied) / 0 (rejected), sent for every step 2 or update | server |
//!
//! The server queues a document's messages until an Auth message for it arrives, runs its
//! `onConnect` / `onAuthenticate` hooks (none here: an empty token is accepted), answers
//! Authenticated and only then handles the queue. So a client sends Auth first; after the
//! name prefix, types 0 (Sync) and 1 (Awareness) are exactly y-websocket's frames. The server
//! answers a client's step 1 with its own step 1 and then step 2 (y-websocket sends its
//! step 1 unprompted on connect), and broadcasts updates to every connection, the author
//! included (as the y-websocket reference does).

use bytes::{BufMut, Bytes, BytesMut};
use plait_protocol::lib0::{write_str, Reader};

/// Message types of Hocuspocus (`MessageType` in `@hocuspocus/server` src/types.ts).
pub const SYNC: u8 = 0;
pub const AWARENESS: u8 = 1;
pub const AUTH: u8 = 2;
pub const CLOSE: u8 = 7;
pub const SYNC_STATUS: u8 = 8;

/// Auth sub-types (`AuthMessageType` in `@hocuspocus/common` src/auth.ts).
pub const AUTH_TOKEN: u8 = 0;
pub const AUTH_PERMISSION_DENIED: u8 = 1;
pub const AUTH_AUTHENTICATED: u8 = 2;

/// The document name as a lib0 varString: the prefix of every message on the socket.
pub fn address(document: &str) -> Bytes {
    let mut out = Vec::with_capacity(document.len() + 2);
    write_str(&mut out, document);
    Bytes::from(out)
}

/// `address ++ frame`: a y-websocket frame (`[0, ...]` sync or `[1, ...]` awareness) as
/// Hocuspocus expects it. One allocation and copy (the generator's only extra per-frame cost
/// on this protocol).
pub fn wrap(address: &[u8], frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(address.len() + frame.len());
    out.put_slice(address);
    out.put_slice(frame);
    out.freeze()
}

/// `address ++ [2 Auth, 0 Token] ++ varString(token)`: what a provider sends first.
pub fn auth(address: &[u8], token: &str) -> Bytes {
    let mut out = Vec::with_capacity(address.len() + 3 + token.len());
    out.extend_from_slice(address);
    out.push(AUTH);
    out.push(AUTH_TOKEN);
    write_str(&mut out, token);
    Bytes::from(out)
}

/// What one message from the server means to a y-websocket client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A y-websocket frame (Sync or Awareness), the name prefix stripped (no copy).
    Frame(Bytes),
    /// Hocuspocus-only and harmless (Authenticated, SyncStatus, Stateless, ...): dropped.
    Skip(u8),
    /// The server gave up on the document (PermissionDenied, CLOSE, or a message that is not
    /// for this document): the client should treat the connection as closed.
    Closed(String),
}

/// Strips `address` from a server message and sorts it (see [`Inbound`]).
pub fn unwrap(address: &[u8], msg: Bytes) -> Inbound {
    let Some(rest) = msg.strip_prefix(address) else {
        return Inbound::Closed(format!(
            "message for another document ({} bytes)",
            msg.len()
        ));
    };
    let Some(&kind) = rest.first() else {
        return Inbound::Closed("empty message".into());
    };
    match kind {
        SYNC | AWARENESS => Inbound::Frame(msg.slice(address.len()..)),
        AUTH => {
            let mut r = Reader::new(&rest[1..]);
            match r.read_u8() {
                Ok(AUTH_PERMISSION_DENIED) => Inbound::Closed(format!(
                    "permission denied: {}",
                    r.read_str("reason").unwrap_or("?")
                )),
                // Authenticated, or a request to send the token again (there is no token).
                Ok(AUTH_AUTHENTICATED | AUTH_TOKEN) => Inbound::Skip(AUTH),
                _ => Inbound::Closed("malformed auth message".into()),
            }
        }
        // The ack of every update and step 2 the client sent.
        SYNC_STATUS => Inbound::Skip(SYNC_STATUS),
        CLOSE => {
            let mut r = Reader::new(&rest[1..]);
            Inbound::Closed(format!(
                "server closed the document: {}",
                r.read_str("reason").unwrap_or("?")
            ))
        }
        other => Inbound::Skip(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_is_a_lib0_var_string() {
        assert_eq!(&address("room-1")[..], b"\x06room-1");
        assert_eq!(&address("")[..], b"\x00");
        // 200 bytes need a two-byte varUint length: 200 = 0b1_1001000 -> c8 01.
        let long = "x".repeat(200);
        let a = address(&long);
        assert_eq!(&a[..2], &[0xc8, 0x01]);
        assert_eq!(a.len(), 202);
        // UTF-8 length, not characters: "é" is 2 bytes.
        assert_eq!(&address("é")[..], &[2, 0xc3, 0xa9]);
    }

    #[test]
    fn outgoing_frames_get_the_prefix() {
        let a = address("doc");
        // Sync step 1 with an empty state vector.
        assert_eq!(
            &wrap(&a, &[0, 0, 1, 0])[..],
            &[3, b'd', b'o', b'c', 0, 0, 1, 0]
        );
        // An awareness frame.
        assert_eq!(
            &wrap(&a, &[1, 2, 0xaa, 0xbb])[..],
            b"\x03doc\x01\x02\xaa\xbb"
        );
    }

    #[test]
    fn auth_with_an_empty_token() {
        // [varString "doc"] [Auth = 2] [Token = 0] [varString ""]
        assert_eq!(&auth(&address("doc"), "")[..], b"\x03doc\x02\x00\x00");
        assert_eq!(&auth(&address("d"), "tk")[..], b"\x01d\x02\x00\x02tk");
    }

    #[test]
    fn sync_and_awareness_are_stripped_without_copy() {
        let a = address("doc");
        // The server's broadcast of an update: [name][Sync 0][update 2][varUint8Array].
        let msg = Bytes::from_static(b"\x03doc\x00\x02\x03abc");
        let Inbound::Frame(f) = unwrap(&a, msg.clone()) else {
            panic!("not a frame")
        };
        assert_eq!(&f[..], b"\x00\x02\x03abc");
        assert_eq!(
            f.as_ptr(),
            msg[4..].as_ptr(),
            "a slice of the received buffer"
        );
        // Awareness.
        assert_eq!(
            unwrap(&a, Bytes::from_static(b"\x03doc\x01\x01\x00")),
            Inbound::Frame(Bytes::from_static(b"\x01\x01\x00"))
        );
    }

    #[test]
    fn hocuspocus_only_replies_are_dropped() {
        let a = address("doc");
        // Authenticated: writeAuthenticated(encoder, "read-write") after the Auth type.
        let mut authenticated = b"\x03doc\x02\x02".to_vec();
        write_str(&mut authenticated, "read-write");
        assert_eq!(authenticated[6], 10);
        assert_eq!(unwrap(&a, Bytes::from(authenticated)), Inbound::Skip(AUTH));
        // SyncStatus(true), the ack of every update: writeSyncStatus(true).
        assert_eq!(
            unwrap(&a, Bytes::from_static(b"\x03doc\x08\x01")),
            Inbound::Skip(SYNC_STATUS)
        );
        // Stateless "hi".
        assert_eq!(
            unwrap(&a, Bytes::from_static(b"\x03doc\x05\x02hi")),
            Inbound::Skip(5)
        );
        // Token request (a bare Token sub-type).
        assert_eq!(
            unwrap(&a, Bytes::from_static(b"\x03doc\x02\x00")),
            Inbound::Skip(AUTH)
        );
    }

    /// The bytes Hocuspocus 4.7.0 sent on one socket (captured on loopback) after a client
    /// sent Auth (empty token), step 1 (empty state vector) and one update for "doc".
    #[test]
    fn a_captured_session_reads_as_y_websocket() {
        let a = address("doc");
        let update = b"\x01\x01\xe8\x07\x00\x04\x01\x01t\x02ab\x00";
        let mut sent_update = vec![0, 2, update.len() as u8];
        sent_update.extend_from_slice(update);
        let mut echo = b"\x03doc".to_vec();
        echo.extend_from_slice(&sent_update);
        let received: Vec<Bytes> = vec![
            Bytes::from_static(b"\x03doc\x02\x02\x0aread-write"), // Authenticated
            Bytes::from_static(b"\x03doc\x00\x00\x01\x00"),       // the server's step 1
            Bytes::from_static(b"\x03doc\x00\x01\x02\x00\x00"),   // step 2 (empty doc)
            Bytes::from_static(b"\x03doc\x08\x01"),               // SyncStatus for the update
            Bytes::from(echo),                                    // the update, echoed
        ];
        let seen: Vec<Inbound> = received.into_iter().map(|m| unwrap(&a, m)).collect();
        assert_eq!(
            seen,
            vec![
                Inbound::Skip(AUTH),
                Inbound::Frame(Bytes::from_static(&[0, 0, 1, 0])),
                Inbound::Frame(Bytes::from_static(&[0, 1, 2, 0, 0])),
                Inbound::Skip(SYNC_STATUS),
                Inbound::Frame(Bytes::from(sent_update.clone())),
            ]
        );
        // And what the client sent, byte for byte.
        assert_eq!(&auth(&a, "")[..], b"\x03doc\x02\x00\x00");
        assert_eq!(
            &wrap(&a, &crate::client::step1_empty())[..],
            b"\x03doc\x00\x00\x01\x00"
        );
        let mut expect = b"\x03doc".to_vec();
        expect.extend_from_slice(&sent_update);
        assert_eq!(&wrap(&a, &sent_update)[..], &expect[..]);
    }

    #[test]
    fn denial_close_and_foreign_documents_close_the_client() {
        let a = address("doc");
        let mut denied = b"\x03doc\x02\x01".to_vec();
        write_str(&mut denied, "permission-denied");
        assert_eq!(
            unwrap(&a, Bytes::from(denied)),
            Inbound::Closed("permission denied: permission-denied".into())
        );
        let mut close = b"\x03doc\x07".to_vec();
        write_str(&mut close, "Server closed the connection");
        assert_eq!(
            unwrap(&a, Bytes::from(close)),
            Inbound::Closed("server closed the document: Server closed the connection".into())
        );
        assert!(matches!(
            unwrap(&a, Bytes::from_static(b"\x03dod\x00\x01\x00")),
            Inbound::Closed(_)
        ));
        assert!(matches!(
            unwrap(&a, Bytes::from_static(b"\x03doc")),
            Inbound::Closed(_)
        ));
    }
}
