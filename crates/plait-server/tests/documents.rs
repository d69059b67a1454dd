//! The document REST API (issue 16): a backend reads a room as JSON or as a Yjs update, and
//! writes Yjs updates that connected clients receive once stored.

mod support;

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use plait_server::auth::{issue_hs256, now_secs, Claims, Right};
use plait_store::MemoryStore;
use support::{TestClient, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

/// One HTTP/1.1 request with a raw body; returns the status and the raw response body.
async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn a_backend_reads_and_writes_a_room() {
    let server = TestServer::start().await;
    let client = TestClient::connect(&server.url("notes")).await;
    let observer = TestClient::connect(&server.url("notes")).await;
    client.insert(0, "hello");
    observer.wait_text("hello").await;

    let (status, body) = request(&server, "GET", "/api/rooms/notes", None, b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let view = json(&body);
    assert_eq!(view["content"]["t"], "hello");
    assert_eq!(view["seq"], 1);
    let sv = STANDARD
        .decode(view["state_vector"].as_str().unwrap())
        .unwrap();
    assert_eq!(sv, client.doc.transact().state_vector().encode_v1());

    // The whole document as an update a fresh Yjs document loads.
    let (status, whole) = request(&server, "GET", "/api/rooms/notes/update", None, b"").await;
    assert_eq!(status, 200);
    let fresh = Doc::new();
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(&whole).unwrap())
        .unwrap();
    let text = fresh.get_or_insert_text("t");
    assert_eq!(text.get_string(&fresh.transact()), "hello");

    // A backend's write, made with its own copy: stored, answered, and received by the client.
    let edit = {
        let mut txn = fresh.transact_mut();
        text.insert(&mut txn, 5, " world");
        txn.encode_update_v1()
    };
    let (status, body) = request(&server, "POST", "/api/rooms/notes/update", None, &edit).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = json(&body);
    assert_eq!(answer["changed"], true);
    assert_eq!(answer["seq"], 2);
    observer.wait_text("hello world").await;

    // Only what a state vector lacks.
    let sv = URL_SAFE_NO_PAD.encode(client.doc.transact().state_vector().encode_v1());
    let (status, diff) = request(
        &server,
        "GET",
        &format!("/api/rooms/notes/update?sv={sv}"),
        None,
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        diff.len() < whole.len(),
        "the diff is not smaller than the whole"
    );
    let old = Doc::new();
    old.transact_mut()
        .apply_update(Update::decode_v1(&whole).unwrap())
        .unwrap();
    let (_, since_old) = request(
        &server,
        "GET",
        &format!(
            "/api/rooms/notes/update?sv={}",
            URL_SAFE_NO_PAD.encode(old.transact().state_vector().encode_v1())
        ),
        None,
        b"",
    )
    .await;
    old.transact_mut()
        .apply_update(Update::decode_v1(&since_old).unwrap())
        .unwrap();
    assert_eq!(
        old.get_or_insert_text("t").get_string(&old.transact()),
        "hello world"
    );
    // The write is part of the document the API reads.
    let (_, body) = request(&server, "GET", "/api/rooms/notes", None, b"").await;
    assert_eq!(json(&body)["content"]["t"], "hello world");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let server = TestServer::start().await;
    let (status, body) = request(&server, "GET", "/api/rooms/never", None, b"").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    for garbage in [
        &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"[..],
        b"not an update",
        b"",
    ] {
        let (status, body) = request(&server, "POST", "/api/rooms/bad/update", None, garbage).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    }
    let (status, _) = request(&server, "GET", "/api/rooms/bad", None, b"").await;
    assert_eq!(status, 404, "a refused write created the room");
    let (status, _) = request(&server, "GET", "/api/rooms/bad/update?sv=%%%", None, b"").await;
    assert_eq!(status, 400);
    server.stop().await;
}

const SECRET: &str = "test-secret-test-secret-test-secret!";

fn token(room: &str, right: Right) -> String {
    let claims = Claims {
        exp: now_secs() + 600,
        iat: Some(now_secs()),
        rooms: vec![room.to_owned()],
        right,
        user: None,
        jti: None,
    };
    issue_hs256(SECRET, &claims).unwrap()
}

#[tokio::test]
async fn tokens_give_read_and_write_rights() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.auth_secret = Some(SECRET.into());
    })
    .await;
    let edit = {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "x");
        txn.encode_update_v1()
    };
    let read = token("r", Right::Read);
    let write = token("r", Right::Write);
    let other = token("elsewhere", Right::Write);
    let path = "/api/rooms/r/update";
    assert_eq!(request(&server, "POST", path, None, &edit).await.0, 401);
    assert_eq!(
        request(&server, "POST", path, Some(&read), &edit).await.0,
        403
    );
    assert_eq!(
        request(&server, "POST", path, Some(&other), &edit).await.0,
        403
    );
    assert_eq!(
        request(&server, "POST", path, Some(&write), &edit).await.0,
        200
    );
    assert_eq!(
        request(&server, "GET", "/api/rooms/r", None, b"").await.0,
        401
    );
    let (status, body) = request(&server, "GET", "/api/rooms/r", Some(&read), b"").await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["content"]["t"], "x");
    server.stop().await;
}

/// Reads Server-Sent Events from `path` until `n` have arrived: (id, data) pairs.
async fn read_events(
    server: &TestServer,
    path: &str,
    last_event_id: Option<u64>,
    n: usize,
) -> Vec<(u64, serde_json::Value)> {
    support::sse::read_events(server.addr, path, last_event_id, n).await
}

fn apply_event(doc: &Doc, data: &serde_json::Value) {
    let update = STANDARD.decode(data["update"].as_str().unwrap()).unwrap();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
}

/// The change feed: ordered, gap-free, resumable, and a reset after compaction.
#[tokio::test]
async fn the_change_feed_resumes_and_resets_after_compaction() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.admin_token = Some("admin".into());
    })
    .await;
    let writer = TestClient::connect(&server.url("feed")).await;
    let observer = TestClient::connect(&server.url("feed")).await;
    for (i, word) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        writer.insert(i as u32, word);
        observer.wait_text(&"abcde"[..=i]).await;
    }
    let events = read_events(&server, "/api/rooms/feed/changes?since=0", None, 5).await;
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    let consumer = Doc::new();
    for (_, data) in &events {
        apply_event(&consumer, data);
    }
    assert_eq!(
        consumer
            .get_or_insert_text("t")
            .get_string(&consumer.transact()),
        "abcde"
    );
    // Live: an edit made while the feed is open arrives too; a resume sends nothing twice.
    writer.insert(5, "f");
    let resumed = read_events(&server, "/api/rooms/feed/changes", Some(3), 3).await;
    let ids: Vec<u64> = resumed.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![4, 5, 6]);
    // After a compaction the rows are gone: one reset event with the whole document.
    let (status, _) = request(
        &server,
        "POST",
        "/api/admin/rooms/feed/compact",
        Some("admin"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let reset = read_events(&server, "/api/rooms/feed/changes?since=2", None, 1).await;
    let (id, data) = &reset[0];
    assert_eq!(*id, 6);
    assert_eq!(data["reset"], true);
    let fresh = Doc::new();
    apply_event(&fresh, data);
    assert_eq!(
        fresh.get_or_insert_text("t").get_string(&fresh.transact()),
        "abcdef"
    );
    server.stop().await;
}

/// `&json=1`: each event says which root types its update changed, as JSON; a consumer that
/// resumes in the middle gets the roots as of its position, not from the start.
#[tokio::test]
async fn the_change_feed_with_json_names_the_changed_roots() {
    let server = TestServer::start().await;
    let writer = TestClient::connect(&server.url("jsonfeed")).await;
    let observer = TestClient::connect(&server.url("jsonfeed")).await;
    writer.insert(0, "ab");
    observer.wait_text("ab").await;
    let edits = br#"[{"op": "set", "map": "meta", "key": "title", "value": "T"}]"#;
    let (status, _) = request(&server, "PATCH", "/api/rooms/jsonfeed", None, edits).await;
    assert_eq!(status, 200);
    writer.insert(2, "c");
    observer.wait_text("abc").await;

    let events = read_events(
        &server,
        "/api/rooms/jsonfeed/changes?since=0&json=1",
        None,
        3,
    )
    .await;
    let changed: Vec<&serde_json::Value> = events.iter().map(|(_, d)| &d["changed"]).collect();
    assert_eq!(*changed[0], serde_json::json!({ "t": "ab" }), "{events:?}");
    assert_eq!(*changed[1], serde_json::json!({ "meta": { "title": "T" } }));
    assert_eq!(*changed[2], serde_json::json!({ "t": "abc" }));
    // Without json=1 the events carry no "changed".
    let plain = read_events(&server, "/api/rooms/jsonfeed/changes?since=2", None, 1).await;
    assert!(plain[0].1.get("changed").is_none(), "{plain:?}");
    // Resumed after seq 2: the text as of then is known, so only the text's change shows.
    let resumed = read_events(
        &server,
        "/api/rooms/jsonfeed/changes?since=2&json=1",
        None,
        1,
    )
    .await;
    assert_eq!(resumed[0].0, 3);
    assert_eq!(resumed[0].1["changed"], serde_json::json!({ "t": "abc" }));
    let (status, _) = request(
        &server,
        "GET",
        "/api/rooms/jsonfeed/changes?json=yes",
        None,
        b"",
    )
    .await;
    assert_eq!(status, 400);
    server.stop().await;
}

/// Deleting a room: its clients are closed with 4404, nothing of it stays stored (restore
/// points included), and the next connection starts it empty.
#[tokio::test]
async fn an_admin_deletes_a_room() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.admin_token = Some("admin".into());
        c.history_interval_ms = 1;
    })
    .await;
    let writer = TestClient::connect(&server.url("doomed")).await;
    let observer = TestClient::connect(&server.url("doomed")).await;
    writer.insert(0, "secret");
    observer.wait_text("secret").await;
    let path = "/api/admin/rooms/doomed";
    assert_eq!(request(&server, "DELETE", path, None, b"").await.0, 401);
    let (status, body) = request(&server, "DELETE", path, Some("admin"), b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["deleted"], true);
    assert_eq!(writer.wait_closed().await.0, 4404);
    assert_eq!(observer.wait_closed().await.0, 4404);
    assert_eq!(
        request(&server, "GET", "/api/rooms/doomed", None, b"")
            .await
            .0,
        404
    );
    let (_, history) = request(
        &server,
        "GET",
        "/api/admin/rooms/doomed/history",
        Some("admin"),
        b"",
    )
    .await;
    assert_eq!(json(&history), serde_json::json!([]));
    let fresh = TestClient::connect(&server.url("doomed")).await;
    assert_eq!(fresh.text(), "");
    server.stop().await;
}

/// PATCH: JSON edits for servers without Yjs, all in one transaction or none.
#[tokio::test]
async fn a_backend_without_yjs_edits_with_json() {
    let server = TestServer::start().await;
    let client = TestClient::connect(&server.url("patched")).await;
    client.insert(0, "héllo 🙂 world");
    let observer = TestClient::connect(&server.url("patched")).await;
    observer.wait_text("héllo 🙂 world").await;
    // Indexes count UTF-16 code units, as Yjs does: the emoji is two.
    let edits = br#"[
        {"op": "delete", "text": "t", "index": 6, "length": 3},
        {"op": "insert", "text": "t", "index": 0, "value": ">> "},
        {"op": "set", "map": "meta", "key": "title", "value": {"b": 1, "a": [true, null]}},
        {"op": "append", "array": "items", "values": [1, "two"]}
    ]"#;
    let (status, body) = request(&server, "PATCH", "/api/rooms/patched", None, edits).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["changed"], true);
    observer.wait_text(">> héllo world").await;
    let (_, body) = request(&server, "GET", "/api/rooms/patched", None, b"").await;
    let view = json(&body);
    assert_eq!(view["content"]["t"], ">> héllo world");
    assert_eq!(view["content"]["meta"]["title"]["b"], 1);
    assert_eq!(view["content"]["items"][1], "two");

    // One bad edit refuses them all: nothing changed, nothing stored.
    let seq = view["seq"].clone();
    for bad in [
        &br#"[{"op": "insert", "text": "t", "index": 0, "value": "x"}, {"op": "delete", "text": "t", "index": 99, "length": 1}]"#[..],
        br#"[{"op": "insert", "text": "meta", "index": 0, "value": "x"}]"#,
        br#"[{"op": "delete", "text": "t", "index": 1, "length": 4294967295}]"#,
        br#"[{"op": "explode"}]"#,
        br#"[]"#,
    ] {
        let (status, body) = request(&server, "PATCH", "/api/rooms/patched", None, bad).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    }
    let (_, body) = request(&server, "GET", "/api/rooms/patched", None, b"").await;
    assert_eq!(json(&body)["seq"], seq);
    assert_eq!(json(&body)["content"]["t"], ">> héllo world");
    server.stop().await;
}

/// `?text=delta`: formatted text as a Yjs delta, formatting kept.
#[tokio::test]
async fn text_reads_as_a_delta() {
    let server = TestServer::start().await;
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let update = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "plain ");
        let bold: yrs::types::Attrs =
            std::iter::once((std::sync::Arc::from("bold"), yrs::Any::Bool(true))).collect();
        text.insert_with_attributes(&mut txn, 6, "bold", bold);
        txn.encode_update_v1()
    };
    let (status, _) = request(&server, "POST", "/api/rooms/fmt/update", None, &update).await;
    assert_eq!(status, 200);
    let (_, body) = request(&server, "GET", "/api/rooms/fmt?text=delta", None, b"").await;
    assert_eq!(
        json(&body)["content"]["t"],
        serde_json::json!([{"insert": "plain "}, {"insert": "bold", "attributes": {"bold": true}}])
    );
    let (_, body) = request(&server, "GET", "/api/rooms/fmt", None, b"").await;
    assert_eq!(json(&body)["content"]["t"], "plain bold");
    let (status, _) = request(&server, "GET", "/api/rooms/fmt?text=html", None, b"").await;
    assert_eq!(status, 400);
    server.stop().await;
}
