//! The admin HTTP API under `/api/admin`: [`crate::ops::RoomOps`] over HTTP, answered with the
//! same types (serde) that the CLI's client reads back. Every request needs
//! `Authorization: Bearer <--admin-token>`; without a configured token the API is off.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::ops::{OpsError, RestoreFrom, RoomOps, ServerOps};
use crate::snapshot_file::{Format, SnapshotFile};
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

/// A failed request as an answer: its status and `{"error": "..."}`.
pub(crate) enum ApiError {
    /// The operation failed.
    Ops(OpsError),
    /// The request was not let through to it (the API is off, a wrong token).
    Refused(StatusCode, &'static str),
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        ApiError::Ops(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Ops(e) => (e.status(), e.to_string()),
            ApiError::Refused(status, message) => (status, message.to_owned()),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::Ops(OpsError::Invalid(msg.into()))
}

/// Compares without stopping at the first difference, so timing reveals nothing.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The operations, for a request that carries the admin token.
fn authorize(shared: &Arc<Shared>, headers: &HeaderMap) -> Result<ServerOps, ApiError> {
    let Some(expected) = shared.admin_token.as_deref() else {
        return Err(ApiError::Refused(
            StatusCode::FORBIDDEN,
            "the admin API is off: start the server with --admin-token (PLAIT_ADMIN_TOKEN)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_secret(t.as_bytes(), expected.as_bytes()) => {
            Ok(ServerOps::new(Arc::clone(shared)))
        }
        Some(_) => Err(ApiError::Refused(
            StatusCode::UNAUTHORIZED,
            "wrong admin token",
        )),
        None => Err(ApiError::Refused(
            StatusCode::UNAUTHORIZED,
            "send the admin token as Authorization: Bearer TOKEN",
        )),
    }
}

async fn list_rooms(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    Ok(Json(ops.rooms().await?).into_response())
}

async fn inspect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    Ok(Json(ops.inspect(&room).await?).into_response())
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
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    let format = match q.format.as_deref() {
        None => Format::Plait,
        Some(name) => Format::from_name(name).ok_or_else(|| {
            bad_request(format!(
                "unknown format {name:?}: use plait (document and values) or yjs (the document alone)"
            ))
        })?,
    };
    let exported = ops.export(&room, q.at).await?;
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        exported.file.encode(format),
    )
        .into_response();
    let out = response.headers_mut();
    out.insert(VALUES_HEADER, HeaderValue::from(exported.file.values.len()));
    if let Some(point) = exported.point_ms {
        out.insert(POINT_HEADER, HeaderValue::from(point));
    }
    if let Some(value) = exported.note.and_then(|n| HeaderValue::from_str(&n).ok()) {
        out.insert(NOTE_HEADER, value);
    }
    Ok(response)
}

/// Reads a request body as a room file (a plait snapshot file or a bare Yjs v1 update).
fn read_file(body: &[u8]) -> Result<(SnapshotFile, Format), ApiError> {
    SnapshotFile::read(body).map_err(|e| {
        bad_request(format!(
            "the body is neither a plait snapshot file nor a Yjs v1 update: {e}"
        ))
    })
}

/// Answered with [`crate::ops::Changed`].
async fn import(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    let (file, _) = read_file(&body)?;
    Ok(Json(ops.import(&room, file).await?).into_response())
}

async fn history(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    Ok(Json(ops.history(&room).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct RestoreQuery {
    /// Milliseconds since the Unix epoch.
    at: Option<i64>,
}

/// A file as the body, or `?at=MS`; answered with [`crate::ops::Changed`].
async fn restore(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(q): Query<RestoreQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    let from = match q.at {
        Some(at) => RestoreFrom::At(at),
        None if body.is_empty() => {
            return Err(bad_request(
                "send the state to restore as the body, or ?at=MS",
            ))
        }
        None => {
            let (file, format) = read_file(&body)?;
            RestoreFrom::File(file, format)
        }
    };
    Ok(Json(ops.restore(&room, from).await?).into_response())
}

/// Deletes the room: its connections are closed with 4404 (do not reconnect), everything
/// stored of it is removed (restore points too), and a later connection starts it empty.
async fn delete_room(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    Ok(Json(json!({ "deleted": ops.delete(&room).await? })).into_response())
}

async fn compact(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    let ops = authorize(&shared, &headers)?;
    ops.compact(&room).await?;
    Ok(Json(json!({ "compacted": true })).into_response())
}
