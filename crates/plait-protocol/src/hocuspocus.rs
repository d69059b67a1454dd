//! The Hocuspocus wire protocol (`@hocuspocus/provider` 2.x, 3.x and 4.x), sans IO.
//!
//! # Framing
//!
//! One message per binary WebSocket frame. Every frame but two starts with an *address*:
//!
//! ```text
//! varString address ‖ varUint type ‖ payload
//! ```
//!
//! The address is the provider's document name, or, for a v4 provider created with
//! `sessionAwareness: true`, `documentName + "\0" + sessionId` (`@hocuspocus/common`
//! `makeRoutingKey`). Several documents share one socket (`HocuspocusProviderWebsocket`), so the
//! address is what routes a frame to its document. A server answers with the address exactly as
//! it was received: the provider looks its document up by that string. The two exceptions are
//! the v4 connection-level `Ping` and `Pong`, each a single byte with no address.
//!
//! # Messages
//!
//! | type | name | payload | sent by |
//! |---|---|---|---|
//! | 0 | Sync | `varUint sub` ‖ `varUint8Array`: 0 step 1 (state vector), 1 step 2, 2 update | both |
//! | 1 | Awareness | `varUint8Array` awareness update (as y-protocols) | both |
//! | 2 | Auth | `varUint sub` ‖ …, see below | both |
//! | 3 | QueryAwareness | empty; the receiver answers with every awareness state | both |
//! | 4 | SyncReply | as Sync, but a step 1 is not answered with the receiver's own step 1 | servers (internal) |
//! | 5 | Stateless | `varString` (application-defined, usually JSON) | both |
//! | 6 | BroadcastStateless | `varString` | server to server only; v4 rejects it from a client |
//! | 7 | Close | provider: empty (detach this document); server (v3+): `varString reason` | both |
//! | 8 | SyncStatus | `varUint` 1 = the update was applied, 0 = refused (read-only) | server |
//! | 9 | Ping | the single byte `09`, no address | v4 server |
//! | 10 | Pong | the single byte `0a`, no address | v4 provider |
//!
//! Auth sub-types (`@hocuspocus/common` `AuthMessageType`): 0 Token, provider to server
//! `varString token` then, from v4 providers only, `varString providerVersion`; server to provider
//! with no payload it asks for a fresh token (v3+). 1 PermissionDenied `varString reason`. 2
//! Authenticated `varString scope`, `"read-write"` or `"readonly"`.
//!
//! A provider reads SyncStatus with lib0 `readVarInt` (signed), which agrees with `varUint` on
//! the only two values sent, `00` and `01`.
//!
//! # Auth handshake
//!
//! For each document on the socket, independently:
//!
//! ```text
//! provider                                   server
//!   |-- [doc, Auth, Token, token(, version)] -->|  v3/v4 always; v2 only when it has a token
//!   |-- [doc, Sync, step 1] -------------------->|  sent right after the token, unanswered:
//!   |-- [doc, Awareness] ----------------------->|  the server queues them (bounded)
//!   |<-- [doc, Auth, Authenticated, scope] ------|  or PermissionDenied(reason), and then nothing
//!   |<-- [doc, Sync, step 1] --------------------|  queued frames are handled only now
//!   |<-- [doc, Sync, step 2] --------------------|  the answer to the provider's step 1
//!   |-- [doc, Sync, step 2] -------------------->|  the answer to the server's step 1
//!   |<-- [doc, SyncStatus, 1] -------------------|  after each step 2 or update it applied
//! ```
//!
//! Nothing of a document (sync, awareness, stateless) goes to a provider before its
//! `Authenticated`. After `PermissionDenied` the server drops what it queued for that document
//! and the provider may send a new Token later; the socket and its other documents stay open.
//!
//! # Documents and plait rooms
//!
//! The document part of the address ([`Address::document`]) is the room name, exactly as a
//! y-websocket client's URL path would give it after percent-decoding: a Hocuspocus provider with
//! `name: "notes"` and a y-websocket client of `ws://host/notes` share the room `notes`. The
//! server applies its room-name rule to [`Address::document`]; the session id only tells apart
//! two providers of one document on one socket. This codec rejects what can never be a room: an
//! empty document name (what a y-websocket frame such as `00 00 01 00` looks like here), a name
//! that is not UTF-8, and an address longer than [`MAX_ADDRESS_BYTES`].

use bytes::Bytes;

use crate::awareness::AwarenessUpdate;
use crate::lib0::{write_buf, write_str, write_var, Reader};
use crate::message::{Limits, SyncMessage};

/// Type 0: document sync.
pub const MESSAGE_SYNC: u64 = 0;
/// Type 1: awareness.
pub const MESSAGE_AWARENESS: u64 = 1;
/// Type 2: auth (token, permission denied, authenticated).
pub const MESSAGE_AUTH: u64 = 2;
/// Type 3: query awareness.
pub const MESSAGE_QUERY_AWARENESS: u64 = 3;
/// Type 4: sync that must not be answered with another step 1.
pub const MESSAGE_SYNC_REPLY: u64 = 4;
/// Type 5: stateless, an application string.
pub const MESSAGE_STATELESS: u64 = 5;
/// Type 6: stateless to relay to every connection of a document (between servers).
pub const MESSAGE_BROADCAST_STATELESS: u64 = 6;
/// Type 7: close one document of the socket.
pub const MESSAGE_CLOSE: u64 = 7;
/// Type 8: whether the last update was applied.
pub const MESSAGE_SYNC_STATUS: u64 = 8;
/// Type 9: connection-level ping (v4), a single byte without address.
pub const MESSAGE_PING: u64 = 9;
/// Type 10: connection-level pong (v4), a single byte without address.
pub const MESSAGE_PONG: u64 = 10;

/// Auth sub-type 0: a token (provider to server) or a request for one (server to provider).
pub const AUTH_TOKEN: u64 = 0;
/// Auth sub-type 1: permission denied, with a reason.
pub const AUTH_PERMISSION_DENIED: u64 = 1;
/// Auth sub-type 2: authenticated, with a scope.
pub const AUTH_AUTHENTICATED: u64 = 2;

/// Longest address accepted, in bytes. Above plait's default room-name limit (256) plus a v4
/// session id (about 11 characters); a longer address is refused before anything looks it up.
/// The server still applies its own, configurable, room-name rule to [`Address::document`].
pub const MAX_ADDRESS_BYTES: usize = 1024;

/// What separates document name and session id in a v4 session key.
const SESSION_SEPARATOR: char = '\0';

/// Why a Hocuspocus frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame has no byte at all.
    #[error("empty frame")]
    Empty,
    /// The address is not valid UTF-8.
    #[error("document name is not valid utf-8")]
    AddressNotUtf8,
    /// The address is longer than [`MAX_ADDRESS_BYTES`].
    #[error("document name of {len} bytes exceeds the limit of {limit}")]
    AddressTooLong {
        /// The declared length in bytes.
        len: usize,
        /// [`MAX_ADDRESS_BYTES`].
        limit: usize,
    },
    /// The document part of the address is empty (a y-websocket frame parses this way).
    #[error("empty document name")]
    EmptyDocumentName,
    /// A message type this protocol does not define.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// A message that exists, but never travels in this direction.
    #[error("{0} is never sent in this direction")]
    WrongDirection(&'static str),
    /// The frame ended early, a payload failed validation, or a sub-type is unknown.
    #[error(transparent)]
    Payload(#[from] crate::Error),
}

// === Address ===

/// The first field of every addressed frame: a document name, optionally with a v4 session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address(String);

impl Address {
    /// The address a provider without session awareness uses: the bare document name.
    pub fn document_only(document: &str) -> Self {
        Self(document.to_owned())
    }

    /// The v4 session key `document\0session`.
    pub fn with_session(document: &str, session: &str) -> Self {
        Self(format!("{document}{SESSION_SEPARATOR}{session}"))
    }

    /// The address exactly as on the wire; replies must carry it unchanged.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document name: everything before the first NUL, the room name in plait.
    pub fn document(&self) -> &str {
        self.0
            .split_once(SESSION_SEPARATOR)
            .map_or(self.0.as_str(), |(document, _)| document)
    }

    /// The v4 session id: everything after the first NUL, if there is one. It may be empty;
    /// Hocuspocus 4 then answers as if there were none, which this type leaves to the server.
    pub fn session(&self) -> Option<&str> {
        self.0
            .split_once(SESSION_SEPARATOR)
            .map(|(_, session)| session)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let raw = r.read_buf()?;
        if raw.len() > MAX_ADDRESS_BYTES {
            return Err(DecodeError::AddressTooLong {
                len: raw.len(),
                limit: MAX_ADDRESS_BYTES,
            });
        }
        let raw = std::str::from_utf8(raw).map_err(|_| DecodeError::AddressNotUtf8)?;
        let address = Self(raw.to_owned());
        if address.document().is_empty() {
            return Err(DecodeError::EmptyDocumentName);
        }
        Ok(address)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The NUL of a session key would reach logs raw; show it escaped.
        match self.session() {
            Some(session) => write!(f, "{}\\0{}", self.document(), session),
            None => f.write_str(&self.0),
        }
    }
}

/// The rights an `Authenticated` message grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `"read-write"`.
    ReadWrite,
    /// `"readonly"`: the provider may read; its updates are answered with `SyncStatus(false)`.
    ReadOnly,
}

impl Scope {
    /// The scope as the provider expects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadWrite => "read-write",
            Scope::ReadOnly => "readonly",
        }
    }
}

// === Provider to server ===

/// One frame as a provider sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderFrame {
    /// `0a`: the v4 provider's answer to a [`ServerFrame::Ping`].
    Pong,
    /// A message about one document.
    Document {
        /// The document (and session) it is about.
        address: Address,
        /// The message.
        message: ProviderMessage,
    },
}

/// A document message from a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderMessage {
    /// Type 0. A step 1 is answered with a step 2 and the server's own step 1.
    Sync(SyncMessage),
    /// Type 4. Providers do not send it, but Hocuspocus servers accept it from anyone: a sync
    /// whose step 1 is answered with a step 2 only.
    SyncReply(SyncMessage),
    /// Type 1.
    Awareness(AwarenessUpdate),
    /// Type 2, sub-type 0: the first message of every document, and the answer to a token
    /// request.
    Token {
        /// The token, empty when the provider has none (v3, v4).
        token: String,
        /// The provider's package version, sent by v4 providers only (`"4.8.0"`).
        provider_version: Option<String>,
    },
    /// Type 3.
    QueryAwareness,
    /// Type 5.
    Stateless(String),
    /// Type 7: the provider detached this document; the socket stays open.
    Close,
}

impl ProviderFrame {
    /// Decodes one frame from a provider. Bytes after the message are ignored, as Hocuspocus
    /// does.
    ///
    /// # Errors
    /// [`DecodeError`] naming the first problem: a bad address, an unknown or server-only type,
    /// a truncated frame, or a payload refused by the same validation as y-websocket frames.
    pub fn decode(frame: &Bytes, limits: &Limits) -> Result<Self, DecodeError> {
        match frame.as_ref() {
            [] => return Err(DecodeError::Empty),
            [b] if u64::from(*b) == MESSAGE_PONG => return Ok(ProviderFrame::Pong),
            [b] if u64::from(*b) == MESSAGE_PING => {
                return Err(DecodeError::WrongDirection("ping"))
            }
            _ => {}
        }
        let mut r = Reader::new(frame);
        let address = Address::read(&mut r)?;
        let message = match r.read_var()? {
            MESSAGE_SYNC => ProviderMessage::Sync(SyncMessage::read(frame, &mut r, limits)?),
            MESSAGE_SYNC_REPLY => {
                ProviderMessage::SyncReply(SyncMessage::read(frame, &mut r, limits)?)
            }
            MESSAGE_AWARENESS => ProviderMessage::Awareness(read_awareness(&mut r, limits)?),
            MESSAGE_AUTH => match r.read_var()? {
                AUTH_TOKEN => {
                    let token = r.read_str("token")?.to_owned();
                    // v4 appends its version; v2 and v3 end the frame after the token.
                    let provider_version = if r.remaining() > 0 {
                        Some(r.read_str("provider version")?.to_owned())
                    } else {
                        None
                    };
                    ProviderMessage::Token {
                        token,
                        provider_version,
                    }
                }
                AUTH_PERMISSION_DENIED => {
                    return Err(DecodeError::WrongDirection("permission denied"))
                }
                AUTH_AUTHENTICATED => return Err(DecodeError::WrongDirection("authenticated")),
                tag => return Err(unknown_auth(tag)),
            },
            MESSAGE_QUERY_AWARENESS => ProviderMessage::QueryAwareness,
            MESSAGE_STATELESS => ProviderMessage::Stateless(r.read_str("stateless")?.to_owned()),
            // Hocuspocus 2 and 3 relayed it to every connection unchecked; 4 closes the socket.
            MESSAGE_BROADCAST_STATELESS => {
                return Err(DecodeError::WrongDirection("broadcast stateless"))
            }
            MESSAGE_CLOSE => ProviderMessage::Close,
            MESSAGE_SYNC_STATUS => return Err(DecodeError::WrongDirection("sync status")),
            MESSAGE_PING => return Err(DecodeError::WrongDirection("ping")),
            // A Pong carries no address; one after an address is not a v4 provider's.
            MESSAGE_PONG => return Err(DecodeError::WrongDirection("addressed pong")),
            tag => return Err(DecodeError::UnknownType(tag)),
        };
        Ok(ProviderFrame::Document { address, message })
    }

    /// Encodes the frame as a provider would (for tests and tools that act as one).
    pub fn encode(&self) -> Bytes {
        match self {
            ProviderFrame::Pong => encode_pong(),
            ProviderFrame::Document { address, message } => {
                let a = address.as_str();
                match message {
                    ProviderMessage::Sync(m) => encode_sync(a, m),
                    ProviderMessage::SyncReply(m) => encode_sync_reply(a, m),
                    ProviderMessage::Awareness(u) => encode_awareness(a, &u.encode()),
                    ProviderMessage::Token {
                        token,
                        provider_version,
                    } => encode_token(a, token, provider_version.as_deref()),
                    ProviderMessage::QueryAwareness => encode_query_awareness(a),
                    ProviderMessage::Stateless(p) => encode_stateless(a, p),
                    ProviderMessage::Close => header(a, MESSAGE_CLOSE, 0).into(),
                }
            }
        }
    }
}

// === Server to provider ===

/// One frame as a server sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// `09`: v4 providers answer with [`ProviderFrame::Pong`]. Never send it to v2 or v3
    /// providers, which read it as a truncated address.
    Ping,
    /// A message about one document.
    Document {
        /// The address the provider used, unchanged.
        address: Address,
        /// The message.
        message: ServerMessage,
    },
}

/// A document message from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// Type 0.
    Sync(SyncMessage),
    /// Type 4: only between servers; providers do not understand it.
    SyncReply(SyncMessage),
    /// Type 1.
    Awareness(AwarenessUpdate),
    /// Type 2, sub-type 0 without payload: send a fresh token (v3+ providers; v2 ignores it).
    TokenRequest,
    /// Type 2, sub-type 1.
    PermissionDenied(String),
    /// Type 2, sub-type 2.
    Authenticated(Scope),
    /// Type 3.
    QueryAwareness,
    /// Type 5.
    Stateless(String),
    /// Type 6: only between servers.
    BroadcastStateless(String),
    /// Type 7 with a reason: this document is closed, the socket stays open. v3+ providers
    /// only; a v2 provider throws on it.
    Close(String),
    /// Type 8: `true` once an update was applied, `false` when it was refused.
    SyncStatus(bool),
}

impl ServerFrame {
    /// Decodes one frame from a server (for tests and tools that act as a provider).
    ///
    /// # Errors
    /// As [`ProviderFrame::decode`], with the directions swapped.
    pub fn decode(frame: &Bytes, limits: &Limits) -> Result<Self, DecodeError> {
        match frame.as_ref() {
            [] => return Err(DecodeError::Empty),
            [b] if u64::from(*b) == MESSAGE_PING => return Ok(ServerFrame::Ping),
            [b] if u64::from(*b) == MESSAGE_PONG => {
                return Err(DecodeError::WrongDirection("pong"))
            }
            _ => {}
        }
        let mut r = Reader::new(frame);
        let address = Address::read(&mut r)?;
        let message = match r.read_var()? {
            MESSAGE_SYNC => ServerMessage::Sync(SyncMessage::read(frame, &mut r, limits)?),
            MESSAGE_SYNC_REPLY => {
                ServerMessage::SyncReply(SyncMessage::read(frame, &mut r, limits)?)
            }
            MESSAGE_AWARENESS => ServerMessage::Awareness(read_awareness(&mut r, limits)?),
            MESSAGE_AUTH => match r.read_var()? {
                AUTH_TOKEN => ServerMessage::TokenRequest,
                AUTH_PERMISSION_DENIED => {
                    ServerMessage::PermissionDenied(r.read_str("permission denied reason")?.into())
                }
                AUTH_AUTHENTICATED => match r.read_str("scope")? {
                    "read-write" => ServerMessage::Authenticated(Scope::ReadWrite),
                    "readonly" => ServerMessage::Authenticated(Scope::ReadOnly),
                    _ => return Err(crate::Error::Malformed("authenticated scope").into()),
                },
                tag => return Err(unknown_auth(tag)),
            },
            MESSAGE_QUERY_AWARENESS => ServerMessage::QueryAwareness,
            MESSAGE_STATELESS => ServerMessage::Stateless(r.read_str("stateless")?.to_owned()),
            MESSAGE_BROADCAST_STATELESS => {
                ServerMessage::BroadcastStateless(r.read_str("stateless")?.to_owned())
            }
            MESSAGE_CLOSE => ServerMessage::Close(r.read_str("close reason")?.to_owned()),
            MESSAGE_SYNC_STATUS => match r.read_var()? {
                0 => ServerMessage::SyncStatus(false),
                1 => ServerMessage::SyncStatus(true),
                _ => return Err(crate::Error::Malformed("sync status").into()),
            },
            MESSAGE_PING => return Err(DecodeError::WrongDirection("addressed ping")),
            MESSAGE_PONG => return Err(DecodeError::WrongDirection("pong")),
            tag => return Err(DecodeError::UnknownType(tag)),
        };
        Ok(ServerFrame::Document { address, message })
    }

    /// Encodes the frame in the layout Hocuspocus servers write.
    pub fn encode(&self) -> Bytes {
        match self {
            ServerFrame::Ping => encode_ping(),
            ServerFrame::Document { address, message } => {
                let a = address.as_str();
                match message {
                    ServerMessage::Sync(m) => encode_sync(a, m),
                    ServerMessage::SyncReply(m) => encode_sync_reply(a, m),
                    ServerMessage::Awareness(u) => encode_awareness(a, &u.encode()),
                    ServerMessage::TokenRequest => encode_token_request(a),
                    ServerMessage::PermissionDenied(reason) => encode_permission_denied(a, reason),
                    ServerMessage::Authenticated(scope) => encode_authenticated(a, *scope),
                    ServerMessage::QueryAwareness => encode_query_awareness(a),
                    ServerMessage::Stateless(p) => encode_stateless(a, p),
                    ServerMessage::BroadcastStateless(p) => encode_broadcast_stateless(a, p),
                    ServerMessage::Close(reason) => encode_close(a, reason),
                    ServerMessage::SyncStatus(applied) => encode_sync_status(a, *applied),
                }
            }
        }
    }
}

fn read_awareness(r: &mut Reader<'_>, limits: &Limits) -> Result<AwarenessUpdate, DecodeError> {
    let payload = r.read_buf()?;
    Ok(AwarenessUpdate::decode(
        payload,
        limits.max_awareness_clients,
        limits.max_awareness_state_bytes,
    )?)
}

fn unknown_auth(tag: u64) -> DecodeError {
    crate::Error::UnknownTag {
        what: "auth message",
        tag,
    }
    .into()
}

// === Encoding ===

/// `address ‖ type`, with room for `extra` more bytes.
fn header(address: &str, ty: u64, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(address.len() + 4 + extra);
    write_str(&mut out, address);
    write_var(&mut out, ty);
    out
}

fn with_buf(address: &str, ty: u64, sub: Option<u64>, payload: &[u8]) -> Bytes {
    let mut out = header(address, ty, payload.len() + 8);
    if let Some(sub) = sub {
        write_var(&mut out, sub);
    }
    write_buf(&mut out, payload);
    out.into()
}

fn with_str(address: &str, ty: u64, sub: Option<u64>, s: &str) -> Bytes {
    with_buf(address, ty, sub, s.as_bytes())
}

/// `[address, Sync, sub, payload]` for any sync message.
pub fn encode_sync(address: &str, message: &SyncMessage) -> Bytes {
    with_buf(
        address,
        MESSAGE_SYNC,
        Some(message.sub_type()),
        message.payload(),
    )
}

/// `[address, SyncReply, sub, payload]`: for other servers, never for providers.
pub fn encode_sync_reply(address: &str, message: &SyncMessage) -> Bytes {
    with_buf(
        address,
        MESSAGE_SYNC_REPLY,
        Some(message.sub_type()),
        message.payload(),
    )
}

/// `[address, Sync, 0, state vector]`: the server's sync step 1.
pub fn encode_sync_step1(address: &str, state_vector: &[u8]) -> Bytes {
    with_buf(address, MESSAGE_SYNC, Some(0), state_vector)
}

/// `[address, Sync, 1, update]`: what the provider lacks, in answer to its step 1.
pub fn encode_sync_step2(address: &str, update: &[u8]) -> Bytes {
    with_buf(address, MESSAGE_SYNC, Some(1), update)
}

/// `[address, Sync, 2, update]`: an incremental update.
pub fn encode_update(address: &str, update: &[u8]) -> Bytes {
    with_buf(address, MESSAGE_SYNC, Some(2), update)
}

/// `[address, Awareness, update]` (see [`crate::awareness::encode_entries`]).
pub fn encode_awareness(address: &str, update: &[u8]) -> Bytes {
    with_buf(address, MESSAGE_AWARENESS, None, update)
}

/// `[address, QueryAwareness]`.
pub fn encode_query_awareness(address: &str) -> Bytes {
    header(address, MESSAGE_QUERY_AWARENESS, 0).into()
}

/// `[address, Auth, Token]`: ask a v3+ provider for a fresh token; v2 ignores it.
pub fn encode_token_request(address: &str) -> Bytes {
    let mut out = header(address, MESSAGE_AUTH, 1);
    write_var(&mut out, AUTH_TOKEN);
    out.into()
}

/// `[address, Auth, Token, token(, version)]`: what a provider sends first for a document.
pub fn encode_token(address: &str, token: &str, provider_version: Option<&str>) -> Bytes {
    let mut out = header(address, MESSAGE_AUTH, token.len() + 16);
    write_var(&mut out, AUTH_TOKEN);
    write_str(&mut out, token);
    if let Some(version) = provider_version {
        write_str(&mut out, version);
    }
    out.into()
}

/// `[address, Auth, PermissionDenied, reason]`: the provider fires `onAuthenticationFailed`.
pub fn encode_permission_denied(address: &str, reason: &str) -> Bytes {
    with_str(address, MESSAGE_AUTH, Some(AUTH_PERMISSION_DENIED), reason)
}

/// `[address, Auth, Authenticated, scope]`: the provider fires `onAuthenticated`.
pub fn encode_authenticated(address: &str, scope: Scope) -> Bytes {
    with_str(
        address,
        MESSAGE_AUTH,
        Some(AUTH_AUTHENTICATED),
        scope.as_str(),
    )
}

/// `[address, Stateless, payload]`.
pub fn encode_stateless(address: &str, payload: &str) -> Bytes {
    with_str(address, MESSAGE_STATELESS, None, payload)
}

/// `[address, BroadcastStateless, payload]`: for other servers, never for providers.
pub fn encode_broadcast_stateless(address: &str, payload: &str) -> Bytes {
    with_str(address, MESSAGE_BROADCAST_STATELESS, None, payload)
}

/// `[address, Close, reason]`: this document is closed for the provider (v3+ only).
pub fn encode_close(address: &str, reason: &str) -> Bytes {
    with_str(address, MESSAGE_CLOSE, None, reason)
}

/// `[address, SyncStatus, 1|0]`: the provider's unsynced-changes count drops by one on 1.
pub fn encode_sync_status(address: &str, applied: bool) -> Bytes {
    let mut out = header(address, MESSAGE_SYNC_STATUS, 1);
    write_var(&mut out, u64::from(applied));
    out.into()
}

/// `[09]`: connection-level ping, for v4 providers only.
pub fn encode_ping() -> Bytes {
    Bytes::from_static(&[MESSAGE_PING as u8])
}

/// `[0a]`: connection-level pong.
pub fn encode_pong() -> Bytes {
    Bytes::from_static(&[MESSAGE_PONG as u8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn provider(bytes: &[u8]) -> Result<ProviderFrame, DecodeError> {
        ProviderFrame::decode(&Bytes::copy_from_slice(bytes), &Limits::default())
    }

    fn server(bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
        ServerFrame::decode(&Bytes::copy_from_slice(bytes), &Limits::default())
    }

    // Recorded from @hocuspocus/provider 4.8.0 (v4.json): the Token of a session-aware provider
    // of "shared" with session id "i", token "good", version "4.8.0".
    const V4_SESSION_TOKEN: &str = "087368617265640069020004676f6f6405342e382e30";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn session_key_splits_into_document_and_session() {
        let Ok(ProviderFrame::Document { address, message }) = provider(&unhex(V4_SESSION_TOKEN))
        else {
            panic!("token")
        };
        assert_eq!(address.as_str(), "shared\0i");
        assert_eq!(address.document(), "shared");
        assert_eq!(address.session(), Some("i"));
        assert_eq!(address, Address::with_session("shared", "i"));
        assert_eq!(address.to_string(), "shared\\0i");
        assert_eq!(
            message,
            ProviderMessage::Token {
                token: "good".into(),
                provider_version: Some("4.8.0".into())
            }
        );
        let plain = Address::document_only("a/b c");
        assert_eq!((plain.document(), plain.session()), ("a/b c", None));
    }

    #[test]
    fn ping_and_pong_are_single_bytes_without_address() {
        assert_eq!(provider(&[0x0a]), Ok(ProviderFrame::Pong));
        assert_eq!(server(&[0x09]), Ok(ServerFrame::Ping));
        assert_eq!(provider(&[0x09]), Err(DecodeError::WrongDirection("ping")));
        assert_eq!(server(&[0x0a]), Err(DecodeError::WrongDirection("pong")));
        assert_eq!(encode_ping(), &[0x09][..]);
        assert_eq!(encode_pong(), &[0x0a][..]);
        // Any other single byte is a truncated address.
        assert_eq!(
            provider(&[0x05]),
            Err(DecodeError::Payload(Error::UnexpectedEnd))
        );
        assert_eq!(provider(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn a_y_websocket_frame_is_an_empty_document_name() {
        // y-websocket sync step 1 of an empty document.
        assert_eq!(
            provider(&[0x00, 0x00, 0x01, 0x00]),
            Err(DecodeError::EmptyDocumentName)
        );
        // So is a session key without a document.
        let frame = encode_query_awareness("\0abc");
        assert_eq!(provider(&frame), Err(DecodeError::EmptyDocumentName));
    }

    #[test]
    fn bad_addresses_are_refused_before_use() {
        let frame = [0x02, 0xff, 0xfe, 0x03];
        assert_eq!(provider(&frame), Err(DecodeError::AddressNotUtf8));
        let long = "x".repeat(MAX_ADDRESS_BYTES + 1);
        assert_eq!(
            provider(&encode_query_awareness(&long)),
            Err(DecodeError::AddressTooLong {
                len: MAX_ADDRESS_BYTES + 1,
                limit: MAX_ADDRESS_BYTES
            })
        );
        assert!(provider(&encode_query_awareness(&long[1..])).is_ok());
        // A length that promises more than the frame holds.
        assert_eq!(
            provider(&[0x80, 0x80, 0x80, 0x80, 0x10, b'a']),
            Err(DecodeError::Payload(Error::UnexpectedEnd))
        );
    }

    #[test]
    fn types_are_checked_per_direction() {
        assert_eq!(
            provider(&header("d", 11, 0)),
            Err(DecodeError::UnknownType(11))
        );
        assert_eq!(
            provider(&encode_broadcast_stateless("d", "x")),
            Err(DecodeError::WrongDirection("broadcast stateless"))
        );
        assert_eq!(
            provider(&encode_sync_status("d", true)),
            Err(DecodeError::WrongDirection("sync status"))
        );
        assert_eq!(
            provider(&encode_authenticated("d", Scope::ReadWrite)),
            Err(DecodeError::WrongDirection("authenticated"))
        );
        assert_eq!(
            provider(&encode_permission_denied("d", "no")),
            Err(DecodeError::WrongDirection("permission denied"))
        );
        assert_eq!(
            provider(&header("d", MESSAGE_PONG, 0)),
            Err(DecodeError::WrongDirection("addressed pong"))
        );
        // A Token with no token, which Hocuspocus fails to read too.
        assert_eq!(
            provider(&encode_token_request("d")),
            Err(DecodeError::Payload(Error::UnexpectedEnd))
        );
        let mut auth9 = header("d", MESSAGE_AUTH, 1);
        auth9.push(9);
        assert_eq!(
            provider(&auth9),
            Err(DecodeError::Payload(Error::UnknownTag {
                what: "auth message",
                tag: 9
            }))
        );
        let mut status2 = header("d", MESSAGE_SYNC_STATUS, 1);
        status2.push(2);
        assert_eq!(
            server(&status2),
            Err(DecodeError::Payload(Error::Malformed("sync status")))
        );
    }

    #[test]
    fn sync_payloads_are_validated_like_y_websocket_ones() {
        // Sync step 1 whose 5-byte state vector declares 2^32 entries.
        let bomb = encode_sync_step1("d", &[0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(matches!(
            provider(&bomb),
            Err(DecodeError::Payload(Error::CountTooLarge { .. }))
        ));
        let mut sub3 = header("d", MESSAGE_SYNC, 2);
        sub3.extend_from_slice(&[3, 0]);
        assert!(matches!(
            provider(&sub3),
            Err(DecodeError::Payload(Error::UnknownTag { tag: 3, .. }))
        ));
        // The same through SyncReply.
        let mut reply = header("d", MESSAGE_SYNC_REPLY, 2);
        reply.extend_from_slice(&[0, 5, 0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(provider(&reply).is_err());
    }

    #[test]
    fn payloads_are_zero_copy_slices_of_the_frame() {
        let frame = encode_update("notes", &[0, 0]);
        let Ok(ProviderFrame::Document {
            message: ProviderMessage::Sync(SyncMessage::Update(u)),
            ..
        }) = ProviderFrame::decode(&frame, &Limits::default())
        else {
            panic!("update")
        };
        assert_eq!(u, &[0, 0][..]);
        assert_eq!(u.as_ptr(), frame[frame.len() - 2..].as_ptr());
    }

    #[test]
    fn every_truncation_of_the_recorded_token_is_an_error() {
        let frame = unhex(V4_SESSION_TOKEN);
        // Cutting inside the optional version leaves a shorter, still valid, v2/v3 token only
        // where the version string starts; everywhere else it is an error.
        let version_start = frame.len() - 6;
        for cut in 0..frame.len() {
            let decoded = provider(&frame[..cut]);
            if cut == version_start {
                assert!(decoded.is_ok(), "cut at {cut}");
            } else {
                assert!(decoded.is_err(), "cut at {cut}: {decoded:?}");
            }
        }
    }
}
