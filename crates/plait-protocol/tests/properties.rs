//! Property tests: the decoder never panics, and real yrs output always passes validation.

use bytes::Bytes;
use plait_protocol::{Limits, Message, SyncMessage};
use proptest::prelude::*;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, Map, ReadTxn, StateVector, Text, Transact};

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&Bytes::from(bytes), &Limits::default());
    }

    /// Reading every message of a frame never panics, ends, and yields at most one error, last.
    #[test]
    fn decode_all_never_panics_and_ends_at_an_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let frame = Bytes::from(bytes);
        let all: Vec<_> = Message::decode_all(&frame, &Limits::default()).collect();
        prop_assert!(all.len() <= frame.len().max(1));
        if let Some(i) = all.iter().position(Result::is_err) {
            prop_assert_eq!(i, all.len() - 1);
        }
    }

    #[test]
    fn sync_frames_with_arbitrary_payloads_never_panic(
        sub in 0u8..3,
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let frame = match sub {
            0 => plait_protocol::message::encode_sync_step1(&payload),
            1 => plait_protocol::message::encode_sync_step2(&payload),
            _ => plait_protocol::message::encode_update(&payload),
        };
        let _ = Message::decode(&frame, &Limits::default());
    }

    #[test]
    fn updates_made_by_yrs_pass_validation(
        edits in proptest::collection::vec((0u8..4, 0u32..20, "[a-zé]{0,8}"), 1..30)
    ) {
        // UTF-16 offsets, as Yjs counts: any position is then a character boundary here.
        let doc = Doc::with_options(yrs::Options {
            client_id: yrs::block::ClientID::new(42),
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        let text = doc.get_or_insert_text("t");
        let map = doc.get_or_insert_map("m");
        let array = doc.get_or_insert_array("a");
        let mut updates = Vec::new();
        for (kind, pos, s) in edits {
            let mut txn = doc.transact_mut();
            match kind {
                0 => {
                    let len = text.len(&txn);
                    text.insert(&mut txn, pos.min(len), &s);
                }
                1 => {
                    let len = text.len(&txn);
                    if len > 0 {
                        let at = pos % len;
                        text.remove_range(&mut txn, at, (len - at).min(3));
                    }
                }
                2 => {
                    map.insert(&mut txn, s.clone(), yrs::Any::from(vec![yrs::Any::from(s.as_str()), yrs::Any::from(pos as f64)]));
                }
                _ => {
                    let len = array.len(&txn);
                    array.insert(&mut txn, pos.min(len), s.as_str());
                }
            }
            updates.push(txn.encode_update_v1());
        }
        for update in updates {
            let frame = plait_protocol::message::encode_update(&update);
            let decoded = Message::decode(&frame, &Limits::default());
            prop_assert!(matches!(decoded, Ok(Message::Sync(SyncMessage::Update(_)))), "{:?}", decoded);
        }
        let full = doc.transact().encode_state_as_update_v1(&StateVector::default());
        let frame = plait_protocol::message::encode_sync_step2(&full);
        prop_assert!(Message::decode(&frame, &Limits::default()).is_ok());
        let sv = doc.transact().state_vector().encode_v1();
        prop_assert!(Message::decode(&plait_protocol::message::encode_sync_step1(&sv), &Limits::default()).is_ok());
    }
}
