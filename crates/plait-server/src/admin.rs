//! The admin HTTP API under `/api/admin`, used by the `plait` CLI when a server is running so
//! that changes to live rooms reach their connected clients. Every request needs
//! `Authorization: Bearer <--admin-token>`; without a configured token the API is off.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plait_store::{SnapshotKind, Store};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::room::{AdminOp, Merged, RestoreTarget, RoomCmd, RoomError};
use crate::snapshot_file::{Format, NamedValues, SnapshotFile};
use crate::Shared;

/// Response header of an export: how many CRDT values the room (or restore point) holds,
/// whether or not the format carried them.
pub const VALUES_HEADER: &str = "x-plait-values";
/// Response header of an export at a time: the restore point reached, in ms since the epoch.
pub const POINT_HEADER: &str = "x-plait-restore-point-ms";
/// Response header of an export: something the operator should know (values unknown).
pub const NOTE_HEADER: &str = "x-plait-note";

/// The admin routes; merged into the main router.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/admin/rooms", get(list_rooms))
        .route("/api/admin/rooms/{room}", get(inspect).delete(delete_room))
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

impl From<RoomError> for AdminError {
    fn from(e: RoomError) -> Self {
        let status = match e {
            RoomError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RoomError::StoreFailing | RoomError::Held(_) | RoomError::Unstored => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        AdminError(status, e.to_string())
    }
}

/// Runs an operation in the room's actor, loading the room if needed; `op` builds it around
/// the channel its answer comes back on.
async fn ask<T>(
    shared: &Arc<Shared>,
    room: &str,
    op: impl FnOnce(oneshot::Sender<Result<T, RoomError>>) -> AdminOp,
) -> Result<T, AdminError> {
    let handle = shared
        .hub
        .get_or_spawn(room, shared)
        .await
        .map_err(|e| unavailable(format!("room unavailable: {e:?}")))?;
    let (reply, answer) = oneshot::channel();
    handle
        .tx
        .send(RoomCmd::Admin(op(reply)))
        .await
        .map_err(|_| unavailable("the room was unloading; try again"))?;
    Ok(answer
        .await
        .map_err(|_| unavailable("the room was unloading; try again"))??)
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
    Ok(Json(ask(&shared, &room, AdminOp::Inspect).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    /// `plait` (the default: document and values) or `yjs` (the document alone).
    format: Option<String>,
    /// Export the content as it was at this time (milliseconds since the Unix epoch).
    at: Option<i64>,
}

/// The room as a file: a plait snapshot file (document and values) by default, a bare Yjs v1
/// update with `?format=yjs`; as it was at a past time with `?at=MS`. Headers say how many
/// values there are ([`VALUES_HEADER`]), which restore point was reached ([`POINT_HEADER`])
/// and why values are missing ([`NOTE_HEADER`]).
async fn export(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    let format = match q.format.as_deref() {
        None => Format::Plait,
        Some(name) => Format::from_name(name).ok_or_else(|| {
            bad_request(format!(
                "unknown format {name:?}: use plait (document and values) or yjs (the document alone)"
            ))
        })?,
    };
    let (file, point, note) = match q.at {
        Some(at) => {
            let past = state_at(shared.store.as_ref(), &room, at)
                .await
                .map_err(|e| AdminError(StatusCode::NOT_FOUND, e))?;
            let (values, note) = match past.values {
                Ok(values) => (values, None),
                Err(why) => (Vec::new(), Some(why)),
            };
            let file = SnapshotFile {
                update: past.update,
                values,
            };
            (file, Some(past.point_ms), note)
        }
        None => (ask(&shared, &room, AdminOp::Export).await?, None, None),
    };
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        file.encode(format),
    )
        .into_response();
    let out = response.headers_mut();
    out.insert(VALUES_HEADER, HeaderValue::from(file.values.len()));
    if let Some(point) = point {
        out.insert(POINT_HEADER, HeaderValue::from(point));
    }
    if let Some(value) = note.and_then(|n| HeaderValue::from_str(&n).ok()) {
        out.insert(NOTE_HEADER, value);
    }
    Ok(response)
}

/// Reads a request body as a room file (a plait snapshot file or a bare Yjs v1 update).
fn read_file(body: &[u8]) -> Result<(SnapshotFile, Format), AdminError> {
    SnapshotFile::read(body).map_err(|e| {
        bad_request(format!(
            "the body is neither a plait snapshot file nor a Yjs v1 update: {e}"
        ))
    })
}

async fn import(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    let (file, _) = read_file(&body)?;
    let merged = ask(&shared, &room, |reply| AdminOp::Import(file, reply)).await?;
    Ok(Json(merged_json(&merged)).into_response())
}

/// The answer to an import or a restore: `changed` (anything), `document_changed`,
/// `values_changed` (names), `notes` (what was left as it was, and why).
fn merged_json(merged: &Merged) -> serde_json::Value {
    let Merged { document, values } = merged;
    json!({
        "changed": *document || !values.changed.is_empty(),
        "document_changed": document,
        "values_changed": values.changed,
        "notes": values.notes,
    })
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
            let past = state_at(shared.store.as_ref(), &room, at)
                .await
                .map_err(|e| AdminError(StatusCode::NOT_FOUND, e))?;
            let target = RestoreTarget {
                update: past.update,
                values: past.values,
            };
            (target, Some(past.point_ms))
        }
        None if body.is_empty() => {
            return Err(bad_request(
                "send the state to restore as the body, or ?at=MS",
            ))
        }
        None => {
            let (file, format) = read_file(&body)?;
            let values = match format {
                Format::Plait => Ok(file.values),
                Format::Yjs => Err("the file is a bare Yjs update and holds no CRDT values".into()),
            };
            let target = RestoreTarget {
                update: file.update,
                values,
            };
            (target, None)
        }
    };
    let merged = ask(&shared, &room, |reply| AdminOp::Restore(target, reply)).await?;
    let mut answer = merged_json(&merged);
    answer["restored_point_ms"] = json!(point);
    Ok(Json(answer).into_response())
}

/// Deletes the room: its connections are closed with 4404 (do not reconnect), everything
/// stored of it is removed (restore points too), and a later connection starts it empty.
async fn delete_room(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    let existed = ask(&shared, &room, AdminOp::Delete).await?;
    Ok(Json(json!({ "deleted": existed })).into_response())
}

async fn compact(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, AdminError> {
    authorize(&shared, &headers)?;
    ask(&shared, &room, AdminOp::Compact).await?;
    Ok(Json(json!({ "changed": false })).into_response())
}

/// A room's content at a past time, as [`state_at`] finds it.
#[derive(Debug)]
pub struct PastState {
    /// The document, as one Yjs v1 update.
    pub update: Vec<u8>,
    /// The CRDT values at the restore point (values keep no log, so they are as of the
    /// restore point even when the document is replayed further), or why they are unknown.
    pub values: Result<NamedValues, String>,
    /// The time of the restore point actually reached (`at_ms` when the log was replayed up
    /// to it), in milliseconds since the Unix epoch.
    pub point_ms: i64,
}

/// The room's content as it was at `at_ms`: the newest snapshot written at or before then,
/// plus the log entries after it up to then while the log still holds them without a gap;
/// the values kept with that snapshot.
///
/// # Errors
/// A message for the operator when no restore point is that old, or the store fails.
pub async fn state_at(store: &dyn Store, room: &str, at_ms: i64) -> Result<PastState, String> {
    let snapshots = store
        .list_snapshots(room)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let base = snapshots
        .iter()
        .filter(|s| s.created_at_ms <= at_ms)
        .max_by_key(|s| (s.created_at_ms, s.id));
    let (doc, after_seq, mut point, values) = match base {
        Some(info) => {
            let snap = store
                .load_snapshot(room, info.id)
                .await
                .map_err(|e| format!("store: {e}"))?
                .ok_or("the snapshot disappeared; try again")?;
            let doc = crate::docs::doc_from_update(&snap.data).map_err(|e| e.to_string())?;
            let values = match &snap.values {
                Some(bytes) => crate::snapshot_file::decode_values(bytes).map_err(|e| {
                    format!("the restore point's CRDT values do not decode ({e})")
                }),
                None => Err(
                    "the restore point holds no CRDT values (it was written before plait kept them)"
                        .to_owned(),
                ),
            };
            (doc, snap.up_to_seq, snap.created_at_ms, values)
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
            let values =
                Err("no restore point at or before that time holds CRDT values".to_owned());
            (yrs::Doc::new(), 0, i64::MIN, values)
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
    Ok(PastState {
        update: crate::docs::encode_state(&doc),
        values,
        point_ms: point,
    })
}
