//! Durable, signed webhooks (`--webhook-url`, `--webhook-secret`).
//!
//! Events are not queued in memory: they are derived from the store. Every
//! `--webhook-debounce-ms` a deliverer compares each room's last seq with the seq its target was
//! last told about (a cursor kept in the store, `webhook_cursors`) and sends one
//! `room.changed` event for what lies between; a cursor whose room no longer exists gives one
//! `room.deleted`. The cursor moves only once the target answered 2xx (or the event failed
//! `--webhook-max-attempts` times), so a crash between a commit and its webhook loses nothing,
//! a receiver that is down gets every change once it is back, and a room's events arrive in
//! order. Delivery is at least once: a crash after the receiver answered and before the cursor
//! moved sends that event again (same `id`).
//!
//! Each request is a JSON body `{"id", "type", "room", "seq_from", "seq_to", "at"}` with the
//! headers `x-plait-event-id` and `x-plait-signature: sha256=HEX`, the HMAC-SHA256 of the raw
//! body with the secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tracing::{info, warn};

use crate::metrics as m;
use crate::Shared;

/// The first retry of a failed delivery waits this long; each next one twice as long, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One request may take this long before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the deliverer needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct WebhookConfig {
    pub(crate) targets: Vec<String>,
    pub(crate) secret: String,
    pub(crate) debounce: Duration,
    pub(crate) max_attempts: u32,
}

/// One event, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    kind: &'static str,
    room: String,
    seq_from: u64,
    seq_to: u64,
}

impl Event {
    /// The same event has the same id, so a receiver can drop a repeat.
    fn id(&self) -> String {
        format!(
            "{}:{}:{}-{}",
            self.kind, self.room, self.seq_from, self.seq_to
        )
    }

    fn body(&self) -> String {
        json!({
            "id": self.id(),
            "type": self.kind,
            "room": self.room,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "at": plait_store::now_ms(),
        })
        .to_string()
    }
}

/// `sha256=HEX` of the HMAC-SHA256 of `body` with `secret`.
pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Runs until shutdown: one scan of every target per debounce interval.
pub(crate) async fn deliver(shared: Arc<Shared>, config: WebhookConfig) {
    info!(targets = config.targets.len(), "webhooks on");
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.debounce) => {}
            () = shared.shutdown.cancelled() => return,
        }
        for target in &config.targets {
            if let Err(e) = scan(&shared, &config, target).await {
                warn!(target, error = %e, "webhook scan failed; retrying next interval");
            }
        }
    }
}

/// Sends every event `target` lacks, room by room, each room's in order.
async fn scan(
    shared: &Shared,
    config: &WebhookConfig,
    target: &str,
) -> Result<(), plait_store::Error> {
    let rooms = shared.store.list_rooms().await?;
    let mut cursors: HashMap<String, u64> = shared
        .store
        .webhook_cursors(target)
        .await?
        .into_iter()
        .collect();
    for room in rooms {
        let told = cursors.remove(&room.name).unwrap_or(0);
        if room.last_seq <= told {
            continue;
        }
        let event = Event {
            kind: "room.changed",
            room: room.name,
            seq_from: told + 1,
            seq_to: room.last_seq,
        };
        if !send(shared, config, target, &event).await {
            return Ok(());
        }
        shared
            .store
            .set_webhook_cursor(target, &event.room, Some(event.seq_to))
            .await?;
    }
    // Cursors left over name rooms that no longer exist.
    for (room, told) in cursors {
        let event = Event {
            kind: "room.deleted",
            room,
            seq_from: told,
            seq_to: told,
        };
        if !send(shared, config, target, &event).await {
            return Ok(());
        }
        shared
            .store
            .set_webhook_cursor(target, &event.room, None)
            .await?;
    }
    Ok(())
}

/// Delivers one event, retrying with backoff; returns false only when shutdown interrupted it
/// (the cursor then stays, and the event goes again after the restart). An event that failed
/// every attempt is counted as failed and passed over.
async fn send(shared: &Shared, config: &WebhookConfig, target: &str, event: &Event) -> bool {
    let body = event.body();
    let signature = signature(&config.secret, body.as_bytes());
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=config.max_attempts {
        let request = post(
            target.to_owned(),
            event.id(),
            signature.clone(),
            body.clone(),
        );
        match tokio::task::spawn_blocking(request).await {
            Ok(Ok(())) => {
                metrics::counter!(m::WEBHOOKS, "outcome" => "delivered").increment(1);
                return true;
            }
            Ok(Err(reason)) => {
                warn!(target, id = %event.id(), attempt, reason, "webhook delivery failed");
            }
            Err(e) => warn!(target, error = %e, "webhook task failed"),
        }
        if attempt == config.max_attempts {
            break;
        }
        metrics::counter!(m::WEBHOOKS, "outcome" => "retried").increment(1);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.shutdown.cancelled() => return false,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    warn!(target, id = %event.id(), "webhook failed every attempt; going on with the next");
    metrics::counter!(m::WEBHOOKS, "outcome" => "failed").increment(1);
    true
}

/// One POST, blocking (run on the blocking pool): Ok for a 2xx answer.
fn post(
    target: String,
    id: String,
    signature: String,
    body: String,
) -> impl FnOnce() -> Result<(), String> {
    move || {
        let agent = ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build();
        match agent
            .post(&target)
            .set("content-type", "application/json")
            .set("x-plait-event-id", &id)
            .set("x-plait-signature", &signature)
            .send_string(&body)
        {
            Ok(response) if (200..300).contains(&response.status()) => Ok(()),
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(ureq::Error::Status(code, _)) => Err(format!("answered {code}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature a receiver computes: a known HMAC-SHA256 vector (RFC 4231 test case 2).
    #[test]
    fn signs_with_hmac_sha256() {
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
