//! The accept loop: HTTP/1.1 connections with a deadline for the request head and a cap on
//! the TCP connections open at once.
//!
//! `axum::serve` gives hyper no timer, so a client that opens a socket and sends half a
//! request line (or nothing) holds it forever; a few thousand of those exhaust the file
//! limit before any WebSocket cap is reached. Here a connection must deliver its request head
//! within `--handshake-timeout-ms`, and past the cap new sockets are closed at accept.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tracing::{debug, warn};

use crate::metrics as m;

/// How long accept errors (EMFILE and the like) pause the loop, so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting and asks
/// open HTTP connections to finish (upgraded WebSockets are the rooms' business).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    head_timeout: Duration,
    max_open: usize,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(max_open));
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accept failed; pausing briefly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!(m::REFUSED, "reason" => "tcp_connections").increment(1);
            debug!(%peer, "too many open TCP connections; closing a new one at accept");
            drop(tcp);
            continue;
        };
        // Without TCP_NODELAY small frames wait for ACKs (Nagle), adding tens of ms.
        let _ = tcp.set_nodelay(true);
        // Wraps the router whole: `Router::layer` would rebuild its route table for every
        // connection, 0.7 KiB each until the upgrade (1.5 MB at once in a burst of 2,000).
        let service = TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(app.clone()));
        let shutdown = shutdown.clone();
        tokio::spawn(serve_one(tcp, service, head_timeout, shutdown, permit));
    }
}

async fn serve_one<S>(
    tcp: tokio::net::TcpStream,
    service: S,
    head_timeout: Duration,
    shutdown: CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => log_end(result),
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            log_end(conn.await);
        }
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}
