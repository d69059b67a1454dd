//! CRDT values over the WebSocket opt-in message and the HTTP API (issue 4).

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plait_crdt::{Action, Op};
use plait_store::{MemoryStore, Store};
use serde_json::json;
use support::{TestClient, TestServer};

fn op(name: &str, action: Action) -> Op {
    Op {
        name: name.to_owned(),
        action,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Issue 4: 10 clients incrementing concurrently, some disconnecting and reconnecting midway,
/// end with exactly the sum of all increments, on the server and in every client.
#[tokio::test]
async fn concurrent_increments_with_reconnects_sum_exactly() {
    const CLIENTS: usize = 10;
    const PER_CLIENT: u64 = 30;
    let server = Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = TestClient::connect_values(&server, "likes").await;
            for n in 0..PER_CLIENT {
                // Every third client drops its connection twice along the way.
                if i % 3 == 0 && n > 0 && n % 10 == 0 {
                    client.close();
                    client = TestClient::connect_values(&server, "likes").await;
                }
                client.send_op(op("likes", Action::Increment(1)));
                if n % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let total = json!(CLIENTS as u64 * PER_CLIENT);
    for c in &clients {
        c.wait_value("likes", total.clone()).await;
    }
    let (status, body) = server.http("GET", "/api/rooms/likes/values", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"likes": {"kind": "gcounter", "value": total}}));
    // A late joiner gets the sum too.
    let late = TestClient::connect_values(&server, "likes").await;
    late.wait_value("likes", total).await;
    for c in clients {
        c.close();
    }
    Arc::into_inner(server).unwrap().stop().await;
}

/// Stock y-websocket clients log errors on unknown message types: a connection that did not
/// opt in never receives tag 100, and the tag-100 messages it sends are ignored.
#[tokio::test]
async fn clients_that_did_not_opt_in_never_see_values_messages() {
    let server = TestServer::start().await;
    let plain = TestClient::connect(&server.url("mixed")).await;
    let opted = TestClient::connect_values(&server, "mixed").await;
    plain.send_op(op("n", Action::Increment(100)));
    opted.send_op(op("n", Action::Increment(1)));
    opted.wait_value("n", json!(1)).await;
    plain.insert(0, "still in sync");
    opted.wait_text("still in sync").await;
    let late_plain = TestClient::connect(&server.url("mixed")).await;
    late_plain.wait_text("still in sync").await;
    opted.send_op(op("n", Action::Increment(1)));
    opted.wait_value("n", json!(2)).await;
    for c in [&plain, &late_plain] {
        assert!(c.is_open());
        assert!(c.seen.lock().unwrap().values_messages.is_empty());
    }
    let (_, body) = server.http("GET", "/api/rooms/mixed/values", None).await;
    assert_eq!(body["n"]["value"], json!(2));
    server.stop().await;
}

/// Issue 4: with clients 200 ms apart, the register holds the write with the greatest HLC,
/// not the one that arrived last.
#[tokio::test]
async fn lww_with_skewed_clocks_picks_the_greatest_hlc() {
    let server = TestServer::start().await;
    let ahead = TestClient::connect_values(&server, "lww").await;
    let behind = TestClient::connect_values(&server, "lww").await;
    let now = now_ms();
    ahead.send_op(op(
        "title",
        Action::SetAt {
            value: json!("from the client 100 ms ahead"),
            physical_ms: now + 100,
            logical: 0,
        },
    ));
    behind
        .wait_value("title", json!("from the client 100 ms ahead"))
        .await;
    // Later in real time, but earlier by its (slow) clock: it loses.
    behind.send_op(op(
        "title",
        Action::SetAt {
            value: json!("from the client 100 ms behind"),
            physical_ms: now_ms() - 100,
            logical: 0,
        },
    ));
    for c in [&ahead, &behind] {
        c.wait(
            |s, _| s.values_messages.len() >= 2,
            "both writes to be broadcast",
        )
        .await;
        assert_eq!(
            c.seen.lock().unwrap().value("title"),
            Some(json!("from the client 100 ms ahead"))
        );
    }
    let (_, body) = server.http("GET", "/api/rooms/lww/values", None).await;
    assert_eq!(
        body["title"]["value"],
        json!("from the client 100 ms ahead")
    );
    // Once its clock passes the other's, the slow client's write wins.
    tokio::time::sleep(Duration::from_millis(250)).await;
    behind.send_op(op(
        "title",
        Action::SetAt {
            value: json!("later by both clocks"),
            physical_ms: now_ms() - 100,
            logical: 0,
        },
    ));
    ahead
        .wait_value("title", json!("later by both clocks"))
        .await;
    server.stop().await;
}

/// Issue 4: a client whose clock is an hour ahead is refused with a clear error, and nothing
/// is stored.
#[tokio::test]
async fn a_client_an_hour_ahead_is_refused_and_nothing_is_stored() {
    let store = Arc::new(MemoryStore::default());
    let server = TestServer::start_with(store.clone(), |_| {}).await;
    let client = TestClient::connect_values(&server, "skew").await;
    let other = TestClient::connect_values(&server, "skew").await;
    client.send_op(op(
        "title",
        Action::SetAt {
            value: json!("from the future"),
            physical_ms: now_ms() + 3_600_000,
            logical: 0,
        },
    ));
    client
        .wait(|s, _| !s.rejections().is_empty(), "a rejection")
        .await;
    let reason = client.seen.lock().unwrap().rejections()[0].clone();
    assert!(reason.contains("ahead of local time"), "{reason}");
    assert!(client.is_open(), "a refused op does not close the socket");
    assert!(client.seen.lock().unwrap().values.is_empty());
    assert!(store.load_values("skew").await.unwrap().is_empty());
    let (_, body) = server.http("GET", "/api/rooms/skew/values", None).await;
    assert_eq!(body, json!({}));
    // The rejection went to the sender only.
    assert!(other.seen.lock().unwrap().values_messages.is_empty());
    server.stop().await;
}

/// Values are stored with the room: they survive a restart of the server and an idle unload.
#[tokio::test]
async fn values_survive_a_restart_and_an_idle_unload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("values.db");
    let open = || support::sqlite_store(&path);
    let server = TestServer::start_with(open().await, |c| c.room_idle_ms = 100).await;
    let client = TestClient::connect_values(&server, "keep").await;
    for _ in 0..5 {
        client.send_op(op("likes", Action::Increment(1)));
    }
    client.send_op(op("score", Action::Add(-7)));
    client.send_op(op("title", Action::Set(json!({"text": "Notes"}))));
    client.wait_value("title", json!({"text": "Notes"})).await;
    client.wait_value("likes", json!(5)).await;
    client.close();
    // Idle unload, then a reload from the store.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = TestClient::connect_values(&server, "keep").await;
    again.wait_value("likes", json!(5)).await;
    again.wait_value("score", json!(-7)).await;
    again.send_op(op("likes", Action::Increment(1)));
    again.wait_value("likes", json!(6)).await;
    again.close();
    server.stop().await;

    let server = TestServer::start_with(open().await, |_| {}).await;
    let after = TestClient::connect_values(&server, "keep").await;
    after.wait_value("likes", json!(6)).await;
    after.wait_value("score", json!(-7)).await;
    after.wait_value("title", json!({"text": "Notes"})).await;
    // A new process increments under a new replica id; the sum stays exact.
    after.send_op(op("likes", Action::Increment(1)));
    after.wait_value("likes", json!(7)).await;
    let (_, body) = server.http("GET", "/api/rooms/keep/values", None).await;
    assert_eq!(
        body,
        json!({
            "likes": {"kind": "gcounter", "value": 7},
            "score": {"kind": "pncounter", "value": -7},
            "title": {"kind": "lww", "value": {"text": "Notes"}},
        })
    );
    server.stop().await;
}

/// The HTTP API: kinds, a negative add to a G-Counter (400), a kind conflict (409), bad
/// bodies, percent-decoded room names, and changes visible to connected clients.
#[tokio::test]
async fn http_api_changes_values_that_clients_see() {
    let server = TestServer::start().await;
    let client = TestClient::connect_values(&server, "team%20a/notes").await;

    let (status, body) = server
        .http(
            "POST",
            "/api/rooms/team%20a%2Fnotes/counters/likes",
            Some(json!({"add": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "likes", "kind": "gcounter", "value": 2})
    );
    client.wait_value("likes", json!(2)).await;

    let path = |rest: &str| format!("/api/rooms/team%20a%2Fnotes/{rest}");
    let (status, body) = server
        .http("POST", &path("counters/likes"), Some(json!({"add": -1})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("only grows"),
        "{body}"
    );

    let (status, body) = server
        .http(
            "POST",
            &path("counters/likes"),
            Some(json!({"add": -1, "kind": "pncounter"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("is a gcounter"),
        "{body}"
    );

    let (status, body) = server
        .http(
            "POST",
            &path("counters/score"),
            Some(json!({"add": -3, "kind": "pncounter"})),
        )
        .await;
    assert_eq!((status, body["value"].clone()), (200, json!(-3)));
    // Without a kind, an existing PN-Counter stays one.
    let (status, body) = server
        .http("POST", &path("counters/score"), Some(json!({"add": -1})))
        .await;
    assert_eq!((status, body["value"].clone()), (200, json!(-4)));
    client.wait_value("score", json!(-4)).await;

    let (status, body) = server
        .http(
            "PUT",
            &path("registers/title"),
            Some(json!({"value": {"text": "Plan", "n": [1, 2]}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "title", "kind": "lww", "value": {"text": "Plan", "n": [1, 2]}})
    );
    client
        .wait_value("title", json!({"text": "Plan", "n": [1, 2]}))
        .await;

    let (status, body) = server
        .http("PUT", &path("registers/likes"), Some(json!({"value": 1})))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = server
        .http("POST", &path("counters/title"), Some(json!({"add": 1})))
        .await;
    assert_eq!(status, 409);

    for (method, rest, body) in [
        ("POST", "counters/likes", json!({"add": "one"})),
        ("POST", "counters/likes", json!({"add": 1, "kind": "lww"})),
        ("PUT", "registers/title", json!({"text": "no value field"})),
    ] {
        let (status, body) = server.http(method, &path(rest), Some(body)).await;
        assert_eq!(status, 400, "{method} {rest}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    let (status, body) = server.http("GET", &path("values"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "likes": {"kind": "gcounter", "value": 2},
            "score": {"kind": "pncounter", "value": -4},
            "title": {"kind": "lww", "value": {"text": "Plan", "n": [1, 2]}},
        })
    );
    // A refused HTTP change never reaches clients as a rejection.
    assert!(client.seen.lock().unwrap().rejections().is_empty());
    server.stop().await;
}

/// A malformed values message from a client that opted in closes it with 1007, like any
/// other malformed input.
#[tokio::test]
async fn a_malformed_values_message_closes_with_1007() {
    let server = TestServer::start().await;
    let client = TestClient::connect_values(&server, "bad").await;
    client.send(plait_protocol::message::encode_custom(100, &[0, 0, 0, 1]));
    let (code, _) = client.wait_closed().await;
    assert_eq!(code, 1007);
    server.stop().await;
}

// === Values with export, import, history and restore; merge on write ===

const ADMIN_TOKEN: &str = "admin-secret";

/// One raw HTTP/1.1 request with the admin token: status, lowercased headers, body bytes.
async fn admin(
    server: &TestServer,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(support::WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut body = response[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let len = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
            .unwrap();
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&rest[line_end + 2..line_end + 2 + len]);
        rest = &rest[line_end + 4 + len..];
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn json_body(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

async fn admin_server(store: Arc<dyn Store>, history_interval_ms: u64) -> TestServer {
    TestServer::start_with(store, |c| {
        c.admin_token = Some(ADMIN_TOKEN.into());
        c.history_interval_ms = history_interval_ms;
    })
    .await
}

async fn set_values(server: &TestServer, room: &str, title: &str, score: i64, likes: u64) {
    for (method, path, body) in [
        ("PUT", "registers/title", json!({ "value": title })),
        (
            "POST",
            "counters/score",
            json!({ "add": score, "kind": "pncounter" }),
        ),
        ("POST", "counters/likes", json!({ "add": likes })),
    ] {
        let (status, body) = server
            .http(method, &format!("/api/rooms/{room}/{path}"), Some(body))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// Issue 4: export writes the plait snapshot file (document and values) by default and the
/// bare Yjs update with `?format=yjs`; import merges the values with the CRDT merge, so
/// importing the same export twice changes nothing and counters never double.
#[tokio::test]
async fn export_and_import_carry_values_and_importing_twice_changes_nothing() {
    use plait_server::snapshot_file::{Format, SnapshotFile};
    let server = admin_server(Arc::new(MemoryStore::default()), 0).await;
    let writer = TestClient::connect(&server.url("src")).await;
    writer.insert(0, "the document");
    TestClient::connect(&server.url("src"))
        .await
        .wait_text("the document")
        .await;
    set_values(&server, "src", "Plans", -2, 3).await;

    let (status, headers, file) = admin(&server, "GET", "/api/admin/rooms/src/export", b"").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-plait-values"), Some("3"));
    let parsed = SnapshotFile::decode(&file).expect("a plait snapshot file");
    let names: Vec<&str> = parsed.values.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["likes", "score", "title"]);
    let doc = plait_server::docs::doc_from_update(&parsed.update).unwrap();
    assert_eq!(plait_server::docs::to_json(&doc)["t"], "the document");

    // The bare Yjs update, for Y.applyUpdate; the header still says values exist.
    let (status, headers, bare) = admin(
        &server,
        "GET",
        "/api/admin/rooms/src/export?format=yjs",
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-plait-values"), Some("3"));
    assert_eq!(bare, parsed.update);
    assert_eq!(SnapshotFile::read(&bare).unwrap().1, Format::Yjs);
    let (status, _, body) = admin(
        &server,
        "GET",
        "/api/admin/rooms/src/export?format=json",
        b"",
    )
    .await;
    assert_eq!(status, 400);
    assert!(json_body(&body)["error"]
        .as_str()
        .unwrap()
        .contains("unknown format"));

    // Import into another room while an opted-in client watches it.
    let watcher = TestClient::connect_values(&server, "copy").await;
    let (status, _, body) = admin(&server, "POST", "/api/admin/rooms/copy/import", &file).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = json_body(&body);
    assert_eq!(answer["changed"], true);
    assert_eq!(answer["document_changed"], true);
    assert_eq!(answer["values_changed"], json!(["likes", "score", "title"]));
    watcher.wait_value("likes", json!(3)).await;
    watcher.wait_value("title", json!("Plans")).await;
    watcher.wait_text("the document").await;
    // Twice: nothing changes.
    let (_, _, body) = admin(&server, "POST", "/api/admin/rooms/copy/import", &file).await;
    let answer = json_body(&body);
    assert_eq!(answer["changed"], false, "{answer}");
    assert_eq!(answer["values_changed"], json!([]));
    let (_, src_values) = server.http("GET", "/api/rooms/src/values", None).await;
    let (_, copy_values) = server.http("GET", "/api/rooms/copy/values", None).await;
    assert_eq!(copy_values, src_values);
    assert_eq!(copy_values["likes"]["value"], 3);
    assert_eq!(copy_values["score"]["value"], -2);

    // A newer export merges in only what is new: the counter reads 5, not 3 + 5.
    let (status, _) = server
        .http(
            "POST",
            "/api/rooms/src/counters/likes",
            Some(json!({"add": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, _, newer) = admin(&server, "GET", "/api/admin/rooms/src/export", b"").await;
    let (_, _, body) = admin(&server, "POST", "/api/admin/rooms/copy/import", &newer).await;
    assert_eq!(json_body(&body)["values_changed"], json!(["likes"]));
    watcher.wait_value("likes", json!(5)).await;

    // A bare Yjs update still imports (no values), and garbage is refused clearly.
    let (status, _, _) = admin(&server, "POST", "/api/admin/rooms/bare/import", &bare).await;
    assert_eq!(status, 200);
    let (_, bare_values) = server.http("GET", "/api/rooms/bare/values", None).await;
    assert_eq!(bare_values, json!({}));
    let mut truncated = file.clone();
    truncated.truncate(file.len() - 3);
    for junk in [&b"\xff\xff\xff"[..], &truncated] {
        let (status, _, body) = admin(&server, "POST", "/api/admin/rooms/copy/import", junk).await;
        assert_eq!(status, 400);
        let error = json_body(&body)["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("neither a plait snapshot file nor a Yjs v1 update"),
            "{error}"
        );
    }
    server.stop().await;
}

/// Issue 4: restore points keep the values; restoring a past time writes registers back
/// (with a fresh timestamp, so the restore wins), adjusts PN-Counters by the difference, and
/// leaves G-Counters (they cannot go down) and values created since, saying so.
#[tokio::test]
async fn restoring_a_past_time_sets_values_back_where_they_can_go() {
    use plait_server::snapshot_file::decode_values;
    let store = Arc::new(MemoryStore::default());
    let server = admin_server(store.clone(), 100).await;
    let watcher = TestClient::connect_values(&server, "past").await;
    set_values(&server, "past", "old", 5, 3).await;
    // Wait for a restore point that holds all three values.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let point_ms = loop {
        let mut found = None;
        for info in store.list_snapshots("past").await.unwrap() {
            let snap = store.load_snapshot("past", info.id).await.unwrap().unwrap();
            let values = snap.values.map(|v| decode_values(&v).unwrap());
            if values.is_some_and(|v| v.len() == 3) {
                found = Some(info.created_at_ms);
            }
        }
        if let Some(t) = found {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no restore point with values"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    set_values(&server, "past", "new", -12, 4).await;
    let (status, _) = server
        .http(
            "POST",
            "/api/rooms/past/counters/fresh",
            Some(json!({"add": 1})),
        )
        .await;
    assert_eq!(status, 200);
    watcher.wait_value("title", json!("new")).await;

    let path = format!("/api/admin/rooms/past/restore?at={point_ms}");
    let (status, _, body) = admin(&server, "POST", &path, b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = json_body(&body);
    assert_eq!(
        answer["values_changed"],
        json!(["score", "title"]),
        "{answer}"
    );
    assert_eq!(answer["restored_point_ms"], json!(point_ms));
    assert_eq!(
        answer["notes"],
        json!([
            "likes: a gcounter cannot go down; left at 7 (it was 3 then)",
            "fresh: created after that time; left as it is",
        ])
    );
    let (_, values) = server.http("GET", "/api/rooms/past/values", None).await;
    assert_eq!(
        values,
        json!({
            "fresh": {"kind": "gcounter", "value": 1},
            "likes": {"kind": "gcounter", "value": 7},
            "score": {"kind": "pncounter", "value": 5},
            "title": {"kind": "lww", "value": "old"},
        })
    );
    watcher.wait_value("title", json!("old")).await;
    watcher.wait_value("score", json!(5)).await;
    // Restoring again changes nothing.
    let (_, _, body) = admin(&server, "POST", &path, b"").await;
    assert_eq!(json_body(&body)["values_changed"], json!([]));
    // An export at that time holds the values of then.
    let (status, headers, file) = admin(
        &server,
        "GET",
        &format!("/api/admin/rooms/past/export?at={point_ms}"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "x-plait-restore-point-ms"),
        Some(point_ms.to_string().as_str())
    );
    let then = plait_server::snapshot_file::SnapshotFile::decode(&file).unwrap();
    assert_eq!(then.values.len(), 3);
    assert_eq!(then.values[2].1.current(), Ok(json!("old")));
    server.stop().await;
}

/// Two servers sharing one store, with no bus between them, each store their own increments
/// of one counter: `put_values` merges with what the other stored, so after a restart the
/// counter reads exactly the sum (a replacing store would keep only the last writer's part).
#[tokio::test]
async fn two_servers_sharing_a_store_lose_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = support::sqlite_store(&path).await;
    let a = Arc::new(TestServer::start_with(store.clone(), |_| {}).await);
    let b = Arc::new(TestServer::start_with(store.clone(), |_| {}).await);
    // Both load the room before anyone writes, so neither learns the other's increments from
    // the store at load time.
    for server in [&a, &b] {
        let (status, _) = server.http("GET", "/api/rooms/shared/values", None).await;
        assert_eq!(status, 200);
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let server = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let (status, body) = server
                .http(
                    "POST",
                    "/api/rooms/shared/counters/hits",
                    Some(json!({"add": 1})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for server in [a, b] {
        Arc::into_inner(server).unwrap().stop().await;
    }
    let c = TestServer::start_with(support::sqlite_store(&path).await, |_| {}).await;
    let (_, values) = c.http("GET", "/api/rooms/shared/values", None).await;
    assert_eq!(values["hits"]["value"], json!(40));
    c.stop().await;
}

/// Pins issue 13 item 3: a values client whose join overflows its outbox (more values than
/// `--outbox-frames`) is closed as a slow consumer and its connection ends. Before, the room
/// dropped the join, the connection took that for "room unloading" and asked again without
/// end, holding its per-IP slot (and re-encoding every value in the room each time).
#[tokio::test]
async fn a_values_join_that_overflows_the_outbox_closes_instead_of_spinning() {
    let server = TestServer::start_with(Arc::new(MemoryStore::default()), |c| {
        c.outbox_frames = 4;
        c.max_connections_per_ip = 1;
    })
    .await;
    for i in 0..10 {
        let (status, body) = server
            .http(
                "POST",
                &format!("/api/rooms/many/counters/c{i}"),
                Some(json!({"add": 1})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let client = TestClient::connect_raw(&server.values_url("many"), yrs::Doc::new()).await;
    let (code, _) = client.wait_closed().await;
    assert_eq!(code, 1013);
    // The per-IP slot is given back: the connection ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let next = TestClient::connect_request(server.url("many"), yrs::Doc::new()).await;
        if next.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the overflowed connection still holds its per-IP slot: {:?}",
            next.err()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// A store whose `put_values` never answers, like a PostgreSQL connection stuck on a row lock.
#[derive(Debug, Default)]
struct StuckValues(MemoryStore);

#[async_trait::async_trait]
impl Store for StuckValues {
    async fn load_room(&self, room: &str) -> Result<plait_store::StoredRoom, plait_store::Error> {
        self.0.load_room(room).await
    }
    async fn append_updates(
        &self,
        room: &str,
        updates: &[bytes::Bytes],
    ) -> Result<u64, plait_store::Error> {
        self.0.append_updates(room, updates).await
    }
    async fn write_snapshot(
        &self,
        room: &str,
        snapshot: &plait_store::Snapshot,
    ) -> Result<(), plait_store::Error> {
        self.0.write_snapshot(room, snapshot).await
    }
    async fn list_snapshots(
        &self,
        room: &str,
    ) -> Result<Vec<plait_store::SnapshotInfo>, plait_store::Error> {
        self.0.list_snapshots(room).await
    }
    async fn load_snapshot(
        &self,
        room: &str,
        id: i64,
    ) -> Result<Option<plait_store::Snapshot>, plait_store::Error> {
        self.0.load_snapshot(room, id).await
    }
    async fn load_updates_until(
        &self,
        room: &str,
        after_seq: u64,
        until_ms: i64,
    ) -> Result<Vec<plait_store::LoggedUpdate>, plait_store::Error> {
        self.0.load_updates_until(room, after_seq, until_ms).await
    }
    async fn prune_history(&self, room: &str, before_ms: i64) -> Result<u64, plait_store::Error> {
        self.0.prune_history(room, before_ms).await
    }
    async fn load_values(
        &self,
        room: &str,
    ) -> Result<Vec<plait_store::StoredValue>, plait_store::Error> {
        self.0.load_values(room).await
    }
    async fn put_values(
        &self,
        _room: &str,
        _values: &[plait_store::StoredValue],
        _merge: &plait_store::MergeValue,
    ) -> Result<Vec<plait_store::StoredValue>, plait_store::Error> {
        std::future::pending().await
    }
    async fn delete_room(&self, room: &str) -> Result<bool, plait_store::Error> {
        self.0.delete_room(room).await
    }
    async fn add_revocation(
        &self,
        revocation: &plait_store::Revocation,
    ) -> Result<(), plait_store::Error> {
        self.0.add_revocation(revocation).await
    }
    async fn list_revocations(&self) -> Result<Vec<plait_store::Revocation>, plait_store::Error> {
        self.0.list_revocations().await
    }
    async fn webhook_cursors(
        &self,
        target: &str,
    ) -> Result<Vec<(String, u64)>, plait_store::Error> {
        self.0.webhook_cursors(target).await
    }
    async fn set_webhook_cursor(
        &self,
        target: &str,
        room: &str,
        seq: Option<u64>,
    ) -> Result<(), plait_store::Error> {
        self.0.set_webhook_cursor(target, room, seq).await
    }
    async fn claim_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, plait_store::Error> {
        self.0.claim_lease(name, holder, ttl_ms).await
    }
    async fn list_rooms(&self) -> Result<Vec<plait_store::RoomSummary>, plait_store::Error> {
        self.0.list_rooms().await
    }
    async fn ping(&self) -> Result<(), plait_store::Error> {
        self.0.ping().await
    }
}

/// Pins issue 13 item 7: `put_values` had no deadline, so a stuck store hung the room: the
/// value request never answered and nobody else in the room was served again.
#[tokio::test]
async fn a_stuck_store_fails_value_writes_instead_of_hanging_the_room() {
    let server = TestServer::start_with(Arc::new(StuckValues::default()), |_| {}).await;
    let editor = TestClient::connect(&server.url("stuck")).await;
    let started = std::time::Instant::now();
    let (status, body) = server
        .http(
            "POST",
            "/api/rooms/stuck/counters/likes",
            Some(json!({"add": 1})),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The room still serves its members.
    editor.insert(0, "still here");
    let other = TestClient::connect(&server.url("stuck")).await;
    other.wait_text("still here").await;
}
