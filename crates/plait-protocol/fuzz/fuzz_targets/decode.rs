//! Any bytes, as a y-websocket frame and as a Hocuspocus frame: the decoders must return, never
//! panic, and whatever they accept yrs must decode without panicking or exhausting memory.
//!
//! Applying an accepted update can still trip yrs's own integration bugs (e.g. an arithmetic
//! overflow in `BlockStore::push` for crafted skips). The server applies inside
//! `catch_unwind` and reloads the room from the store when that happens, so here too a panic
//! while applying is caught rather than counted; a panic anywhere else is a finding.
#![no_main]

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use plait_protocol::hocuspocus::{ProviderFrame, ProviderMessage, ServerFrame};
use plait_protocol::{Limits, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, StateVector, Transact, Update};

thread_local! {
    static APPLYING: Cell<bool> = const { Cell::new(false) };
}

fn quiet_while_applying() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !APPLYING.with(Cell::get) {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    quiet_while_applying();
    let frame = Bytes::copy_from_slice(data);
    let limits = Limits::default();
    if let Ok(Message::Sync(sync)) = Message::decode(&frame, &limits) {
        exercise(sync);
    }
    // The same bytes as a Hocuspocus frame: its sync payloads pass the same validation and
    // must be just as safe for yrs.
    if let Ok(ProviderFrame::Document {
        message: ProviderMessage::Sync(sync) | ProviderMessage::SyncReply(sync),
        ..
    }) = ProviderFrame::decode(&frame, &limits)
    {
        exercise(sync);
    }
    let _ = ServerFrame::decode(&frame, &limits);
});

fn exercise(sync: SyncMessage) {
    match sync {
        SyncMessage::Step1(sv) => {
            let _ = StateVector::decode_v1(&sv);
        }
        SyncMessage::Step2(u) | SyncMessage::Update(u) => {
            if let Ok(update) = Update::decode_v1(&u) {
                let doc = Doc::new();
                APPLYING.with(|a| a.set(true));
                let _ = catch_unwind(AssertUnwindSafe(|| doc.transact_mut().apply_update(update)));
                APPLYING.with(|a| a.set(false));
            }
        }
    }
}
