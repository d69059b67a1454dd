//! Big document: replay a sequential editing trace as one client's edits, as fast as the
//! server takes them, then time a fresh client's sync step 2 (room loaded, and optionally
//! cold on a second server process that shares the store).
//!
//! The updates are produced by a yrs document before the clock starts. After the last trace
//! edit the writer appends a marker edit; an observer client in the room stops the clock when
//! it receives the marker (servers relay a room's updates in order).

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map};
use tokio_tungstenite::tungstenite::Message;
use yrs::{Doc, Options, Text, Transact};

use crate::client::{self, scan_markers, Target};
use crate::stats::{num, Usage};
use crate::Ctx;

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// A sequential trace from josephg/editing-traces (.json.gz).
    #[arg(
        long,
        default_value = "../shared/data/editing-traces/sequential-automerge-paper.json.gz"
    )]
    trace: std::path::PathBuf,
    /// Replay only the first N patches (0 = all).
    #[arg(long, default_value_t = 0)]
    edits: usize,
    /// Fresh clients timed against the loaded room.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// A second server process on the same store, where the room is not loaded yet.
    #[arg(long)]
    cold_url: Option<String>,
    /// The second server's pid.
    #[arg(long)]
    cold_pid: Option<u32>,
    /// Give up on ingest after this many seconds.
    #[arg(long, default_value_t = 240.0)]
    timeout: f64,
    /// Room name (default: a fresh one).
    #[arg(long)]
    room: Option<String>,
    /// Do not replay: only time step 2 against `--cold-url` (after a server restart).
    #[arg(long)]
    skip_ingest: bool,
}

fn load_patches(path: &std::path::Path, limit: usize) -> Result<Vec<(u32, u32, String)>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut s = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut s)?;
    let v: serde_json::Value = serde_json::from_str(&s)?;
    let mut out = Vec::new();
    for txn in v["txns"].as_array().context("txns")? {
        for p in txn["patches"].as_array().context("patches")? {
            out.push((
                p[0].as_u64().context("pos")? as u32,
                p[1].as_u64().context("del")? as u32,
                p[2].as_str().context("ins")?.to_owned(),
            ));
            if limit > 0 && out.len() >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Frames `[0,2,update]` for every patch, then the end marker's frame.
fn build_updates(patches: &[(u32, u32, String)]) -> Result<Vec<Bytes>> {
    let doc = Doc::with_options(Options::with_client_id(yrs::block::ClientID::new(4242)));
    let text = doc.get_or_insert_text("t");
    let mut frames = Vec::with_capacity(patches.len() + 1);
    for (pos, del, ins) in patches {
        if !ins.is_ascii() {
            bail!("non-ASCII trace: positions would need code-point offsets");
        }
        let update = {
            let mut txn = doc.transact_mut();
            if *del > 0 {
                text.remove_range(&mut txn, *pos, *del);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, *pos, ins);
            }
            txn.encode_update_v1()
        };
        frames.push(plait_protocol::message::encode_update(&update));
    }
    let update = {
        let mut txn = doc.transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, &client::marker(0xfffe, 0));
        txn.encode_update_v1()
    };
    frames.push(plait_protocol::message::encode_update(&update));
    Ok(frames)
}

/// Connects a fresh client, sends step 1 with an empty state vector, waits for step 2.
/// Returns (connect + step 2 seconds, step 1 -> step 2 seconds, step 2 bytes).
async fn time_step2(target: &Target, room: &str) -> Result<(f64, f64, usize)> {
    let t0 = Instant::now();
    let mut ws = target.connect(room).await?;
    let t1 = Instant::now();
    let step2 = client::handshake(&mut ws, client::step1_empty(), Duration::from_secs(60)).await?;
    let t2 = Instant::now();
    let _ = ws.close(None).await;
    Ok((
        (t2 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        step2.len(),
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub async fn run(ctx: &Ctx, o: Opts) -> Result<()> {
    let patches = if o.skip_ingest {
        Vec::new()
    } else {
        load_patches(&o.trace, o.edits)?
    };
    let n_edits = patches.len();
    let room = o
        .room
        .clone()
        .unwrap_or_else(|| format!("bigdoc-{}", ctx.nonce));
    let mut m = Map::new();
    if !o.skip_ingest {
        eprintln!("bigdoc: encoding {n_edits} edits");
        let frames = build_updates(&patches)?;
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        let mut clients = ctx.connect_many(2, |_| room.clone()).await?;
        let writer = clients.pop().unwrap();
        let mut observer = clients.pop().unwrap();
        let (mut sink, mut wstream) = writer.split();
        // The writer drains its socket (the reference echoes every update back).
        let drain = tokio::spawn(async move {
            while let Some(Ok(_)) = wstream.next().await {}
            wstream
        });
        eprintln!("bigdoc: replaying {n_edits} edits ({bytes} bytes)");
        let usage = Usage::start(ctx.common.server_pid);
        let t0 = Instant::now();
        let send = tokio::spawn(async move {
            for chunk in frames.chunks(256) {
                for f in chunk {
                    sink.feed(Message::Binary(f.clone())).await?;
                }
                sink.flush().await?;
            }
            anyhow::Ok((Instant::now(), sink))
        });
        let mut seen_frames = 0u64;
        let done = tokio::time::timeout(Duration::from_secs_f64(o.timeout), async {
            while let Some(msg) = observer.next().await {
                if let Message::Binary(b) = msg? {
                    seen_frames += 1;
                    let mut found = false;
                    scan_markers(&b, |w, _| found |= w == 0xfffe);
                    if found {
                        return anyhow::Ok(true);
                    }
                }
            }
            anyhow::Ok(false)
        })
        .await;
        let ingest_s = t0.elapsed().as_secs_f64();
        let completed = matches!(done, Ok(Ok(true)));
        usage.finish(&mut m);
        let (sent_at, sink) = send.await??;
        m.insert("edits".into(), json!(n_edits));
        m.insert("update_bytes".into(), json!(bytes));
        m.insert("completed".into(), json!(completed));
        m.insert("observer_frames".into(), json!(seen_frames));
        m.insert("send_s".into(), num((sent_at - t0).as_secs_f64()));
        m.insert("ingest_s".into(), num(ingest_s));
        m.insert(
            "edits_per_s".into(),
            num(if completed {
                n_edits as f64 / ingest_s
            } else {
                f64::NAN
            }),
        );
        // Give a relaxed server time to settle before timing step 2.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut full = Vec::new();
        let mut after_step1 = Vec::new();
        let mut size = 0;
        for _ in 0..o.samples.max(1) {
            let (a, b, s) = time_step2(&ctx.target, &room).await?;
            full.push(a * 1000.0);
            after_step1.push(b * 1000.0);
            size = s;
        }
        m.insert("step2_loaded_ms".into(), num(median(full)));
        m.insert(
            "step2_loaded_after_step1_ms".into(),
            num(median(after_step1)),
        );
        m.insert("step2_bytes".into(), json!(size));
        drop(observer);
        drop(sink);
        drain.abort();
    }
    if let Some(url) = &o.cold_url {
        let target = Target::parse(url, 1, ctx.target.protocol)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let usage = Usage::start(o.cold_pid);
        let (a, b, s) = time_step2(&target, &room).await?;
        let mut cm = Map::new();
        usage.finish(&mut cm);
        m.insert("step2_cold_ms".into(), num(a * 1000.0));
        m.insert("step2_cold_after_step1_ms".into(), num(b * 1000.0));
        m.insert("step2_cold_bytes".into(), json!(s));
        if let Some(r) = cm.get("server_rss_kib") {
            m.insert("cold_server_rss_kib".into(), r.clone());
        }
        let mut warm = Vec::new();
        for _ in 0..o.samples.max(1) {
            warm.push(time_step2(&target, &room).await?.0 * 1000.0);
        }
        m.insert("step2_second_process_loaded_ms".into(), num(median(warm)));
    }
    ctx.emit(
        if o.skip_ingest {
            "bigdoc-cold"
        } else {
            "bigdoc"
        },
        json!({"trace": o.trace.file_name().map(|f| f.to_string_lossy().into_owned()),
               "edits": n_edits, "samples": o.samples}),
        m,
    );
    Ok(())
}
