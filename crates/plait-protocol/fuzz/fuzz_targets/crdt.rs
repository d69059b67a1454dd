//! Any bytes as a CRDT values message (tag 100's payload) or a stored value state: decoding
//! must return, never panic, and never allocate beyond what the input can hold; whatever
//! decodes must re-encode, and merging it with its re-encoding must commute.
//!
//! Byte-for-byte stability does not hold for registers whose JSON holds numbers serde_json
//! re-prints differently (`3e+50`, integers past 2^53): a state and its re-encoding then differ
//! in text. Found by this target; the merge still converges because it is commutative, which is
//! what is checked here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plait_crdt::{ClientMessage, ServerMessage, Value};

fuzz_target!(|data: &[u8]| {
    let _ = ClientMessage::decode(data);
    let _ = ServerMessage::decode(data);
    if let Ok(value) = Value::decode(data) {
        let again = Value::decode(&value.encode()).expect("a decoded value re-encodes");
        let mut ab = value.clone();
        ab.merge(&again).expect("a value merges with its re-encoding");
        let mut ba = again.clone();
        ba.merge(&value).expect("and the other way round");
        assert_eq!(ab.encode(), ba.encode(), "merge commutes");
    }
});
