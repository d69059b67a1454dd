//! Replays a real editing trace (automerge-paper: 182,315 inserts and 77,463 deletes) through
//! the real binary as one client's edits; a late joiner, and the room after a restart, must
//! hold exactly the trace's final text.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;

use std::io::Read;
use std::time::{Duration, Instant};

use plait_protocol::message::encode_update;
use support::TestClient;
use yrs::{Doc, GetString, Text, Transact};

struct Trace {
    end: String,
    patches: Vec<(u32, u32, String)>,
}

fn load_trace(name: &str) -> Trace {
    let path = format!(
        "{}/../shared/data/editing-traces/{name}.json.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut json = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut json)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut patches = Vec::new();
    for txn in v["txns"].as_array().unwrap() {
        for p in txn["patches"].as_array().unwrap() {
            patches.push((
                p[0].as_u64().unwrap() as u32,
                p[1].as_u64().unwrap() as u32,
                p[2].as_str().unwrap().to_owned(),
            ));
        }
    }
    Trace {
        end: v["endContent"].as_str().unwrap().to_owned(),
        patches,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automerge_paper_trace_survives_the_server_and_a_restart() {
    let trace = load_trace("sequential-automerge-paper");
    // Trace positions count code points and yrs counts UTF-8 bytes by default; this trace is
    // ASCII, where the two agree.
    assert!(trace.end.is_ascii() && trace.patches.iter().all(|p| p.2.is_ascii()));
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    // The replay is one client sending 259,778 updates as fast as it can, far beyond the
    // default per-connection rate (which would throttle it, correctly, to 300 per second).
    let unthrottled = [
        "--max-messages-per-sec",
        "100000000",
        "--max-bytes-per-sec",
        "10000000000",
    ];
    let server = binary::Server::start(&store, &unthrottled).await;
    let url = server.url("paper");
    let writer = TestClient::connect_with_doc(&url, Doc::new()).await;
    let text = writer.doc.get_or_insert_text("t");
    let started = Instant::now();
    for (pos, del, ins) in &trace.patches {
        let update = {
            let mut txn = writer.doc.transact_mut();
            if *del > 0 {
                text.remove_range(&mut txn, *pos, *del);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, *pos, ins);
            }
            txn.encode_update_v1()
        };
        writer.send(encode_update(&update));
    }
    assert_eq!(
        text.get_string(&writer.doc.transact()),
        trace.end,
        "the client replayed the trace"
    );
    let late = TestClient::connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while late.text() != trace.end {
        assert!(Instant::now() < deadline, "late joiner never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} edits replayed and seen by a late joiner in {:?}",
        trace.patches.len(),
        started.elapsed()
    );
    let status = server.terminate().await;
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    let server = binary::Server::start(&store, &[]).await;
    let after = TestClient::connect(&server.url("paper")).await;
    assert_eq!(after.text(), trace.end, "the room after a restart");
    server.kill();
}
