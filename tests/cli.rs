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
    // The same rooms, served from PostgreSQL.
    let server = binary::Server::start(&pg_url, &[]).await;
    for (room, text) in &expected {
        let c = TestClient::connect(&server.url(&room.replace(' ', "%20"))).await;
        assert_eq!(&c.text(), text, "{room}");
    }
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
