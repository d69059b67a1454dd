//! The HTTP surface: WebSocket rooms at `/{room}`, health, metrics, and the demo page.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

use crate::access::Access;
use crate::connection;
use crate::room_name::room_name;
use crate::Shared;

/// The web demo's built files, embedded at compile time (see web-demo/README.md).
static DEMO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../web-demo/dist");

/// Bytes read from a socket at a time. Allocated per connection up front, so it is most of an
/// idle connection's memory; 2 KiB still takes dozens of typical edits per read.
const READ_BUFFER_BYTES: usize = 2 * 1024;
/// Bytes of frames gathered before they are written (the writer also flushes every batch).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The router, without a socket: tests drive it with `oneshot`.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::access::guard_room_api(
            crate::values_api::routes().merge(crate::documents_api::routes()),
            &shared,
        ))
        .merge(crate::admin::routes())
        .merge(crate::kick::routes())
        // Exactly this path; `/hocuspocus/x` and `/%68ocuspocus` (the y-websocket room named
        // `hocuspocus`, see `hocuspocus_room_path`) still reach the fallback.
        .route(crate::hocuspocus::PATH, get(hocuspocus))
        .fallback(room_or_file)
        .with_state(shared)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    let ping = tokio::time::timeout(Duration::from_secs(2), shared.store.ping()).await;
    match ping {
        Ok(Ok(())) if shared.store_healthy.load(Ordering::Relaxed) => {
            // A bus that is down degrades latency between processes, not data: still ready
            // (taking every process out of the balancer would be worse), but said so.
            match &shared.bus {
                Some(bus) if !bus.is_up() => (
                    StatusCode::OK,
                    "ready; bus down: cross-process delivery polls the store\n",
                )
                    .into_response(),
                _ => (StatusCode::OK, "ready\n").into_response(),
            }
        }
        Ok(Ok(())) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: recent commits failed; updates are held and retried\n",
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: store unreachable: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: store did not answer within 2 s\n",
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

async fn room_or_file(
    State(shared): State<Arc<Shared>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    let Ok(mut ws) = ws else {
        return file(uri.path());
    };
    let room = match room_name(uri.path(), shared.max_room_name_bytes) {
        Ok(room) => room,
        Err(e) => return e.status().into_response(),
    };
    // Origin, token and connection caps, before anything is loaded (see `access`).
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (grant, permit) = match Access::admit(&shared, &headers, &uri, &room, peer) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    // A client that offers subprotocols must get one back, or browsers fail the handshake.
    // The first one that does not carry a token is echoed; a `plait-auth.` one only when it
    // is all the client offered.
    let chosen = ws
        .requested_protocols()
        .find(|p| !p.to_str().is_ok_and(crate::auth::is_token_subprotocol))
        .or_else(|| ws.requested_protocols().next())
        .and_then(owned);
    if let Some(chosen) = chosen {
        ws.set_selected_protocol(chosen);
    }
    let options = connection::ConnOptions::from_query(uri.query());
    let max = shared.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        // tungstenite's defaults allocate a 128 KiB read buffer per socket up front, most of
        // an idle connection's memory; larger messages are still read, in more chunks.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade({
            // Boxed: axum's upgrade task keeps the callback's captures for the connection's
            // whole life, after they are moved out, and the grant alone is over 100 bytes.
            let session = Box::new((room, options, grant, permit));
            move |socket| {
                let (room, options, grant, permit) = *session;
                let tracker = shared.tracker.clone();
                tracker.track_future(connection::serve(
                    socket, room, options, shared, grant, permit,
                ))
            }
        })
}

/// The Hocuspocus endpoint: origin and connection caps at the upgrade; tokens and rooms are
/// checked per document inside the socket (see `hocuspocus`).
async fn hocuspocus(
    State(shared): State<Arc<Shared>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    let Ok(mut ws) = ws else {
        return (
            StatusCode::BAD_REQUEST,
            "the Hocuspocus endpoint takes WebSocket upgrades only\n",
        )
            .into_response();
    };
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let permit = match Access::admit_socket(&shared, &headers, &uri, peer) {
        Ok(permit) => permit,
        Err(refusal) => return refusal.into_response(),
    };
    // Browsers fail a handshake that offered subprotocols and got none back.
    let chosen = ws.requested_protocols().next().and_then(owned);
    if let Some(chosen) = chosen {
        ws.set_selected_protocol(chosen);
    }
    let max = shared.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let tracker = shared.tracker.clone();
            tracker.track_future(crate::hocuspocus::serve(socket, shared, permit))
        })
}

fn file(path: &str) -> Response {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let Some(f) = DEMO.get_file(rel) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mime = match rel.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    };
    // Hashed asset names never change content; the page itself must be revalidated.
    let cache = if rel.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, cache)],
        f.contents(),
    )
        .into_response()
}

/// A copy of a request header's value in its own allocation. The socket keeps the echoed
/// subprotocol for its whole life, and a clone is a slice of the buffer hyper read the request
/// head into, which would stay allocated as long (for a value of a few dozen bytes).
fn owned(value: &HeaderValue) -> Option<HeaderValue> {
    HeaderValue::from_bytes(value.as_bytes()).ok()
}
