//! Property tests of the Hocuspocus codec: no input panics, and encode then decode is identity.

use bytes::Bytes;
use plait_protocol::hocuspocus::{
    self, Address, ProviderFrame, ProviderMessage, Scope, ServerFrame, ServerMessage,
};
use plait_protocol::lib0::write_var;
use plait_protocol::{AwarenessEntry, AwarenessUpdate, Limits, SyncMessage};
use proptest::prelude::*;

fn address() -> impl Strategy<Value = Address> {
    // Document names as apps use them (slashes, spaces, non-ASCII), with or without a v4
    // session id of the provider's alphabet.
    (
        "[a-zA-Z0-9/ _.é日-]{1,40}",
        proptest::option::of("[a-z0-9]{0,12}"),
    )
        .prop_map(|(doc, session)| match session {
            Some(s) => Address::with_session(&doc, &s),
            None => Address::document_only(&doc),
        })
}

fn sync_message() -> impl Strategy<Value = SyncMessage> {
    prop_oneof![
        // A state vector of (client < 2^53, clock < 2^32) pairs.
        proptest::collection::vec((0u64..(1 << 53), any::<u32>()), 0..4).prop_map(|pairs| {
            let mut sv = Vec::new();
            write_var(&mut sv, pairs.len() as u64);
            for (client, clock) in pairs {
                write_var(&mut sv, client);
                write_var(&mut sv, u64::from(clock));
            }
            SyncMessage::Step1(sv.into())
        }),
        Just(SyncMessage::Step2(Bytes::from_static(&[0, 0]))),
        Just(SyncMessage::Update(Bytes::from_static(&[0, 0]))),
    ]
}

fn awareness() -> impl Strategy<Value = AwarenessUpdate> {
    proptest::collection::vec(
        (
            any::<u32>(),
            any::<u32>(),
            prop_oneof![
                Just("null".to_owned()),
                "[a-z ]{0,10}".prop_map(|n| format!(r#"{{"user":{{"name":"{n}"}}}}"#)),
            ],
        ),
        0..4,
    )
    .prop_map(|entries| AwarenessUpdate {
        entries: entries
            .into_iter()
            .map(|(client, clock, state)| AwarenessEntry {
                client: u64::from(client),
                clock: u64::from(clock),
                state,
            })
            .collect(),
    })
}

fn provider_frame() -> impl Strategy<Value = ProviderFrame> {
    let message = prop_oneof![
        sync_message().prop_map(ProviderMessage::Sync),
        sync_message().prop_map(ProviderMessage::SyncReply),
        awareness().prop_map(ProviderMessage::Awareness),
        (".{0,40}", proptest::option::of("[0-9.]{1,8}")).prop_map(|(token, provider_version)| {
            ProviderMessage::Token {
                token,
                provider_version,
            }
        }),
        Just(ProviderMessage::QueryAwareness),
        ".{0,40}".prop_map(ProviderMessage::Stateless),
        Just(ProviderMessage::Close),
    ];
    prop_oneof![
        1 => Just(ProviderFrame::Pong),
        10 => (address(), message).prop_map(|(address, message)| ProviderFrame::Document { address, message }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let message = prop_oneof![
        sync_message().prop_map(ServerMessage::Sync),
        sync_message().prop_map(ServerMessage::SyncReply),
        awareness().prop_map(ServerMessage::Awareness),
        Just(ServerMessage::TokenRequest),
        ".{0,40}".prop_map(ServerMessage::PermissionDenied),
        prop_oneof![Just(Scope::ReadWrite), Just(Scope::ReadOnly)]
            .prop_map(ServerMessage::Authenticated),
        Just(ServerMessage::QueryAwareness),
        ".{0,40}".prop_map(ServerMessage::Stateless),
        ".{0,40}".prop_map(ServerMessage::BroadcastStateless),
        ".{0,40}".prop_map(ServerMessage::Close),
        any::<bool>().prop_map(ServerMessage::SyncStatus),
    ];
    prop_oneof![
        1 => Just(ServerFrame::Ping),
        10 => (address(), message).prop_map(|(address, message)| ServerFrame::Document { address, message }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let frame = Bytes::from(bytes);
        let _ = ProviderFrame::decode(&frame, &Limits::default());
        let _ = ServerFrame::decode(&frame, &Limits::default());
    }

    /// A valid address and type, then anything: the payload readers must not panic either.
    #[test]
    fn arbitrary_payloads_never_panic(
        ty in 0u64..12,
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut frame = Vec::new();
        plait_protocol::lib0::write_str(&mut frame, "notes");
        write_var(&mut frame, ty);
        frame.extend_from_slice(&payload);
        let frame = Bytes::from(frame);
        let _ = ProviderFrame::decode(&frame, &Limits::default());
        let _ = ServerFrame::decode(&frame, &Limits::default());
    }

    #[test]
    fn provider_frames_round_trip(frame in provider_frame()) {
        let bytes = frame.encode();
        prop_assert_eq!(ProviderFrame::decode(&bytes, &Limits::default()), Ok(frame));
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let bytes = frame.encode();
        prop_assert_eq!(ServerFrame::decode(&bytes, &Limits::default()), Ok(frame));
    }

    /// The free encoders are the layouts the enums use.
    #[test]
    fn free_encoders_agree_with_the_enums(address in address(), payload in ".{0,20}", applied in any::<bool>()) {
        let a = address.as_str();
        let doc = |message| ServerFrame::Document { address: address.clone(), message }.encode();
        prop_assert_eq!(hocuspocus::encode_stateless(a, &payload), doc(ServerMessage::Stateless(payload.clone())));
        prop_assert_eq!(hocuspocus::encode_close(a, &payload), doc(ServerMessage::Close(payload.clone())));
        prop_assert_eq!(hocuspocus::encode_sync_status(a, applied), doc(ServerMessage::SyncStatus(applied)));
        prop_assert_eq!(hocuspocus::encode_update(a, &[0, 0]), doc(ServerMessage::Sync(SyncMessage::Update(Bytes::from_static(&[0, 0])))));
        prop_assert_eq!(hocuspocus::encode_sync_step2(a, &[0, 0]), doc(ServerMessage::Sync(SyncMessage::Step2(Bytes::from_static(&[0, 0])))));
        prop_assert_eq!(hocuspocus::encode_sync_step1(a, &[0]), doc(ServerMessage::Sync(SyncMessage::Step1(Bytes::from_static(&[0])))));
    }
}
