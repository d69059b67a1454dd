//! Delivery: how the room's frames reach its members' outboxes. Nobody is skipped silently:
//! a member whose outbox is full is closed as a slow consumer, one whose writer is gone leaves.

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::info;

use super::RoomCore;
use crate::conn::{Close, ConnId};
use crate::metrics as m;
use crate::outbox::Queued;
use crate::room::Member;

impl RoomCore {
    /// Sends one frame to one member; a full outbox closes it as a slow consumer.
    pub(in crate::room) fn send(&mut self, conn: ConnId, frame: Bytes) {
        let Some(member) = self.members.get(&conn) else {
            return;
        };
        let len = frame.len();
        match member.link.outbox.try_send(frame) {
            Ok(()) => {
                m::hot().messages_out.increment(1);
                m::hot().bytes_out.increment(len as u64);
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_slow(vec![conn]),
            Err(mpsc::error::TrySendError::Closed(_)) => self.leave(conn),
        }
    }

    /// Sends the same bytes to every member but `skip`. Members whose outbox is full are
    /// closed: an update is never skipped silently for anyone who stays connected.
    pub(in crate::room) fn broadcast(&mut self, frame: &Bytes, skip: Option<ConnId>) {
        self.broadcast_where(frame, |conn, _| Some(conn) != skip);
    }

    /// As [`RoomCore::broadcast`], to the members for which `to` holds.
    pub(in crate::room) fn broadcast_where(
        &mut self,
        frame: &Bytes,
        to: impl Fn(ConnId, &Member) -> bool,
    ) {
        self.fan_out(frame, to, |_| None);
    }

    /// Queues `frame` for every member for which `to` holds, or, where `merge` turns the
    /// member's last queued frame into one carrying both, replaces that frame
    /// ([`crate::outbox::Outbox::try_send_or_merge`]). Members whose outbox is full are
    /// closed: a frame is never skipped silently for anyone who stays connected.
    pub(super) fn fan_out(
        &mut self,
        frame: &Bytes,
        to: impl Fn(ConnId, &Member) -> bool,
        mut merge: impl FnMut(&Bytes) -> Option<Bytes>,
    ) {
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        let (mut sent, mut merged, mut grew) = (0u64, 0u64, 0u64);
        for (conn, member) in &self.members {
            if !to(*conn, member) {
                continue;
            }
            match member
                .link
                .outbox
                .try_send_or_merge(frame.clone(), &mut merge)
            {
                Ok(Queued::Appended) => sent += 1,
                Ok(Queued::Merged { grew: by }) => {
                    merged += 1;
                    grew += by as u64;
                }
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(*conn),
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*conn),
            }
        }
        m::hot().messages_out.increment(sent);
        m::hot()
            .bytes_out
            .increment(sent * frame.len() as u64 + grew);
        m::hot().updates_coalesced.increment(merged);
        for conn in gone {
            self.leave(conn);
        }
        if !slow.is_empty() {
            self.drop_slow(slow);
        }
    }

    pub(in crate::room) fn drop_slow(&mut self, conns: Vec<ConnId>) {
        for conn in conns {
            info!(conn, "closing slow consumer");
            metrics::counter!(m::SLOW_CONSUMER_CLOSES).increment(1);
            self.close(conn, Close::SLOW_CONSUMER);
        }
    }

    /// Removes a member and tells its connection to close with `reason`.
    pub(in crate::room) fn close(&mut self, conn: ConnId, reason: Close) {
        if let Some(member) = self.members.remove(&conn) {
            member.link.control.close(reason);
            self.after_removal(conn);
        }
    }
}
