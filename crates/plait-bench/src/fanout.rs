//! Fan-out: one room, N clients, W of them writing small text edits.
//!
//! - `rate`: W writers share a fixed total rate; latency from a writer's send to each other
//!   client's receipt (p50 / p99 / max).
//! - `closed`: each writer keeps at most `window / W` edits in flight, an edit being done when
//!   every other client has it; deliveries per second is the throughput.
//!
//! A delivery is one (edit, receiver) pair, the author excluded (the reference server echoes
//! to the author, plait does not; echoes are ignored).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, append_update, marker, RecvStats, SendTable, MARKER_LEN, RING};
use crate::stats::{now_ns, num, Usage};
use crate::{parse_list, Ctx};

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Client counts, one run each.
    #[arg(long, default_value = "10,100,500,2000")]
    clients: String,
    /// Writers among the clients.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// `rate`, `closed` or `both`.
    #[arg(long, default_value = "both")]
    mode: String,
    /// Total edits per second in `rate` mode.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of sending per run.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Edits in flight, all writers together, in `closed` mode.
    #[arg(long, default_value_t = 64)]
    window: usize,
}

pub async fn run(ctx: &Ctx, o: Opts) -> Result<()> {
    for n in parse_list(&o.clients) {
        for mode in ["rate", "closed"] {
            if o.mode == mode || o.mode == "both" {
                one(ctx, &o, n, mode == "closed").await?;
            }
        }
    }
    Ok(())
}

async fn one(ctx: &Ctx, o: &Opts, n: usize, closed: bool) -> Result<()> {
    let w = o.writers.clamp(1, n.max(2) - 1);
    let room = format!(
        "fanout-{}-{n}-{}",
        ctx.nonce,
        if closed { "closed" } else { "rate" }
    );
    eprintln!(
        "fanout {} n={n} writers={w}: connecting",
        if closed { "closed" } else { "rate" }
    );
    let t_connect = Instant::now();
    let clients = ctx.connect_many(n, |_| room.clone()).await?;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let per_writer = if closed {
        (4_000_000 / w).min(1 << 20)
    } else {
        ((o.rate / w as f64) * o.duration) as usize + 16
    };
    let table = Arc::new(SendTable::new(w, per_writer, (n - 1) as u32, closed));
    let stop = CancellationToken::new();
    let mut receivers = tokio::task::JoinSet::new();
    let mut sinks = Vec::new();
    let mut keep = Vec::new();
    for (i, ws) in clients.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        let me = (i < w).then_some(i as u32);
        if i < w {
            sinks.push(sink);
        } else {
            // Receivers keep their sink so the socket stays open.
            keep.push(sink);
        }
        receivers.spawn(client::receive_loop(
            stream,
            me,
            table.clone(),
            stop.clone(),
        ));
    }
    // Let the joins' awareness and sync traffic settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let usage = Usage::start(ctx.common.server_pid);
    let start_ns = now_ns();
    let deadline = Instant::now() + Duration::from_secs_f64(o.duration);
    let mut writers = tokio::task::JoinSet::new();
    for (wi, mut sink) in sinks.into_iter().enumerate() {
        let table = table.clone();
        let client_id = 1000 + wi as u64;
        let rate = o.rate;
        let window = (o.window / w).clamp(1, RING / 2);
        writers.spawn(async move {
            let mut seq = 0usize;
            let send = |seq: usize| {
                let m = marker(wi as u32, seq as u32);
                append_update(client_id, seq as u64 * MARKER_LEN, &m)
            };
            if closed {
                let ring = &table.done[wi];
                let mut done = 0usize;
                while Instant::now() < deadline && seq < per_writer {
                    while done < seq && ring[done % RING].load(Ordering::Acquire) >= table.expected
                    {
                        ring[done % RING].store(0, Ordering::Release);
                        done += 1;
                    }
                    let mut fed = 0;
                    while seq - done < window && seq < per_writer {
                        let frame = send(seq);
                        table.sent_ns[wi][seq].store(now_ns(), Ordering::Relaxed);
                        if sink.feed(Message::Binary(frame)).await.is_err() {
                            return (seq, sink);
                        }
                        seq += 1;
                        fed += 1;
                    }
                    if fed > 0 {
                        if sink.flush().await.is_err() {
                            return (seq, sink);
                        }
                    } else {
                        tokio::select! {
                            () = table.notify[wi].notified() => {}
                            () = tokio::time::sleep(Duration::from_millis(20)) => {}
                        }
                    }
                }
            } else {
                let period = Duration::from_secs_f64(w as f64 / rate);
                tokio::time::sleep(period.mul_f64(wi as f64 / w as f64)).await;
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    if Instant::now() >= deadline || seq >= per_writer {
                        break;
                    }
                    let frame = send(seq);
                    table.sent_ns[wi][seq].store(now_ns(), Ordering::Relaxed);
                    if sink.send(Message::Binary(frame)).await.is_err() {
                        break;
                    }
                    seq += 1;
                }
            }
            // Keep the socket open until the receivers are done.
            (seq, sink)
        });
    }
    let mut sent = 0u64;
    while let Some(r) = writers.join_next().await {
        let (seq, sink) = r?;
        sent += seq as u64;
        keep.push(sink);
    }
    let send_end_ns = now_ns();
    let expected = sent * (n as u64 - 1);
    let drain_until = Instant::now() + Duration::from_secs(5);
    while table.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut m = Map::new();
    usage.finish(&mut m);
    stop.cancel();
    let mut all = RecvStats::default();
    let mut dropped = 0u64;
    while let Some(r) = receivers.join_next().await {
        let st = r?;
        dropped += st.dropped as u64;
        all.merge(&st);
    }
    drop(keep);
    let elapsed_s = (all.last_delivery_ns.max(send_end_ns) - start_ns) as f64 / 1e9;
    m.insert("connect_s".into(), num(connect_s));
    m.insert("edits".into(), json!(sent));
    m.insert("deliveries".into(), json!(all.deliveries));
    crate::stats::per_delivery(&mut m, all.deliveries);
    m.insert("deliveries_expected".into(), json!(expected));
    m.insert(
        "deliveries_missing".into(),
        json!(expected.saturating_sub(all.deliveries)),
    );
    m.insert(
        "deliveries_per_s".into(),
        num(all.deliveries as f64 / elapsed_s),
    );
    m.insert("edits_per_s".into(), num(sent as f64 / elapsed_s));
    m.insert("frames_in".into(), json!(all.frames));
    m.insert(
        "edits_per_frame".into(),
        num(all.deliveries as f64 / all.frames.max(1) as f64),
    );
    m.insert("p50_ms".into(), num(all.hist.p_ms(0.5)));
    m.insert("p99_ms".into(), num(all.hist.p_ms(0.99)));
    m.insert("max_ms".into(), num(all.hist.max_ms()));
    m.insert(
        "mean_ms".into(),
        num(all.hist.sum_us as f64 / all.hist.count.max(1) as f64 / 1000.0),
    );
    m.insert("clients_dropped".into(), json!(dropped));
    ctx.emit(
        if closed { "fanout-closed" } else { "fanout-rate" },
        json!({"clients": n, "writers": w, "rate": if closed { serde_json::Value::Null } else { json!(o.rate) },
               "window": if closed { json!(o.window) } else { serde_json::Value::Null }, "duration_s": o.duration}),
        m,
    );
    Ok(())
}
