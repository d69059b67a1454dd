//! Fewer update frames per member in a busy room, the same content.
//!
//! A write's frames held back for the next write ([`Held`], strict durability): in a closed
//! loop of 500 or 2,000 members, each write's frames went out while the next write was under
//! way, so every member got two or three frames per round of edits (21–26 edits per frame);
//! held back one write, the round goes out as one frame (63–64 edits). Only when the next
//! write is already due, so an edit waits at most one more write.
//!
//! Update frames that a member's writer has not taken yet absorb the next update.
//!
//! A member whose writer lags (a slow network, a busy machine) has update frames queued when
//! the room sends the next, and each is a syscall and a WebSocket frame for the server, a
//! message for the client to decode, and one of the `--outbox-frames` that close it as slow
//! once full. So an update sent to a member whose outbox still ends in the previous update's
//! frame replaces that frame with one carrying both updates merged
//! ([`crate::docs::merge_updates`], as a store write merges what waited for it): the member
//! receives the same items and deletions, in the same place in its stream, in one frame. (In
//! the closed loops above, alone, it raised edits per frame by 5–8%: the writers there mostly
//! keep up.)
//!
//! Merging costs a decode of both updates, so it is done once per distinct queued frame, not
//! once per member: the room remembers the frames its last update broadcast queued (the
//! plain one and the merges it made), and a member whose last queued frame is one of those
//! (the same buffer, not just the same bytes) shares the merge with every other such member.

use bytes::Bytes;
use plait_protocol::message::encode_update;
use plait_protocol::{Limits, Message, SyncMessage};

use super::{merge_small, RoomCore};
use crate::conn::ConnId;

/// At most this many frames of the last broadcast are remembered: members lagging by more
/// distinct amounts than this get the update in a frame of its own.
const REMEMBERED: usize = 8;

/// ... and at most this many bytes of them: the room keeps them until its next update or its
/// second tick without one ([`Coalescing::tick`]), and merging is worth its decode for many
/// small updates, not for a few large ones.
const REMEMBERED_BYTES: usize = 64 * 1024;

/// The update frames the last update broadcast left in members' outboxes, and a write's
/// frames held back for the next.
#[derive(Debug, Default)]
pub(crate) struct Coalescing {
    last: Vec<Bytes>,
    /// Whether an update broadcast came since the last tick.
    fresh: bool,
    pub(super) held: Option<Held>,
}

/// A stored write's frames and acks, held back because the next write was already due: sent
/// with that write's, merged, when it ends (or at once if it fails). In a busy room each
/// write's frames otherwise go out while the next write is under way, one frame per write per
/// member.
#[derive(Debug)]
pub(crate) struct Held {
    pub(super) frames: Vec<Bytes>,
    pub(super) acks: Vec<ConnId>,
}

/// One update frame carrying every update of `frames`; `None` for fewer than two frames or
/// when they cannot be merged.
pub(super) fn merge_frames(frames: &[Bytes]) -> Option<Bytes> {
    if frames.len() < 2 {
        return None;
    }
    let updates: Option<Vec<Bytes>> = frames.iter().map(update_in).collect();
    merge_small(&updates?).map(|u| encode_update(&u))
}

/// Whether `a` and `b` are the same frame (one buffer), which `Coalescing` keeps alive, so an
/// equal pointer cannot be a reused allocation.
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// The update an update frame carries.
fn update_in(frame: &Bytes) -> Option<Bytes> {
    match Message::decode(frame, &Limits::default()) {
        Ok(Message::Sync(SyncMessage::Update(update))) => Some(update),
        _ => None,
    }
}

impl Coalescing {
    /// Called on every room tick: frames no update broadcast has sent since the tick before
    /// are let go, so a quiet room keeps none (a lagging writer has taken them by then, or
    /// the next update goes in a frame of its own).
    pub(super) fn tick(&mut self) {
        if !std::mem::take(&mut self.fresh) {
            self.last.clear();
        }
    }
}

impl RoomCore {
    /// Sends an update frame to every member, as [`RoomCore::broadcast`] does, merging it
    /// into the frame a member has queued when that frame is one this function queued last.
    pub(in crate::room) fn broadcast_update(&mut self, frame: &Bytes) {
        let last = std::mem::take(&mut self.coalescing.last);
        // Merges made this time, by the index of the frame they extend (`None`: it failed).
        let mut made: Vec<(usize, Option<Bytes>)> = Vec::new();
        let mut update: Option<Option<Bytes>> = None;
        self.fan_out(
            frame,
            |_, _| true,
            |queued| {
                let i = last.iter().position(|f| same(f, queued))?;
                if let Some((_, done)) = made.iter().find(|(j, _)| *j == i) {
                    return done.clone();
                }
                let next = update.get_or_insert_with(|| update_in(frame)).clone();
                let done = next
                    .zip(update_in(&last[i]))
                    .and_then(|(next, before)| merge_small(&[before, next]))
                    .map(|u| encode_update(&u));
                made.push((i, done.clone()));
                done
            },
        );
        // What members' outboxes may now end in: this frame and the merges made from it.
        let mut budget = REMEMBERED_BYTES;
        self.coalescing.fresh = true;
        self.coalescing.last.extend(
            std::iter::once(frame.clone())
                .chain(made.into_iter().filter_map(|(_, done)| done))
                .take_while(|f| {
                    budget = budget.saturating_sub(f.len());
                    budget > 0
                })
                .take(REMEMBERED),
        );
    }
}
