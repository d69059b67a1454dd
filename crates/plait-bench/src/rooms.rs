//! Many rooms with two clients each, and many idle connections: server memory per unit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, append_update, marker, RecvStats, SendTable, MARKER_LEN};
use crate::stats::{num, sample, Usage};
use crate::{parse_list, Ctx};

/// File descriptors the generator keeps for itself.
const FD_RESERVE: u64 = 64;

#[derive(clap::Args, Debug, Clone)]
pub struct RoomsOpts {
    /// Room counts, one run each (2 clients per room).
    #[arg(long, default_value = "1000,9000")]
    rooms: String,
    /// Each room's writer sends one edit this often.
    #[arg(long, default_value_t = 5000)]
    edit_interval_ms: u64,
    /// Seconds of editing per run.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
}

pub async fn run_rooms(ctx: &Ctx, o: RoomsOpts, nofile: u64) -> Result<()> {
    for r in parse_list(&o.rooms) {
        let max = ((nofile - FD_RESERVE) / 2) as usize;
        let (r, capped) = if r > max { (max, true) } else { (r, false) };
        if capped {
            eprintln!("rooms: capped at {r} rooms by RLIMIT_NOFILE {nofile}");
        }
        rooms_one(ctx, &o, r, capped).await?;
    }
    Ok(())
}

async fn rooms_one(ctx: &Ctx, o: &RoomsOpts, r: usize, capped: bool) -> Result<()> {
    let pid = ctx.common.server_pid;
    let rss0 = pid.and_then(|p| sample(Some(p))).map(|s| s.rss_kib);
    eprintln!("rooms r={r}: connecting {} clients", 2 * r);
    let t = Instant::now();
    let nonce = ctx.nonce.clone();
    let clients = ctx
        .connect_many(2 * r, |i| format!("rooms-{nonce}-{r}-{}", i / 2))
        .await?;
    let connect_s = t.elapsed().as_secs_f64();
    let rss_connected = pid.and_then(|p| sample(Some(p))).map(|s| s.rss_kib);
    let interval = Duration::from_millis(o.edit_interval_ms);
    let per_writer = (o.duration / interval.as_secs_f64()).ceil() as usize + 2;
    let table = Arc::new(SendTable::new(r, per_writer, 1, false));
    let stop = CancellationToken::new();
    let usage = Usage::start(pid);
    let deadline = Instant::now() + Duration::from_secs_f64(o.duration);
    let mut receivers = tokio::task::JoinSet::new();
    let mut writers = tokio::task::JoinSet::new();
    let mut keep = Vec::new();
    for (i, ws) in clients.into_iter().enumerate() {
        let room = i / 2;
        let (mut sink, stream) = ws.split();
        if i % 2 == 1 {
            keep.push(sink);
            receivers.spawn(client::receive_loop(
                stream,
                None,
                table.clone(),
                stop.clone(),
            ));
            continue;
        }
        // The writer drains its socket (the reference echoes) without counting.
        receivers.spawn(client::receive_loop(
            stream,
            Some(room as u32),
            table.clone(),
            stop.clone(),
        ));
        let table = table.clone();
        let offset = interval.mul_f64(room as f64 / r as f64);
        writers.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(interval);
            let mut seq = 0usize;
            loop {
                tick.tick().await;
                if Instant::now() >= deadline || seq >= per_writer {
                    break;
                }
                let frame = append_update(
                    10_000 + room as u64,
                    seq as u64 * MARKER_LEN,
                    &marker(room as u32, seq as u32),
                );
                table.sent_ns[room][seq].store(crate::stats::now_ns(), Ordering::Relaxed);
                if sink.send(Message::Binary(frame)).await.is_err() {
                    break;
                }
                seq += 1;
            }
            (seq, sink)
        });
    }
    let mut sent = 0u64;
    while let Some(res) = writers.join_next().await {
        let (seq, sink) = res?;
        sent += seq as u64;
        keep.push(sink);
    }
    let drain_until = Instant::now() + Duration::from_secs(5);
    while table.delivered.load(Ordering::Relaxed) < sent && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut m = Map::new();
    usage.finish(&mut m);
    stop.cancel();
    let mut all = RecvStats::default();
    let mut dropped = 0u64;
    while let Some(res) = receivers.join_next().await {
        let st = res?;
        dropped += st.dropped as u64;
        all.merge(&st);
    }
    drop(keep);
    if let (Some(a), Some(b)) = (rss0, m.get("server_rss_kib").and_then(|v| v.as_u64())) {
        m.insert("server_rss_start_kib".into(), json!(a));
        m.insert(
            "rss_per_room_kib".into(),
            num((b as f64 - a as f64) / r as f64),
        );
    }
    if let (Some(a), Some(b)) = (rss0, rss_connected) {
        m.insert(
            "rss_per_room_connected_kib".into(),
            num((b as f64 - a as f64) / r as f64),
        );
    }
    m.insert("connect_s".into(), num(connect_s));
    m.insert("edits".into(), json!(sent));
    m.insert("deliveries".into(), json!(all.deliveries));
    crate::stats::per_delivery(&mut m, all.deliveries);
    m.insert("p50_ms".into(), num(all.hist.p_ms(0.5)));
    m.insert("p99_ms".into(), num(all.hist.p_ms(0.99)));
    m.insert("max_ms".into(), num(all.hist.max_ms()));
    m.insert("clients_dropped".into(), json!(dropped));
    ctx.emit(
        "rooms",
        json!({"rooms": r, "clients_per_room": 2, "edit_interval_ms": o.edit_interval_ms,
               "duration_s": o.duration, "capped_by_nofile": capped}),
        m,
    );
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct IdleOpts {
    /// Connection counts, one run each.
    #[arg(long, default_value = "10000")]
    connections: String,
    /// Connections per room.
    #[arg(long, default_value_t = 100)]
    per_room: usize,
    /// Seconds to hold the connections after they are all up (RSS is read at the end).
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

pub async fn run_idle(ctx: &Ctx, o: IdleOpts, nofile: u64) -> Result<()> {
    for k in parse_list(&o.connections) {
        let max = (nofile - FD_RESERVE) as usize;
        let (k, capped) = if k > max { (max, true) } else { (k, false) };
        if capped {
            eprintln!("idle: capped at {k} connections by RLIMIT_NOFILE {nofile}");
        }
        idle_one(ctx, &o, k, capped).await?;
    }
    Ok(())
}

async fn idle_one(ctx: &Ctx, o: &IdleOpts, k: usize, capped: bool) -> Result<()> {
    let pid = ctx.common.server_pid;
    let rss0 = pid.and_then(|p| sample(Some(p))).map(|s| s.rss_kib);
    eprintln!("idle k={k}: connecting");
    let usage = Usage::start(pid);
    let t = Instant::now();
    let nonce = ctx.nonce.clone();
    let per_room = o.per_room.max(1);
    let clients = ctx
        .connect_many(k, |i| format!("idle-{nonce}-{k}-{}", i / per_room))
        .await?;
    let connect_s = t.elapsed().as_secs_f64();
    let table = Arc::new(SendTable::new(0, 0, 0, false));
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut keep = Vec::new();
    for ws in clients {
        let (sink, stream) = ws.split();
        keep.push(sink);
        tasks.spawn(client::receive_loop(
            stream,
            None,
            table.clone(),
            stop.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.hold)).await;
    let mut m = Map::new();
    usage.finish(&mut m);
    stop.cancel();
    let mut dropped = 0u64;
    while let Some(res) = tasks.join_next().await {
        dropped += res?.dropped as u64;
    }
    drop(keep);
    if let (Some(a), Some(b)) = (rss0, m.get("server_rss_kib").and_then(|v| v.as_u64())) {
        m.insert("server_rss_start_kib".into(), json!(a));
        m.insert(
            "rss_per_conn_kib".into(),
            num((b as f64 - a as f64) / k as f64),
        );
    }
    m.insert("connect_s".into(), num(connect_s));
    m.insert("connects_per_s".into(), num(k as f64 / connect_s));
    m.insert("clients_dropped".into(), json!(dropped));
    ctx.emit(
        "idle",
        json!({"connections": k, "per_room": per_room, "hold_s": o.hold, "capped_by_nofile": capped}),
        m,
    );
    Ok(())
}
