//! The Hocuspocus codec against bytes made by the real npm packages, one file per major version.
//!
//! `tests/fixtures/hocuspocus/v{2,3,4}.json` come from `gen/gen.mjs`: a real `@hocuspocus/server`
//! and real `HocuspocusProvider`s talking over loopback (`session`, every frame in order, both
//! directions), plus every server message built with the server package's own `OutgoingMessage`
//! (`server_built`). Regenerate with `cd tests/fixtures/hocuspocus/gen && npm ci && node gen.mjs`.

use bytes::Bytes;
use plait_protocol::hocuspocus::{
    Address, ProviderFrame, ProviderMessage, Scope, ServerFrame, ServerMessage,
};
use plait_protocol::{Limits, SyncMessage};
use serde_json::Value;

struct Fixture {
    major: u32,
    json: Value,
}

fn fixtures() -> Vec<Fixture> {
    [
        (2, include_str!("fixtures/hocuspocus/v2.json")),
        (3, include_str!("fixtures/hocuspocus/v3.json")),
        (4, include_str!("fixtures/hocuspocus/v4.json")),
    ]
    .into_iter()
    .map(|(major, text)| Fixture {
        major,
        json: serde_json::from_str(text).expect("fixture is JSON"),
    })
    .collect()
}

fn unhex(s: &str) -> Bytes {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect::<Vec<_>>()
        .into()
}

/// Session frames in order, decoded by direction; each is re-encoded byte for byte on the way.
enum Frame {
    Provider(ProviderFrame),
    Server(ServerFrame),
}

fn session(f: &Fixture) -> Vec<Frame> {
    let limits = Limits::default();
    f.json["session"]
        .as_array()
        .expect("session")
        .iter()
        .map(|entry| {
            let bytes = unhex(entry["hex"].as_str().expect("hex"));
            match entry["dir"].as_str() {
                Some("provider_to_server") => {
                    let frame = ProviderFrame::decode(&bytes, &limits)
                        .unwrap_or_else(|e| panic!("v{} provider frame {bytes:x?}: {e}", f.major));
                    assert_eq!(frame.encode(), bytes, "v{} re-encoding {frame:?}", f.major);
                    Frame::Provider(frame)
                }
                Some("server_to_provider") => {
                    let frame = ServerFrame::decode(&bytes, &limits)
                        .unwrap_or_else(|e| panic!("v{} server frame {bytes:x?}: {e}", f.major));
                    assert_eq!(frame.encode(), bytes, "v{} re-encoding {frame:?}", f.major);
                    Frame::Server(frame)
                }
                other => panic!("unknown direction {other:?}"),
            }
        })
        .collect()
}

fn provider_messages(frames: &[Frame]) -> impl Iterator<Item = (&Address, &ProviderMessage)> {
    frames.iter().filter_map(|f| match f {
        Frame::Provider(ProviderFrame::Document { address, message }) => Some((address, message)),
        _ => None,
    })
}

fn server_messages(frames: &[Frame]) -> impl Iterator<Item = (&Address, &ServerMessage)> {
    frames.iter().filter_map(|f| match f {
        Frame::Server(ServerFrame::Document { address, message }) => Some((address, message)),
        _ => None,
    })
}

#[test]
fn every_recorded_frame_decodes_and_re_encodes() {
    for f in fixtures() {
        let frames = session(&f);
        assert!(frames.len() > 30, "v{}: {} frames", f.major, frames.len());
    }
}

#[test]
fn the_token_comes_first_and_carries_a_version_from_v4_on() {
    for f in fixtures() {
        let frames = session(&f);
        let expected_version = (f.major == 4).then(|| {
            f.json["packages"]["@hocuspocus/provider"]
                .as_str()
                .expect("version")
                .to_owned()
        });
        let mut seen = std::collections::HashSet::new();
        for (address, message) in provider_messages(&frames) {
            // A provider's first frame for each document is its token (all three majors send
            // one when they have a token; v2 sends none without).
            if seen.insert(address.clone()) {
                let ProviderMessage::Token {
                    token,
                    provider_version,
                } = message
                else {
                    panic!("v{}: first frame for {address} is {message:?}", f.major)
                };
                let expected_token = if address.document() == "secret" {
                    "bad"
                } else {
                    "good"
                };
                assert_eq!(token, expected_token);
                assert_eq!(provider_version, &expected_version, "v{}", f.major);
            }
        }
        assert!(seen.len() >= 3, "v{}: {seen:?}", f.major);
    }
}

/// The order the issue promises: nothing of a document reaches a provider before its
/// `Authenticated`, and nothing at all after `PermissionDenied`.
#[test]
fn the_server_answers_auth_before_anything_else_of_a_document() {
    for f in fixtures() {
        let frames = session(&f);
        let mut state = std::collections::HashMap::new();
        for (address, message) in server_messages(&frames) {
            match (state.get(address), message) {
                (None, ServerMessage::Authenticated(_)) => {
                    state.insert(address.clone(), true);
                }
                (None, ServerMessage::PermissionDenied(reason)) => {
                    assert_eq!(reason, "bad token");
                    state.insert(address.clone(), false);
                }
                (Some(true), _) => {}
                (s, m) => panic!("v{}: {m:?} for {address} in state {s:?}", f.major),
            }
        }
        let scope = |doc: &str| {
            server_messages(&frames).find_map(|(a, m)| match m {
                ServerMessage::Authenticated(s) if a.document() == doc => Some(*s),
                _ => None,
            })
        };
        assert_eq!(scope("notes"), Some(Scope::ReadWrite), "v{}", f.major);
        assert_eq!(scope("readonly-doc"), Some(Scope::ReadOnly), "v{}", f.major);
        assert_eq!(state.get(&Address::document_only("secret")), Some(&false));
    }
}

#[test]
fn updates_are_acknowledged_with_sync_status() {
    for f in fixtures() {
        let frames = session(&f);
        let statuses = |doc: &str| -> Vec<bool> {
            server_messages(&frames)
                .filter_map(|(a, m)| match m {
                    ServerMessage::SyncStatus(applied) if a.document() == doc => Some(*applied),
                    _ => None,
                })
                .collect()
        };
        // "notes": one for the provider's step 2, one for its update "hi".
        assert_eq!(statuses("notes"), [true, true], "v{}", f.major);
        // "readonly-doc": its empty step 2 changes nothing and is acked; its edit is refused.
        assert_eq!(statuses("readonly-doc"), [true, false], "v{}", f.major);
    }
}

#[test]
fn the_recorded_update_applies_in_yrs() {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};
    for f in fixtures() {
        let frames = session(&f);
        let update = provider_messages(&frames)
            .find_map(|(a, m)| match m {
                ProviderMessage::Sync(SyncMessage::Update(u)) if a.document() == "notes" => {
                    Some(u.clone())
                }
                _ => None,
            })
            .expect("an update");
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(&update).expect("v1"))
            .expect("applies");
        assert_eq!(text.get_string(&doc.transact()), "hi", "v{}", f.major);
    }
}

#[test]
fn stateless_and_close_by_version() {
    for f in fixtures() {
        let frames = session(&f);
        assert!(provider_messages(&frames)
            .any(|(_, m)| *m == ProviderMessage::Stateless("hello".into())));
        assert!(server_messages(&frames)
            .any(|(_, m)| *m == ServerMessage::Stateless("echo:hello".into())));
        // Detaching a document sends Close for it alone, in every major.
        assert!(provider_messages(&frames)
            .any(|(a, m)| a.document() == "readonly-doc" && *m == ProviderMessage::Close));
        // Servers 3 and 4 answer with their own Close; server 2 has no such message (and a v2
        // provider throws on type 7).
        let server_closes: Vec<_> = server_messages(&frames)
            .filter_map(|(_, m)| match m {
                ServerMessage::Close(reason) => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        if f.major == 2 {
            assert!(server_closes.is_empty());
        } else {
            assert!(
                server_closes.contains(&"provider_initiated"),
                "v{}",
                f.major
            );
        }
    }
}

#[test]
fn v4_session_keys_and_pong() {
    let f = fixtures().into_iter().find(|f| f.major == 4).expect("v4");
    let frames = session(&f);
    let key = Address::with_session("shared", "i");
    assert!(provider_messages(&frames).any(|(a, _)| *a == key));
    // Replies carry the session key unchanged: that is how the provider finds its document.
    let replies: Vec<_> = server_messages(&frames)
        .filter(|(a, _)| **a == key)
        .collect();
    assert!(replies.len() >= 4, "{replies:?}");
    assert!(matches!(
        replies[0].1,
        ServerMessage::Authenticated(Scope::ReadWrite)
    ));
    // The provider answered the connection-level Ping with a bare Pong.
    assert!(matches!(
        frames.last(),
        Some(Frame::Provider(ProviderFrame::Pong))
    ));
    // v2 and v3 never send either.
    for f in fixtures().into_iter().filter(|f| f.major < 4) {
        let frames = session(&f);
        assert!(!frames
            .iter()
            .any(|fr| matches!(fr, Frame::Provider(ProviderFrame::Pong))));
        assert!(provider_messages(&frames).all(|(a, _)| a.session().is_none()));
    }
}

#[test]
fn server_built_messages_decode_and_re_encode() {
    let limits = Limits::default();
    for f in fixtures() {
        let built = f.json["server_built"].as_array().expect("server_built");
        for entry in built {
            let what = entry["what"].as_str().expect("what");
            let bytes = unhex(entry["hex"].as_str().expect("hex"));
            let frame = ServerFrame::decode(&bytes, &limits)
                .unwrap_or_else(|e| panic!("v{} {what}: {e}", f.major));
            assert_eq!(frame.encode(), bytes, "v{} {what}", f.major);
            let ServerFrame::Document { address, message } = frame else {
                panic!("v{} {what}: not addressed", f.major)
            };
            let expect_address = match what {
                "unicode document name" => "ノート/日本",
                "session sync status" => "notes\0abc",
                _ => "notes",
            };
            assert_eq!(address.as_str(), expect_address, "v{} {what}", f.major);
            let ok = match what {
                "sync step 1" => matches!(message, ServerMessage::Sync(SyncMessage::Step1(_))),
                "sync reply step 1" => {
                    matches!(message, ServerMessage::SyncReply(SyncMessage::Step1(_)))
                }
                "sync update" => matches!(message, ServerMessage::Sync(SyncMessage::Update(_))),
                "awareness (no states)" => {
                    matches!(&message, ServerMessage::Awareness(u) if u.entries.is_empty())
                }
                "query awareness" => message == ServerMessage::QueryAwareness,
                "authenticated read-write" => {
                    message == ServerMessage::Authenticated(Scope::ReadWrite)
                }
                "authenticated readonly" => {
                    message == ServerMessage::Authenticated(Scope::ReadOnly)
                }
                "permission denied" => {
                    message == ServerMessage::PermissionDenied("permission-denied".into())
                }
                "stateless" => message == ServerMessage::Stateless(r#"{"a":1}"#.into()),
                "broadcast stateless" => message == ServerMessage::BroadcastStateless("b".into()),
                "sync status applied" | "unicode document name" | "session sync status" => {
                    message == ServerMessage::SyncStatus(true)
                }
                "sync status refused" => message == ServerMessage::SyncStatus(false),
                "token request" => message == ServerMessage::TokenRequest,
                "close" => message == ServerMessage::Close("Server closed the connection".into()),
                other => panic!("v{}: no expectation for {other}", f.major),
            };
            assert!(ok, "v{} {what}: {message:?}", f.major);
        }
        // Server 2 has neither the token request nor Close; 3 and 4 have both.
        let has = |what: &str| built.iter().any(|e| e["what"] == what);
        assert_eq!(has("token request"), f.major >= 3);
        assert_eq!(has("close"), f.major >= 3);
    }
}
