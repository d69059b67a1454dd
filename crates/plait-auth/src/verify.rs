//! Checking tokens: the keys, each pinned to one algorithm, and what a token must satisfy.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::{Claims, Right, MAX_LEEWAY_SECS, MAX_ROOM_PATTERNS, MAX_TOKEN_BYTES};

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
        /// The key file.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The key file holds no key plait can use.
    #[error("{path}: {reason}")]
    Unusable {
        /// The key file (or `public keys` when they were not read from a file).
        path: String,
        /// What is wrong with its keys.
        reason: String,
    },
}

/// One verification key with the one algorithm it may verify.
struct VerifyKey {
    /// The `kid` a token must name; `None` (a PEM key or the secret) matches any or no `kid`.
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Checks tokens against the configured keys. Built once at startup.
pub struct Authenticator {
    keys: Vec<VerifyKey>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most [`MAX_LEEWAY_SECS`]).
    leeway_secs: u64,
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
    /// (auth off). A leeway above [`MAX_LEEWAY_SECS`] is lowered to it.
    ///
    /// # Errors
    /// The key file cannot be read or holds no usable key.
    pub fn new(
        secret: Option<&str>,
        public_key_file: Option<&Path>,
        leeway_secs: u64,
    ) -> Result<Option<Self>, KeyError> {
        let public_keys = match public_key_file {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: shown.clone(),
                    source,
                })?;
                Some((text, shown))
            }
            None => None,
        };
        Self::build(
            secret,
            public_keys.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
            leeway_secs,
        )
    }

    /// As [`Authenticator::new`], with the public keys given as the text of a key file (one
    /// PEM key, or a JWKS document).
    ///
    /// # Errors
    /// The text holds no usable key.
    pub fn from_key_text(
        secret: Option<&str>,
        public_keys: Option<&str>,
        leeway_secs: u64,
    ) -> Result<Option<Self>, KeyError> {
        Self::build(secret, public_keys.map(|t| (t, "public keys")), leeway_secs)
    }

    /// `public_keys`: the text of the keys and how to name them in errors.
    fn build(
        secret: Option<&str>,
        public_keys: Option<(&str, &str)>,
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
        if let Some((text, shown)) = public_keys {
            keys.extend(parse_public_keys(text, shown)?);
        }
        Ok((!keys.is_empty()).then_some(Authenticator {
            keys,
            leeway_secs: leeway_secs.min(MAX_LEEWAY_SECS),
        }))
    }

    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most [`MAX_LEEWAY_SECS`]).
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Verifies a token's length, signature, algorithm, `exp` and `nbf`, and the number of its
    /// rooms, and returns its claims.
    ///
    /// # Errors
    /// [`AuthError::Expired`] or [`AuthError::Invalid`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
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
    /// As [`Authenticator::verify`], or [`AuthError::Missing`] without a token, or
    /// [`AuthError::Forbidden`].
    pub fn authorize(
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

/// The keys of a PEM key or a JWKS document; `shown` names them in errors.
fn parse_public_keys(text: &str, shown: &str) -> Result<Vec<VerifyKey>, KeyError> {
    let unusable = |reason: String| KeyError::Unusable {
        path: shown.to_owned(),
        reason,
    };
    if text.trim_start().starts_with('{') {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| unusable(format!("not a JWKS: {e}")))?;
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
            jti: None,
        }
    }

    fn hs256() -> Authenticator {
        Authenticator::new(Some(SECRET), None, 30).unwrap().unwrap()
    }

    #[test]
    fn verifies_hs256_and_refuses_the_rest() {
        let auth = hs256();
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
        assert!(matches!(auth.verify(""), Err(AuthError::Invalid(_))));
        assert!(matches!(auth.verify(".."), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn the_leeway_is_capped() {
        let auth = Authenticator::new(Some(SECRET), None, 3_600)
            .unwrap()
            .unwrap();
        assert_eq!(auth.leeway_secs(), MAX_LEEWAY_SECS);
        let now = now_secs();
        let late = issue_hs256(SECRET, &claims(&["*"], Right::Read, now - 120)).unwrap();
        assert_eq!(auth.verify(&late), Err(AuthError::Expired));
    }

    /// An HS256 token of exactly `len` bytes, padded through the `user` claim and the `kid`
    /// header (base64 cannot make every length from the payload alone).
    fn token_of_len(len: usize, c: &Claims) -> String {
        for kid_len in 0..4 {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = (kid_len > 0).then(|| "k".repeat(kid_len));
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let sign = |user_len: usize| {
                let padded = Claims {
                    user: Some("u".repeat(user_len)),
                    ..c.clone()
                };
                jsonwebtoken::encode(&header, &padded, &key).unwrap()
            };
            let base = sign(0).len();
            let Some(room) = len.checked_sub(base) else {
                continue;
            };
            // Every 3 payload bytes add 4 token bytes; look around where `len` must be.
            let start = (room * 3 / 4).saturating_sub(4);
            for user_len in start..start + 8 {
                let token = sign(user_len);
                if token.len() == len {
                    return token;
                }
            }
        }
        panic!("no token of {len} bytes");
    }

    /// Pins the length bound at its edge: a valid token of `MAX_TOKEN_BYTES` is accepted, one
    /// byte more is refused before anything is decoded.
    #[test]
    fn tokens_are_accepted_up_to_max_token_bytes() {
        let auth = hs256();
        let c = claims(&["r"], Right::Read, now_secs() + 60);
        let at_max = token_of_len(MAX_TOKEN_BYTES, &c);
        assert_eq!(auth.verify(&at_max).unwrap().rooms, c.rooms);
        let past_max = token_of_len(MAX_TOKEN_BYTES + 1, &c);
        assert_eq!(auth.verify(&past_max), Err(AuthError::Invalid("too long")));
    }

    #[test]
    fn tokens_may_name_up_to_max_room_patterns() {
        let auth = hs256();
        let exp = now_secs() + 60;
        let names: Vec<String> = (0..=MAX_ROOM_PATTERNS).map(|i| format!("r{i}-*")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let at_max = issue_hs256(
            SECRET,
            &claims(&names[..MAX_ROOM_PATTERNS], Right::Read, exp),
        )
        .unwrap();
        let verified = auth.verify(&at_max).unwrap();
        assert_eq!(verified.rooms.len(), MAX_ROOM_PATTERNS);
        assert!(verified.covers(&format!("r{}-x", MAX_ROOM_PATTERNS - 1)));
        assert!(!verified.covers(&format!("r{MAX_ROOM_PATTERNS}-x")));
        let past_max = issue_hs256(SECRET, &claims(&names, Right::Read, exp)).unwrap();
        assert_eq!(
            auth.verify(&past_max),
            Err(AuthError::Invalid("too many rooms"))
        );
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

        // The same keys as text.
        let from_text = Authenticator::from_key_text(None, Some(ED_JWKS), 30)
            .unwrap()
            .unwrap();
        assert_eq!(from_text.verify(&eddsa(Some("k2"), &c)).unwrap(), c);
    }

    #[test]
    fn unusable_keys_are_errors() {
        let missing = Authenticator::new(None, Some(Path::new("/nonexistent/plait.pem")), 30);
        assert!(matches!(missing, Err(KeyError::Read { .. })));
        for text in [
            "not a key",
            "{",
            r#"{"keys":[]}"#,
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
        ] {
            assert!(
                matches!(
                    Authenticator::from_key_text(None, Some(text), 30),
                    Err(KeyError::Unusable { .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn no_keys_means_auth_off() {
        assert!(Authenticator::new(None, None, 30).unwrap().is_none());
        assert!(Authenticator::from_key_text(None, None, 30)
            .unwrap()
            .is_none());
    }
}
