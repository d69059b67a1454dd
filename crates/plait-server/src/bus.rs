//! The cluster bus: several plait processes that share one store exchange what their rooms
//! commit (and awareness, CRDT value states and Hocuspocus stateless messages) over Redis
//! pub/sub.
//!
//! The store stays the source of truth: an update is published only after its commit, with the
//! room's seq range, and a room that sees a gap in seqs (or a bus that is down) catches up from
//! the store. Redis is the fast path only; losing it costs latency between processes, not data.
//!
//! Two connections: one multiplexed connection for `PUBLISH` (fed by a bounded queue, so a
//! room never waits on Redis) and one pub/sub connection with a channel per loaded room
//! (`<prefix>:room:<name>`). Both reconnect with backoff; on reconnect every loaded room is
//! subscribed again and [`Bus::epoch`] moves, which tells rooms to catch up once.
//!
//! Messages from the bus are input like any client's: [`decode`] bounds every count and
//! length, validates updates with [`plait_protocol::validate::update_v1`] and awareness like a
//! client's, and drops (and counts) whatever fails. A process ignores its own messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use plait_protocol::lib0::{write_buf, write_str, write_var, Reader};
use plait_protocol::{AwarenessEntry, AwarenessUpdate};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use yrs::updates::decoder::Decode;

use crate::metrics as m;

const VERSION: u8 = 1;
const KIND_UPDATE: u8 = 1;
const KIND_AWARENESS: u8 = 2;
const KIND_VALUES: u8 = 3;
const KIND_AWARENESS_QUERY: u8 = 4;
const KIND_STATELESS: u8 = 5;

/// Most updates in one bus message (a room commits at most one batch per message).
const MAX_UPDATES: u64 = 4096;
/// Most awareness entries in one bus message.
const MAX_AWARENESS_ENTRIES: usize = 4096;
/// Most CRDT values in one bus message.
const MAX_VALUES: u64 = 1024;
/// Bus messages the publisher may have queued; past it new ones are dropped (and counted):
/// receivers catch up from the store on the next gap.
const PUBLISH_QUEUE: usize = 8192;
/// Decoded messages queued for one room; past it the room is told to catch up from the store.
const ROOM_QUEUE: usize = 1024;
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const PING_INTERVAL: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One message, as it travels (after decoding and validation on the way in).
#[derive(Debug)]
pub(crate) enum BusEvent {
    /// Committed updates with seqs `first_seq..=last_seq` (one per update), decoded and as sent.
    Updates {
        first_seq: u64,
        last_seq: u64,
        updates: Vec<(yrs::Update, Bytes)>,
    },
    /// Awareness entries published by clients of the origin process.
    Awareness {
        origin: u64,
        entries: Vec<AwarenessEntry>,
    },
    /// CRDT value states (full states, merged idempotently).
    Values(Vec<plait_crdt::Update>),
    /// A process loaded the room and asks for the awareness states of everyone else's clients.
    AwarenessQuery,
    /// A Hocuspocus stateless message from a document of the room on the origin process, for
    /// the room's Hocuspocus documents here (fire and forget, like awareness).
    Stateless { origin: u64, payload: String },
}

/// What a room publishes.
#[derive(Debug)]
pub(crate) enum Outgoing<'a> {
    Updates {
        first_seq: u64,
        last_seq: u64,
        updates: &'a [Bytes],
    },
    Awareness(&'a [AwarenessEntry]),
    Values(Vec<(String, plait_crdt::Value)>),
    AwarenessQuery,
    /// A Hocuspocus stateless message's payload.
    Stateless(&'a str),
}

impl Outgoing<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Outgoing::Updates { .. } => "update",
            Outgoing::Awareness(_) => "awareness",
            Outgoing::Values(_) => "values",
            Outgoing::AwarenessQuery => "awareness_query",
            Outgoing::Stateless(_) => "stateless",
        }
    }
}

/// Encodes a message: `version u8 ‖ origin u64 LE ‖ varstring room ‖ kind u8 ‖ body`.
pub(crate) fn encode(origin: u64, room: &str, msg: &Outgoing<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.extend_from_slice(&origin.to_le_bytes());
    write_str(&mut out, room);
    match msg {
        Outgoing::Updates {
            first_seq,
            last_seq,
            updates,
        } => {
            out.push(KIND_UPDATE);
            write_var(&mut out, *first_seq);
            write_var(&mut out, *last_seq);
            write_var(&mut out, updates.len() as u64);
            for u in *updates {
                write_buf(&mut out, u);
            }
        }
        Outgoing::Awareness(entries) => {
            out.push(KIND_AWARENESS);
            write_buf(
                &mut out,
                &plait_protocol::awareness::encode_entries(entries.iter()),
            );
        }
        Outgoing::Values(values) => {
            out.push(KIND_VALUES);
            write_var(&mut out, values.len() as u64);
            for (name, value) in values {
                write_str(&mut out, name);
                write_buf(&mut out, &value.encode());
            }
        }
        Outgoing::AwarenessQuery => out.push(KIND_AWARENESS_QUERY),
        Outgoing::Stateless(payload) => {
            out.push(KIND_STATELESS);
            write_str(&mut out, payload);
        }
    }
    out
}

/// Why a bus message was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Invalid {
    #[error("bus message: {0}")]
    Protocol(#[from] plait_protocol::Error),
    #[error("bus message: {0}")]
    Other(&'static str),
}

/// A decoded message: origin, room and event.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) origin: u64,
    pub(crate) room: String,
    pub(crate) event: BusEvent,
}

/// Decodes and validates a message; every count and length is bounded by the bytes present
/// and by the limits above, and every update passes the same pre-scan as a client's.
pub(crate) fn decode(
    bytes: &[u8],
    limits: &plait_protocol::Limits,
    max_bytes: usize,
) -> Result<Decoded, Invalid> {
    if bytes.len() > max_bytes {
        return Err(Invalid::Other("too large"));
    }
    let mut r = Reader::new(bytes);
    if r.read_u8()? != VERSION {
        return Err(Invalid::Other("unknown version"));
    }
    let origin = u64::from_le_bytes(
        r.read_exact(8)?
            .try_into()
            .map_err(|_| Invalid::Other("origin"))?,
    );
    let room = r.read_str("bus room")?.to_owned();
    let event = match r.read_u8()? {
        KIND_UPDATE => {
            let first_seq = r.read_var()?;
            let last_seq = r.read_var()?;
            let n = r.read_count("bus update", 1)?;
            if n == 0 || n > MAX_UPDATES {
                return Err(Invalid::Other("update count out of bounds"));
            }
            if first_seq == 0 || last_seq.checked_sub(first_seq) != Some(n - 1) {
                return Err(Invalid::Other("seq range does not match the update count"));
            }
            let mut updates = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let raw = r.read_buf()?;
                plait_protocol::validate::update_v1(raw, limits.max_depth)?;
                let update = yrs::Update::decode_v1(raw)
                    .map_err(|_| Invalid::Other("update does not decode"))?;
                updates.push((update, Bytes::copy_from_slice(raw)));
            }
            BusEvent::Updates {
                first_seq,
                last_seq,
                updates,
            }
        }
        KIND_AWARENESS => {
            let payload = r.read_buf()?;
            let update = AwarenessUpdate::decode(
                payload,
                MAX_AWARENESS_ENTRIES,
                limits.max_awareness_state_bytes,
            )?;
            BusEvent::Awareness {
                origin,
                entries: update.entries,
            }
        }
        KIND_VALUES => {
            let n = r.read_count("bus value", 2)?;
            if n > MAX_VALUES {
                return Err(Invalid::Other("too many values"));
            }
            let mut values = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let name = r.read_str("bus value name")?.to_owned();
                let value = plait_crdt::Value::decode(r.read_buf()?)
                    .map_err(|_| Invalid::Other("value does not decode"))?;
                values.push(plait_crdt::Update { name, value });
            }
            BusEvent::Values(values)
        }
        KIND_AWARENESS_QUERY => BusEvent::AwarenessQuery,
        // Bounded by the message (`max_bytes`), as a provider's is by its frame.
        KIND_STATELESS => BusEvent::Stateless {
            origin,
            payload: r.read_str("bus stateless")?.to_owned(),
        },
        _ => return Err(Invalid::Other("unknown kind")),
    };
    if r.remaining() != 0 {
        return Err(Invalid::Other("trailing bytes"));
    }
    Ok(Decoded {
        origin,
        room,
        event,
    })
}

/// Where the subscriber delivers one room's messages.
#[derive(Debug)]
struct Route {
    room_id: u64,
    tx: mpsc::Sender<BusEvent>,
    /// Set when a message for the room was dropped (its queue was full): catch up.
    missed: Arc<AtomicBool>,
}

enum Ctrl {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
}

/// The bus of one process.
pub(crate) struct Bus {
    client: redis::Client,
    prefix: String,
    instance_id: u64,
    limits: plait_protocol::Limits,
    max_bytes: usize,
    /// `--max-message-bytes`: a stateless message from the bus is at most what a provider may
    /// send (the bus message bound, `max_bytes`, is eight times that or more).
    max_stateless_bytes: usize,
    routes: Mutex<HashMap<String, Route>>,
    ctrl: mpsc::UnboundedSender<Ctrl>,
    publish: mpsc::Sender<(String, Bytes, &'static str)>,
    sub_up: AtomicBool,
    pub_up: AtomicBool,
    epoch: AtomicU64,
    /// Serialises gauge updates, so the last one reads both flags after both were stored.
    gauge: Mutex<()>,
    /// How often a room catches up from the store while the bus is down.
    pub(crate) fallback_poll: Duration,
    /// Cancelled by [`Bus::stop`] once the rooms have shut down (they publish their last
    /// messages while shutting down, after the server's shutdown token fired): the publisher
    /// then sends what is queued and ends.
    stop_publisher: CancellationToken,
    /// Told by the publisher when it has ended.
    publisher_done: tokio::sync::Notify,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Starts the publisher and subscriber tasks; they connect (and reconnect) on their own,
    /// so a Redis that is down at startup only delays live delivery.
    ///
    /// # Errors
    /// An invalid Redis URL.
    pub(crate) fn start(
        url: &str,
        prefix: &str,
        instance_id: u64,
        limits: plait_protocol::Limits,
        max_message_bytes: usize,
        fallback_poll: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Bus>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let bus = Arc::new(Bus {
            client,
            prefix: prefix.to_owned(),
            instance_id,
            limits,
            // A batch of up to 512 updates of up to --max-message-bytes each would be more
            // than Redis takes; past this bound a batch is not published (receivers catch up).
            max_bytes: max_message_bytes.saturating_mul(8).max(16 << 20),
            max_stateless_bytes: max_message_bytes,
            routes: Mutex::new(HashMap::new()),
            ctrl,
            publish,
            sub_up: AtomicBool::new(false),
            pub_up: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            gauge: Mutex::new(()),
            fallback_poll,
            stop_publisher: CancellationToken::new(),
            publisher_done: tokio::sync::Notify::new(),
        });
        metrics::gauge!(m::BUS_UP).set(0.0);
        let stop = bus.stop_publisher.clone();
        let publisher_bus = bus.clone();
        tokio::spawn(async move {
            publisher(publisher_bus.clone(), publish_rx, stop).await;
            publisher_bus.publisher_done.notify_one();
        });
        tokio::spawn(subscriber(bus.clone(), ctrl_rx, shutdown));
        Ok(bus)
    }

    /// Sends what is queued for publishing and stops the publisher (after the rooms shut
    /// down), waiting at most [`REDIS_TIMEOUT`] for it.
    pub(crate) async fn stop(&self) {
        self.stop_publisher.cancel();
        let _ = tokio::time::timeout(REDIS_TIMEOUT, self.publisher_done.notified()).await;
    }

    /// Whether both connections are up.
    pub(crate) fn is_up(&self) -> bool {
        self.sub_up.load(Ordering::Relaxed) && self.pub_up.load(Ordering::Relaxed)
    }

    /// Moves each time the subscription connection is (re)established and every room is
    /// subscribed again.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn channel(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    fn set_gauge(&self) {
        let _serial = self
            .gauge
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        metrics::gauge!(m::BUS_UP).set(if self.is_up() { 1.0 } else { 0.0 });
    }

    /// Registers a room and subscribes to its channel, waiting for Redis to confirm (or for
    /// the bus to say it is down). Call before loading the room from the store, so nothing
    /// committed in between is missed: messages queue until the room reads them.
    pub(crate) async fn subscribe(self: &Arc<Self>, room: &str, room_id: u64) -> BusSub {
        let channel = self.channel(room);
        let (tx, rx) = mpsc::channel(ROOM_QUEUE);
        let missed = Arc::new(AtomicBool::new(false));
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                channel.clone(),
                Route {
                    room_id,
                    tx,
                    missed: missed.clone(),
                },
            );
        let (ack, acked) = oneshot::channel();
        let _ = self.ctrl.send(Ctrl::Subscribe(channel.clone(), ack));
        let subscribed = matches!(
            tokio::time::timeout(REDIS_TIMEOUT, acked).await,
            Ok(Ok(true))
        );
        if !subscribed {
            // Not live: the room polls the store while the bus is down, and catches up once
            // when the subscriber has resubscribed everything (the epoch moves).
            missed.store(true, Ordering::Relaxed);
        }
        BusSub {
            bus: self.clone(),
            channel,
            room_id,
            rx: Some(rx),
            missed,
        }
    }

    /// Queues a message for the room's channel; never waits. A full queue or a bus that is
    /// down drops it (counted); other processes catch up from the store.
    pub(crate) fn publish(&self, room: &str, msg: &Outgoing<'_>) {
        let kind = msg.kind();
        let bytes = encode(self.instance_id, room, msg);
        if bytes.len() > self.max_bytes {
            metrics::counter!(m::BUS_DROPPED, "reason" => "too_large").increment(1);
            return;
        }
        if !self.pub_up.load(Ordering::Relaxed) {
            metrics::counter!(m::BUS_DROPPED, "reason" => "bus_down").increment(1);
            return;
        }
        if self
            .publish
            .try_send((self.channel(room), Bytes::from(bytes), kind))
            .is_err()
        {
            metrics::counter!(m::BUS_DROPPED, "reason" => "queue_full").increment(1);
        }
    }

    /// Routes one raw message from Redis to its room.
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let decoded = match decode(payload, &self.limits, self.max_bytes) {
            Ok(d) => d,
            Err(e) => {
                debug!(channel, error = %e, "dropping invalid bus message");
                metrics::counter!(m::BUS_INVALID).increment(1);
                return;
            }
        };
        if decoded.origin == self.instance_id {
            return;
        }
        let too_long = match &decoded.event {
            BusEvent::Stateless { payload, .. } => payload.len() > self.max_stateless_bytes,
            _ => false,
        };
        if self.channel(&decoded.room) != channel || too_long {
            metrics::counter!(m::BUS_INVALID).increment(1);
            return;
        }
        let kind = match &decoded.event {
            BusEvent::Updates { .. } => "update",
            BusEvent::Awareness { .. } => "awareness",
            BusEvent::Values(_) => "values",
            BusEvent::AwarenessQuery => "awareness_query",
            BusEvent::Stateless { .. } => "stateless",
        };
        metrics::counter!(m::BUS_MESSAGES, "dir" => "in", "kind" => kind).increment(1);
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(route) = routes.get(channel) else {
            return;
        };
        if route.tx.try_send(decoded.event).is_err() {
            route.missed.store(true, Ordering::Relaxed);
            metrics::counter!(m::BUS_DROPPED, "reason" => "room_queue_full").increment(1);
        }
    }

    fn channels(&self) -> Vec<String> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn is_routed(&self, channel: &str) -> bool {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(channel)
    }
}

/// A room's registration on the bus; unsubscribes when dropped (when the room unloads).
#[derive(Debug)]
pub(crate) struct BusSub {
    pub(crate) bus: Arc<Bus>,
    channel: String,
    room_id: u64,
    rx: Option<mpsc::Receiver<BusEvent>>,
    missed: Arc<AtomicBool>,
}

impl BusSub {
    /// The receiver of the room's messages (once).
    pub(crate) fn take_rx(&mut self) -> Option<mpsc::Receiver<BusEvent>> {
        self.rx.take()
    }

    /// Whether a message was dropped since the last call (or the subscription is not live).
    pub(crate) fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::Relaxed)
    }
}

impl Drop for BusSub {
    fn drop(&mut self) {
        let mut routes = self
            .bus
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if routes
            .get(&self.channel)
            .is_some_and(|r| r.room_id == self.room_id)
        {
            routes.remove(&self.channel);
            drop(routes);
            let _ = self
                .bus
                .ctrl
                .send(Ctrl::Unsubscribe(std::mem::take(&mut self.channel)));
        }
    }
}

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown.cancelled() => false,
    }
}

/// Publishes queued messages in pipelines, in order; reconnects with backoff. While it is
/// down, queued messages are dropped (receivers are polling the store then). When `stop` is
/// cancelled it sends what is queued and ends.
async fn publisher(
    bus: Arc<Bus>,
    mut rx: mpsc::Receiver<(String, Bytes, &'static str)>,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut batch = Vec::with_capacity(256);
    loop {
        let connected =
            tokio::time::timeout(REDIS_TIMEOUT, bus.client.get_multiplexed_async_connection())
                .await;
        let mut conn = match connected {
            Ok(Ok(conn)) => conn,
            other => {
                if let Ok(Err(e)) = other {
                    debug!(error = %e, "bus publisher: cannot connect to Redis");
                }
                while let Ok(_dropped) = rx.try_recv() {
                    metrics::counter!(m::BUS_DROPPED, "reason" => "bus_down").increment(1);
                }
                if !sleep_or_cancel(backoff, &stop).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        bus.pub_up.store(true, Ordering::Relaxed);
        bus.set_gauge();
        info!("bus publisher connected to Redis");
        let mut ping = tokio::time::interval(PING_INTERVAL);
        loop {
            let ok = tokio::select! {
                n = rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        return;
                    }
                    let mut pipe = redis::pipe();
                    for (channel, bytes, _) in &batch {
                        pipe.cmd("PUBLISH").arg(channel).arg(bytes.as_ref()).ignore();
                    }
                    let sent = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
                    let ok = matches!(sent, Ok(Ok(())));
                    for (_, _, kind) in batch.drain(..) {
                        if ok {
                            metrics::counter!(m::BUS_MESSAGES, "dir" => "out", "kind" => kind).increment(1);
                        } else {
                            metrics::counter!(m::BUS_DROPPED, "reason" => "publish_failed").increment(1);
                        }
                    }
                    ok
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        REDIS_TIMEOUT,
                        redis::cmd("PING").query_async::<()>(&mut conn),
                    ).await;
                    matches!(pong, Ok(Ok(())))
                }
                () = stop.cancelled() => {
                    // The rooms' last words (awareness removals of their closed clients).
                    let mut pipe = redis::pipe();
                    while let Ok((channel, bytes, _)) = rx.try_recv() {
                        pipe.cmd("PUBLISH").arg(channel).arg(bytes.as_ref()).ignore();
                    }
                    let _ = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
                    return;
                }
            };
            if !ok {
                break;
            }
        }
        warn!("bus publisher lost Redis; reconnecting (rooms poll the store meanwhile)");
        bus.pub_up.store(false, Ordering::Relaxed);
        bus.set_gauge();
    }
}

/// Owns the pub/sub connection: (re)connects with backoff, subscribes every loaded room again,
/// serves subscribe/unsubscribe requests in order, and pings to notice a dead Redis.
async fn subscriber(
    bus: Arc<Bus>,
    mut ctrl: mpsc::UnboundedReceiver<Ctrl>,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let connected = tokio::time::timeout(REDIS_TIMEOUT, bus.client.get_async_pubsub()).await;
        let Ok(Ok(pubsub)) = connected else {
            {
                // Down: answer subscriptions at once (the rooms poll) until the next attempt.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        c = ctrl.recv() => match c {
                            Some(Ctrl::Subscribe(_, ack)) => { let _ = ack.send(false); }
                            Some(Ctrl::Unsubscribe(_)) => {}
                            None => return,
                        },
                        () = shutdown.cancelled() => return,
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let reader_bus = bus.clone();
        let (ended_tx, mut ended) = oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                reader_bus.deliver(msg.get_channel_name(), msg.get_payload_bytes());
            }
            let _ = ended_tx.send(());
        });
        let mut ok = true;
        for chunk in bus.channels().chunks(512) {
            if !matches!(
                tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(chunk)).await,
                Ok(Ok(()))
            ) {
                ok = false;
                break;
            }
        }
        if ok {
            backoff = FIRST_BACKOFF;
            bus.sub_up.store(true, Ordering::Relaxed);
            bus.epoch.fetch_add(1, Ordering::AcqRel);
            bus.set_gauge();
            info!("bus subscriber connected to Redis");
            let mut ping = tokio::time::interval(PING_INTERVAL);
            loop {
                tokio::select! {
                    c = ctrl.recv() => match c {
                        Some(Ctrl::Subscribe(channel, ack)) => {
                            let r = tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&channel)).await;
                            let done = matches!(r, Ok(Ok(())));
                            let _ = ack.send(done);
                            if !done {
                                break;
                            }
                        }
                        Some(Ctrl::Unsubscribe(channel)) => {
                            // A room of that name may have loaded again since.
                            if !bus.is_routed(&channel) {
                                let r = tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(&channel)).await;
                                if !matches!(r, Ok(Ok(()))) {
                                    break;
                                }
                            }
                        }
                        None => {
                            reader.abort();
                            return;
                        }
                    },
                    _ = ping.tick() => {
                        bus.set_gauge();
                        let r = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
                        if !matches!(r, Ok(Ok(_))) {
                            break;
                        }
                    }
                    _ = &mut ended => break,
                    () = shutdown.cancelled() => {
                        reader.abort();
                        return;
                    }
                }
            }
            warn!("bus subscriber lost Redis; reconnecting (rooms poll the store meanwhile)");
        }
        reader.abort();
        bus.sub_up.store(false, Ordering::Relaxed);
        bus.set_gauge();
        if !sleep_or_cancel(backoff, &shutdown).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> plait_protocol::Limits {
        plait_protocol::Limits::default()
    }

    fn sample_update() -> Bytes {
        use yrs::{Text, Transact};
        let doc = yrs::Doc::with_client_id(7);
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hi");
        Bytes::from(txn.encode_update_v1())
    }

    #[test]
    fn round_trips_every_kind() {
        let u = sample_update();
        let updates = [u.clone(), u];
        let bytes = encode(
            9,
            "r",
            &Outgoing::Updates {
                first_seq: 4,
                last_seq: 5,
                updates: &updates,
            },
        );
        let d = decode(&bytes, &limits(), 1 << 20).unwrap();
        assert_eq!((d.origin, d.room.as_str()), (9, "r"));
        assert!(matches!(
            d.event,
            BusEvent::Updates {
                first_seq: 4,
                last_seq: 5,
                ..
            }
        ));
        let entries = [AwarenessEntry {
            client: 1,
            clock: 2,
            state: "{}".into(),
        }];
        let d = decode(
            &encode(1, "r", &Outgoing::Awareness(&entries)),
            &limits(),
            1 << 20,
        )
        .unwrap();
        assert!(matches!(d.event, BusEvent::Awareness { entries, .. } if entries.len() == 1));
        let d = decode(
            &encode(1, "r", &Outgoing::AwarenessQuery),
            &limits(),
            1 << 20,
        )
        .unwrap();
        assert!(matches!(d.event, BusEvent::AwarenessQuery));
        let d = decode(
            &encode(3, "r", &Outgoing::Stateless("{\"hi\":1} ✓")),
            &limits(),
            1 << 20,
        )
        .unwrap();
        assert!(matches!(
            d.event,
            BusEvent::Stateless { origin: 3, payload } if payload == "{\"hi\":1} ✓"
        ));
    }

    /// A stateless message is a string like a provider's: not UTF-8, cut short, or followed by
    /// anything, it is refused.
    #[test]
    fn refuses_a_stateless_message_that_is_not_one_string() {
        let good = encode(3, "r", &Outgoing::Stateless("hello"));
        for cut in 0..good.len() {
            assert!(decode(&good[..cut], &limits(), 1 << 20).is_err());
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing, &limits(), 1 << 20).is_err());
        let mut not_utf8 = good.clone();
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert!(decode(&not_utf8, &limits(), 1 << 20).is_err());
        assert!(decode(&good, &limits(), 8).is_err(), "past the size bound");
    }

    #[test]
    fn refuses_poisoned_messages() {
        let u = sample_update();
        let good = encode(
            9,
            "r",
            &Outgoing::Updates {
                first_seq: 4,
                last_seq: 4,
                updates: std::slice::from_ref(&u),
            },
        );
        // Every truncation and every single-byte corruption either decodes or is refused;
        // none panics.
        for cut in 0..good.len() {
            let _ = decode(&good[..cut], &limits(), 1 << 20);
            assert!(cut == good.len() || decode(&good[..cut], &limits(), 1 << 20).is_err());
        }
        for i in 0..good.len() {
            for b in [0u8, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = decode(&bad, &limits(), 1 << 20);
            }
        }
        // A seq range that does not match the count.
        let lying = encode(
            9,
            "r",
            &Outgoing::Updates {
                first_seq: 4,
                last_seq: 9,
                updates: std::slice::from_ref(&u),
            },
        );
        assert!(decode(&lying, &limits(), 1 << 20).is_err());
        // A huge declared count with no bytes behind it.
        let mut huge = vec![VERSION];
        huge.extend_from_slice(&1u64.to_le_bytes());
        write_str(&mut huge, "r");
        huge.push(KIND_UPDATE);
        write_var(&mut huge, 1);
        write_var(&mut huge, u64::MAX);
        write_var(&mut huge, u64::MAX);
        assert!(decode(&huge, &limits(), 1 << 20).is_err());
        // Garbage update bytes.
        let garbage = [Bytes::from_static(&[0xff; 40])];
        let bad = encode(
            9,
            "r",
            &Outgoing::Updates {
                first_seq: 1,
                last_seq: 1,
                updates: &garbage,
            },
        );
        assert!(decode(&bad, &limits(), 1 << 20).is_err());
        assert!(decode(&good, &limits(), 4).is_err());
    }
}
