//! Durable, signed webhooks (`--webhook-url`, `--webhook-secret`).
//!
//! Events are not queued in memory: they are derived from the store. Every
//! `--webhook-debounce-ms` a deliverer compares each room's last seq with the seq its target was
//! last told about (a cursor kept in the store, `webhook_cursors`) and sends one
//! `room.changed` event for what lies between; a cursor whose room no longer exists gives one
//! `room.deleted`; the seq of an admin restore gets a `room.restored` of its own (the restore
//! leaves a restore point of kind `restored` at that seq). The cursor moves only once the target answered 2xx (or the event failed
//! `--webhook-max-attempts` times), so a crash between a commit and its webhook loses nothing,
//! a receiver that is down gets every change once it is back, and a room's events arrive in
//! order. Delivery is at least once: a crash after the receiver answered and before the cursor
//! moved sends that event again (same `id`).
//!
//! With several processes on one store, one process at a time delivers to a target: it holds a
//! lease on it in the store (renewed before every request; another process takes over a
//! lease not renewed for [`LEASE_TTL`]; a process that stops cleanly hands it back).
//!
//! `https://` targets are verified against the system's certificates (`SSL_CERT_FILE` names
//! another bundle, for a private CA).
//!
//! Each request is a JSON body `{"id", "type", "room", "seq_from", "seq_to", "at"}` with the
//! headers `x-plait-event-id` and `x-plait-signature: sha256=HEX`, the HMAC-SHA256 of the raw
//! body with the secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use plait_store::SnapshotKind;
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
/// How long a process holds a target's delivery lease without renewing it: longer than one
/// request and than [`LEASE_RENEW`], so a working holder never loses it; what a dead holder's
/// events wait at most before another process (or the restarted one) goes on with them. A
/// process that stops cleanly hands its leases back at once.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// A holder waiting between attempts renews its lease this often.
const LEASE_RENEW: Duration = Duration::from_secs(5);

/// What the deliverer needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct WebhookConfig {
    /// Who this process is to the delivery leases ([`holder`]).
    pub(crate) holder: String,
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
pub fn signature(secret: &str, body: &[u8]) -> String {
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
            () = shared.shutdown.cancelled() => {
                for target in &config.targets {
                    release_lease(&shared, &config, target).await;
                }
                return;
            }
        }
        for target in &config.targets {
            if let Err(e) = scan(&shared, &config, target).await {
                warn!(target, error = %e, "webhook scan failed; retrying next interval");
            }
        }
    }
}

/// This process's name as a lease holder: its host and port. Two processes that run at once
/// never share both, and a process restarted in the same place (after a crash, too) takes its
/// own lease back at once instead of waiting for it to expire.
pub(crate) fn holder(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{port}")
}

/// Takes or renews this process's lease on delivering to `target`: with several processes on
/// one store, one delivers to a target at a time, so a receiver does not get every event once
/// per process, nor out of order.
async fn hold_lease(shared: &Shared, config: &WebhookConfig, target: &str) -> bool {
    claim(shared, config, target, LEASE_TTL).await
}

/// Hands the lease back (if this process holds it): it expires now.
async fn release_lease(shared: &Shared, config: &WebhookConfig, target: &str) {
    claim(shared, config, target, Duration::ZERO).await;
}

async fn claim(shared: &Shared, config: &WebhookConfig, target: &str, ttl: Duration) -> bool {
    let name = format!("webhooks {target}");
    let claim = shared
        .store
        .claim_lease(&name, &config.holder, ttl.as_millis() as i64);
    match claim.await {
        Ok(held) => held,
        Err(e) => {
            warn!(target, error = %e, "webhook lease: the store failed; retrying next interval");
            false
        }
    }
}

/// Sends every event `target` lacks, room by room, each room's in order (if this process
/// holds the target's lease).
async fn scan(
    shared: &Shared,
    config: &WebhookConfig,
    target: &str,
) -> Result<(), plait_store::Error> {
    if !hold_lease(shared, config, target).await {
        return Ok(());
    }
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
        for event in events(shared, &room.name, told, room.last_seq).await? {
            if !send(shared, config, target, &event).await {
                return Ok(());
            }
            shared
                .store
                .set_webhook_cursor(target, &event.room, Some(event.seq_to))
                .await?;
        }
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

/// The events for what `room` stored after `told` up to `last_seq`, in order: `room.changed`
/// for the edits, and `room.restored` at the seq of each admin restore (known by the
/// restore point it left, [`plait_store::SnapshotKind::Restored`]).
async fn events(
    shared: &Shared,
    room: &str,
    told: u64,
    last_seq: u64,
) -> Result<Vec<Event>, plait_store::Error> {
    let mut restores: Vec<u64> = shared
        .store
        .list_snapshots(room)
        .await?
        .into_iter()
        .filter(|s| s.kind == SnapshotKind::Restored && s.up_to_seq > told)
        .map(|s| s.up_to_seq.min(last_seq))
        .collect();
    restores.sort_unstable();
    restores.dedup();
    let event = |kind, seq_from, seq_to| Event {
        kind,
        room: room.to_owned(),
        seq_from,
        seq_to,
    };
    let mut out = Vec::new();
    let mut from = told + 1;
    for at in restores {
        if at > from {
            out.push(event("room.changed", from, at - 1));
        }
        out.push(event("room.restored", at, at));
        from = at + 1;
    }
    if from <= last_seq {
        out.push(event("room.changed", from, last_seq));
    }
    Ok(out)
}

/// Delivers one event, retrying with backoff; returns false when shutdown interrupted it or
/// the lease was lost (the cursor then stays, and the event goes again after the restart or
/// from the lease's new holder). An event that failed every attempt is counted as failed and
/// passed over.
async fn send(shared: &Shared, config: &WebhookConfig, target: &str, event: &Event) -> bool {
    let body = event.body();
    let signature = signature(&config.secret, body.as_bytes());
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=config.max_attempts {
        if !hold_lease(shared, config, target).await {
            return false;
        }
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
        let until = tokio::time::Instant::now() + backoff;
        while tokio::time::Instant::now() < until {
            let step = until
                .saturating_duration_since(tokio::time::Instant::now())
                .min(LEASE_RENEW);
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                () = shared.shutdown.cancelled() => return false,
            }
            if !hold_lease(shared, config, target).await {
                return false;
            }
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
        // An agent per request: a receiver's connection is not kept between events that are
        // seconds apart, and the system's certificates are read again (a renewed bundle counts).
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
