//! plait-bench: a y-websocket load generator for plait and the reference server (and, with
//! `--protocol hocuspocus`, for Hocuspocus: see `hocuspocus.rs`).
//!
//! Every scenario connects lean clients (one tokio task each, raw frames, no yrs document on
//! the receiving side) to `--url`, runs for a bounded time, and appends one JSON record per
//! measurement to `--out` (and prints it). With `--server-pid` each record also carries the
//! server's CPU time and RSS from /proc; the generator's own CPU is always there, so a result
//! bounded by the generator shows as such (gen_cpu_pct near 100 x threads).

mod bigdoc;
mod client;
mod durability;
mod fanout;
mod hocuspocus;
mod relay;
mod rooms;
mod stats;
mod storm;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use client::{Protocol, Target, Ws};

#[derive(Parser, Debug)]
#[command(
    name = "plait-bench",
    about = "Load generator for y-websocket servers (loopback only)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server base URL, e.g. ws://127.0.0.1:1234 (loopback only).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:1234")]
    url: String,
    /// The server's pid, for CPU time and RSS from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Label of the server in the records (e.g. reference, plait).
    #[arg(long, global = true, default_value = "server")]
    label: String,
    /// Append JSON records (one per line) to this file.
    #[arg(long, global = true)]
    out: Option<std::path::PathBuf>,
    /// Worker threads of the generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Source addresses 127.0.0.1..=127.0.0.N the clients bind to.
    #[arg(long, global = true, default_value_t = 8)]
    sources: u8,
    /// Handshakes in flight at once while a scenario sets up its clients.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    /// The server's framing: y-websocket (plait, the reference) or hocuspocus (every message
    /// prefixed by the room as document name, an Auth message first).
    #[arg(long, global = true, value_enum, default_value_t = Protocol::YWebsocket)]
    protocol: Protocol,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One room, N clients, W writers: fixed-rate latency and closed-loop deliveries/s.
    Fanout(fanout::Opts),
    /// R rooms x 2 clients with light edits: RSS per room and latency.
    Rooms(rooms::RoomsOpts),
    /// K idle connections: RSS per connection.
    Idle(rooms::IdleOpts),
    /// Replay an editing trace as one client's edits; then a fresh client's sync step 2.
    Bigdoc(bigdoc::Opts),
    /// N clients with awareness miss edits while offline and reconnect at once.
    Storm(storm::Opts),
    /// W writers acknowledged by an observer: updates/s and commit latency (strict vs relaxed).
    Durability(durability::Opts),
    /// Run the raw relay server (the baseline): rooms by path, every frame to the others.
    Relay(relay::Opts),
}

/// What every scenario gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub target: Target,
    pub common: Common,
    /// Unique per invocation, so room names never collide with an earlier run's.
    pub nonce: String,
}

impl Ctx {
    /// Prints one record and appends it to `--out`.
    pub fn emit(&self, scenario: &str, params: Value, metrics: Map<String, Value>) {
        let record = json!({
            "server": self.common.label,
            "scenario": scenario,
            "params": params,
            "metrics": Value::Object(metrics),
        });
        let line = record.to_string();
        println!("{line}");
        if let Some(path) = &self.common.out {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open --out");
            writeln!(f, "{line}").expect("write --out");
        }
    }

    /// Connects `n` clients, client `i` to `room(i)`, each through its handshake (step 1 sent,
    /// step 2 received). Retries a failed client a few times. Returns them in order.
    pub async fn connect_many(&self, n: usize, room: impl Fn(usize) -> String) -> Result<Vec<Ws>> {
        let sem = Arc::new(tokio::sync::Semaphore::new(self.common.connect_concurrency));
        let mut set = JoinSet::new();
        for i in 0..n {
            let target = self.target.clone();
            let room = room(i);
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let mut last = None;
                for attempt in 0..5 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    match target.connect(&room).await {
                        Ok(mut ws) => {
                            match client::handshake(
                                &mut ws,
                                client::step1_empty(),
                                Duration::from_secs(30),
                            )
                            .await
                            {
                                Ok(_) => return Ok((i, ws)),
                                Err(e) => last = Some(e),
                            }
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap()).with_context(|| format!("client {i} to room {room}"))
            });
        }
        let mut out: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
        while let Some(r) = set.join_next().await {
            let (i, ws) = r??;
            out[i] = Some(ws);
        }
        Ok(out.into_iter().map(|w| w.unwrap()).collect())
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // getrlimit/setrlimit only read and write the struct we pass.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Parses "10,100,500".
pub fn parse_list(s: &str) -> Vec<usize> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().expect("a comma-separated list of numbers"))
        .collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let nofile = raise_nofile();
    stats::now_ns();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.threads.max(1))
        .enable_all()
        .build()?;
    let target = Target::parse(&cli.common.url, cli.common.sources, cli.common.protocol)?;
    let nonce = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let ctx = Ctx {
        target,
        common: cli.common.clone(),
        nonce,
    };
    eprintln!(
        "plait-bench: RLIMIT_NOFILE {nofile}, {} threads, url {}, protocol {:?}",
        ctx.common.threads, ctx.target.base, ctx.target.protocol
    );
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Fanout(o) => fanout::run(&ctx, o).await,
            Cmd::Rooms(o) => rooms::run_rooms(&ctx, o, nofile).await,
            Cmd::Idle(o) => rooms::run_idle(&ctx, o, nofile).await,
            Cmd::Bigdoc(o) => bigdoc::run(&ctx, o).await,
            Cmd::Storm(o) => storm::run(&ctx, o).await,
            Cmd::Durability(o) => durability::run(&ctx, o).await,
            Cmd::Relay(o) => relay::run(&o).await,
        }
    })?;
    // Thousands of sockets close faster without waiting for every task to notice.
    rt.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}
