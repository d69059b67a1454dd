//! End-to-end tests of the server over real sockets, with yrs clients.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use plait_protocol::lib0::{write_str, write_var};
use plait_protocol::message::{encode_sync_step1, encode_update};
use plait_store::{MemoryStore, SnapshotKind, SqliteStore, Store, SyncMode};
use support::{TestClient, TestServer};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{Doc, Transact};

#[tokio::test]
async fn late_joiner_gets_the_full_state() {
    let server = TestServer::start().await;
    let a = TestClient::connect(&server.url("room")).await;
    a.insert(0, "hello");
    a.insert(5, " world");
    let b = TestClient::connect(&server.url("room")).await;
    b.wait_text("hello world").await;
    // A different room is a different document.
    let c = TestClient::connect(&server.url("other")).await;
    assert_eq!(c.text(), "");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_random_edits_converge() {
    let server = TestServer::start().await;
    let url = server.url("converge");
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(TestClient::connect(&url).await);
    }
    // A tiny deterministic generator: each client inserts at pseudo-random positions.
    let mut seed = 0x2545_f491_u64;
    for round in 0..40 {
        for (i, c) in clients.iter().enumerate() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = c.text().chars().count() as u64;
            let at = if len == 0 { 0 } else { seed % (len + 1) };
            c.insert(at as u32, &format!("{i}{}", round % 10));
        }
    }
    let expected_len = 5 * 40 * 2;
    for c in &clients {
        c.wait(|_, _| c.text().len() == expected_len, "all edits to arrive")
            .await;
    }
    let first = clients[0].text();
    for c in &clients {
        assert_eq!(c.text(), first);
    }
    let late = TestClient::connect(&url).await;
    late.wait_text(&first).await;
    server.stop().await;
}

#[tokio::test]
async fn awareness_is_echoed_updated_and_removed_on_close() {
    let server = TestServer::start().await;
    let url = server.url("presence");
    let a = TestClient::connect(&url).await;
    let b = TestClient::connect(&url).await;
    a.set_awareness(11, 1, r#"{"user":"a"}"#);
    // The sender gets its own state back (the JS client's watchdog depends on it) and so do
    // the others.
    for c in [&a, &b] {
        c.wait(
            |s, _| s.awareness.iter().any(|e| e.client == 11 && e.clock == 1),
            "awareness add",
        )
        .await;
    }
    a.set_awareness(11, 2, r#"{"user":"a","cursor":3}"#);
    b.wait(
        |s, _| s.awareness.iter().any(|e| e.client == 11 && e.clock == 2),
        "awareness update",
    )
    .await;
    // A newcomer receives the current states on join.
    let c = TestClient::connect(&url).await;
    c.wait(
        |s, _| {
            s.awareness
                .iter()
                .any(|e| e.client == 11 && e.state.contains("cursor"))
        },
        "awareness on join",
    )
    .await;
    // b may not speak for a's client id.
    b.set_awareness(11, 9, r#"{"user":"mallory"}"#);
    a.close();
    b.wait(
        |s, _| s.awareness.iter().any(|e| e.client == 11 && e.is_removal()),
        "awareness removal",
    )
    .await;
    assert!(!b
        .seen
        .lock()
        .unwrap()
        .awareness
        .iter()
        .any(|e| e.state.contains("mallory")));
    server.stop().await;
}

#[tokio::test]
async fn query_awareness_is_answered() {
    let server = TestServer::start().await;
    let url = server.url("q");
    let a = TestClient::connect(&url).await;
    a.set_awareness(5, 1, "{}");
    a.wait(|s, _| !s.awareness.is_empty(), "echo").await;
    let b = TestClient::connect(&url).await;
    let before = b.seen.lock().unwrap().awareness.len();
    b.send(Bytes::from_static(&[3]));
    b.wait(|s, _| s.awareness.len() > before, "query answer")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn an_update_is_committed_before_anyone_receives_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let store = Arc::new(
        SqliteStore::open(path.to_str().unwrap(), SyncMode::Full)
            .await
            .unwrap(),
    );
    let server = TestServer::start_with(store.clone(), |_| {}).await;
    let url = server.url("durable");
    let a = TestClient::connect(&url).await;
    let b = TestClient::connect(&url).await;
    for i in 0..20 {
        a.insert(i, "x");
        let expected = "x".repeat(i as usize + 1);
        b.wait_text(&expected).await;
        // b has it, so the store must have it already.
        let stored = store.load_room("durable").await.unwrap();
        let doc = Doc::new();
        {
            use yrs::updates::decoder::Decode;
            let mut txn = doc.transact_mut();
            for u in stored.updates {
                txn.apply_update(yrs::Update::decode_v1(&u.data).unwrap())
                    .unwrap();
            }
        }
        let text = doc.get_or_insert_text("t");
        assert_eq!(yrs::GetString::get_string(&text, &doc.transact()), expected);
    }
    server.stop().await;
}

#[tokio::test]
async fn rooms_survive_a_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let open = || support::sqlite_store(&path);
    let server = TestServer::start_with(open().await, |c| c.compact_after_updates = 10).await;
    let a = TestClient::connect(&server.url("r")).await;
    let mut expected = String::new();
    for i in 0..35u32 {
        let s = format!("{}", i % 10);
        a.insert(i, &s);
        expected.push_str(&s);
    }
    let b = TestClient::connect(&server.url("r")).await;
    b.wait_text(&expected).await;
    server.stop().await;
    let store = open().await;
    let stored = store.load_room("r").await.unwrap();
    assert!(stored.snapshot.is_some(), "compaction wrote a snapshot");
    assert!(
        stored.updates.len() < 10,
        "compaction removed the merged log"
    );
    assert!(
        stored.updates.is_empty(),
        "shutdown compacted the rest, so a restart loads one row"
    );
    let server = TestServer::start_with(store, |_| {}).await;
    let c = TestClient::connect(&server.url("r")).await;
    assert_eq!(c.text(), expected);
    server.stop().await;
}

/// A big document is not re-encoded every `--compact-after-updates` edits: the log must also
/// reach half the snapshot's size, or 16 times the row count.
#[tokio::test]
async fn compaction_waits_for_the_log_to_be_worth_it() {
    let store: Arc<dyn plait_store::Store> = Arc::new(MemoryStore::default());
    let server = TestServer::start_with(store.clone(), |c| c.compact_after_updates = 10).await;
    let a = TestClient::connect(&server.url("big")).await;
    let b = TestClient::connect(&server.url("big")).await;
    // Each edit waits for the one before it to arrive, so each is its own commit and row (a
    // room merges the edits that wait for one write into one row).
    let edit = |at: u32, s: String| {
        let (a, b) = (&a, &b);
        async move {
            let len = b.text().len() + s.len();
            a.insert(at, &s);
            b.wait(|_, _| b.text().len() == len, "the edit").await;
        }
    };
    // 20 updates of 5 KB: compacted on the way (the first snapshot is small).
    for i in 0..20u32 {
        edit(i * 5_000, "x".repeat(5_000)).await;
    }
    let first = store.load_room("big").await.unwrap();
    let snapshot_seq = first.snapshot.as_ref().expect("compacted").up_to_seq;
    // 50 one-byte edits: past 10 updates, but far from half of a 100 KB snapshot.
    for i in 0..50u32 {
        edit(i, "y".into()).await;
    }
    let later = store.load_room("big").await.unwrap();
    assert_eq!(
        later.snapshot.unwrap().up_to_seq,
        snapshot_seq,
        "re-encoded for tiny edits"
    );
    assert!(later.updates.len() >= 50);
    // Past 16 × 10 rows the log is merged anyway.
    for i in 0..120u32 {
        edit(i, "z".into()).await;
    }
    let last = store.load_room("big").await.unwrap();
    assert!(last.snapshot.unwrap().up_to_seq > snapshot_seq);
    assert!(last.updates.len() < 160);
    server.stop().await;
}

/// An unloading room compacts its log (so the next load reads one row) and keeps the same
/// state as a restore point: both snapshots cover the same seq and hold the same bytes.
#[tokio::test]
async fn unloading_compacts_and_keeps_a_restore_point() {
    let store: Arc<dyn plait_store::Store> = Arc::new(MemoryStore::default());
    let server = TestServer::start_with(store.clone(), |c| c.room_idle_ms = 100).await;
    let a = TestClient::connect(&server.url("leaving")).await;
    for i in 0..5u32 {
        a.insert(i, "q");
    }
    let b = TestClient::connect(&server.url("leaving")).await;
    b.wait_text("qqqqq").await;
    a.close();
    b.close();
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let snapshots = loop {
        let list = store.list_snapshots("leaving").await.unwrap();
        if list.iter().any(|s| s.kind == SnapshotKind::History) {
            break list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no restore point at unload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let stored = store.load_room("leaving").await.unwrap();
    assert!(stored.updates.is_empty(), "the log was compacted at unload");
    let compaction = stored.snapshot.expect("a compaction snapshot");
    let history = snapshots
        .iter()
        .find(|s| s.kind == SnapshotKind::History)
        .unwrap();
    let history = store
        .load_snapshot("leaving", history.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.up_to_seq, compaction.up_to_seq);
    assert_eq!(history.data, compaction.data);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_going_away() {
    let server = TestServer::start().await;
    let a = TestClient::connect(&server.url("bye")).await;
    server.stop().await;
    let (code, _) = a.wait_closed().await;
    assert_eq!(code, 1001);
}

/// Waits until `victim` is closed, asserts the code, and checks an innocent client in the same
/// room still syncs.
async fn assert_only_offender_closed(
    server: &TestServer,
    room: &str,
    offender: &TestClient,
    code: u16,
) {
    let (got, reason) = offender.wait_closed().await;
    assert_eq!(got, code, "close reason {reason:?}");
    let innocent = TestClient::connect(&server.url(room)).await;
    let other = TestClient::connect(&server.url(room)).await;
    innocent.insert(0, "still fine");
    other.wait_text("still fine").await;
}

#[tokio::test]
async fn allocation_bomb_closes_only_the_offender() {
    let server = TestServer::start().await;
    let evil = TestClient::connect(&server.url("bomb")).await;
    // Sync step 1 whose 5-byte state vector declares 2^32 entries.
    evil.send(Bytes::from_static(&[
        0x00, 0x00, 0x05, 0x80, 0x80, 0x80, 0x80, 0x10,
    ]));
    assert_only_offender_closed(&server, "bomb", &evil, 1007).await;
    server.stop().await;
}

#[tokio::test]
async fn nesting_bomb_closes_only_the_offender() {
    let server = TestServer::start().await;
    let evil = TestClient::connect(&server.url("deep")).await;
    // An Any array nested 7,000 deep in a map entry: about 14 KB that overflowed yrs's stack.
    let mut update = vec![1, 1];
    write_var(&mut update, 7);
    update.push(0);
    update.push(8 | 0x20);
    update.push(1);
    write_str(&mut update, "m");
    write_str(&mut update, "k");
    update.push(1);
    for _ in 0..7_000 {
        update.extend_from_slice(&[117, 1]);
    }
    update.extend_from_slice(&[126, 0]);
    evil.send(encode_update(&update));
    assert_only_offender_closed(&server, "deep", &evil, 1007).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_message_is_closed_with_1009() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.max_message_bytes = Some(64 * 1024);
    })
    .await;
    let evil = TestClient::connect(&server.url("big")).await;
    evil.send(Bytes::from(vec![0u8; 100 * 1024]));
    assert_only_offender_closed(&server, "big", &evil, 1009).await;
    server.stop().await;
}

/// Pins issue 14 item 6: with the default limits an offline client's 30 MiB backlog (its sync
/// step 2) syncs, and a fresh client receives it. The message cap was 4 MiB: the client was
/// closed with 1009, reconnected, resent it and was closed again, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_mib_offline_backlog_syncs_with_the_default_limits() {
    use yrs::{GetString, Text};
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |_| {}).await;
    let url = server.url("backlog");
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let chunk = "offline edit ".repeat(80_660); // about 1 MiB
    for i in 0..30 {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, i * chunk.len() as u32, &chunk);
    }
    let len = 30 * chunk.len();
    assert!(len > 30 << 20);
    let writer = TestClient::connect_with_doc(&url, doc).await;
    let reader = TestClient::connect(&url).await;
    reader
        .wait(
            |_, d| d.get_or_insert_text("t").len(&d.transact()) as usize == len,
            "the 30 MiB backlog at a fresh client",
        )
        .await;
    assert!(writer.is_open(), "the writer was closed");
    let t = reader.doc.get_or_insert_text("t");
    assert!(t
        .get_string(&reader.doc.transact())
        .ends_with("offline edit "));
    server.stop().await;
}

/// The frame-size refusal still exists by default: above the document cap (plus framing) a
/// message closes its sender with 1009, whatever it holds.
#[tokio::test]
async fn a_message_above_the_document_cap_is_closed_with_1009_by_default() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.max_document_bytes = 1 << 20;
    })
    .await;
    let evil = TestClient::connect(&server.url("cap")).await;
    evil.send(Bytes::from(vec![0u8; (1 << 20) + (128 << 10)]));
    assert_only_offender_closed(&server, "cap", &evil, 1009).await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_truncated_frames_close_only_the_offender() {
    let server = TestServer::start().await;
    for (i, junk) in [
        &[0x00, 0x02, 0x0e, 0x01][..],
        &[0x00, 0x07, 0x00][..],
        &[0x01, 0x05, 0x01, 0x01][..],
        &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ][..],
    ]
    .iter()
    .enumerate()
    {
        let room = format!("junk{i}");
        let evil = TestClient::connect(&server.url(&room)).await;
        evil.send(Bytes::copy_from_slice(junk));
        assert_only_offender_closed(&server, &room, &evil, 1007).await;
    }
    // Text frames and unknown message types are ignored, like the reference server does.
    let tolerated = TestClient::connect(&server.url("tolerated")).await;
    tolerated.send_raw(WsMessage::Text("hello".into()));
    tolerated.send(Bytes::from_static(&[0x7f, 0x00]));
    tolerated.insert(0, "ok");
    let b = TestClient::connect(&server.url("tolerated")).await;
    b.wait_text("ok").await;
    assert!(tolerated.is_open());
    server.stop().await;
}

#[tokio::test]
async fn updates_with_missing_dependencies_are_bounded() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.max_pending_bytes = 4 * 1024;
    })
    .await;
    let url = server.url("pending");
    // The sender's document fills after it connected, so only the updates it sends (all but
    // the first, whose absence leaves every later one pending) reach the server.
    let evil = TestClient::connect_with_doc(&url, Doc::with_client_id(999)).await;
    let full = evil.send_without_first_of(400, "abcdefghij");
    // The server asks the sender to resync with a sync step 1 once pending passes the cap,
    // instead of keeping it all; the sender answers with everything, which then applies.
    let watcher = TestClient::connect(&url).await;
    watcher
        .wait(
            |_, _| watcher.text().len() == full,
            "the resync to fill the gap",
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn slow_consumer_is_closed_not_waited_for() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.outbox_frames = 16;
    })
    .await;
    let url = server.url("slow");
    // A raw socket that never reads.
    let (mut slow, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let writer = TestClient::connect(&url).await;
    let reader = TestClient::connect(&url).await;
    // Big updates fill the slow socket's TCP buffers (several MB on loopback), then its outbox.
    let chunk = "y".repeat(64 * 1024);
    let n = 256u32;
    // Paced: the fast reader never has more than one frame queued; the slow one piles up.
    for i in 0..n {
        writer.insert(i * chunk.len() as u32, &chunk);
        let want = (i as usize + 1) * chunk.len();
        reader
            .wait(|_, _| reader.text().len() == want, "fast reader keeps up")
            .await;
    }
    assert!(writer.is_open() && reader.is_open());
    // The slow socket, read at last, ends with the slow-consumer close code.
    let code = tokio::time::timeout(support::WAIT, async {
        use futures_util::StreamExt;
        while let Some(Ok(m)) = slow.next().await {
            if let WsMessage::Close(Some(f)) = m {
                return Some(u16::from(f.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1013));
    let metrics = reqwest_metrics(&server).await;
    assert!(metrics.contains("plait_slow_consumer_closes_total"));
    server.stop().await;
}

async fn reqwest_metrics(server: &TestServer) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn sync_step1_is_answered_with_only_the_difference() {
    let server = TestServer::start().await;
    let url = server.url("diff");
    let a = TestClient::connect(&url).await;
    a.insert(0, "0123456789");
    let b = TestClient::connect(&url).await;
    b.wait_text("0123456789").await;
    // b already has everything: its step 1 must be answered with an empty diff.
    let doc_sv = {
        use yrs::updates::encoder::Encode;
        use yrs::ReadTxn;
        b.doc.transact().state_vector().encode_v1()
    };
    let before = b.seen.lock().unwrap().step2_count;
    b.send(encode_sync_step1(&doc_sv));
    b.wait(|s, _| s.step2_count > before, "second step 2").await;
    assert_eq!(b.text(), "0123456789");
    server.stop().await;
}

#[tokio::test]
async fn a_full_hub_unloads_an_idle_room_for_a_new_one() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.max_rooms = 2;
        c.room_idle_ms = 60_000;
    })
    .await;
    let a = TestClient::connect(&server.url("one")).await;
    a.insert(0, "kept");
    let b = TestClient::connect(&server.url("two")).await;
    a.close();
    // "one" is idle (its grace is a minute): it unloads to make room, and the newcomer waits
    // for that instead of being refused.
    let c = TestClient::connect(&server.url("three")).await;
    // No room is idle now: a fourth is refused with 1013 (try again later).
    let d = TestClient::connect_raw(&server.url("four"), Doc::new()).await;
    let (code, reason) = d.wait_closed().await;
    assert_eq!(code, 1013, "{reason}");
    // Once "three" is idle, "one" loads again from the store with what it had.
    c.close();
    let again = TestClient::connect(&server.url("one")).await;
    assert_eq!(again.text(), "kept");
    drop(b);
    server.stop().await;
}

/// The guid of the subdocument under `key` in map "m", if there is one.
fn subdoc_guid(doc: &Doc, key: &str) -> Option<String> {
    use yrs::{Map, Out};
    let map = doc.get_or_insert_map("m");
    let value = map.get(&doc.transact(), key);
    match value {
        Some(Out::YDoc(sub)) => Some(sub.guid().to_string()),
        _ => None,
    }
}

/// Issue 14 item 4: an update holding a subdocument (a `Y.Doc` inside a `Y.Map`) was closed
/// with 1007 and the client, reconnecting forever, never delivered its other edits. It is
/// accepted, relayed, stored and loaded again after a restart.
#[tokio::test]
async fn subdocuments_are_relayed_stored_and_reloaded() {
    use yrs::{Map, Options, Text};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let open = || support::sqlite_store(&path);
    let server = TestServer::start_with(open().await, |_| {}).await;
    let a = TestClient::connect(&server.url("s")).await;
    let b = TestClient::connect(&server.url("s")).await;
    let update = {
        let map = a.doc.get_or_insert_map("m");
        let text = a.doc.get_or_insert_text("t");
        let mut txn = a.doc.transact_mut();
        let sub = Doc::with_options(Options {
            guid: "sub-1".into(),
            ..Options::default()
        });
        map.insert(&mut txn, "doc", sub);
        text.insert(&mut txn, 0, "beside it");
        txn.encode_update_v1()
    };
    a.send(encode_update(&update));
    // The edit made after the subdocument arrives too: the writer was not locked out.
    a.insert(9, "!");
    b.wait(
        |_, d| subdoc_guid(d, "doc").as_deref() == Some("sub-1"),
        "the subdocument relayed",
    )
    .await;
    b.wait_text("beside it!").await;
    let closed = a.seen.lock().unwrap().closed.clone();
    assert_eq!(closed, None, "the writer was closed");
    server.stop().await;

    let server = TestServer::start_with(open().await, |_| {}).await;
    let c = TestClient::connect(&server.url("s")).await;
    assert_eq!(subdoc_guid(&c.doc, "doc").as_deref(), Some("sub-1"));
    assert_eq!(c.text(), "beside it!");
    server.stop().await;
}

/// Pins the web demo's two pages (issue #15): `/` (CodeMirror on y-websocket) and
/// `/tiptap.html` (Tiptap on Hocuspocus) are served from the embedded bundle as HTML, and
/// every script and stylesheet they name under `./assets/` is served with its content type
/// (a module script served as `application/octet-stream` would not run).
#[tokio::test]
async fn both_demo_pages_and_their_assets_are_served_with_their_content_types() {
    let server = TestServer::start().await;
    for page in ["/", "/tiptap.html"] {
        let (status, content_type, body) = get_text(&server, page).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(content_type, "text/html; charset=utf-8", "{page}");
        let assets: Vec<&str> = body
            .split("=\"./assets/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(
            assets.iter().any(|a| a.ends_with(".js")),
            "{page} names no script"
        );
        assert!(
            assets.iter().any(|a| a.ends_with(".css")),
            "{page} names no stylesheet"
        );
        for asset in assets {
            let path = format!("/assets/{asset}");
            let (status, content_type, _) = get_text(&server, &path).await;
            assert_eq!(status, 200, "{path}");
            let expected = if asset.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else {
                "text/css; charset=utf-8"
            };
            assert_eq!(content_type, expected, "{path}");
        }
    }
    // Each page links to the other.
    let (_, _, plain) = get_text(&server, "/").await;
    assert!(plain.contains("href=\"./tiptap.html\""));
    let (_, _, rich) = get_text(&server, "/tiptap.html").await;
    assert!(rich.contains("href=\"./\""));
    server.stop().await;
}

/// A plain `GET`: the status, the `content-type` header and the body as text.
async fn get_text(server: &TestServer, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}
