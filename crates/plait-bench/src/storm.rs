//! Reconnect storm: N clients with awareness are synced to a room, all disconnect, a writer
//! makes `missed` edits, then all N reconnect at once the way y-websocket does (step 1 with
//! the state vector they had, their awareness with a bumped clock, and an empty step 2 in
//! answer to the server's step 1). Measured: time until every client has its step 2, which
//! must carry exactly the missed edits.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, append_update, awareness, marker, scan_markers, sync_kind, MARKER_LEN};
use crate::stats::{num, Histogram, Usage};
use crate::{parse_list, Ctx};

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Client counts, one run each.
    #[arg(long, default_value = "500,2000")]
    clients: String,
    /// Edits made while the clients are away.
    #[arg(long, default_value_t = 200)]
    missed: usize,
    /// Edits in the room before the clients first sync.
    #[arg(long, default_value_t = 100)]
    initial: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

const WRITER_CLIENT: u64 = 7;

fn state(i: usize) -> String {
    format!(r##"{{"user":{{"name":"user {i}","color":"#30bced"}},"cursor":null}}"##)
}

pub async fn run(ctx: &Ctx, o: Opts) -> Result<()> {
    for n in parse_list(&o.clients) {
        one(ctx, &o, n).await?;
    }
    Ok(())
}

async fn one(ctx: &Ctx, o: &Opts, n: usize) -> Result<()> {
    let room = format!("storm-{}-{n}", ctx.nonce);
    let mut writer = ctx.connect_many(1, |_| room.clone()).await?.pop().unwrap();
    let mut seq = 0usize;
    let edit = |seq: &mut usize| {
        let f = append_update(
            WRITER_CLIENT,
            *seq as u64 * MARKER_LEN,
            &marker(0, *seq as u32),
        );
        *seq += 1;
        Message::Binary(f)
    };
    for _ in 0..o.initial {
        writer.feed(edit(&mut seq)).await?;
    }
    writer.flush().await?;
    let sv_clock = seq as u64 * MARKER_LEN;
    // Drain whatever the writer receives, in the background, for the whole run.
    let (mut wsink, mut wstream) = writer.split();
    let wdrain = tokio::spawn(async move { while let Some(Ok(_)) = wstream.next().await {} });
    tokio::time::sleep(Duration::from_millis(300)).await;

    eprintln!("storm n={n}: first sync");
    let clients = ctx.connect_many(n, |_| room.clone()).await?;
    let mut drains = tokio::task::JoinSet::new();
    let mut sinks = Vec::new();
    let mut setup_closed = 0u64;
    for (i, ws) in clients.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        // A server may close a client that falls behind on the join's awareness burst.
        if sink
            .send(Message::Binary(awareness(100_000 + i as u64, 1, &state(i))))
            .await
            .is_err()
        {
            setup_closed += 1;
        }
        sinks.push(sink);
        drains.spawn(async move {
            while let Some(Ok(_)) = stream.next().await {}
            stream
        });
    }
    // Let the N^2 awareness broadcast of the first sync finish.
    settle(ctx).await;
    eprintln!("storm n={n}: disconnecting");
    drop(sinks);
    drains.abort_all();
    while drains.join_next().await.is_some() {}
    settle(ctx).await;
    for _ in 0..o.missed {
        wsink.feed(edit(&mut seq)).await?;
    }
    wsink.flush().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("storm n={n}: reconnecting all at once");
    let usage = Usage::start(ctx.common.server_pid);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.timeout);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let target = ctx.target.clone();
        let room = room.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let mut retries = 0u32;
            let mut backoff = Duration::from_millis(100);
            loop {
                if Instant::now() >= deadline {
                    return (None, retries, 0usize, None);
                }
                let mut ws = match target.connect(&room).await {
                    Ok(ws) => ws,
                    Err(_) => {
                        retries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                };
                let opened = t0.elapsed();
                let hello = [
                    client::step1_for(WRITER_CLIENT, sv_clock),
                    awareness(100_000 + i as u64, 2, &state(i)),
                ];
                let mut ok = true;
                for f in hello {
                    ok &= ws.feed(Message::Binary(f)).await.is_ok();
                }
                ok &= ws.flush().await.is_ok();
                let mut answered = false;
                if ok {
                    loop {
                        // `ok` is fixed here: the loop ends by `break` (timeout) or `return` (synced).
                        let left = deadline.saturating_duration_since(Instant::now());
                        let Ok(Some(Ok(msg))) = tokio::time::timeout(left, ws.next()).await else {
                            break;
                        };
                        let Message::Binary(b) = msg else { continue };
                        match sync_kind(&b) {
                            Some(0) if !answered => {
                                answered = true;
                                let _ = ws.send(Message::Binary(client::step2_empty())).await;
                            }
                            Some(1) => {
                                let synced = t0.elapsed();
                                let mut edits = 0usize;
                                scan_markers(&b, |_, _| edits += 1);
                                // Stay connected until everyone is done, like a real client.
                                return (Some(synced), retries, edits, Some((ws, opened)));
                            }
                            _ => {}
                        }
                    }
                }
                retries += 1;
                tokio::time::sleep(backoff).await;
            }
        });
    }
    let mut synced = Histogram::new();
    let mut opened = Histogram::new();
    let mut failed = 0u64;
    let mut retries = 0u64;
    let mut wrong = 0u64;
    let mut keep = Vec::new();
    let mut last = Duration::ZERO;
    while let Some(r) = tasks.join_next().await {
        let (s, rt, edits, ws) = r?;
        retries += rt as u64;
        match s {
            Some(d) => {
                synced.record_us(d.as_micros() as u64);
                last = last.max(d);
                if edits != o.missed {
                    wrong += 1;
                }
            }
            None => failed += 1,
        }
        if let Some((ws, op)) = ws {
            opened.record_us(op.as_micros() as u64);
            keep.push(ws);
        }
    }
    let mut m = Map::new();
    usage.finish(&mut m);
    m.insert(
        "all_synced_s".into(),
        num(if failed == 0 {
            last.as_secs_f64()
        } else {
            f64::NAN
        }),
    );
    m.insert("p50_synced_s".into(), num(synced.quantile_us(0.5) / 1e6));
    m.insert("p99_synced_s".into(), num(synced.quantile_us(0.99) / 1e6));
    m.insert("all_connected_s".into(), num(opened.max_us as f64 / 1e6));
    m.insert("clients_failed".into(), json!(failed));
    m.insert("first_sync_closed_by_server".into(), json!(setup_closed));
    m.insert("connect_retries".into(), json!(retries));
    m.insert("step2_wrong_edit_count".into(), json!(wrong));
    ctx.emit(
        "storm",
        json!({"clients": n, "missed": o.missed, "awareness": true}),
        m,
    );
    drop(keep);
    let _ = wsink.close().await;
    wdrain.abort();
    settle(ctx).await;
    Ok(())
}

/// Waits until the server's CPU use calms down (at most 10 s), or 1 s without a pid.
async fn settle(ctx: &Ctx) {
    let Some(pid) = ctx.common.server_pid else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    };
    let until = Instant::now() + Duration::from_secs(10);
    let mut prev = crate::stats::sample(Some(pid))
        .map(|s| s.cpu_s())
        .unwrap_or(0.0);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let cur = crate::stats::sample(Some(pid))
            .map(|s| s.cpu_s())
            .unwrap_or(0.0);
        if cur - prev < 0.02 {
            return;
        }
        prev = cur;
    }
}
