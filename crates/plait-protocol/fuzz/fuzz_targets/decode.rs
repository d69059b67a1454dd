//! Any bytes: the decoder must return, never panic, and whatever it accepts yrs must decode
//! and apply without panicking or exhausting memory.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use plait_protocol::{Limits, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, StateVector, Transact, Update};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    match Message::decode(&frame, &Limits::default()) {
        Ok(Message::Sync(SyncMessage::Step1(sv))) => {
            let _ = StateVector::decode_v1(&sv);
        }
        Ok(Message::Sync(SyncMessage::Step2(u) | SyncMessage::Update(u))) => {
            if let Ok(update) = Update::decode_v1(&u) {
                let doc = Doc::new();
                let _ = doc.transact_mut().apply_update(update);
            }
        }
        _ => {}
    }
});
