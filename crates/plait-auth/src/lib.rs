//! plait's tokens: JSON Web Tokens that name the rooms a client may open and its right there.
//!
//! A token is a JWT signed with HS256 (a shared secret, `--auth-secret`) or with EdDSA or
//! ES256 (public keys from `--auth-public-key-file`: one PEM key, or a JWKS document whose keys
//! are chosen by the token's `kid`). The algorithm is pinned by the key, never taken from the
//! token: an HS256 token is checked only against the secret, an EdDSA token only against an
//! Ed25519 key, and `alg: none` (or anything else) is refused. `exp` is required; the leeway is
//! `--auth-leeway-secs` (at most [`MAX_LEEWAY_SECS`]).
//!
//! Claims (besides `exp`, and optionally `iat`/`nbf`):
//! - `rooms`: room names or patterns, where `*` matches any run of characters (`/` included):
//!   `["notes", "team-*"]`.
//! - `right`: `read`, `write` or `admin`. Each includes the ones before it.
//! - `user` (optional): a display name the server stamps into the connection's awareness state.
//!
//! A client presents its token at the WebSocket upgrade, in the first of these that is present:
//! an `Authorization: Bearer TOKEN` header, a `Sec-WebSocket-Protocol` entry `plait-auth.TOKEN`,
//! or the query parameter `token` (what a stock `WebsocketProvider` sends from its `params`).
//!
//! Components, in reading order:
//! - `claims`: [`Claims`] (the payload) and [`Right`].
//! - `pattern`: [`room_matches`], the `*` patterns of `rooms`, linear in its inputs.
//! - `verify`: [`Authenticator`] (keys loaded once, then [`Authenticator::verify`] and
//!   [`Authenticator::authorize`]), [`issue_hs256`] for development tokens.
//! - `request`: where a request carries its token ([`token_from_request`], [`bearer`]) and
//!   [`redact_query`] for logs.
//!
//! Pure: no I/O but reading a key file, no async runtime, no server. Everything here takes
//! input from the network; none of it panics on any input (the `token` fuzz target in
//! `crates/plait-protocol/fuzz` checks that).

mod claims;
mod pattern;
mod request;
mod verify;

pub use claims::{Claims, Right};
pub use pattern::room_matches;
#[doc(hidden)]
pub use pattern::room_matches_with_work;
pub use request::{bearer, is_token_subprotocol, redact_query, token_from_request};
pub use verify::{issue_hs256, now_secs, AuthError, Authenticator, KeyError};

/// The most clock skew `--auth-leeway-secs` may allow on `exp` and `nbf`, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Longest token accepted, in bytes; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most room patterns one token may carry; more make the token invalid.
pub const MAX_ROOM_PATTERNS: usize = 256;
/// The `Sec-WebSocket-Protocol` prefix that carries a token: `plait-auth.<jwt>`.
pub const SUBPROTOCOL_PREFIX: &str = "plait-auth.";
