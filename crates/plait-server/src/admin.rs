//! The admin HTTP API under `/api/admin`, used by the `plait` CLI when a server is running so
//! that changes to live rooms reach their connected clients. Every request needs
//! `Authorization: Bearer <--admin-token>`; without a configured token the API is off.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plait_store::{SnapshotKind, Store};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::room::{AdminOp, AdminReply, RoomCmd};
use crate::Shared;

/// The admin routes; merged into the main router.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/admin/rooms", get(list_rooms))
        .route("/api/admin/rooms/{room}", get(inspect))
        .route("/api/admin/rooms/{room}/export", get(export))
        .route("/api/admin/rooms/{room}/import", post(import))
        .route("/api/admin/rooms/{room}/history", get(history))
        .route("/api/admin/rooms/{room}/restore", post(restore))
        .route("/api/admin/rooms/{room}/compact", post(compact))
}

/// An admin API failure: a status and a message for the operator.
#[derive(Debug)]
pub(crate) struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, msg.into())
}

fn unavailable(msg: impl Into<String>) -> AdminError {
    AdminError(StatusCode::SERVICE_UNAVAILABLE, msg.into())
}

/// Compares without stopping at the first difference, so timing reveals nothing.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(expected) = shared.admin_token.as_deref() else {
        return Err(AdminError(
            StatusCode::FORBIDDEN,
            "the admin API is off: start the server with --admin-token (PLAIT_ADMIN_TOKEN)".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_secret(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "wrong admin token".into(),
        )),
        None => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "send the admin token as Authorization: Bearer TOKEN".into(),
        )),
    }
}

/// Runs `op` in the room's actor, loading the room if needed.
async fn ask(shared: &Arc<Shared>, room: &str, op: AdminOp) -> Result<AdminReply, AdminError> {
    let handle = shared
        .hub
        .get_or_spawn(room, shared)
        .map_err(|e| unavailable(format!("room unavailable: {e:?}")))?;
    let (reply, answer) = oneshot::channel();
    handle
        .tx
        .send(RoomCmd::Admin { op, reply })
        .await
        .map_err(|_| unavailable("the room was unloading; try again"))?;
    answer
        .await
        .map_err(|_| unavailable("the room was unloading; try again"))?
        .map_err(|e| AdminError(StatusCode::UNPROCESSABLE_ENTITY, e))
}

async fn list_rooms(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    let rooms = shared
        .store
        .list_rooms()
        .await
        .map_err(|e| unavailable(format!("store: {e}")))?;
    let mut out = Vec::with_capacity(rooms.len());
    for r in rooms {
        let connected = shared.hub.members(&r.name);
        out.push(json!({
            "name": r.name,
            "last_seq": r.last_seq,
            "updates_since_snapshot": r.n_updates,
            "stored_bytes": r.stored_bytes,
            "updated_at_ms": r.updated_at_ms,
            "connected": connected,
        }));
    }
    Ok(Json(out).into_response())
}

async fn inspect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    match ask(&shared, &room, AdminOp::Inspect).await? {
        AdminReply::Json(v) => Ok(Json(v).into_response()),
        other => Err(unavailable(format!("unexpected reply {other:?}"))),
    }
}

async fn export(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    match ask(&shared, &room, AdminOp::Export).await? {
        AdminReply::State(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        other => Err(unavailable(format!("unexpected reply {other:?}"))),
    }
}

async fn import(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    changed(ask(&shared, &room, AdminOp::Import(body)).await?)
}

fn changed(reply: AdminReply) -> Result<Response, AdminError> {
    match reply {
        AdminReply::Changed(c) => Ok(Json(json!({ "changed": c })).into_response()),
        other => Err(unavailable(format!("unexpected reply {other:?}"))),
    }
}

async fn history(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    let list = shared
        .store
        .list_snapshots(&room)
        .await
        .map_err(|e| unavailable(format!("store: {e}")))?;
    Ok(Json(
        list.iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "created_at_ms": s.created_at_ms,
                    "kind": s.kind.as_str(),
                    "up_to_seq": s.up_to_seq,
                    "bytes": s.bytes,
                })
            })
            .collect::<Vec<_>>(),
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
struct RestoreQuery {
    /// Milliseconds since the Unix epoch.
    at: Option<i64>,
}

async fn restore(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(q): Query<RestoreQuery>,
    body: Bytes,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    let (target, point) = match q.at {
        Some(at) => {
            let (state, point) = state_at(shared.store.as_ref(), &room, at)
                .await
                .map_err(|e| AdminError(StatusCode::NOT_FOUND, e))?;
            (Bytes::from(state), Some(point))
        }
        None if body.is_empty() => {
            return Err(bad_request(
                "send the state to restore as the body, or ?at=MS",
            ))
        }
        None => (body, None),
    };
    match ask(&shared, &room, AdminOp::Restore(target)).await? {
        AdminReply::Changed(c) => {
            Ok(Json(json!({ "changed": c, "restored_point_ms": point })).into_response())
        }
        other => Err(unavailable(format!("unexpected reply {other:?}"))),
    }
}

async fn compact(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    changed(ask(&shared, &room, AdminOp::Compact).await?)
}

/// The room's content as it was at `at_ms`: the newest snapshot written at or before then,
/// plus the log entries after it up to then while the log still holds them without a gap.
/// Returns the state and the time of the restore point actually reached.
///
/// # Errors
/// A message for the operator when no restore point is that old, or the store fails.
pub async fn state_at(store: &dyn Store, room: &str, at_ms: i64) -> Result<(Vec<u8>, i64), String> {
    let snapshots = store
        .list_snapshots(room)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let base = snapshots
        .iter()
        .filter(|s| s.created_at_ms <= at_ms)
        .max_by_key(|s| (s.created_at_ms, s.id));
    let (doc, after_seq, mut point) = match base {
        Some(info) => {
            let snap = store
                .load_snapshot(room, info.id)
                .await
                .map_err(|e| format!("store: {e}"))?
                .ok_or("the snapshot disappeared; try again")?;
            let doc = crate::docs::doc_from_update(&snap.data).map_err(|e| e.to_string())?;
            (doc, snap.up_to_seq, snap.created_at_ms)
        }
        None => {
            // Without an older snapshot the log must start at the room's first update.
            let oldest = snapshots.iter().map(|s| s.created_at_ms).min();
            let compacted = snapshots.iter().any(|s| s.kind == SnapshotKind::Compaction);
            if compacted {
                return Err(match oldest {
                    Some(t) => format!("no restore point at or before {at_ms}; the oldest is {t} (ms since the epoch)"),
                    None => format!("no restore point at or before {at_ms}"),
                });
            }
            (yrs::Doc::new(), 0, i64::MIN)
        }
    };
    let rows = store
        .load_updates_until(room, after_seq, at_ms)
        .await
        .map_err(|e| format!("store: {e}"))?;
    for (expected, row) in (after_seq + 1..).zip(rows) {
        if row.seq != expected {
            break;
        }
        crate::docs::apply(&doc, &row.data).map_err(|e| e.to_string())?;
        point = at_ms;
    }
    if point == i64::MIN {
        return Err(format!(
            "no restore point at or before {at_ms}: the room had no content then"
        ));
    }
    Ok((crate::docs::encode_state(&doc), point))
}
