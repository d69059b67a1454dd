//! The admin CLI, run as the real binary: against the store directly, and through a running
//! server's admin API while clients are connected.

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

mod binary;
mod pg;

use std::process::Output;

use support::TestClient;

fn plait(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plait"));
    cmd.args(args).env("RUST_LOG", "warn");
    // Never reach a server that happens to run on the default port.
    cmd.env("PLAIT_SERVER", "http://127.0.0.1:9");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run plait")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "plait failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure, got success");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_work_on_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    // Fill a room through a real server, then stop it.
    let server = binary::Server::start(&store, &[]).await;
    let c = TestClient::connect(&server.url("notes")).await;
    c.insert(0, "hello from a client");
    let b = TestClient::connect(&server.url("notes")).await;
    b.wait_text("hello from a client").await;
    assert!(server.terminate().await.success());

    let env = [("PLAIT_STORE", store.as_str())];
    let rooms = ok(&plait(&["rooms"], &env));
    assert!(rooms.contains("notes"), "{rooms}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&plait(&["inspect", "notes"], &env))).unwrap();
    assert_eq!(json["t"], "hello from a client");

    // Export, then import into another room: same content.
    let file = dir.path().join("notes.ydoc");
    ok(&plait(
        &["export", "notes", "-o", file.to_str().unwrap()],
        &env,
    ));
    ok(&plait(&["import", "copy", file.to_str().unwrap()], &env));
    let copy: serde_json::Value =
        serde_json::from_str(&ok(&plait(&["inspect", "copy"], &env))).unwrap();
    assert_eq!(copy, json);

    // Compaction keeps the content.
    ok(&plait(&["compact"], &env));
    let after: serde_json::Value =
        serde_json::from_str(&ok(&plait(&["inspect", "notes"], &env))).unwrap();
    assert_eq!(after, json);

    // Restore from the exported file after more edits: the old content comes back, and a
    // client that still holds the newer state converges to it when it reconnects.
    let server = binary::Server::start(&store, &[]).await;
    let c = TestClient::connect(&server.url("notes")).await;
    c.insert(0, "NEWER ");
    let d = TestClient::connect(&server.url("notes")).await;
    d.wait_text("NEWER hello from a client").await;
    assert!(server.terminate().await.success());
    ok(&plait(
        &["restore", "notes", "--from", file.to_str().unwrap()],
        &env,
    ));
    let server = binary::Server::start(&store, &[]).await;
    let newer = TestClient::connect_with_doc(&server.url("notes"), d.doc.clone()).await;
    newer.wait_text("hello from a client").await;
    server.kill();

    // Clear errors, non-zero exits.
    fails(&plait(&["inspect", "nope"], &env), "no room named \"nope\"");
    fails(
        &plait(&["export", "nope", "-o", "/tmp/x"], &env),
        "no room named",
    );
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\xff\xff\xff").unwrap();
    fails(
        &plait(&["import", "notes", junk.to_str().unwrap()], &env),
        "is not a Yjs v1 update",
    );
    fails(
        &plait(&["import", "notes", "/does/not/exist"], &env),
        "reading /does/not/exist",
    );
    fails(
        &plait(&["restore", "notes", "--at", "1971-01-01T00:00:00Z"], &env),
        "no restore point",
    );
    fails(
        &plait(&["restore", "notes", "--at", "yesterday-ish"], &env),
        "neither a time",
    );
    fails(
        &plait(
            &["rooms"],
            &[("PLAIT_STORE", "postgres://nobody@127.0.0.1:1/none")],
        ),
        "opening the store",
    );
    fails(
        &plait(&["rooms"], &[("PLAIT_STORE", "ftp://x")]),
        "expected sqlite://PATH",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_go_through_a_running_server_to_connected_clients() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    let server = binary::Server::start(&store, &["--admin-token", "s3cret"]).await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let env = [
        ("PLAIT_SERVER", base.as_str()),
        ("PLAIT_ADMIN_TOKEN", "s3cret"),
    ];
    let a = TestClient::connect(&server.url("live")).await;
    a.insert(0, "version one");
    let b = TestClient::connect(&server.url("live")).await;
    b.wait_text("version one").await;

    let file = dir.path().join("v1.ydoc");
    ok(&plait(
        &["export", "live", "-o", file.to_str().unwrap()],
        &env,
    ));
    a.insert(11, " and two");
    b.wait_text("version one and two").await;
    let rooms = ok(&plait(&["rooms"], &env));
    assert!(
        rooms
            .lines()
            .any(|l| l.starts_with("live") && l.trim_end().ends_with('2')),
        "{rooms}"
    );

    // Restoring while both are connected: both converge to the old content.
    ok(&plait(
        &["restore", "live", "--from", file.to_str().unwrap()],
        &env,
    ));
    a.wait_text("version one").await;
    b.wait_text("version one").await;

    // Importing into a live room reaches its clients.
    let other = dir.path().join("other.ydoc");
    {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        use yrs::{Text, Transact};
        text.insert(&mut doc.transact_mut(), 0, "imported ");
        std::fs::write(&other, plait_server::docs::encode_state(&doc)).unwrap();
    }
    ok(&plait(&["import", "live", other.to_str().unwrap()], &env));
    b.wait(
        |_, _| b.text().contains("imported"),
        "import to reach the client",
    )
    .await;

    // Without the token the CLI refuses rather than changing the store behind the server.
    fails(
        &plait(
            &["restore", "live", "--from", file.to_str().unwrap()],
            &[("PLAIT_SERVER", base.as_str())],
        ),
        "pass its --admin-token",
    );
    fails(
        &plait(
            &["rooms"],
            &[
                ("PLAIT_SERVER", base.as_str()),
                ("PLAIT_ADMIN_TOKEN", "wrong"),
            ],
        ),
        "401",
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_sqlite_to_postgres_copies_and_verifies_every_room() {
    let Some(pg_url) = pg::fresh_database("plait_migrate").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/plait.db", dir.path().display());
    let server = binary::Server::start(&sqlite, &[]).await;
    // Values: a counter and a register in one room.
    for (method, path, body) in [
        ("POST", "counters/likes", serde_json::json!({"add": 3})),
        (
            "PUT",
            "registers/title",
            serde_json::json!({"value": {"text": "Alpha"}}),
        ),
    ] {
        let (status, body) = server
            .json(method, &format!("/api/rooms/alpha/{path}"), Some(body))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut expected = Vec::new();
    for room in ["alpha", "beta/with slash", "gamma"] {
        let c = TestClient::connect(&server.url(&room.replace(' ', "%20"))).await;
        let text = format!("content of {room}");
        c.insert(0, &text);
        let d = TestClient::connect(&server.url(&room.replace(' ', "%20"))).await;
        d.wait_text(&text).await;
        expected.push((room, text));
    }
    assert!(server.terminate().await.success());
    let out = ok(&plait(
        &["migrate", "--from", &sqlite, "--to", &pg_url],
        &[],
    ));
    assert_eq!(out.matches("copied and verified").count(), 3, "{out}");
    // The same rooms, served from PostgreSQL, with their values.
    let server = binary::Server::start(&pg_url, &[]).await;
    for (room, text) in &expected {
        let c = TestClient::connect(&server.url(&room.replace(' ', "%20"))).await;
        assert_eq!(&c.text(), text, "{room}");
    }
    let alpha_values = serde_json::json!({
        "likes": {"kind": "gcounter", "value": 3},
        "title": {"kind": "lww", "value": {"text": "Alpha"}},
    });
    let (_, values) = server.json("GET", "/api/rooms/alpha/values", None).await;
    assert_eq!(values, alpha_values);
    server.kill();
    // Migrating again merges into the existing rooms and changes nothing.
    ok(&plait(
        &["migrate", "--from", &sqlite, "--to", &pg_url],
        &[],
    ));
    let env = [("PLAIT_STORE", pg_url.as_str())];
    let json: serde_json::Value =
        serde_json::from_str(&ok(&plait(&["inspect", "alpha"], &env))).unwrap();
    assert_eq!(json["t"], "content of alpha");
    // ... and the counter did not double: values merge.
    let server = binary::Server::start(&pg_url, &[]).await;
    let (_, values) = server.json("GET", "/api/rooms/alpha/values", None).await;
    assert_eq!(values, alpha_values);
    server.kill();
    fails(
        &plait(
            &[
                "migrate",
                "--from",
                &sqlite,
                "--to",
                "postgres://nobody@127.0.0.1:1/x",
            ],
            &[],
        ),
        "opening postgres://nobody@127.0.0.1:1/x",
    );
}

/// Sets `title` (a register), `score` (a PN-Counter, by `score`) and `likes` (a G-Counter, by
/// `likes`) in `room` through a running server.
async fn set_values(server: &binary::Server, room: &str, title: &str, score: i64, likes: u64) {
    for (method, path, body) in [
        (
            "PUT",
            "registers/title",
            serde_json::json!({ "value": title }),
        ),
        (
            "POST",
            "counters/score",
            serde_json::json!({ "add": score, "kind": "pncounter" }),
        ),
        (
            "POST",
            "counters/likes",
            serde_json::json!({ "add": likes }),
        ),
    ] {
        let (status, body) = server
            .json(method, &format!("/api/rooms/{room}/{path}"), Some(body))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

fn stderr(out: &Output) -> String {
    ok(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn file_values(path: &std::path::Path) -> serde_json::Value {
    let file = plait_server::snapshot_file::SnapshotFile::decode(&std::fs::read(path).unwrap())
        .expect("a plait snapshot file");
    file.values
        .iter()
        .map(|(name, value)| (name.clone(), value.current().unwrap()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Issue 4: CRDT values travel with export (plait snapshot files by default; `--format yjs`
/// leaves them out and says so), import (merged: twice changes nothing) and restore (from a
/// file or a time: registers and PN-Counters set back, G-Counters and newer values left, with
/// notes), through a running server and on the store directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_travel_with_export_import_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    let server = binary::Server::start(
        &store,
        &["--admin-token", "s3cret", "--history-interval-ms", "200"],
    )
    .await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let env = [
        ("PLAIT_SERVER", base.as_str()),
        ("PLAIT_ADMIN_TOKEN", "s3cret"),
    ];
    let offline = [("PLAIT_STORE", store.as_str())];
    let path = |name: &str| dir.path().join(name);
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let c = TestClient::connect(&server.url("vals")).await;
    c.insert(0, "the text");
    TestClient::connect(&server.url("vals"))
        .await
        .wait_text("the text")
        .await;
    set_values(&server, "vals", "v1", 5, 3).await;
    let then = serde_json::json!({"likes": 3, "score": 5, "title": "v1"});

    // Export: the plait snapshot file holds the document and the values.
    let file = path("vals.plait");
    let err = stderr(&plait(&["export", "vals", "-o", &arg(&file)], &env));
    assert!(
        err.contains("plait snapshot: the document and 3 CRDT value(s)"),
        "{err}"
    );
    assert_eq!(file_values(&file), then);
    // --format yjs: the bare update, and a note that the values were left out.
    let bare = path("vals.ydoc");
    let err = stderr(&plait(
        &["export", "vals", "-o", &arg(&bare), "--format", "yjs"],
        &env,
    ));
    assert!(err.contains("3 CRDT value(s) were left out"), "{err}");
    let bare_bytes = std::fs::read(&bare).unwrap();
    assert!(!plait_server::snapshot_file::is_snapshot_file(&bare_bytes));
    plait_server::docs::doc_from_update(&bare_bytes).unwrap();
    // Without --format the file name picks: .ydoc is what Y.applyUpdate loads; another name
    // gets the plait file, with a note.
    let by_name = path("by-name.ydoc");
    plait(&["export", "vals", "-o", &arg(&by_name)], &env);
    assert!(!plait_server::snapshot_file::is_snapshot_file(
        &std::fs::read(&by_name).unwrap()
    ));
    let other = path("by-name.dat");
    let err = stderr(&plait(&["export", "vals", "-o", &arg(&other)], &env));
    assert!(err.contains("name it .ydoc"), "{err}");
    assert_eq!(file_values(&other), then);

    // Import twice: the values arrive once.
    let err = stderr(&plait(&["import", "copy", &arg(&file)], &env));
    assert!(err.contains("values changed: likes, score, title"), "{err}");
    let err = stderr(&plait(&["import", "copy", &arg(&file)], &env));
    assert!(err.contains("nothing new"), "{err}");
    let (_, copy) = server.json("GET", "/api/rooms/copy/values", None).await;
    let (_, original) = server.json("GET", "/api/rooms/vals/values", None).await;
    assert_eq!(copy, original);

    // A restore point with the values is written within a tick or two.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    set_values(&server, "vals", "v2", -12, 4).await;
    let (status, _) = server
        .json(
            "POST",
            "/api/rooms/vals/counters/fresh",
            Some(serde_json::json!({"add": 1})),
        )
        .await;
    assert_eq!(status, 200);

    // The content at that time, to a file (through the server).
    let past = path("past.plait");
    ok(&plait(
        &["restore", "vals", "--at", &at, "--to-file", &arg(&past)],
        &env,
    ));
    assert_eq!(file_values(&past), then);
    // Restoring that time: the register and the PN-Counter go back, the rest is explained.
    let err = stderr(&plait(&["restore", "vals", "--at", &at], &env));
    assert!(err.contains("values changed: score, title"), "{err}");
    assert!(
        err.contains("note: likes: a gcounter cannot go down; left at 7 (it was 3 then)"),
        "{err}"
    );
    assert!(
        err.contains("note: fresh: created after that time; left as it is"),
        "{err}"
    );
    let (_, now) = server.json("GET", "/api/rooms/vals/values", None).await;
    assert_eq!(now["title"]["value"], "v1");
    assert_eq!(now["score"]["value"], 5);
    assert_eq!(now["likes"]["value"], 7);

    // Change again, then work on the store directly.
    set_values(&server, "vals", "v3", 10, 0).await;
    assert!(server.terminate().await.success());
    let err = stderr(&plait(
        &["restore", "vals", "--from", &arg(&file)],
        &offline,
    ));
    assert!(err.contains("values changed: score, title"), "{err}");
    let err = stderr(&plait(
        &["restore", "vals", "--from", &arg(&bare)],
        &offline,
    ));
    assert!(
        err.contains("holds no CRDT values: the values were left as they are"),
        "{err}"
    );
    let err = stderr(&plait(&["import", "offline", &arg(&file)], &offline));
    assert!(err.contains("values changed: likes, score, title"), "{err}");
    let err = stderr(&plait(&["import", "offline", &arg(&file)], &offline));
    assert!(err.contains("nothing new"), "{err}");
    let offline_past = path("offline-past.plait");
    ok(&plait(
        &[
            "restore",
            "vals",
            "--at",
            &at,
            "--to-file",
            &arg(&offline_past),
        ],
        &offline,
    ));
    assert_eq!(file_values(&offline_past), then);
    let offline_export = path("offline.plait");
    ok(&plait(
        &["export", "vals", "-o", &arg(&offline_export)],
        &offline,
    ));
    assert_eq!(
        file_values(&offline_export),
        serde_json::json!({"fresh": 1, "likes": 7, "score": 5, "title": "v1"})
    );

    // A server on the same store sees what the offline commands did.
    let server = binary::Server::start(&store, &[]).await;
    let (_, now) = server.json("GET", "/api/rooms/vals/values", None).await;
    assert_eq!(now["title"]["value"], "v1");
    assert_eq!(now["score"]["value"], 5);
    let (_, copied) = server.json("GET", "/api/rooms/offline/values", None).await;
    assert_eq!(copied["likes"]["value"], 3);
    server.kill();

    // A broken plait file is refused clearly.
    let broken = path("broken.plait");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() - 2]).unwrap();
    fails(
        &plait(&["import", "vals", &arg(&broken)], &offline),
        "is a broken plait snapshot file",
    );
    fails(
        &plait(&["import", "vals", &arg(&broken)], &offline),
        "truncated plait snapshot file",
    );
}

/// `plait delete` and `plait revoke`, through a running server (its clients are closed at once:
/// 4404 for the deleted room, 4401 for the revoked user) and on the store when none runs; an
/// unknown room is refused in the same words both ways (one `RoomOps` interface).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_revoke_go_through_the_server_or_the_store() {
    use plait_server::auth::{issue_hs256, now_secs, Claims, Right};
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    let secret = "cli-revoke-secret-cli-revoke-secret";
    let server = binary::Server::start(
        &store,
        &["--admin-token", "s3cret", "--auth-secret", secret],
    )
    .await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let env = [
        ("PLAIT_SERVER", base.as_str()),
        ("PLAIT_ADMIN_TOKEN", "s3cret"),
    ];
    let token = |user: &str| {
        let claims = Claims {
            rooms: vec!["*".into()],
            right: Right::Write,
            exp: now_secs() + 3600,
            iat: Some(now_secs()),
            user: Some(user.into()),
            jti: None,
        };
        issue_hs256(secret, &claims).unwrap()
    };
    let url = |port: u16, room: &str, user: &str| {
        format!("ws://127.0.0.1:{port}/{room}?token={}", token(user))
    };
    let ada = TestClient::connect(&url(server.port, "doomed", "ada")).await;
    ada.insert(0, "to be deleted");
    let bob = TestClient::connect(&url(server.port, "kept", "bob")).await;
    bob.insert(0, "bob's");
    let eve = TestClient::connect(&url(server.port, "kept", "eve")).await;
    eve.wait_text("bob's").await;

    let out = plait(&["delete", "doomed"], &env);
    ok(&out);
    assert!(
        stderr(&out).contains("deleted \"doomed\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(ada.wait_closed().await.0, 4404);
    fails(
        &plait(&["inspect", "doomed"], &env),
        "no room named \"doomed\"",
    );
    fails(&plait(&["inspect", "nope"], &env), "no room named \"nope\"");

    let out = plait(&["revoke", "--user", "eve"], &env);
    ok(&out);
    assert!(
        stderr(&out).contains("1 session(s) closed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(eve.wait_closed().await.0, 4401);
    // Exactly one of the three, checked before anything is sent.
    fails(
        &plait(&["revoke", "--user", "a", "--jti", "b"], &env),
        "cannot be used with",
    );
    server.kill();

    // No server: the same commands work on the store, and a server started later honours them.
    let offline = [("PLAIT_STORE", store.as_str())];
    let out = plait(&["delete", "kept"], &offline);
    ok(&out);
    assert!(
        stderr(&out).contains("deleted \"kept\""),
        "{}",
        stderr(&out)
    );
    fails(
        &plait(&["inspect", "kept"], &offline),
        "no room named \"kept\"",
    );
    let out = plait(&["delete", "kept"], &offline);
    assert!(
        stderr(&out).contains("nothing was stored"),
        "{}",
        stderr(&out)
    );
    ok(&plait(&["revoke", "--user", "bob"], &offline));
    let server = binary::Server::start(&store, &["--auth-secret", secret]).await;
    let refused =
        TestClient::connect_request(url(server.port, "kept", "bob"), yrs::Doc::new()).await;
    assert!(refused.is_err(), "a token revoked offline was accepted");
    let admitted =
        TestClient::connect_request(url(server.port, "kept", "ada"), yrs::Doc::new()).await;
    assert!(admitted.is_ok(), "another user's token was refused");
    server.kill();
}
