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
use tracing::{info, warn};

use crate::admin::{same_secret, ApiError};
use crate::auth::{self, AuthError, Claims, Right};
use crate::ops::{RoomOps, ServerOps};
use crate::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/admin/kick", post(kick))
        .route("/api/admin/revoke", post(revoke))
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

/// The body of a revocation: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    user: Option<String>,
    jti: Option<String>,
    /// Seconds since the Unix epoch: every token issued (`iat`) before it.
    issued_before: Option<u64>,
}

/// `POST /api/admin/revoke` (the `--admin-token` only: a revocation reaches every room):
/// [`RoomOps::revoke`], answered `{"closed": N}`.
async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match caller(&shared, &headers) {
        Ok(Caller::Operator) => {}
        Ok(Caller::Token(_)) => {
            return error(
                StatusCode::FORBIDDEN,
                "revoking needs the admin token (a revocation covers every room)",
            )
        }
        Err((status, msg)) => return error(status, msg),
    }
    let Ok(req) = serde_json::from_slice::<RevokeRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"send one of {"user": NAME}, {"jti": ID} or {"issued_before": UNIX_SECONDS}"#,
        );
    };
    let revocation = plait_store::Revocation {
        user: req.user,
        jti: req.jti,
        issued_before: req.issued_before,
        created_at_ms: plait_store::now_ms(),
    };
    match ServerOps::new(shared).revoke(revocation).await {
        Ok(revoked) => Json(revoked).into_response(),
        Err(e) => ApiError::Ops(e).into_response(),
    }
}

/// Reads the revocations from the store and closes the sessions they cover.
pub(crate) async fn load_revocations(shared: &Shared) {
    let read = tokio::time::timeout(
        crate::access::REVOCATIONS_POLL,
        shared.store.list_revocations(),
    );
    match read.await {
        Ok(Ok(all)) => {
            let closed = shared.access.set_revocations(all);
            if closed > 0 {
                info!(closed, "closed sessions whose tokens were revoked");
            }
        }
        Ok(Err(e)) => warn!(error = %e, "reading revocations failed; retrying"),
        Err(_) => warn!("reading revocations timed out; retrying"),
    }
}

/// Reads the revocations every [`crate::access::REVOCATIONS_POLL`] (other processes'
/// revocations), until shutdown.
pub(crate) async fn follow_revocations(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(crate::access::REVOCATIONS_POLL) => {}
            () = shared.shutdown.cancelled() => return,
        }
        load_revocations(&shared).await;
    }
}
