//! The HTTP API for backends to read and change a room's CRDT values, JSON in and out:
//!
//! - `GET /api/rooms/{room}/values`: every value, `{"name": {"kind": ..., "value": ...}}`.
//! - `POST /api/rooms/{room}/counters/{name}` with `{"add": n, "kind": "gcounter" | "pncounter"}`
//!   (`kind` optional: the existing counter's kind, else gcounter; a negative add to a
//!   G-Counter is a 400).
//! - `PUT /api/rooms/{room}/registers/{name}` with `{"value": any JSON}`.
//!
//! Changes answer `{"name", "kind", "value"}` with the new value. A name's kind is fixed by its
//! first use: another kind is a 409. Room names are one path segment, percent-decoded (`%2F`
//! for a slash). Every request goes through the room's actor (loading the room if needed), so
//! connected clients that opted in see changes as they are stored, and errors are
//! `{"error": "..."}` from one [`ApiError`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use plait_crdt::{ApplyError, Kind, ValueError};
use serde::Deserialize;
use serde_json::{json, Map, Value as JsonValue};
use tokio::sync::oneshot;
use tracing::warn;

use crate::hub::HubError;
use crate::room::{RoomCmd, ValuesError, ValuesReply, ValuesRequest};
use crate::room_name::{check_room_name, RoomNameError};
use crate::Shared;

/// How often a request is re-sent to a room that unloaded while it was queued.
const MAX_ATTEMPTS: usize = 3;

/// The values routes, to merge into the router.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/rooms/{room}/values", get(get_values))
        .route("/api/rooms/{room}/counters/{name}", post(add_to_counter))
        .route("/api/rooms/{room}/registers/{name}", put(set_register))
}

/// Everything that can go wrong at this edge, rendered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The body or the path is not what the route takes.
    #[error("{0}")]
    BadRequest(String),
    /// The room name breaks the rule of [`check_room_name`].
    #[error("{}", .0.status().1)]
    RoomName(RoomNameError),
    /// The name holds a value of another kind.
    #[error("{name:?} is a {existing}; it cannot be used as a {requested} (a value's kind is fixed by its first use)")]
    KindConflict {
        name: String,
        existing: Kind,
        requested: Kind,
    },
    /// The room refused the change for another reason (bounds, overflow, too many values).
    #[error("{0}")]
    Refused(ApplyError),
    /// The store or the room is unavailable; nothing changed.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Refused(_) => StatusCode::BAD_REQUEST,
            ApiError::RoomName(e) => e.status().0,
            ApiError::KindConflict { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn from_values(e: ValuesError, name: &str) -> Self {
        match e {
            ValuesError::Refused(ApplyError::Value(ValueError::KindMismatch {
                expected,
                found,
            })) => ApiError::KindConflict {
                name: name.to_owned(),
                existing: expected,
                requested: found,
            },
            // The room's own clock ran out of logical counter: transient.
            ValuesError::Refused(ApplyError::Clock(_)) => {
                ApiError::Unavailable("clock busy: try again later")
            }
            ValuesError::Refused(e) => ApiError::Refused(e),
            e @ ValuesError::NegativeGCounter { .. } => ApiError::BadRequest(e.to_string()),
            ValuesError::StoreUnavailable => {
                ApiError::Unavailable("storage unavailable: try again later")
            }
            ValuesError::RoomUnavailable => {
                ApiError::Unavailable("room unavailable: try again later")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if status.is_server_error() {
            warn!(error = %self, "values api request failed");
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterBody {
    add: i64,
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    value: JsonValue,
}

async fn get_values(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    check_room(&shared, &room)?;
    match ask(&shared, &room, || ValuesRequest::Get).await {
        Ok(ValuesReply::All(values)) => {
            let mut out = Map::new();
            for (name, kind, value) in values {
                out.insert(name, json!({ "kind": kind.as_str(), "value": value }));
            }
            Ok(Json(JsonValue::Object(out)))
        }
        Ok(ValuesReply::One(..)) => Err(ApiError::Unavailable("unexpected reply")),
        Err(e) => Err(ApiError::from_values(e, "")),
    }
}

async fn add_to_counter(
    State(shared): State<Arc<Shared>>,
    Path((room, name)): Path<(String, String)>,
    body: Result<Json<CounterBody>, JsonRejection>,
) -> Result<Json<JsonValue>, ApiError> {
    let Json(body) = body?;
    let kind = match body.kind.as_deref() {
        None => None,
        Some("gcounter") => Some(Kind::GCounter),
        Some("pncounter") => Some(Kind::PnCounter),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "kind must be \"gcounter\" or \"pncounter\", got {other:?}"
            )))
        }
    };
    let add = body.add;
    change(&shared, &room, &name, || ValuesRequest::AddToCounter {
        name: name.clone(),
        add,
        kind,
    })
    .await
}

async fn set_register(
    State(shared): State<Arc<Shared>>,
    Path((room, name)): Path<(String, String)>,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<Json<JsonValue>, ApiError> {
    let Json(body) = body?;
    change(&shared, &room, &name, || ValuesRequest::SetRegister {
        name: name.clone(),
        value: body.value.clone(),
    })
    .await
}

async fn change(
    shared: &Arc<Shared>,
    room: &str,
    name: &str,
    req: impl Fn() -> ValuesRequest,
) -> Result<Json<JsonValue>, ApiError> {
    check_room(shared, room)?;
    match ask(shared, room, req).await {
        Ok(ValuesReply::One(name, kind, value)) => Ok(Json(
            json!({ "name": name, "kind": kind.as_str(), "value": value }),
        )),
        Ok(ValuesReply::All(_)) => Err(ApiError::Unavailable("unexpected reply")),
        Err(e) => Err(ApiError::from_values(e, name)),
    }
}

/// Refuses a room name the WebSocket route would refuse too.
fn check_room(shared: &Shared, room: &str) -> Result<(), ApiError> {
    check_room_name(room, shared.max_room_name_bytes).map_err(ApiError::RoomName)
}

/// Sends a request to the room's actor, loading the room if needed, and waits for its answer.
/// A room that unloads while the request waits drops it; it is then sent to the new instance.
async fn ask(
    shared: &Arc<Shared>,
    room: &str,
    req: impl Fn() -> ValuesRequest,
) -> Result<ValuesReply, ValuesError> {
    for _ in 0..MAX_ATTEMPTS {
        let handle = shared
            .hub
            .get_or_spawn(room, shared)
            .await
            .map_err(|e| match e {
                HubError::Full | HubError::ShuttingDown => ValuesError::RoomUnavailable,
            })?;
        let (reply, answer) = oneshot::channel();
        let cmd = RoomCmd::Values {
            req: Box::new(req()),
            reply,
        };
        if handle.tx.send(cmd).await.is_ok() {
            if let Ok(result) = answer.await {
                return result;
            }
        }
        tokio::task::yield_now().await;
    }
    Err(ValuesError::RoomUnavailable)
}
