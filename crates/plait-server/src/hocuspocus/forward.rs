//! The forwarder of one document on a Hocuspocus socket: what the room queues for the member,
//! re-framed for the provider (see the parent module), and the document's own close.

use std::sync::Arc;

use bytes::Bytes;
use plait_protocol::hocuspocus as hp;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, info};

use crate::access;
use crate::conn::{Close, ConnId, STORED_MARKER_TAG};
use crate::outbox::{CloseSignal, Outbox, OutboxRx};
use crate::room::{RoomCmd, RoomHandle};

/// `varString address`: what turns a y-websocket message into this document's.
pub(super) fn address_prefix(address: &str) -> Bytes {
    let mut out = Vec::with_capacity(address.len() + 5);
    plait_protocol::lib0::write_str(&mut out, address);
    out.into()
}

/// The Hocuspocus frame for one frame the room queued for a document; `None` for what has no
/// counterpart (nothing the room sends a member with `values: false`, in practice).
fn translate(frame: Bytes, address: &str, prefix: &[u8]) -> Option<Bytes> {
    match &frame[..] {
        [STORED_MARKER_TAG] => Some(hp::encode_sync_status(address, true)),
        // y-websocket permission denied: an update the room refused (document size limit).
        [2, 0, ..] => Some(hp::encode_sync_status(address, false)),
        [0 | 1 | 3, ..] if frame.len() < IN_PLACE_FROM => Some(concat(prefix, &frame)),
        // A large frame of this member's own (a sync step 2 of the whole document, say) is
        // framed in its own buffer rather than held twice; one shared with other members (a
        // broadcast) is copied.
        [0 | 1 | 3, ..] => Some(match frame.try_into_mut() {
            Ok(own) => plait_protocol::lib0::prefixed(prefix, own.into()),
            Err(shared) => concat(prefix, &shared),
        }),
        _ => None,
    }
}

/// The size from which a frame is re-framed in place when it is this member's own: below it,
/// copying costs less than asking.
const IN_PLACE_FROM: usize = 64 * 1024;

fn concat(prefix: &[u8], frame: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + frame.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(frame);
    out.into()
}

pub(super) struct Forwarder {
    pub(super) rx: OutboxRx,
    pub(super) address: Arc<str>,
    pub(super) prefix: Bytes,
    pub(super) socket: Outbox,
    pub(super) socket_control: CloseSignal,
    pub(super) doc_control: CloseSignal,
    pub(super) v4: bool,
    pub(super) expiry: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    pub(super) room: RoomHandle,
    pub(super) conn: ConnId,
}

/// Moves what the room queues for one document into the socket's outbox, re-framed, and
/// carries out the document's close.
pub(super) async fn forward(mut f: Forwarder) {
    let mut batch = Vec::new();
    let mut expired = false;
    loop {
        tokio::select! {
            biased;
            reason = f.doc_control.closed() => {
                let _ = f.room.tx.send(RoomCmd::Leave { conn: f.conn }).await;
                let per_document = reason == access::TOKEN_EXPIRED || reason == access::KICKED;
                if f.v4 && per_document {
                    info!(address = %f.address, reason = reason.reason, "closing document");
                    let _ = f.socket.try_send(hp::encode_close(&f.address, reason.reason));
                } else {
                    info!(address = %f.address, reason = reason.reason, "closing connection");
                    f.socket_control.close(reason);
                }
                return;
            }
            () = &mut f.expiry, if !expired => {
                expired = true;
                f.doc_control.close(access::TOKEN_EXPIRED);
            }
            n = f.rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    return;
                }
                let bytes = f.rx.charged(&batch);
                for frame in batch.drain(..) {
                    let tag = frame.first().copied();
                    let Some(out) = translate(frame, &f.address, &f.prefix) else {
                        debug!(tag, "no Hocuspocus counterpart; dropped");
                        continue;
                    };
                    match f.socket.try_send(out) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            f.socket_control.close(Close::SLOW_CONSUMER);
                            return;
                        }
                        Err(TrySendError::Closed(_)) => return,
                    }
                }
                f.rx.written(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plait_protocol::message;

    #[test]
    fn room_frames_become_the_documents_frames() {
        let address = "notes\0s1";
        let prefix = address_prefix(address);
        // Sync, awareness: the y-websocket message after the address, as the codec reads it.
        let update = message::encode_update(&[0, 0]);
        let out = translate(update, address, &prefix).unwrap();
        assert_eq!(out, hp::encode_update(address, &[0, 0]));
        let aw = message::encode_awareness(&[0]);
        let out = translate(aw, address, &prefix).unwrap();
        assert_eq!(out, hp::encode_awareness(address, &[0]));
        let step1 = message::encode_sync_step1(&[0]);
        assert_eq!(
            translate(step1, address, &prefix).unwrap(),
            hp::encode_sync_step1(address, &[0])
        );
        // The stored marker and a refusal become sync statuses; nothing else passes.
        assert_eq!(
            translate(crate::conn::stored_marker(), address, &prefix).unwrap(),
            hp::encode_sync_status(address, true)
        );
        assert_eq!(
            translate(
                message::encode_permission_denied("document size limit reached"),
                address,
                &prefix
            )
            .unwrap(),
            hp::encode_sync_status(address, false)
        );
        assert_eq!(
            translate(Bytes::from_static(&[100, 1, 0]), address, &prefix),
            None
        );
    }

    /// A large frame of this member's own (its sync step 2) is re-framed in its own buffer;
    /// one shared with other members is copied, and both come out as the codec frames them.
    #[test]
    fn a_large_frame_of_the_members_own_is_reframed_in_place() {
        let address = "notes\0s1";
        let prefix = address_prefix(address);
        let update: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        // Room for the address in the buffer, so that the pointer tells a copy from none.
        let mut own = Vec::with_capacity(update.len() + 64);
        own.extend_from_slice(&message::encode_sync_step2(&update));
        let step2 = Bytes::from(own);
        let at = step2.as_ptr();
        let out = translate(step2, address, &prefix).unwrap();
        assert_eq!(out, hp::encode_sync_step2(address, &update));
        assert_eq!(out.as_ptr(), at, "the member's own step 2 was copied");

        let broadcast = message::encode_update(&update);
        let kept = broadcast.clone();
        let out = translate(broadcast, address, &prefix).unwrap();
        assert_eq!(out, hp::encode_update(address, &update));
        assert_eq!(
            kept,
            message::encode_update(&update),
            "the shared frame changed"
        );
    }
}
