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
//! - `PATCH /api/rooms/{room}` with a JSON array of edits, for servers without Yjs: `{"op":
//!   "set", "map", "key", "value"}`, `{"op": "remove", "map", "key"}`, `{"op": "insert",
//!   "text", "index", "value"}`, `{"op": "delete", "text", "index", "length"}` (indexes in
//!   UTF-16 code units, as Yjs counts), `{"op": "append", "array", "values"}`; all in one
//!   transaction and one commit, or none (400 with the reason); answered like POST.
//! - `GET /api/rooms/{room}/changes?since=SEQ` (or the `Last-Event-ID` header): Server-Sent
//!   Events, one per stored update after `SEQ`, in seq order, with `id` = its seq and `data` =
//!   `{"room", "seq_from", "seq_to", "update" (base64)}`; with `&json=1` also `"changed"`: the
//!   root types the update changed, as JSON (like `GET /api/rooms/{room}`). Read from the store, so it is
//!   ordered and gap-free across processes and restarts: a consumer that reconnects to any
//!   process with its last id misses nothing. When compaction removed rows it asks for, it gets
//!   one event with the whole document and `"reset": true` instead.
//!
//! Reads and writes go through the room's actor, so nothing unstored is ever read (503 while the
//! store fails and the room holds unstored edits).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use plait_protocol::message::encode_update;
use plait_protocol::{Message, SyncMessage};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use tracing::warn;
use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

use crate::admin::ApiError;
use crate::docs::TextAs;
use crate::ops::{OpsError, ServerOps};
use crate::room::Edit;
use crate::room_name::check_room_name;
use crate::Shared;

/// The document routes, to merge into the router behind the room API's token guard.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/rooms/{room}", get(read).patch(patch))
        .route(
            "/api/rooms/{room}/update",
            get(read_update).post(write_update),
        )
        .route("/api/rooms/{room}/changes", get(changes))
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::Ops(OpsError::Invalid(msg.into()))
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    /// `delta` renders text roots as Yjs deltas (formatting kept) instead of strings.
    text: Option<String>,
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    let text_as = match q.text.as_deref() {
        None | Some("string") => TextAs::String,
        Some("delta") => TextAs::Delta,
        Some(other) => {
            return Err(bad_request(format!(
                "text must be \"string\" or \"delta\", got {other:?}"
            )))
        }
    };
    let view = ServerOps::new(shared).read(&room, text_as).await?;
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
) -> Result<Response, ApiError> {
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
    let update = ServerOps::new(shared).diff(&room, sv).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response())
}

async fn write_update(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    let written = ServerOps::new(shared).apply(&room, update, payload).await?;
    Ok(Json(json!({
        "changed": written.changed,
        "seq": written.seq,
        "state_vector": STANDARD.encode(&written.state_vector),
    }))
    .into_response())
}

/// Edits one PATCH may carry.
const MAX_EDITS: usize = 1_000;

async fn patch(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let edits: Vec<Edit> = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "send a JSON array of edits ({{\"op\": \"set\" | \"remove\" | \"insert\" | \"delete\" | \"append\", ...}}): {e}"
        ))
    })?;
    if edits.is_empty() || edits.len() > MAX_EDITS {
        return Err(bad_request(format!("send 1 to {MAX_EDITS} edits")));
    }
    let written = ServerOps::new(shared).patch(&room, edits).await?;
    Ok(Json(json!({
        "changed": written.changed,
        "seq": written.seq,
        "state_vector": STANDARD.encode(&written.state_vector),
    }))
    .into_response())
}

/// How often a change feed asks the store for updates after its last seq.
const FEED_POLL: Duration = Duration::from_millis(250);
/// Empty polls between two checks that compaction did not remove rows the feed still needs.
const FEED_COMPACTION_CHECK: u32 = 8;

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    since: Option<u64>,
    /// `1`: each event also carries the root types it changed, as JSON.
    json: Option<String>,
}

/// The document a `&json=1` feed keeps, to say what each event changed.
struct Tracked {
    doc: yrs::Doc,
    /// The JSON of every root as of the last event sent.
    roots: serde_json::Map<String, serde_json::Value>,
}

impl Tracked {
    fn new(doc: yrs::Doc) -> Self {
        let roots = Self::json(&doc);
        Tracked { doc, roots }
    }

    fn json(doc: &yrs::Doc) -> serde_json::Map<String, serde_json::Value> {
        match crate::docs::to_json(doc) {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// Applies an update and answers the roots whose JSON it changed, with their new JSON.
    fn apply(&mut self, update: &[u8]) -> serde_json::Value {
        if let Err(e) = crate::docs::apply(&self.doc, update) {
            warn!(error = %e, "change feed: a stored update did not apply");
        }
        let now = Self::json(&self.doc);
        let changed: serde_json::Map<_, _> = now
            .iter()
            .filter(|(name, value)| self.roots.get(*name) != Some(*value))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        self.roots = now;
        serde_json::Value::Object(changed)
    }
}

/// Where a change feed stands.
struct Feed {
    shared: Arc<Shared>,
    room: String,
    /// The seq of the last update sent.
    since: u64,
    /// Events read from the store and not yet sent, oldest first.
    ready: std::collections::VecDeque<Event>,
    empty_polls: u32,
    /// Whether the stored room was checked for compacted rows since `since` was given.
    checked: bool,
    /// With `&json=1`: the document as of `since` (built on the first poll).
    json: Option<Option<Tracked>>,
}

impl Feed {
    /// The next event, waiting for the store to have one.
    async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return event;
            }
            if let Err(e) = self.poll().await {
                warn!(room = %self.room, error = %e, "change feed: store read failed; retrying");
            }
            if self.ready.is_empty() {
                tokio::time::sleep(FEED_POLL).await;
            }
        }
    }

    fn event(&self, seq_to: u64, data: serde_json::Value) -> Event {
        Event::default()
            .id(seq_to.to_string())
            .data(data.to_string())
    }

    /// The stored document as of `since` (its snapshot, if not newer, and the log up to it),
    /// which the events after it change.
    async fn document_at_since(&self) -> Result<Tracked, plait_store::Error> {
        let stored = self.shared.store.load_room(&self.room).await?;
        let doc = yrs::Doc::new();
        let base = stored
            .snapshot
            .as_ref()
            .filter(|s| s.up_to_seq <= self.since);
        let logged = stored.updates.iter().filter(|u| u.seq <= self.since);
        for data in base
            .map(|s| &s.data)
            .into_iter()
            .chain(logged.map(|u| &u.data))
        {
            if let Err(e) = crate::docs::apply(&doc, data) {
                warn!(room = %self.room, error = %e, "change feed: a stored update did not apply");
            }
        }
        Ok(Tracked::new(doc))
    }

    async fn poll(&mut self) -> Result<(), plait_store::Error> {
        let rows = self
            .shared
            .store
            .load_updates_until(&self.room, self.since, i64::MAX)
            .await?;
        let gap = rows.first().is_some_and(|r| r.seq > self.since + 1);
        if rows.is_empty() && self.checked {
            self.empty_polls += 1;
            if self.empty_polls < FEED_COMPACTION_CHECK {
                return Ok(());
            }
        }
        self.empty_polls = 0;
        if gap || rows.is_empty() {
            // Rows after `since` were merged into a snapshot, or (no rows at all) may have
            // been: the stored room says which.
            self.checked = true;
            let stored = self.shared.store.load_room(&self.room).await?;
            let compacted = stored
                .snapshot
                .as_ref()
                .is_some_and(|s| s.up_to_seq > self.since);
            if compacted {
                let (doc, _) = crate::docs::doc_from_stored(&stored);
                let update = crate::docs::encode_state(&doc);
                let mut data = json!({
                    "room": self.room,
                    "seq_from": self.since + 1,
                    "seq_to": stored.last_seq,
                    "update": STANDARD.encode(update),
                    "reset": true,
                });
                if let Some(tracked) = &mut self.json {
                    let fresh = Tracked::new(doc);
                    data["changed"] = serde_json::Value::Object(fresh.roots.clone());
                    *tracked = Some(fresh);
                }
                let event = self.event(stored.last_seq, data);
                self.ready.push_back(event);
                self.since = stored.last_seq;
                return Ok(());
            }
            if rows.is_empty() {
                return Ok(());
            }
        }
        self.checked = true;
        if matches!(self.json, Some(None)) {
            self.json = Some(Some(self.document_at_since().await?));
        }
        for row in rows {
            let mut data = json!({
                "room": self.room,
                "seq_from": row.seq,
                "seq_to": row.seq,
                "update": STANDARD.encode(&row.data),
            });
            if let Some(Some(tracked)) = &mut self.json {
                data["changed"] = tracked.apply(&row.data);
            }
            let event = self.event(row.seq, data);
            self.ready.push_back(event);
            self.since = row.seq;
        }
        Ok(())
    }
}

async fn changes(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    Query(q): Query<ChangesQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Err(e) = check_room_name(&room, shared.max_room_name_bytes) {
        return Err(bad_request(e.status().1));
    }
    // A reconnecting EventSource sends the id of the last event it got.
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| bad_request("Last-Event-ID must be a seq"))
        })
        .transpose()?;
    let feed = Feed {
        shared,
        room,
        since: last_id.or(q.since).unwrap_or(0),
        ready: std::collections::VecDeque::new(),
        empty_polls: 0,
        checked: false,
        json: match q.json.as_deref() {
            None | Some("0") => None,
            Some("1") => Some(None),
            Some(other) => return Err(bad_request(format!("json must be 1 or 0, got {other:?}"))),
        },
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await;
        Some((Ok::<_, std::convert::Infallible>(event), feed))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
