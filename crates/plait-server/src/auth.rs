//! Authentication: JSON Web Tokens that name the rooms a client may open and its right there.
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

use std::path::Path;

use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::{HeaderMap, Uri};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The most clock skew `--auth-leeway-secs` may allow on `exp` and `nbf`, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Longest token accepted, in bytes; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most room patterns one token may carry; more make the token invalid.
pub const MAX_ROOM_PATTERNS: usize = 256;
/// The `Sec-WebSocket-Protocol` prefix that carries a token: `plait-auth.<jwt>`.
pub const SUBPROTOCOL_PREFIX: &str = "plait-auth.";

/// What a token allows in the rooms it names. Each right includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Sync, receive edits and appear in presence; edits sent are refused.
    Read,
    /// Read and edit.
    Write,
    /// Write, and kick sessions through the admin API.
    Admin,
}

impl std::str::FromStr for Right {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Right::Read),
            "write" => Ok(Right::Write),
            "admin" => Ok(Right::Admin),
            other => Err(format!("unknown right {other:?}: use read, write or admin")),
        }
    }
}

/// The claims plait reads from a token (the wire format of its payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, in seconds since the Unix epoch. Required.
    pub exp: u64,
    /// Issued at, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Room names and patterns (`*` matches any run of characters).
    pub rooms: Vec<String>,
    /// The right in those rooms.
    pub right: Right,
    /// A display name, stamped into the connection's awareness state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Claims {
    /// Whether these claims cover `room`.
    pub fn covers(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| room_matches(p, room))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// The token is past its `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// The token is malformed, badly signed, uses another algorithm or names no known key.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The token is valid but does not cover this room or lacks the right.
    #[error("token does not grant this")]
    Forbidden,
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The key file holds no key plait can use.
    #[error("{path}: {reason}")]
    Unusable { path: String, reason: String },
}

/// One verification key with the one algorithm it may verify.
struct VerifyKey {
    /// The `kid` a token must name; `None` (a PEM key) matches any or no `kid`.
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Checks tokens against the configured keys. Built once at startup.
pub(crate) struct Authenticator {
    keys: Vec<VerifyKey>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most [`MAX_LEEWAY_SECS`]).
    pub(crate) leeway_secs: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Authenticator")
            .field("n_keys", &self.keys.len())
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Authenticator {
    /// The authenticator for a secret and/or a public key file; `None` when neither is given
    /// (auth off).
    ///
    /// # Errors
    /// The key file cannot be read or holds no usable key.
    pub(crate) fn new(
        secret: Option<&str>,
        public_key_file: Option<&Path>,
        leeway_secs: u64,
    ) -> Result<Option<Self>, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            keys.push(VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(path) = public_key_file {
            keys.extend(load_public_keys(path)?);
        }
        Ok((!keys.is_empty()).then_some(Authenticator {
            keys,
            leeway_secs: leeway_secs.min(MAX_LEEWAY_SECS),
        }))
    }

    /// Verifies a token's signature, algorithm, `exp` and `nbf`, and returns its claims.
    ///
    /// # Errors
    /// [`AuthError::Expired`] or [`AuthError::Invalid`].
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("too long"));
        }
        // `alg: none` and unknown algorithms fail here: jsonwebtoken knows no such variant.
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("bad header"))?;
        let key = self
            .keys
            .iter()
            .find(|k| {
                k.alg == header.alg
                    && (k.kid.is_none() || k.kid.as_deref() == header.kid.as_deref())
            })
            .ok_or(AuthError::Invalid("no key for this algorithm and kid"))?;
        let mut validation = Validation::new(key.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        AuthError::Invalid("bad signature")
                    }
                    _ => AuthError::Invalid("malformed or unacceptable claims"),
                }
            })?;
        if data.claims.rooms.len() > MAX_ROOM_PATTERNS {
            return Err(AuthError::Invalid("too many rooms"));
        }
        Ok(data.claims)
    }

    /// Verifies `token` and checks that it grants at least `need` in `room`.
    ///
    /// # Errors
    /// As [`Authenticator::verify`], or [`AuthError::Forbidden`].
    pub(crate) fn authorize(
        &self,
        token: Option<&str>,
        room: &str,
        need: Right,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        if claims.right < need || !claims.covers(room) {
            return Err(AuthError::Forbidden);
        }
        Ok(claims)
    }
}

fn load_public_keys(path: &Path) -> Result<Vec<VerifyKey>, KeyError> {
    let shown = path.display().to_string();
    let unusable = |reason: String| KeyError::Unusable {
        path: shown.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    if text.trim_start().starts_with('{') {
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| unusable(format!("not a JWKS: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => {
                    return Err(unusable(
                        "only Ed25519 (EdDSA) and P-256 (ES256) keys".into(),
                    ))
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| unusable(e.to_string()))?;
            keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(unusable("the JWKS has no keys".into()));
        }
        return Ok(keys);
    }
    let bytes = text.as_bytes();
    let (alg, key) = if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
        (Algorithm::EdDSA, k)
    } else if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
        (Algorithm::ES256, k)
    } else {
        return Err(unusable(
            "expected a PEM Ed25519 or P-256 public key, or a JWKS document".into(),
        ));
    };
    Ok(vec![VerifyKey {
        kid: None,
        alg,
        key,
    }])
}

/// Signs `claims` with HS256 and `secret` (for `plait token`, tests and scripts).
///
/// # Errors
/// Only if the claims cannot be serialised, which they always can.
pub fn issue_hs256(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Whether `room` matches `pattern`, where `*` matches any run of characters (empty and `/`
/// included) and every other character matches itself. Linear in practice; at worst
/// O(pattern × room), both of which are bounded.
pub fn room_matches(pattern: &str, room: &str) -> bool {
    let p = pattern.as_bytes();
    let r = room.as_bytes();
    let (mut pi, mut ri) = (0, 0);
    // Where the last `*` was, and the room position it currently swallows up to.
    let mut star: Option<(usize, usize)> = None;
    while ri < r.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ri));
            pi += 1;
        } else if pi < p.len() && p[pi] == r[ri] {
            pi += 1;
            ri += 1;
        } else if let Some((sp, sr)) = star {
            pi = sp + 1;
            ri = sr + 1;
            star = Some((sp, sr + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The token a WebSocket upgrade presents: `Authorization: Bearer`, then a
/// `plait-auth.` subprotocol, then the `token` query parameter.
pub(crate) fn token_from_request(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    bearer(headers)
        .or_else(|| subprotocol_token(headers))
        .or_else(|| query_param(uri, "token"))
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(SUBPROTOCOL_PREFIX).map(str::to_owned))
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Whether an offered subprotocol carries a token (and so should not be echoed when a plain
/// one is also offered).
pub(crate) fn is_token_subprotocol(protocol: &str) -> bool {
    protocol.starts_with(SUBPROTOCOL_PREFIX)
}

/// A path with its query string replaced by `?…`, for logs: query strings carry tokens.
pub(crate) fn redact_query(uri: &Uri) -> String {
    match uri.query() {
        Some(_) => format!("{}?…", uri.path()),
        None => uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn claims(rooms: &[&str], right: Right, exp: u64) -> Claims {
        Claims {
            exp,
            iat: None,
            rooms: rooms.iter().map(|s| (*s).to_owned()).collect(),
            right,
            user: Some("ann".into()),
        }
    }

    #[test]
    fn patterns_match_like_globs() {
        assert!(room_matches("notes", "notes"));
        assert!(!room_matches("notes", "notes2"));
        assert!(room_matches("team-*", "team-a"));
        assert!(room_matches("team-*", "team-"));
        assert!(room_matches("team-*", "team-a/b"));
        assert!(!room_matches("team-*", "other"));
        assert!(room_matches("*", "anything"));
        assert!(room_matches("a*b*c", "a-x-b-y-c"));
        assert!(!room_matches("a*b*c", "a-x-b-y"));
        assert!(room_matches("*-doc", "x-doc"));
        assert!(!room_matches("", "x"));
    }

    #[test]
    fn verifies_hs256_and_refuses_the_rest() {
        let auth = Authenticator::new(Some(SECRET), None, 30).unwrap().unwrap();
        let now = now_secs();
        let good = issue_hs256(SECRET, &claims(&["team-*"], Right::Write, now + 60)).unwrap();
        assert_eq!(auth.verify(&good).unwrap().right, Right::Write);
        assert!(auth.authorize(Some(&good), "team-a", Right::Write).is_ok());
        assert_eq!(
            auth.authorize(Some(&good), "other", Right::Read),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            auth.authorize(Some(&good), "team-a", Right::Admin),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            auth.authorize(None, "team-a", Right::Read),
            Err(AuthError::Missing)
        );
        let expired = issue_hs256(SECRET, &claims(&["*"], Right::Write, now - 35)).unwrap();
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        let other_key = issue_hs256(
            "another secret that is long enough!!",
            &claims(&["*"], Right::Write, now + 60),
        )
        .unwrap();
        assert!(matches!(
            auth.verify(&other_key),
            Err(AuthError::Invalid(_))
        ));
        // alg none: header {"alg":"none","typ":"JWT"}, no signature.
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(matches!(auth.verify(&none), Err(AuthError::Invalid(_))));
        // Missing exp.
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"rooms": ["*"], "right": "write"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(auth.verify(&no_exp), Err(AuthError::Invalid(_))));
        assert!(matches!(auth.verify("garbage"), Err(AuthError::Invalid(_))));
    }

    /// A throwaway Ed25519 key pair (`openssl genpkey -algorithm ed25519`), for tests only.
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPRlHRhE8DmodRIpm2k1G/CoCa4Qyd1oFLQl29eHz1DZ\n-----END PRIVATE KEY-----\n";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAIOY7UW2wpEj1dyKE8KX+rQidpJnZNHprnW0uowL2SDo=\n-----END PUBLIC KEY-----\n";
    const ED_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k2","x":"IOY7UW2wpEj1dyKE8KX-rQidpJnZNHprnW0uowL2SDo"}]}"#;

    fn eddsa(kid: Option<&str>, c: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, c, &key).unwrap()
    }

    #[test]
    fn verifies_eddsa_from_pem_and_jwks_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        std::fs::write(&pem, ED_PUBLIC).unwrap();
        let jwks = dir.path().join("keys.json");
        std::fs::write(&jwks, ED_JWKS).unwrap();
        let c = claims(&["r"], Right::Read, now_secs() + 60);

        let from_pem = Authenticator::new(None, Some(&pem), 30).unwrap().unwrap();
        assert_eq!(from_pem.verify(&eddsa(None, &c)).unwrap(), c);
        // No secret configured: HS256 tokens are refused, whatever they say.
        let hs = issue_hs256(SECRET, &c).unwrap();
        assert!(matches!(from_pem.verify(&hs), Err(AuthError::Invalid(_))));

        let from_jwks = Authenticator::new(Some(SECRET), Some(&jwks), 30)
            .unwrap()
            .unwrap();
        assert_eq!(from_jwks.verify(&eddsa(Some("k2"), &c)).unwrap(), c);
        assert!(matches!(
            from_jwks.verify(&eddsa(Some("k1"), &c)),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(from_jwks.verify(&hs).unwrap(), c);
    }

    #[test]
    fn no_keys_means_auth_off() {
        assert!(Authenticator::new(None, None, 30).unwrap().is_none());
    }

    #[test]
    fn tokens_come_from_header_subprotocol_or_query() {
        let mut h = HeaderMap::new();
        let uri: Uri = "/room?token=q%2Eq&x=1".parse().unwrap();
        assert_eq!(token_from_request(&h, &uri).as_deref(), Some("q.q"));
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            "plait, plait-auth.s.s".parse().unwrap(),
        );
        assert_eq!(token_from_request(&h, &uri).as_deref(), Some("s.s"));
        h.insert(AUTHORIZATION, "Bearer h.h".parse().unwrap());
        assert_eq!(token_from_request(&h, &uri).as_deref(), Some("h.h"));
        assert_eq!(redact_query(&uri), "/room?…");
    }
}
