//! `POST /api/admin/kick`: close every session of a room or of a user (close code 4403).
//!
//! Authorized by the `--admin-token` (every room) or by a JWT with right `admin` (the rooms
//! its patterns cover). The body names a `room`, a `user`, or both (sessions that match
//! both); the answer is `{"closed": N}`. The sockets are closed as soon as their writers run,
//! well within a second.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::auth::{self, AuthError, Claims, Right};
use crate::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/api/admin/kick", post(kick))
}

/// The body of a kick request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KickRequest {
    room: Option<String>,
    user: Option<String>,
}

/// Who asked for the kick.
enum Caller {
    /// The `--admin-token`: every room.
    Operator,
    /// An admin JWT: the rooms it covers.
    Token(Claims),
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// Compares without stopping at the first difference, so timing reveals nothing.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn caller(shared: &Shared, headers: &HeaderMap) -> Result<Caller, (StatusCode, &'static str)> {
    let admin_token = shared.admin_token.as_deref();
    let authenticator = shared.access.auth.as_ref();
    if admin_token.is_none() && authenticator.is_none() {
        return Err((
            StatusCode::FORBIDDEN,
            "the kick is off: start the server with --admin-token or --auth-secret",
        ));
    }
    let Some(given) = auth::bearer(headers) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "send the admin token or an admin JWT as Authorization: Bearer TOKEN",
        ));
    };
    if admin_token.is_some_and(|t| same_secret(t.as_bytes(), given.as_bytes())) {
        return Ok(Caller::Operator);
    }
    let Some(authenticator) = authenticator else {
        return Err((StatusCode::UNAUTHORIZED, "wrong admin token"));
    };
    match authenticator.verify(&given) {
        Ok(claims) if claims.right >= Right::Admin => Ok(Caller::Token(claims)),
        Ok(_) => Err((StatusCode::FORBIDDEN, "the token's right is not admin")),
        Err(AuthError::Expired) => Err((StatusCode::UNAUTHORIZED, "token expired")),
        Err(_) => Err((StatusCode::UNAUTHORIZED, "invalid token")),
    }
}

async fn kick(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let caller = match caller(&shared, &headers) {
        Ok(c) => c,
        Err((status, msg)) => return error(status, msg),
    };
    let Ok(req) = serde_json::from_slice::<KickRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"send {"room": NAME} or {"user": NAME} (or both)"#,
        );
    };
    if req.room.is_none() && req.user.is_none() {
        return error(StatusCode::BAD_REQUEST, "name a room or a user");
    }
    if let (Caller::Token(claims), Some(room)) = (&caller, &req.room) {
        if !claims.covers(room) {
            return error(StatusCode::FORBIDDEN, "the token does not cover this room");
        }
    }
    let closed = shared.access.kick(|room, user| {
        let in_scope = match &caller {
            Caller::Operator => true,
            Caller::Token(claims) => claims.covers(room),
        };
        in_scope
            && req.room.as_deref().is_none_or(|r| r == room)
            && req.user.as_deref().is_none_or(|u| Some(u) == user)
    });
    info!(
        room = req.room.as_deref(),
        user = req.user.as_deref(),
        closed,
        "admin kick"
    );
    Json(json!({ "closed": closed })).into_response()
}
