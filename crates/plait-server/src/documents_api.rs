//! The document REST API, for backends that read and write rooms over HTTP (same tokens as
//! the values API: `read` to read, `write` to write, see [`crate::access::guard_room_api`]):
//!
//! - `GET /api/rooms/{room}`: `{"room", "seq", "state_vector" (base64), "content"}`, the
//!   content one member per root type (text as a string, maps as objects, arrays, XML as its
//!   text). 404 for a room nothing was ever written to.
//! - `GET /api/rooms/{room}/update[?sv=BASE64URL]`: the document as one Yjs v1 update
//!   (`application/octet-stream`, what `Y.applyUpdate` loads), or only what that state vector
//!   lacks.
//! - `POST /api/rooms/{room}/update` with a Yjs v1 update as the body: validated like a
//!   client's message, applied, stored (strict durability: before the answer), broadcast;
//!   answered `{"changed", "seq", "state_vector"}`. Bytes that are no valid update: 400, nothing
//!   stored.
//!
//! Every request goes through the room's actor, so nothing unstored is ever read (503 while the
//! store fails and the room holds unstored edits).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use plait_protocol::message::encode_update;
use plait_protocol::{Message, SyncMessage};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

use crate::http::check_room_name;
use crate::room::{AdminOp, RoomCmd, RoomError};
use crate::Shared;

/// The document routes, to merge into the router behind the room API's token guard.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/api/rooms/{room}", get(read)).route(
        "/api/rooms/{room}/update",
        get(read_update).post(write_update),
    )
}

/// A failure at this edge, rendered as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct DocError(StatusCode, String);

impl IntoResponse for DocError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<RoomError> for DocError {
    fn from(e: RoomError) -> Self {
        let status = match e {
            RoomError::Invalid(_) => StatusCode::BAD_REQUEST,
            RoomError::StoreFailing | RoomError::Held(_) | RoomError::Unstored => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        DocError(status, e.to_string())
    }
}

fn bad_request(msg: impl Into<String>) -> DocError {
    DocError(StatusCode::BAD_REQUEST, msg.into())
}

/// Runs an operation in the room's actor, loading the room if needed.
async fn ask<T>(
    shared: &Arc<Shared>,
    room: &str,
    op: impl FnOnce(oneshot::Sender<Result<T, RoomError>>) -> AdminOp,
) -> Result<T, DocError> {
    if let Err(e) = check_room_name(room, shared.max_room_name_bytes) {
        let (status, reason) = e.status();
        return Err(DocError(status, reason.to_owned()));
    }
    let unavailable = || {
        DocError(
            StatusCode::SERVICE_UNAVAILABLE,
            "room unavailable: try again later".into(),
        )
    };
    let handle = shared
        .hub
        .get_or_spawn(room, shared)
        .await
        .map_err(|_| unavailable())?;
    let (reply, answer) = oneshot::channel();
    handle
        .tx
        .send(RoomCmd::Admin(op(reply)))
        .await
        .map_err(|_| unavailable())?;
    Ok(answer.await.map_err(|_| unavailable())??)
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
) -> Result<Response, DocError> {
    let view = ask(&shared, &room, AdminOp::Read).await?;
    if !view.written {
        return Err(DocError(
            StatusCode::NOT_FOUND,
            format!("room {room:?} was never written"),
        ));
    }
    Ok(Json(json!({
        "room": room,
        "seq": view.seq,
        "state_vector": STANDARD.encode(&view.state_vector),
        "content": view.content,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct UpdateQuery {
    /// A state vector (v1), base64url (padded or not; standard base64 is taken too).
    sv: Option<String>,
}

async fn read_update(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    Query(q): Query<UpdateQuery>,
) -> Result<Response, DocError> {
    let sv = match q.sv.as_deref() {
        None | Some("") => StateVector::default(),
        Some(text) => {
            let bytes = URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .or_else(|_| URL_SAFE.decode(text))
                .or_else(|_| STANDARD.decode(text))
                .map_err(|e| bad_request(format!("sv is not base64: {e}")))?;
            // Bounded like a client's sync step 1 before yrs reads it.
            plait_protocol::validate::state_vector(&bytes)
                .map_err(|e| bad_request(format!("sv is not a state vector: {e}")))?;
            StateVector::decode_v1(&bytes)
                .map_err(|e| bad_request(format!("sv is not a state vector: {e}")))?
        }
    };
    let update = ask(&shared, &room, |reply| AdminOp::Diff(sv, reply)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response())
}

async fn write_update(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, DocError> {
    if body.is_empty() {
        return Err(bad_request("send a Yjs v1 update as the body"));
    }
    // The same checks as a client's update: framed and decoded by the protocol crate, which
    // bounds lengths, counts and nesting before yrs sees a byte.
    let frame = encode_update(&body);
    let payload = match Message::decode(&frame, &shared.limits) {
        Ok(Message::Sync(SyncMessage::Update(payload))) => payload,
        Ok(_) => return Err(bad_request("not a Yjs v1 update")),
        Err(e) => return Err(bad_request(format!("not a valid Yjs v1 update: {e}"))),
    };
    let update = Update::decode_v1(&payload)
        .map_err(|e| bad_request(format!("not a valid Yjs v1 update: {e}")))?;
    let written = ask(&shared, &room, |reply| {
        AdminOp::Apply(update, payload, reply)
    })
    .await?;
    Ok(Json(json!({
        "changed": written.changed,
        "seq": written.seq,
        "state_vector": STANDARD.encode(&written.state_vector),
    }))
    .into_response())
}
