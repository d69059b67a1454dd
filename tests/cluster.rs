//! Scale-out: several real `plait` processes sharing one PostgreSQL database through a Redis
//! bus. Each test uses its own database and its own channel prefix (`--redis-prefix`), so tests
//! run in parallel on the shared Redis; the outage test starts a Redis of its own.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;
mod pg;

use std::process::Stdio;
use std::time::{Duration, Instant};

use plait_crdt::{Action, Op};
use support::TestClient;
use yrs::{ReadTxn, StateVector, Transact};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Whether something listens on `port`; missing Redis fails under PLAIT_REQUIRE_POSTGRES=1
/// (CI), and skips otherwise.
fn redis_available(port: u16) -> bool {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return true;
    }
    assert!(!pg::required(), "Redis is required at 127.0.0.1:{port}");
    eprintln!("SKIPPED: no Redis at 127.0.0.1:{port}");
    false
}

async fn database(prefix: &str) -> Option<String> {
    if !redis_available(6379) {
        return None;
    }
    pg::fresh_database(prefix).await
}

async fn start(store: &str, redis: &str, prefix: &str, extra: &[&str]) -> binary::Server {
    let mut args = vec!["--redis", redis, "--redis-prefix", prefix];
    args.extend_from_slice(extra);
    binary::Server::start(store, &args).await
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Waits until every client's text is the same and `len` characters long.
async fn converge(clients: &[&TestClient], len: usize, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let texts: Vec<String> = clients.iter().map(|c| c.text()).collect();
        if texts
            .iter()
            .all(|t| t.chars().count() == len && *t == texts[0])
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "no convergence within {within:?}: lengths {:?} (want {len})",
            texts.iter().map(|t| t.chars().count()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Random concurrent inserts from every client; returns the characters inserted.
async fn type_randomly(clients: &[&TestClient], rounds: usize, seed: u64) -> usize {
    let mut rng = Rng(seed | 1);
    let mut inserted = 0;
    for round in 0..rounds {
        for (i, c) in clients.iter().enumerate() {
            let len = c.text().chars().count() as u64;
            let at = (rng.next() % (len + 1)) as u32;
            let s = format!("{}{}", (b'a' + (i % 26) as u8) as char, round % 10);
            c.insert(at, &s);
            inserted += s.len();
        }
        if rng.next().is_multiple_of(3) {
            tokio::time::sleep(Duration::from_millis(rng.next() % 4)).await;
        }
    }
    inserted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_converge_on_random_concurrent_edits() {
    let Some(db) = database("cluster_converge").await else {
        return;
    };
    let prefix = unique("converge");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        clients.push(TestClient::connect(&server.url("doc")).await);
    }
    let refs: Vec<&TestClient> = clients.iter().collect();
    let n = type_randomly(&refs, 60, 0x5eed).await;
    let took = converge(&refs, n, Duration::from_secs(20)).await;
    eprintln!("6 clients on 2 processes converged on {n} chars {took:?} after the last edit");
    // A newcomer on either process loads the same document from the store and the bus.
    let late = TestClient::connect(&b.url("doc")).await;
    late.wait_text(&clients[0].text()).await;
    let metrics = a.get("/metrics").await.unwrap();
    assert!(metrics.contains("plait_bus_up 1"), "{metrics}");
    assert!(metrics.contains("plait_bus_messages_total{dir=\"out\",kind=\"update\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn awareness_crosses_processes_and_leaves() {
    let Some(db) = database("cluster_awareness").await else {
        return;
    };
    let prefix = unique("awareness");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let on_b = TestClient::connect(&b.url("room")).await;
    let on_a = TestClient::connect(&a.url("room")).await;
    on_a.set_awareness(4242, 1, r#"{"user":"ada"}"#);
    let present = |client: u64| {
        move |s: &support::Seen, _: &yrs::Doc| {
            s.awareness
                .iter()
                .rev()
                .find(|e| e.client == client)
                .is_some_and(|e| e.state != "null")
        }
    };
    on_b.wait(present(4242), "awareness from the other process")
        .await;
    // Someone joining B later is told too (a query on load, or B's table).
    let late = TestClient::connect(&b.url("room")).await;
    late.wait(present(4242), "awareness for a late joiner")
        .await;
    on_a.close();
    on_b.wait(
        |s, _| {
            s.awareness
                .iter()
                .rev()
                .find(|e| e.client == 4242)
                .is_some_and(|e| e.state == "null")
        },
        "the removal after the client left",
    )
    .await;
    // Issue 13 item 11: a process that shuts down tells the others its clients left, rather
    // than leaving their cursors on screen until they expire (30 s, beyond this wait).
    let staying = TestClient::connect(&a.url("room")).await;
    staying.set_awareness(4343, 1, r#"{"user":"grace"}"#);
    on_b.wait(present(4343), "the second client's awareness")
        .await;
    assert!(a.terminate().await.success());
    on_b.wait(
        |s, _| {
            s.awareness
                .iter()
                .rev()
                .find(|e| e.client == 4343)
                .is_some_and(|e| e.state == "null")
        },
        "the removal when the other process shut down",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counter_increments_from_both_processes_sum_exactly() {
    let Some(db) = database("cluster_values").await else {
        return;
    };
    let prefix = unique("values");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let url = |s: &binary::Server| format!("{}?plait-values=1", s.url("counted"));
    let ca = TestClient::connect(&url(&a)).await;
    let cb = TestClient::connect(&url(&b)).await;
    for _ in 0..25 {
        for c in [&ca, &cb] {
            c.send_op(Op {
                name: "clicks".into(),
                action: Action::Increment(1),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ca.wait_value("clicks", serde_json::json!(50)).await;
    cb.wait_value("clicks", serde_json::json!(50)).await;
    // And it stays exact: no more arrives later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ca.seen.lock().unwrap().value("clicks"),
        Some(serde_json::json!(50))
    );
}

/// Two processes sharing one PostgreSQL store increment the same counters over HTTP at the
/// same time. Each stores its merged state with `put_values`, which merges it with what the
/// other stored under the row's lock, so after both stop a fresh process reads exactly the
/// sum. With the bus (the deployed setup, where states also cross by Redis) and without it
/// (only the store's merge keeps the sum; a replacing store keeps one process's part).
async fn concurrent_http_increments_sum_exactly_after_a_restart(with_bus: bool) {
    const WORKERS_PER_PROCESS: usize = 3;
    const PER_WORKER: u64 = 12;
    let name = if with_bus {
        "cluster_put"
    } else {
        "cluster_put_nobus"
    };
    let Some(db) = database(name).await else {
        return;
    };
    let prefix = unique(name);
    let launch = || async {
        if with_bus {
            start(&db, SHARED_REDIS, &prefix, &[]).await
        } else {
            binary::Server::start(&db, &[]).await
        }
    };
    let servers = [
        std::sync::Arc::new(launch().await),
        std::sync::Arc::new(launch().await),
    ];
    // Both load the room before anyone writes, so neither learns the other's increments from
    // the store at load time.
    for s in &servers {
        assert_eq!(s.json("GET", "/api/rooms/tally/values", None).await.0, 200);
    }
    let mut tasks = Vec::new();
    for server in &servers {
        for _ in 0..WORKERS_PER_PROCESS {
            let server = server.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_WORKER {
                    for (path, body) in [
                        ("counters/hits", serde_json::json!({"add": 1})),
                        (
                            "counters/net",
                            serde_json::json!({"add": 1, "kind": "pncounter"}),
                        ),
                    ] {
                        let (status, body) = server
                            .json("POST", &format!("/api/rooms/tally/{path}"), Some(body))
                            .await;
                        assert_eq!(status, 200, "{path}: {body}");
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for server in servers {
        let server = std::sync::Arc::into_inner(server).expect("no task holds it");
        assert!(server.terminate().await.success());
    }
    let total = 2 * WORKERS_PER_PROCESS as u64 * PER_WORKER;
    let fresh = binary::Server::start(&db, &[]).await;
    let (status, values) = fresh.json("GET", "/api/rooms/tally/values", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        values["hits"]["value"],
        serde_json::json!(total),
        "{values}"
    );
    assert_eq!(values["net"]["value"], serde_json::json!(total), "{values}");
    fresh.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http_increments_on_two_processes_survive_a_restart_exactly() {
    concurrent_http_increments_sum_exactly_after_a_restart(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http_increments_on_two_processes_without_the_bus_survive_a_restart_exactly() {
    concurrent_http_increments_sum_exactly_after_a_restart(false).await;
}

/// A Redis of our own on a free port (no persistence), so the shared one stays untouched.
struct OwnRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis { port, child: None };
        if !r.up().await {
            assert!(!pg::required(), "redis-server is required");
            eprintln!("SKIPPED: redis-server not found");
            return None;
        }
        Some(r)
    }

    async fn up(&mut self) -> bool {
        let Ok(child) = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    async fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn metric_is(server: &binary::Server, line: &str, within: Duration) {
    let started = Instant::now();
    loop {
        if server
            .get("/metrics")
            .await
            .is_some_and(|m| m.contains(line))
        {
            return;
        }
        assert!(
            started.elapsed() < within,
            "metrics never showed {line}: {:?}",
            server.get("/metrics").await.map(|m| m
                .lines()
                .filter(|l| l.contains("bus"))
                .collect::<Vec<_>>()
                .join("\n"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_falls_back_to_the_store_and_recovers() {
    if !redis_available(6379) {
        return;
    }
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let Some(db) = pg::fresh_database("cluster_outage").await else {
        return;
    };
    let prefix = unique("outage");
    let poll = ["--bus-fallback-poll-ms", "300"];
    let a = start(&db, &redis.url(), &prefix, &poll).await;
    let b = start(&db, &redis.url(), &prefix, &poll).await;
    metric_is(&a, "plait_bus_up 1", Duration::from_secs(10)).await;
    metric_is(&b, "plait_bus_up 1", Duration::from_secs(10)).await;
    let ca = TestClient::connect(&a.url("doc")).await;
    let cb = TestClient::connect(&b.url("doc")).await;
    let mut total = type_randomly(&[&ca, &cb], 20, 1).await;
    let live = converge(&[&ca, &cb], total, Duration::from_secs(10)).await;
    eprintln!("bus up: converged in {live:?}");

    redis.down().await;
    metric_is(&a, "plait_bus_up 0", Duration::from_secs(10)).await;
    metric_is(&b, "plait_bus_up 0", Duration::from_secs(10)).await;
    let ready = a.get("/readyz").await.unwrap();
    assert!(ready.contains("bus down"), "{ready}");
    for round in 0..5 {
        total += type_randomly(&[&ca, &cb], 5, 10 + round).await;
        let took = converge(&[&ca, &cb], total, Duration::from_secs(5)).await;
        eprintln!("bus down: round {round} converged in {took:?}");
        assert!(
            took < Duration::from_millis(300 * 4),
            "polling should deliver within a few fallback intervals, took {took:?}"
        );
    }

    assert!(redis.up().await, "redis restarts");
    metric_is(&a, "plait_bus_up 1", Duration::from_secs(15)).await;
    metric_is(&b, "plait_bus_up 1", Duration::from_secs(15)).await;
    total += type_randomly(&[&ca, &cb], 20, 99).await;
    let took = converge(&[&ca, &cb], total, Duration::from_secs(10)).await;
    eprintln!("bus back: converged in {took:?}");
    let ready = a.get("/readyz").await.unwrap();
    assert!(!ready.contains("bus down"), "{ready}");
    // Nothing was lost: a fresh client reads it all from the store.
    let fresh = TestClient::connect(&b.url("doc")).await;
    fresh.wait_text(&ca.text()).await;
}

fn covers(have: &StateVector, need: &StateVector) -> bool {
    need.iter()
        .all(|(client, clock)| have.get(client) >= *clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_process_loses_nothing_and_its_clients_move() {
    let Some(db) = database("cluster_kill").await else {
        return;
    };
    let prefix = unique("kill");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b_url = b.url("doc");
    let observer = TestClient::connect(&b_url).await;
    let a_url = a.url("doc");
    let on_a: Vec<TestClient> =
        futures_util::future::join_all((0..2).map(|_| TestClient::connect(&a_url))).await;
    let on_b = TestClient::connect(&b_url).await;
    on_a[0].set_awareness(777, 1, r#"{"user":"doomed"}"#);
    observer
        .wait(
            |s, _| s.awareness.iter().any(|e| e.client == 777),
            "awareness of a client of A",
        )
        .await;
    let typing = async {
        for i in 0.. {
            for (w, c) in on_a.iter().chain([&on_b]).enumerate() {
                c.insert(0, &format!("{w}.{i} "));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(700), typing).await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = observer.doc.transact().state_vector();
    // A's clients reconnect to B with what they have, and everyone converges.
    let moved: Vec<TestClient> = futures_util::future::join_all(
        on_a.iter()
            .map(|c| TestClient::connect_with_doc(&b_url, c.doc.clone())),
    )
    .await;
    let all: Vec<&TestClient> = moved.iter().chain([&on_b, &observer]).collect();
    let len = moved[0]
        .text()
        .chars()
        .count()
        .max(on_b.text().chars().count());
    let started = Instant::now();
    loop {
        let texts: Vec<String> = all.iter().map(|c| c.text()).collect();
        if texts.iter().all(|t| *t == texts[0]) && texts[0].chars().count() >= len {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no convergence"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The crash check: everything the observer received is in the store.
    let c = binary::Server::start(&db, &[]).await;
    let fresh = TestClient::connect(&c.url("doc")).await;
    let stored = fresh.doc.transact().state_vector();
    assert!(
        covers(&stored, &seen),
        "an update the observer received is not in the store"
    );
    // The dead process's awareness expires on B (nobody can announce it).
    let started = Instant::now();
    loop {
        let gone = observer
            .seen
            .lock()
            .unwrap()
            .awareness
            .iter()
            .rev()
            .find(|e| e.client == 777)
            .is_some_and(|e| e.state == "null");
        if gone {
            eprintln!(
                "awareness of the killed process's client expired after {:?}",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "awareness of the killed process's client never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_hundred_rooms_converge_and_latency() {
    let Some(db) = database("cluster_three").await else {
        return;
    };
    let prefix = unique("three");
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(start(&db, SHARED_REDIS, &prefix, &[]).await);
    }
    const ROOMS: usize = 100;
    // Per room: two clients on one process (writer, same-process observer) and one on the
    // next process (cross-process observer); the process varies with the room.
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let name = format!("room-{r}");
        let home = &servers[r % 3];
        let away = &servers[(r + 1) % 3];
        let writer = TestClient::connect(&home.url(&name)).await;
        let same = TestClient::connect(&home.url(&name)).await;
        let cross = TestClient::connect(&away.url(&name)).await;
        rooms.push((writer, same, cross));
    }
    // Convergence: everyone types in every room at once.
    let mut lens = Vec::new();
    for (i, (w, s, c)) in rooms.iter().enumerate() {
        lens.push(type_randomly(&[w, s, c], 5, i as u64 + 7).await);
    }
    for ((w, s, c), len) in rooms.iter().zip(&lens) {
        converge(&[w, s, c], *len, Duration::from_secs(30)).await;
    }
    // Latency: one marker at a time, time until each observer has it.
    let mut same_lat = Vec::new();
    let mut cross_lat = Vec::new();
    for round in 0..5 {
        for (w, s, c) in &rooms {
            let marker = format!("<{round}>");
            let sent = Instant::now();
            w.insert(0, &marker);
            let (mut t_same, mut t_cross) = (None, None);
            while t_same.is_none() || t_cross.is_none() {
                if t_same.is_none() && s.text().starts_with(&marker) {
                    t_same = Some(sent.elapsed());
                }
                if t_cross.is_none() && c.text().contains(&marker) {
                    t_cross = Some(sent.elapsed());
                }
                assert!(sent.elapsed() < Duration::from_secs(10), "marker lost");
                tokio::task::yield_now().await;
            }
            same_lat.push(t_same.unwrap());
            cross_lat.push(t_cross.unwrap());
        }
    }
    same_lat.sort();
    cross_lat.sort();
    eprintln!(
        "LATENCY same-process p50 {:?} p99 {:?}; cross-process p50 {:?} p99 {:?} ({} samples each)",
        percentile(&same_lat, 0.5),
        percentile(&same_lat, 0.99),
        percentile(&cross_lat, 0.5),
        percentile(&cross_lat, 0.99),
        same_lat.len()
    );
}

/// Bus injection: garbage and a forged update with a future seq on a room's channel. Neither
/// crashes a process nor reaches a client (the forged one makes the room catch up from the
/// store, which does not have it), and the room goes on converging.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poisoned_bus_messages_are_dropped() {
    let Some(db) = database("cluster_poison").await else {
        return;
    };
    let prefix = unique("poison");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let ca = TestClient::connect(&a.url("doc")).await;
    let cb = TestClient::connect(&b.url("doc")).await;
    ca.insert(0, "ok ");
    converge(&[&ca, &cb], 3, Duration::from_secs(10)).await;
    let forged = {
        use plait_protocol::lib0::{write_buf, write_str, write_var};
        let doc = yrs::Doc::with_client_id(99);
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        yrs::Text::insert(&text, &mut txn, 0, "EVIL");
        let update = txn.encode_update_v1();
        let mut out = vec![1u8];
        out.extend_from_slice(&42u64.to_le_bytes());
        write_str(&mut out, "doc");
        out.push(1);
        write_var(&mut out, 1_000_000);
        write_var(&mut out, 1_000_000);
        write_var(&mut out, 1);
        write_buf(&mut out, &update);
        out
    };
    let channel = format!("{prefix}:room:doc");
    let payloads: Vec<Vec<u8>> = vec![
        vec![0xff; 64],
        vec![
            1, 0, 0, 0, 0, 0, 0, 0, 0, 3, b'd', b'o', b'c', 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        forged,
    ];
    for payload in payloads {
        let mut child = std::process::Command::new("redis-cli")
            .args(["-x", "PUBLISH", &channel])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-cli");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&payload).unwrap();
        assert!(child.wait().unwrap().success());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cb.insert(0, "still ");
    converge(&[&ca, &cb], 9, Duration::from_secs(10)).await;
    assert!(!ca.text().contains("EVIL") && !cb.text().contains("EVIL"));
    for s in [&a, &b] {
        assert!(s.get("/healthz").await.is_some(), "a process died");
    }
    let metrics = a.get("/metrics").await.unwrap();
    assert!(metrics.contains("plait_bus_invalid_total"), "{metrics}");
}

/// Issue 15: a Hocuspocus provider on process A and a y-websocket client on process B edit one
/// room, both ways, and the provider's edit is confirmed (stored) by A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hocuspocus_provider_and_a_y_websocket_client_on_two_processes_share_a_room() {
    use futures_util::{SinkExt, StreamExt};
    use plait_protocol::hocuspocus::{self as hp, ServerFrame, ServerMessage};
    use plait_protocol::SyncMessage;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use yrs::updates::decoder::Decode;
    use yrs::updates::encoder::Encode;
    use yrs::{GetString, Text};

    let Some(db) = database("cluster_hocuspocus").await else {
        return;
    };
    let prefix = unique("hocuspocus");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let on_b = TestClient::connect(&b.url("shared")).await;
    let (ws, _) = tokio_tungstenite::connect_async(a.url("hocuspocus"))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let binary = |b: bytes::Bytes| WsMessage::Binary(b);
    sink.send(binary(hp::encode_token("shared", "", Some("4.8.0"))))
        .await
        .unwrap();
    let sv = doc.transact().state_vector().encode_v1();
    sink.send(binary(hp::encode_sync_step1("shared", &sv)))
        .await
        .unwrap();
    let update = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "from hocuspocus on A");
        txn.encode_update_v1()
    };
    sink.send(binary(hp::encode_update("shared", &update)))
        .await
        .unwrap();
    on_b.wait_text("from hocuspocus on A").await;
    on_b.insert(0, "B: ");
    let mut confirmed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(confirmed && text.get_string(&doc.transact()) == "B: from hocuspocus on A") {
        let frame = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the y-websocket edit and the sync status in time")
            .expect("socket open")
            .unwrap();
        let WsMessage::Binary(data) = frame else {
            continue;
        };
        match ServerFrame::decode(&data, &plait_protocol::Limits::default()).unwrap() {
            ServerFrame::Document {
                message: ServerMessage::SyncStatus(true),
                ..
            } => confirmed = true,
            // As a provider does: the server's step 1 is answered with a step 2, whose
            // confirmation covers the update sent before it.
            ServerFrame::Document {
                message: ServerMessage::Sync(SyncMessage::Step1(sv)),
                ..
            } => {
                let sv = yrs::StateVector::decode_v1(&sv).unwrap();
                let step2 = doc.transact().encode_state_as_update_v1(&sv);
                sink.send(binary(hp::encode_sync_step2("shared", &step2)))
                    .await
                    .unwrap();
            }
            ServerFrame::Document {
                message: ServerMessage::Sync(SyncMessage::Step2(u) | SyncMessage::Update(u)),
                ..
            } => {
                let u = yrs::Update::decode_v1(&u).unwrap();
                doc.transact_mut().apply_update(u).unwrap();
            }
            _ => {}
        }
    }
}

/// The change feed across processes and a restart: a consumer follows the room on B while
/// clients write on A and B; A is SIGKILLed and restarted; the consumer, reconnecting to A
/// with its last id, gets every seq exactly once, in order, and the updates rebuild the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_change_feed_is_gap_free_across_processes_and_a_restart() {
    let Some(db) = database("cluster_feed").await else {
        return;
    };
    let prefix = unique("feed");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let on_a = TestClient::connect(&a.url("fed")).await;
    let on_b = TestClient::connect(&b.url("fed")).await;
    for i in 0..10 {
        on_a.insert(0, &format!("a{i} "));
        on_b.insert(0, &format!("b{i} "));
    }
    converge(&[&on_a, &on_b], 60, Duration::from_secs(10)).await;
    // Updates of one batch may share a row: the room's seq says how many events there are.
    async fn seq(server: &binary::Server) -> u64 {
        server.json("GET", "/api/rooms/fed", None).await.1["seq"]
            .as_u64()
            .unwrap()
    }
    let stored = seq(&b).await;
    let b_addr = format!("127.0.0.1:{}", b.port).parse().unwrap();
    let first = support::sse::read_events(
        b_addr,
        "/api/rooms/fed/changes?since=0",
        None,
        stored as usize,
    )
    .await;
    a.kill();
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let again = TestClient::connect(&a.url("fed")).await;
    again.wait_text(&on_b.text()).await;
    again.insert(0, "after ");
    on_b.wait_text(&again.text()).await;
    let last = first.last().unwrap().0;
    let now = seq(&a).await;
    assert!(now > last);
    let a_addr = format!("127.0.0.1:{}", a.port).parse().unwrap();
    let rest = support::sse::read_events(
        a_addr,
        "/api/rooms/fed/changes",
        Some(last),
        (now - last) as usize,
    )
    .await;
    let ids: Vec<u64> = first.iter().chain(&rest).map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=now).collect::<Vec<u64>>(),
        "ids across the restart"
    );
    let rebuilt = yrs::Doc::new();
    for (_, data) in first.iter().chain(&rest) {
        use base64::Engine;
        let update = base64::engine::general_purpose::STANDARD
            .decode(data["update"].as_str().unwrap())
            .unwrap();
        plait_server::docs::apply(&rebuilt, &update).unwrap();
    }
    let text = {
        use yrs::GetString;
        rebuilt
            .get_or_insert_text("t")
            .get_string(&rebuilt.transact())
    };
    assert_eq!(text, on_b.text());
    a.kill();
    b.kill();
}

/// A raw Hocuspocus provider (v4, with a session key) of one document on one process.
struct Hocus {
    address: String,
    sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::Message,
    >,
    stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
}

impl Hocus {
    /// Attaches `address` and waits for its `Authenticated` (the room is loaded then, and
    /// subscribed to the bus).
    async fn attach(server: &binary::Server, address: &str) -> Self {
        use futures_util::{SinkExt, StreamExt};
        use plait_protocol::hocuspocus as hp;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let (ws, _) = tokio_tungstenite::connect_async(server.url("hocuspocus"))
            .await
            .unwrap();
        let (mut sink, stream) = ws.split();
        sink.send(WsMessage::Binary(hp::encode_token(
            address,
            "",
            Some("4.8.0"),
        )))
        .await
        .unwrap();
        let mut h = Hocus {
            address: address.to_owned(),
            sink,
            stream,
        };
        let authenticated =
            |m: &hp::ServerMessage| matches!(m, hp::ServerMessage::Authenticated(_));
        h.next(authenticated, Duration::from_secs(10))
            .await
            .expect("authenticated");
        h
    }

    async fn send_stateless(&mut self, payload: &str) {
        use futures_util::SinkExt;
        use plait_protocol::hocuspocus as hp;
        let frame = hp::encode_stateless(&self.address, payload);
        self.sink
            .send(tokio_tungstenite::tungstenite::Message::Binary(frame))
            .await
            .unwrap();
    }

    /// The next message of its document for which `pred` holds, within `within`.
    async fn next(
        &mut self,
        pred: impl Fn(&plait_protocol::hocuspocus::ServerMessage) -> bool,
        within: Duration,
    ) -> Option<plait_protocol::hocuspocus::ServerMessage> {
        use futures_util::StreamExt;
        use plait_protocol::hocuspocus::ServerFrame;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(frame) => frame.expect("socket open").unwrap(),
            };
            let tokio_tungstenite::tungstenite::Message::Binary(data) = frame else {
                continue;
            };
            match ServerFrame::decode(&data, &plait_protocol::Limits::default()).unwrap() {
                ServerFrame::Document { address, message }
                    if address.as_str() == self.address && pred(&message) =>
                {
                    return Some(message)
                }
                _ => {}
            }
        }
    }

    /// The next stateless payload of its document within `within`.
    async fn stateless(&mut self, within: Duration) -> Option<String> {
        use plait_protocol::hocuspocus::ServerMessage;
        match self
            .next(|m| matches!(m, ServerMessage::Stateless(_)), within)
            .await?
        {
            ServerMessage::Stateless(p) => Some(p),
            _ => unreachable!(),
        }
    }
}

/// Stateless messages between Hocuspocus providers of one room on two processes, both ways,
/// through the bus: not echoed to their sender, not delivered to another room, and still
/// relayed on the sender's own process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stateless_messages_cross_processes() {
    let Some(db) = database("cluster_stateless").await else {
        return;
    };
    let prefix = unique("stateless");
    let a = start(&db, SHARED_REDIS, &prefix, &[]).await;
    let b = start(&db, SHARED_REDIS, &prefix, &[]).await;
    for s in [&a, &b] {
        metric_is(s, "plait_bus_up 1", Duration::from_secs(10)).await;
    }
    let mut on_a = Hocus::attach(&a, "chat\0a").await;
    let mut also_on_a = Hocus::attach(&a, "chat\0a2").await;
    let mut on_b = Hocus::attach(&b, "chat\0b").await;
    let mut elsewhere = Hocus::attach(&b, "other\0b").await;
    let quick = Duration::from_secs(5);
    on_a.send_stateless(r#"{"cursor":1}"#).await;
    assert_eq!(
        on_b.stateless(quick).await.as_deref(),
        Some(r#"{"cursor":1}"#)
    );
    assert_eq!(
        also_on_a.stateless(quick).await.as_deref(),
        Some(r#"{"cursor":1}"#)
    );
    on_b.send_stateless("from b").await;
    assert_eq!(on_a.stateless(quick).await.as_deref(), Some("from b"));
    assert_eq!(also_on_a.stateless(quick).await.as_deref(), Some("from b"));
    // Nothing else arrives: no echo to either sender, nothing for the other room.
    let short = Duration::from_millis(500);
    assert_eq!(on_a.stateless(short).await, None);
    assert_eq!(on_b.stateless(short).await, None);
    assert_eq!(elsewhere.stateless(short).await, None);
    let metrics = a.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"plait_bus_messages_total{dir="out",kind="stateless"} 1"#),
        "{metrics}"
    );
}
