//! Durability: what strict durability costs, as updates/s and commit latency with W writers.
//!
//! W writer clients each append small text edits as fast as the server acknowledges them: one
//! edit in flight per writer, the next sent when the previous one is acknowledged. An edit is
//! acknowledged when an observing client in the same room (which never writes) receives it.
//! With `--durability strict` the server broadcasts only after the commit, so this is commit
//! latency plus delivery; with relaxed durability it is delivery alone.
//!
//! Layouts: `one-room` (W writers and 1 observer in one room; every writer also receives the
//! other writers' edits and drains them unaccounted) and `per-room` (W rooms, each with 1
//! writer and 1 observer).
//!
//! Besides the client-side latency, the server's own `plait_commit_seconds` histogram is read
//! from `GET /metrics` before and after the measured window; its p50/p99 are interpolated
//! from the bucket deltas (as Prometheus' `histogram_quantile` does).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, append_update, marker, RecvStats, SendTable, MARKER_LEN, RING};
use crate::stats::{now_ns, num, Usage};
use crate::{parse_list, Ctx};

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Writer counts, one run each (per layout).
    #[arg(long, default_value = "1,10,100")]
    writers: String,
    /// `one-room`, `per-room` or `both`.
    #[arg(long, default_value = "both")]
    layout: String,
    /// Seconds of writing per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Where the server's Prometheus metrics are; default: http://<the --url's address>/metrics.
    /// `none` skips the server-side commit histogram.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Recorded in the params only (e.g. sqlite, postgres): the store the server runs on.
    #[arg(long, default_value = "")]
    store: String,
    /// Recorded in the params only (strict, relaxed): the server's durability mode.
    #[arg(long, default_value = "")]
    durability: String,
}

pub async fn run(ctx: &Ctx, o: Opts) -> Result<()> {
    let layouts: Vec<&str> = match o.layout.as_str() {
        "both" => vec!["one-room", "per-room"],
        "one-room" => vec!["one-room"],
        "per-room" => vec!["per-room"],
        other => bail!("--layout must be one-room, per-room or both, not {other}"),
    };
    let metrics_addr = match o.metrics_url.as_deref() {
        Some("none") => None,
        Some(u) => Some(parse_http(u)?),
        None => Some((ctx.target.addr, "/metrics".to_owned())),
    };
    for w in parse_list(&o.writers) {
        for layout in &layouts {
            one(
                ctx,
                &o,
                w.max(1),
                layout == &"per-room",
                metrics_addr.as_ref(),
            )
            .await?;
        }
    }
    Ok(())
}

/// `http://IP:PORT/path` (loopback only) → (address, path).
fn parse_http(url: &str) -> Result<(std::net::SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("--metrics-url must start with http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/metrics".to_owned()),
    };
    let addr: std::net::SocketAddr = hostport
        .parse()
        .with_context(|| format!("--metrics-url needs an IP:PORT, got {hostport}"))?;
    if !addr.ip().is_loopback() {
        bail!("plait-bench only runs against loopback addresses, not {addr}");
    }
    Ok((addr, path))
}

/// Cumulative buckets (upper bound in seconds, count), sum and count of one histogram.
#[derive(Debug, Clone, Default)]
struct PromHist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl PromHist {
    fn parse(text: &str, name: &str) -> PromHist {
        let mut h = PromHist::default();
        let bucket = format!("{name}_bucket{{");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket) {
                // le="0.001"} 12   (other labels, if any, come before or after le)
                let Some(i) = rest.find("le=\"") else {
                    continue;
                };
                let after = &rest[i + 4..];
                let Some(j) = after.find('"') else { continue };
                let le = match &after[..j] {
                    "+Inf" => f64::INFINITY,
                    s => s.parse().unwrap_or(f64::NAN),
                };
                let v = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0);
                h.buckets.push((le, v));
            } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
                h.sum = v.trim().parse().unwrap_or(0.0);
            } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
                h.count = v.trim().parse().unwrap_or(0.0);
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    /// `self - before`, bucket by bucket (a histogram absent before counts as zero).
    fn minus(&self, before: &PromHist) -> PromHist {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, v)| {
                let b = before
                    .buckets
                    .iter()
                    .find(|x| x.0 == le)
                    .map_or(0.0, |x| x.1);
                (le, v - b)
            })
            .collect();
        PromHist {
            buckets,
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The q-quantile in seconds, interpolated linearly inside its bucket (lower bound 0 for
    /// the first bucket; the largest finite bound if it falls in +Inf).
    fn quantile(&self, q: f64) -> f64 {
        let total = self.buckets.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            return f64::NAN;
        }
        let rank = q * total;
        let mut prev_le = 0.0;
        let mut prev_c = 0.0;
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return prev_le;
                }
                if c == prev_c {
                    return le;
                }
                return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c);
            }
            prev_le = le;
            prev_c = c;
        }
        prev_le
    }
}

/// `GET path` over HTTP/1.0 (the server closes after the body).
async fn scrape(addr: &(std::net::SocketAddr, String)) -> Result<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr.0).await?;
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
            addr.1, addr.0
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        if !head.starts_with("HTTP/1.") || !head.contains(" 200") {
            bail!(
                "GET {}: {}",
                addr.1,
                head.lines().next().unwrap_or_default()
            );
        }
        Ok(body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .context("GET /metrics timed out")?
}

async fn commit_hist(addr: Option<&(std::net::SocketAddr, String)>) -> Option<PromHist> {
    let addr = addr?;
    match scrape(addr).await {
        Ok(body) => Some(PromHist::parse(&body, "plait_commit_seconds")),
        Err(e) => {
            eprintln!("durability: metrics unavailable: {e:#}");
            None
        }
    }
}

async fn one(
    ctx: &Ctx,
    o: &Opts,
    w: usize,
    per_room: bool,
    metrics: Option<&(std::net::SocketAddr, String)>,
) -> Result<()> {
    let layout = if per_room { "per-room" } else { "one-room" };
    let rooms = if per_room { w } else { 1 };
    let base = format!("durability-{}-{w}-{layout}", ctx.nonce);
    let room_of = |r: usize| format!("{base}-{r}");
    eprintln!("durability {layout} writers={w}: connecting");
    // Clients 0..w are writers (writer i in room i or room 0), w..w+rooms are observers.
    let clients = ctx
        .connect_many(w + rooms, |i| {
            if i < w {
                room_of(if per_room { i } else { 0 })
            } else {
                room_of(i - w)
            }
        })
        .await?;
    // Enough slots for any plausible rate; a writer that reaches the end stops (reported).
    let per_writer = (4_000_000 / w).clamp(1000, 1 << 20);
    let table = Arc::new(SendTable::new(w, per_writer, 1, true));
    let stop = CancellationToken::new();
    let mut observers = tokio::task::JoinSet::new();
    let mut drains = tokio::task::JoinSet::new();
    let mut sinks = Vec::new();
    let mut keep = Vec::new();
    for (i, ws) in clients.into_iter().enumerate() {
        let (sink, mut stream) = ws.split();
        if i < w {
            sinks.push(sink);
            // Writers read too (other writers' edits in one room, awareness), unaccounted, so
            // the server never sees them as slow consumers.
            let stop = stop.clone();
            drains.spawn(async move {
                loop {
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break false,
                        m = stream.next() => match m {
                            Some(Ok(_)) => {}
                            _ => break !stop.is_cancelled(),
                        }
                    }
                }
            });
        } else {
            keep.push(sink);
            observers.spawn(client::receive_loop(
                stream,
                None,
                table.clone(),
                stop.clone(),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = commit_hist(metrics).await;
    let usage = Usage::start(ctx.common.server_pid);
    let start_ns = now_ns();
    let deadline = Instant::now() + Duration::from_secs_f64(o.duration);
    // An edit not acknowledged this long after the window is given up on.
    let give_up = deadline + Duration::from_secs(10);
    let mut writers = tokio::task::JoinSet::new();
    for (wi, mut sink) in sinks.into_iter().enumerate() {
        let table = table.clone();
        let client_id = 1000 + wi as u64;
        writers.spawn(async move {
            let ring = &table.done[wi];
            let mut seq = 0usize;
            let mut unacked = false;
            while Instant::now() < deadline && seq < per_writer {
                let frame = append_update(
                    client_id,
                    seq as u64 * MARKER_LEN,
                    &marker(wi as u32, seq as u32),
                );
                table.sent_ns[wi][seq].store(now_ns(), Ordering::Relaxed);
                if sink.send(Message::Binary(frame)).await.is_err() {
                    unacked = true;
                    break;
                }
                let slot = &ring[seq % RING];
                loop {
                    if slot.load(Ordering::Acquire) >= 1 {
                        slot.store(0, Ordering::Release);
                        break;
                    }
                    if Instant::now() >= give_up {
                        unacked = true;
                        break;
                    }
                    tokio::select! {
                        () = table.notify[wi].notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                if unacked {
                    break;
                }
                seq += 1;
            }
            (seq, unacked, seq >= per_writer, sink)
        });
    }
    let mut acked = 0u64;
    let mut unacked_writers = 0u64;
    let mut capped = 0u64;
    while let Some(r) = writers.join_next().await {
        let (seq, unacked, cap, sink) = r?;
        acked += seq as u64;
        unacked_writers += unacked as u64;
        capped += cap as u64;
        keep.push(sink);
    }
    let end_ns = now_ns();
    let mut m = Map::new();
    usage.finish(&mut m);
    // Relaxed commits trail the broadcast by up to the flush interval: give them time to land
    // in the histogram.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = commit_hist(metrics).await;
    stop.cancel();
    let mut all = RecvStats::default();
    let mut dropped = 0u64;
    while let Some(r) = observers.join_next().await {
        let st = r?;
        dropped += st.dropped as u64;
        all.merge(&st);
    }
    while let Some(r) = drains.join_next().await {
        dropped += r? as u64;
    }
    drop(keep);

    let elapsed_s = (end_ns - start_ns) as f64 / 1e9;
    m.insert("updates".into(), json!(acked));
    m.insert("updates_per_s".into(), num(acked as f64 / elapsed_s));
    m.insert("elapsed_s".into(), num(elapsed_s));
    m.insert("observed".into(), json!(all.deliveries));
    m.insert("p50_ms".into(), num(all.hist.p_ms(0.5)));
    m.insert("p99_ms".into(), num(all.hist.p_ms(0.99)));
    m.insert("max_ms".into(), num(all.hist.max_ms()));
    m.insert(
        "mean_ms".into(),
        num(all.hist.sum_us as f64 / all.hist.count.max(1) as f64 / 1000.0),
    );
    m.insert("writers_unacked".into(), json!(unacked_writers));
    m.insert("writers_capped".into(), json!(capped));
    m.insert("clients_dropped".into(), json!(dropped));
    match (before, after) {
        (Some(b), Some(a)) => {
            let d = a.minus(&b);
            m.insert("server_commits".into(), num(d.count));
            m.insert("server_commit_p50_ms".into(), num(d.quantile(0.5) * 1000.0));
            m.insert(
                "server_commit_p99_ms".into(),
                num(d.quantile(0.99) * 1000.0),
            );
            m.insert(
                "server_commit_mean_ms".into(),
                num(if d.count > 0.0 {
                    d.sum / d.count * 1000.0
                } else {
                    f64::NAN
                }),
            );
            m.insert(
                "updates_per_commit".into(),
                num(if d.count > 0.0 {
                    acked as f64 / d.count
                } else {
                    f64::NAN
                }),
            );
        }
        _ => {
            m.insert("server_commits".into(), Value::Null);
        }
    }
    ctx.emit(
        "durability",
        json!({"writers": w, "layout": layout, "rooms": rooms, "duration_s": o.duration,
               "store": o.store, "durability": o.durability}),
        m,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# TYPE plait_commit_seconds histogram
plait_commit_seconds_bucket{le=\"0.001\"} 10
plait_commit_seconds_bucket{le=\"0.002\"} 30
plait_commit_seconds_bucket{le=\"0.005\"} 40
plait_commit_seconds_bucket{le=\"+Inf\"} 40
plait_commit_seconds_sum 0.05
plait_commit_seconds_count 40
";

    #[test]
    fn prometheus_histogram_quantiles_interpolate() {
        let h = PromHist::parse(SAMPLE, "plait_commit_seconds");
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.count, 40.0);
        // rank 20 lies halfway through the (0.001, 0.002] bucket (10..30).
        assert!((h.quantile(0.5) - 0.0015).abs() < 1e-9);
        // rank 39.6 in (0.002, 0.005] (30..40): 0.002 + 0.003 * 0.96.
        assert!((h.quantile(0.99) - 0.00488).abs() < 1e-9);
        let d = h.minus(&PromHist::parse(
            "plait_commit_seconds_bucket{le=\"0.001\"} 10\nplait_commit_seconds_count 10\n",
            "plait_commit_seconds",
        ));
        assert_eq!(d.buckets[0].1, 0.0);
        assert_eq!(d.count, 30.0);
        assert!(PromHist::default().quantile(0.5).is_nan());
    }
}
