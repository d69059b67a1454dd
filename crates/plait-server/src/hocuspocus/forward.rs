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
fn translate(frame: &[u8], address: &str, prefix: &[u8]) -> Option<Bytes> {
    match frame {
        [STORED_MARKER_TAG] => Some(hp::encode_sync_status(address, true)),
        // y-websocket permission denied: an update the room refused (document size limit).
        [2, 0, ..] => Some(hp::encode_sync_status(address, false)),
        [0 | 1 | 3, ..] => {
            let mut out = Vec::with_capacity(prefix.len() + frame.len());
            out.extend_from_slice(prefix);
            out.extend_from_slice(frame);
            Some(out.into())
        }
        _ => None,
    }
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
                    let Some(out) = translate(&frame, &f.address, &f.prefix) else {
                        debug!(tag = frame.first().copied(), "no Hocuspocus counterpart; dropped");
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
        let out = translate(&update, address, &prefix).unwrap();
        assert_eq!(out, hp::encode_update(address, &[0, 0]));
        let aw = message::encode_awareness(&[0]);
        let out = translate(&aw, address, &prefix).unwrap();
        assert_eq!(out, hp::encode_awareness(address, &[0]));
        let step1 = message::encode_sync_step1(&[0]);
        assert_eq!(
            translate(&step1, address, &prefix).unwrap(),
            hp::encode_sync_step1(address, &[0])
        );
        // The stored marker and a refusal become sync statuses; nothing else passes.
        assert_eq!(
            translate(&crate::conn::stored_marker(), address, &prefix).unwrap(),
            hp::encode_sync_status(address, true)
        );
        assert_eq!(
            translate(
                &message::encode_permission_denied("document size limit reached"),
                address,
                &prefix
            )
            .unwrap(),
            hp::encode_sync_status(address, false)
        );
        assert_eq!(translate(&[100, 1, 0], address, &prefix), None);
    }
}
