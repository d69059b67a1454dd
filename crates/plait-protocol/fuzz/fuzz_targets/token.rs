//! Any bytes as a token, as the header and query values that carry one, and as room patterns.
//! Nothing may panic. A token is accepted only by an authenticator that holds the key that
//! signed it (the algorithm is pinned by the key), only within bounds (at most
//! `MAX_TOKEN_BYTES`, at most `MAX_ROOM_PATTERNS` rooms, `exp` not past), and then its claims
//! are self-consistent (re-signed they verify to themselves; every pattern covers itself with
//! its `*`s removed; `authorize` grants exactly their right). Room patterns match as the
//! textbook dynamic program says, in work linear in pattern plus room.
//!
//! Three authenticators verify every token: an HS256 secret; a JWKS with an Ed25519 key
//! (`kid` "ed") and a P-256 key (`kid` "es"); one P-256 PEM key (any `kid`). The target signs
//! with the secret and the Ed25519 key, so the accept path is reached too, not only refusals.
//! It does not sign ES256 per input: those signatures are randomised, which would make the
//! seeded CI run differ from one run to the next; one ES256 token is checked at start.
//!
//! The first byte picks what the rest is:
//! - 0: token text, and the value of `Authorization`, `Sec-WebSocket-Protocol` and the query;
//! - 1: `[signer] text`: the payload `{"exp":…,"right":"write","rooms":["` text `"]}` (valid
//!   claims for most text, or more claims if the text closes the string), signed under the
//!   signer's usual header;
//! - 2: `[signer] header 0xff payload`, any bytes, signed whatever the header says;
//! - 3: `pattern 0x00 room`;
//! - 4: `[n] [exp] [len] [right] pattern 0x00 room`: a token of about `MAX_TOKEN_BYTES - 2 +
//!   len % 5` bytes naming the pattern `n` times (up to 300), checked against the room; then
//!   the pattern repeated against the room repeated (long inputs from short ones, since
//!   libFuzzer's inputs stay under 4 KB).
//!
//! Expiry times are constants, not offsets from now, so the same input makes the same token.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use plait_auth::{
    bearer, issue_hs256, now_secs, redact_query, room_matches, room_matches_with_work,
    token_from_request, AuthError, Authenticator, Claims, Right, MAX_ROOM_PATTERNS,
    MAX_TOKEN_BYTES,
};

const SECRET: &str = "the fuzz target's secret, 32 bytes or more";
/// Throwaway keys (`openssl genpkey -algorithm ed25519`; `openssl ecparam -name prime256v1`),
/// for this target only.
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPRlHRhE8DmodRIpm2k1G/CoCa4Qyd1oFLQl29eHz1DZ\n-----END PRIVATE KEY-----\n";
const ES_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgp2ACpTvlPILNwvut\n1QMOD3pezOqEuMed7YS5n/uHt0GhRANCAASZxk7xCj5cuveCf5zvreJxPcGf3KLs\nfwDrLfv5du5lewrYA2y9mazVr9iNgpfWyhb9tJpcN8w7HAqdHaYUy3uj\n-----END PRIVATE KEY-----\n";
const ES_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEmcZO8Qo+XLr3gn+c763icT3Bn9yi\n7H8A6y37+XbuZXsK2ANsvZms1a/YjYKX1soW/bSaXDfMOxwKnR2mFMt7ow==\n-----END PUBLIC KEY-----\n";
const JWKS: &str = r#"{"keys":[
  {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"IOY7UW2wpEj1dyKE8KX-rQidpJnZNHprnW0uowL2SDo"},
  {"kty":"EC","crv":"P-256","kid":"es","x":"mcZO8Qo-XLr3gn-c763icT3Bn9yi7H8A6y37-XbuZXs","y":"CtgDbL2ZrNWv2I2Cl9bKFv20mlw3zDscCp0dphTLe6M"}
]}"#;

/// 2100-01-01: not expired for as long as this target runs.
const FUTURE: u64 = 4_102_444_800;
/// 2001-09-09: expired.
const PAST: u64 = 1_000_000_000;

/// Longest room checked against every pattern of a token (patterns × room is the work).
const MAX_TOKEN_ROOM_BYTES: usize = 1024;
/// Longest room a single pattern is checked against.
const MAX_ROOM_BYTES: usize = 8 * 1024;
/// Largest pattern × room checked against the quadratic reference.
const MAX_REFERENCE_CELLS: usize = 1 << 16;

struct Signer {
    alg: Algorithm,
    kid: Option<&'static str>,
    key: EncodingKey,
}

impl Signer {
    /// The header this signer's tokens usually carry.
    fn header(&self) -> Vec<u8> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.map(str::to_owned);
        serde_json::to_vec(&header).expect("a header serialises")
    }
}

struct Fixture {
    /// HS256; JWKS (EdDSA and ES256 by `kid`); PEM (ES256).
    auths: [Authenticator; 3],
    /// HS256, EdDSA: both deterministic.
    signers: [Signer; 2],
}

/// Which signers (indices into `signers`) each authenticator may accept.
const ACCEPTS: [&[usize]; 3] = [&[0], &[1], &[]];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fixture = Fixture {
            auths: [
                Authenticator::from_key_text(Some(SECRET), None, 30),
                Authenticator::from_key_text(None, Some(JWKS), 30),
                Authenticator::from_key_text(None, Some(ES_PUBLIC), 30),
            ]
            .map(|a| a.expect("the keys load").expect("auth is on")),
            signers: [
                Signer {
                    alg: Algorithm::HS256,
                    kid: None,
                    key: EncodingKey::from_secret(SECRET.as_bytes()),
                },
                Signer {
                    alg: Algorithm::EdDSA,
                    kid: Some("ed"),
                    key: EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).expect("ed key"),
                },
            ],
        };
        // The P-256 keys work, so fuzzing against them is not fuzzing a closed door.
        let es = Signer {
            alg: Algorithm::ES256,
            kid: Some("es"),
            key: EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).expect("es key"),
        };
        let claims = Claims {
            exp: FUTURE,
            iat: None,
            rooms: vec!["*".into()],
            right: Right::Read,
            user: None,
            jti: None,
        };
        let mut header = Header::new(es.alg);
        header.kid = es.kid.map(str::to_owned);
        let token = jsonwebtoken::encode(&header, &claims, &es.key).expect("es signs");
        let verified = fixture.auths.each_ref().map(|a| a.verify(&token).ok());
        assert_eq!(verified, [None, Some(claims.clone()), Some(claims)]);
        fixture
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => raw(rest),
        1 => {
            let Some((&signer, text)) = rest.split_first() else {
                return;
            };
            let signer = usize::from(signer) % 2;
            let payload = [
                format!(r#"{{"exp":{FUTURE},"right":"write","rooms":[""#).as_bytes(),
                text,
                br#""]}"#,
            ]
            .concat();
            signed(signer, &fixture().signers[signer].header(), &payload);
        }
        2 => {
            let Some((&signer, rest)) = rest.split_first() else {
                return;
            };
            let (header, payload) = split_at(rest, 0xff);
            signed(usize::from(signer) % 2, header, payload);
        }
        3 => {
            let (pattern, room) = split_at(rest, 0);
            patterns(
                &String::from_utf8_lossy(pattern),
                &String::from_utf8_lossy(room),
            );
        }
        _ => amplified(rest),
    }
});

/// `data` before the first `sep`, and after it (empty without one).
fn split_at(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Any text as a token: whoever accepts it, the claims are within bounds. And any bytes as the
/// values that carry tokens.
fn raw(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    verify_everywhere(&text, None);

    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.clone());
        headers.append(SEC_WEBSOCKET_PROTOCOL, value);
        if let Some(token) = bearer(&headers) {
            assert!(!token.is_empty() && token == token.trim(), "{token:?}");
        }
        let uri = Uri::from_static("/room");
        if let Some(token) = token_from_request(&headers, &uri) {
            verify_everywhere(&token, None);
        }
        // Without `Authorization`, the subprotocol: one comma-separated entry, never a list.
        headers.remove(AUTHORIZATION);
        if let Some(token) = token_from_request(&headers, &uri) {
            assert!(!token.contains(','), "{token:?}");
            verify_everywhere(&token, None);
        }
    }
    for uri in [
        Uri::try_from(data),
        Uri::try_from([b"/r?token=", data].concat()),
    ] {
        let Ok(uri) = uri else { continue };
        let redacted = redact_query(&uri);
        let expected = match uri.query() {
            Some(_) => format!("{}?…", uri.path()),
            None => uri.path().to_owned(),
        };
        assert_eq!(redacted, expected);
        if let Some(token) = token_from_request(&HeaderMap::new(), &uri) {
            verify_everywhere(&token, None);
        }
    }
}

/// Signs `header.payload` with `signer`'s key, the segments base64url-encoded, and again with
/// them as they are (text the decoder must refuse or read the same), and verifies both.
fn signed(signer: usize, header: &[u8], payload: &[u8]) {
    let s = &fixture().signers[signer];
    let encoded = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let verbatim = format!(
        "{}.{}",
        String::from_utf8_lossy(header),
        String::from_utf8_lossy(payload)
    );
    for message in [encoded, verbatim] {
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &s.key, s.alg)
            .expect("our keys sign anything");
        verify_everywhere(&format!("{message}.{signature}"), Some(signer));
    }
}

/// Verifies `token` with every authenticator; `signer` is who signed it, if one of ours did.
fn verify_everywhere(token: &str, signer: Option<usize>) {
    let before = now_secs();
    for (i, auth) in fixture().auths.iter().enumerate() {
        let Ok(claims) = auth.verify(token) else {
            continue;
        };
        let signer = signer.unwrap_or_else(|| panic!("authenticator {i} accepted a forgery"));
        assert!(
            ACCEPTS[i].contains(&signer),
            "authenticator {i} accepted signer {signer}'s token"
        );
        check_accepted(auth, token, &claims, before);
        check_consistent(auth, token, &claims);
    }
}

/// What holds for every accepted token: it is within bounds, and every pattern covers itself
/// with its stars removed (the first few: a token may name 256).
fn check_accepted(auth: &Authenticator, token: &str, claims: &Claims, before: u64) {
    assert!(token.len() <= MAX_TOKEN_BYTES, "{} bytes", token.len());
    assert!(
        claims.rooms.len() <= MAX_ROOM_PATTERNS,
        "{} rooms",
        claims.rooms.len()
    );
    assert!(
        claims.exp.saturating_add(auth.leeway_secs()) >= before,
        "expired at {}, now {before}",
        claims.exp
    );
    for pattern in claims.rooms.iter().take(3) {
        let room = pattern.replace('*', "");
        assert!(claims.covers(&room), "{pattern:?} does not cover {room:?}");
    }
}

/// What the claims of an accepted token whose payload the fuzzer wrote must satisfy besides:
/// re-signed, they verify to themselves (nothing was lost or invented), and `authorize` grants
/// exactly their right in their rooms.
fn check_consistent(auth: &Authenticator, token: &str, claims: &Claims) {
    let again = issue_hs256(SECRET, claims).expect("claims serialise");
    if again.len() <= MAX_TOKEN_BYTES {
        match fixture().auths[0].verify(&again) {
            Ok(c) => assert_eq!(&c, claims),
            // A second passed since the first check, and `exp` was at the edge.
            Err(AuthError::Expired) => {}
            Err(e) => panic!("re-signed claims refused: {e}"),
        }
    }
    // Each `authorize` verifies the whole token again: the first pattern only.
    if let Some(pattern) = claims.rooms.first() {
        let room = pattern.replace('*', "");
        match auth.authorize(Some(token), &room, claims.right) {
            Ok(c) => assert_eq!(&c, claims),
            Err(AuthError::Expired) => {}
            Err(e) => panic!("authorize refused a verified token: {e}"),
        }
        if claims.right < Right::Admin {
            assert!(matches!(
                auth.authorize(Some(token), &room, Right::Admin),
                Err(AuthError::Forbidden | AuthError::Expired)
            ));
        }
    }
}

/// `room_matches` agrees with the reference when that is cheap, and its work is linear.
fn patterns(pattern: &str, room: &str) {
    let (matched, work) = room_matches_with_work(pattern, room);
    assert!(
        work <= 2 * (pattern.len() + room.len()),
        "{work} steps for {} + {} bytes",
        pattern.len(),
        room.len()
    );
    if (pattern.len() + 1) * (room.len() + 1) <= MAX_REFERENCE_CELLS {
        assert_eq!(matched, reference(pattern, room), "{pattern:?} {room:?}");
    }
    if !pattern.contains('*') {
        assert_eq!(matched, pattern == room);
    }
    // A pattern covers itself with its stars removed.
    assert!(room_matches(pattern, &pattern.replace('*', "")));
}

/// The textbook dynamic program over bytes, O(pattern × room).
fn reference(pattern: &str, room: &str) -> bool {
    let (p, r) = (pattern.as_bytes(), room.as_bytes());
    // `row[j]`: whether the pattern so far matches `r[..j]`.
    let mut row = vec![false; r.len() + 1];
    let mut next = vec![false; r.len() + 1];
    row[0] = true;
    for &c in p {
        for j in 0..=r.len() {
            next[j] = if c == b'*' {
                row[j] || (j > 0 && next[j - 1])
            } else {
                j > 0 && row[j - 1] && c == r[j - 1]
            };
        }
        std::mem::swap(&mut row, &mut next);
    }
    row[r.len()]
}

/// Tokens at the length and room-count bounds, and long pathological patterns, from short
/// inputs.
fn amplified(data: &[u8]) {
    let [n, exp, len, right, rest @ ..] = data else {
        return;
    };
    let (unit, room_unit) = split_at(rest, 0);
    let pattern = String::from_utf8_lossy(unit).into_owned();
    let room_unit = String::from_utf8_lossy(room_unit).into_owned();
    let n_rooms = usize::from(*n) * 300 / 255;
    let now = now_secs();
    let (exp, expired) = match exp % 4 {
        0 => (FUTURE, false),
        1 => (u64::MAX, false),
        2 => (PAST, true),
        _ => (0, true),
    };
    let right = [Right::Read, Right::Write, Right::Admin][usize::from(*right) % 3];
    let target = MAX_TOKEN_BYTES - 2 + usize::from(*len) % 5;
    let token = padded_token(
        Claims {
            exp,
            iat: None,
            rooms: vec![pattern.clone(); n_rooms],
            right,
            user: None,
            jti: None,
        },
        target,
    );
    let auth = &fixture().auths[0];
    let verified = auth.verify(&token);
    // In the order `verify` checks: length, then signature and `exp`, then the rooms.
    if token.len() > MAX_TOKEN_BYTES {
        assert_eq!(verified, Err(AuthError::Invalid("too long")));
    } else if expired {
        assert_eq!(verified, Err(AuthError::Expired));
    } else if n_rooms > MAX_ROOM_PATTERNS {
        assert_eq!(verified, Err(AuthError::Invalid("too many rooms")));
    } else {
        let claims = verified.expect("a token within bounds is accepted");
        assert_eq!(claims.rooms, vec![pattern.clone(); n_rooms]);
        assert_eq!((claims.exp, claims.right), (exp, right));
        check_accepted(auth, &token, &claims, now);
        let room = repeat_to(&room_unit, MAX_TOKEN_ROOM_BYTES);
        assert_eq!(
            claims.covers(&room),
            n_rooms > 0 && room_matches(&pattern, &room)
        );
    }
    // The pattern repeated against the room repeated: `*a*a…b`, `*aaa…b` against `aaa…`.
    let long_pattern = repeat_to(&pattern, MAX_TOKEN_BYTES / 2);
    let long_room = repeat_to(&room_unit, MAX_ROOM_BYTES);
    patterns(&long_pattern, &long_room);
    patterns(&format!("{long_pattern}\u{1}"), &long_room);
}

/// `unit` repeated to at most `max` bytes (empty if `unit` is).
fn repeat_to(unit: &str, max: usize) -> String {
    if unit.is_empty() {
        return String::new();
    }
    unit.repeat(max / unit.len())
}

/// An HS256 token of these claims, its `user` padded so the token is `target` bytes long, or
/// the closest below (or the shortest, if that is longer).
fn padded_token(claims: Claims, target: usize) -> String {
    let unpadded = Claims {
        user: Some(String::new()),
        ..claims
    };
    let shortest = issue_hs256(SECRET, &unpadded).expect("claims serialise");
    // Each `u` of the user name is one more payload byte; the payload is base64url without
    // padding.
    let base64_len = |n: usize| (4 * n).div_ceil(3);
    let payload = serde_json::to_vec(&unpadded)
        .expect("claims serialise")
        .len();
    let Some(budget) = (target + base64_len(payload)).checked_sub(shortest.len()) else {
        return shortest;
    };
    let Some(user_len) = (0..=budget)
        .rev()
        .find(|&u| base64_len(payload + u) <= budget)
    else {
        return shortest;
    };
    let token = issue_hs256(
        SECRET,
        &Claims {
            user: Some("u".repeat(user_len)),
            ..unpadded
        },
    )
    .expect("claims serialise");
    assert!(
        token.len() <= target.max(shortest.len()),
        "{} > {target}",
        token.len()
    );
    token
}
