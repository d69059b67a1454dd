//! Where a request carries its token, and how to log a request without it.

use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, Uri};

use crate::SUBPROTOCOL_PREFIX;

/// The token a WebSocket upgrade presents: `Authorization: Bearer`, then a
/// `plait-auth.` subprotocol, then the `token` query parameter.
pub fn token_from_request(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    bearer(headers)
        .or_else(|| subprotocol_token(headers))
        .or_else(|| query_param(uri, "token"))
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case, the token
/// trimmed and not empty).
pub fn bearer(headers: &HeaderMap) -> Option<String> {
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

/// The first value of the query parameter `name`, percent-decoded once (invalid UTF-8 becomes
/// U+FFFD).
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
pub fn is_token_subprotocol(protocol: &str) -> bool {
    protocol.starts_with(SUBPROTOCOL_PREFIX)
}

/// A path with its query string replaced by `?…`, for logs: query strings carry tokens.
pub fn redact_query(uri: &Uri) -> String {
    match uri.query() {
        Some(_) => format!("{}?…", uri.path()),
        None => uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(redact_query(&"/room".parse().unwrap()), "/room");
    }

    #[test]
    fn odd_headers_and_queries_give_no_token() {
        let mut h = HeaderMap::new();
        for value in ["Bearer", "Bearer ", "Bearer    ", "Basic abc", "bearer"] {
            h.insert(AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&h), None, "{value:?}");
        }
        h.insert(AUTHORIZATION, "bEaReR  t ".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("t"));
        // Not visible ASCII: no token, no panic.
        h.insert(
            AUTHORIZATION,
            http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert_eq!(bearer(&h), None);
        let h = HeaderMap::new();
        for uri in ["/r", "/r?", "/r?token", "/r?tokens=x", "/r?x=1&&"] {
            assert_eq!(token_from_request(&h, &uri.parse().unwrap()), None, "{uri}");
        }
        let uri: Uri = "/r?token=%ff%&token=second".parse().unwrap();
        assert_eq!(token_from_request(&h, &uri).as_deref(), Some("\u{fffd}%"));
    }
}
