//! The admin commands. Each one goes through a running server's admin API when one answers
//! at `--server` (so connected clients see changes), and works on the store directly when
//! none does.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use plait_server::snapshot_file::{self, Format, SnapshotFile};
use plait_server::stored_values::{self, ValuesOutcome};
use plait_server::{admin, docs};
use plait_store::{Snapshot, SnapshotKind, Store, StoreOptions};

/// Where the commands act: a running server, or else the store.
#[derive(Debug, Clone, Args)]
pub(crate) struct Target {
    /// A running plait server to go through (its admin API).
    #[arg(long, env = "PLAIT_SERVER", default_value = "http://127.0.0.1:1234")]
    pub(crate) server: String,

    /// The server's --admin-token.
    #[arg(long, env = "PLAIT_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,

    /// The store to use when no server answers at --server.
    #[arg(long, env = "PLAIT_STORE", default_value = "sqlite://data/plait.db")]
    pub(crate) store: String,

    /// Work on the store even if a server answers (changes to loaded rooms then reach their
    /// clients only after the room reloads).
    #[arg(long)]
    pub(crate) offline: bool,
}

/// How a command reaches the data.
enum Via {
    Server(Api),
    Store(Arc<dyn Store>),
}

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }

    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
        let resp = self.send(method, path, body)?;
        let mut out = Vec::new();
        resp.into_reader().read_to_end(&mut out)?;
        Ok(out)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<ureq::Response> {
        let req = self
            .agent
            .request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token));
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                bail!("the server answered {code}: {msg}")
            }
            Err(e) => Err(anyhow!("could not reach the server at {}: {e}", self.base)),
        }
    }

    fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<serde_json::Value> {
        let bytes = self.call(method, path, body)?;
        serde_json::from_slice(&bytes).context("the server sent invalid JSON")
    }
}

fn encode(room: &str) -> String {
    percent_encoding::utf8_percent_encode(room, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Target {
    async fn resolve(&self) -> anyhow::Result<Via> {
        if !self.offline {
            let agent = ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .timeout(Duration::from_secs(120))
                .build();
            let health = format!("{}/healthz", self.server.trim_end_matches('/'));
            // Only whether something answers matters: a transport error means no server.
            let probe = tokio::task::spawn_blocking({
                let agent = agent.clone();
                move || match agent.get(&health).call() {
                    Ok(_) => Ok(true),
                    Err(ureq::Error::Transport(_)) => Ok(false),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?;
            match probe {
                Ok(true) => {
                    let token = self.admin_token.clone().ok_or_else(|| {
                        anyhow!(
                            "a plait server is running at {}: pass its --admin-token (or set \
                             PLAIT_ADMIN_TOKEN) so the command goes through it, or use --offline",
                            self.server
                        )
                    })?;
                    return Ok(Via::Server(Api {
                        base: self.server.clone(),
                        token,
                        agent,
                    }));
                }
                Ok(false) => {}
                Err(e) => bail!("{} answered /healthz with an error: {e}", self.server),
            }
        }
        let store = plait_store::open(&self.store, StoreOptions::default())
            .await
            .with_context(|| format!("opening the store {}", plait_store::redact(&self.store)))?;
        Ok(Via::Store(store))
    }
}

/// Runs a blocking API call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

fn ms_to_text(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// Parses `--at`: an RFC 3339 time (`2026-11-23T17:00:00Z`) or a duration ago (`15m`, `2h`).
pub(crate) fn parse_time(s: &str) -> anyhow::Result<i64> {
    let t = if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        t
    } else if let Ok(d) = humantime::parse_duration(s) {
        SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| anyhow!("{s} ago is before 1970"))?
    } else {
        bail!("{s:?} is neither a time like 2026-11-23T17:00:00Z nor a duration like 15m");
    };
    Ok(t.duration_since(UNIX_EPOCH)?.as_millis() as i64)
}

async fn load_existing(store: &dyn Store, room: &str) -> anyhow::Result<plait_store::StoredRoom> {
    let stored = store.load_room(room).await?;
    if stored.last_seq == 0 && stored.snapshot.is_none() {
        bail!("no room named {room:?} in the store");
    }
    Ok(stored)
}

/// `plait rooms`.
pub(crate) async fn rooms(target: &Target, out: &mut impl Write) -> anyhow::Result<()> {
    let rows: Vec<(String, u64, u64, i64, Option<u64>)> = match target.resolve().await? {
        Via::Server(api) => {
            let v = blocking(move || api.json("GET", "/api/admin/rooms", None)).await?;
            v.as_array()
                .ok_or_else(|| anyhow!("unexpected answer {v}"))?
                .iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_owned(),
                        r["stored_bytes"].as_u64().unwrap_or(0),
                        r["updates_since_snapshot"].as_u64().unwrap_or(0),
                        r["updated_at_ms"].as_i64().unwrap_or(0),
                        r["connected"].as_u64(),
                    )
                })
                .collect()
        }
        Via::Store(store) => store
            .list_rooms()
            .await?
            .into_iter()
            .map(|r| (r.name, r.stored_bytes, r.n_updates, r.updated_at_ms, None))
            .collect(),
    };
    writeln!(
        out,
        "{:<32} {:>12} {:>10} {:<22} {:>9}",
        "ROOM", "BYTES", "UPDATES", "LAST CHANGE", "CLIENTS"
    )?;
    for (name, bytes, updates, at, clients) in rows {
        let clients = clients.map_or("-".to_owned(), |c| c.to_string());
        writeln!(
            out,
            "{name:<32} {bytes:>12} {updates:>10} {:<22} {clients:>9}",
            ms_to_text(at)
        )?;
    }
    Ok(())
}

/// `plait inspect ROOM`.
pub(crate) async fn inspect(
    target: &Target,
    room: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let json = match target.resolve().await? {
        Via::Server(api) => {
            let path = format!("/api/admin/rooms/{}", encode(room));
            blocking(move || api.json("GET", &path, None)).await?
        }
        Via::Store(store) => {
            let stored = load_existing(store.as_ref(), room).await?;
            docs::to_json(&docs::doc_from_stored(&stored).0)
        }
    };
    writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    Ok(())
}

/// The `--format` of an exported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FileFormat {
    /// A plait snapshot file: the document and the CRDT values (import and restore read it).
    Plait,
    /// One Yjs v1 update, the document alone (`Y.applyUpdate` loads it).
    Yjs,
}

impl FileFormat {
    /// The format a file's name asks for: what a Yjs user expects of `notes.ydoc` is the
    /// update `Y.applyUpdate` loads. Another name gets the plait file, with a note saying so.
    pub(crate) fn for_file(path: &std::path::Path) -> (FileFormat, Option<String>) {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("ydoc" | "yjs" | "bin") => (FileFormat::Yjs, None),
            Some("plait") => (FileFormat::Plait, None),
            _ => (
                FileFormat::Plait,
                Some(format!(
                    "note: writing a plait snapshot file (document and values) to {}; name it .ydoc for a bare Yjs update, or pass --format",
                    path.display()
                )),
            ),
        }
    }
}

impl From<FileFormat> for Format {
    fn from(f: FileFormat) -> Format {
        match f {
            FileFormat::Plait => Format::Plait,
            FileFormat::Yjs => Format::Yjs,
        }
    }
}

/// What `plait export` wrote.
#[derive(Debug)]
pub(crate) struct Exported {
    /// Bytes written.
    pub(crate) bytes: usize,
    /// The CRDT values the room (or restore point) holds, written or not.
    pub(crate) values: usize,
    /// The restore point reached, for an export at a time.
    pub(crate) point: Option<i64>,
    /// Why values are missing, when they are unknown.
    pub(crate) note: Option<String>,
}

impl Exported {
    /// Lines for stderr: what was written, and what was left out.
    pub(crate) fn describe(&self, file: &std::path::Path, format: FileFormat) -> Vec<String> {
        let mut lines = vec![match format {
            FileFormat::Plait => format!(
                "wrote {} bytes to {} (plait snapshot: the document and {} CRDT value(s))",
                self.bytes,
                file.display(),
                self.values
            ),
            FileFormat::Yjs => format!(
                "wrote {} bytes to {} (one Yjs v1 update)",
                self.bytes,
                file.display()
            ),
        }];
        if let Some(p) = self.point {
            lines.push(format!("content as of the restore point {}", ms_to_text(p)));
        }
        if format == FileFormat::Yjs && self.values > 0 {
            lines.push(format!(
                "note: the room's {} CRDT value(s) were left out: --format yjs writes the document alone (the default format keeps them)",
                self.values
            ));
        }
        if let Some(note) = &self.note {
            lines.push(format!("note: {note}: the file holds no values"));
        }
        lines
    }
}

/// `plait export ROOM -o FILE [--format F]`, and `plait restore ROOM --at T --to-file FILE`
/// (`at`: the content at that time).
pub(crate) async fn export(
    target: &Target,
    room: &str,
    file: &PathBuf,
    format: FileFormat,
    at: Option<i64>,
) -> anyhow::Result<Exported> {
    let (bytes, values, point, note) = match target.resolve().await? {
        Via::Server(api) => {
            let mut path = format!(
                "/api/admin/rooms/{}/export?format={}",
                encode(room),
                Format::from(format).as_str()
            );
            if let Some(at) = at {
                path.push_str(&format!("&at={at}"));
            }
            blocking(move || {
                let resp = api.send("GET", &path, None)?;
                let header = |name: &str| resp.header(name).map(str::to_owned);
                let values = header(admin::VALUES_HEADER).and_then(|v| v.parse().ok());
                let point = header(admin::POINT_HEADER).and_then(|v| v.parse().ok());
                let note = header(admin::NOTE_HEADER);
                let mut bytes = Vec::new();
                resp.into_reader().read_to_end(&mut bytes)?;
                Ok((bytes, values.unwrap_or(0), point, note))
            })
            .await?
        }
        Via::Store(store) => {
            let (file, point, note) = match at {
                Some(at) => {
                    let past = admin::state_at(store.as_ref(), room, at)
                        .await
                        .map_err(|e| anyhow!(e))?;
                    let (values, note) = match past.values {
                        Ok(values) => (values, None),
                        Err(why) => (Vec::new(), Some(why)),
                    };
                    let file = SnapshotFile {
                        update: past.update,
                        values,
                    };
                    (file, Some(past.point_ms), note)
                }
                None => {
                    let rows = store.load_values(room).await?;
                    let stored = store.load_room(room).await?;
                    if stored.last_seq == 0 && stored.snapshot.is_none() && rows.is_empty() {
                        bail!("no room named {room:?} in the store");
                    }
                    let (values, skipped) = stored_values::from_rows(&rows);
                    for s in skipped {
                        eprintln!("warning: {s}");
                    }
                    let file = SnapshotFile {
                        update: docs::encode_state(&docs::doc_from_stored(&stored).0),
                        values: stored_values::named(&values),
                    };
                    (file, None, None)
                }
            };
            (file.encode(format.into()), file.values.len(), point, note)
        }
    };
    // Write to a temporary file first so a failure never leaves half a file behind.
    let tmp = file.with_extension("partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(Exported {
        bytes: bytes.len(),
        values,
        point,
        note,
    })
}

/// Reads a room file: a plait snapshot file, or a bare Yjs v1 update.
fn read_file(file: &PathBuf) -> anyhow::Result<(SnapshotFile, Format, Vec<u8>)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match SnapshotFile::read(&bytes) {
        Ok((parsed, format)) => Ok((parsed, format, bytes)),
        Err(e) if snapshot_file::is_snapshot_file(&bytes) => {
            Err(anyhow!(e).context(format!("{} is a broken plait snapshot file", file.display())))
        }
        Err(e) => Err(anyhow!(e).context(format!(
            "{} is not a Yjs v1 update (as Y.encodeStateAsUpdate writes) nor a plait snapshot file (as plait export writes)",
            file.display()
        ))),
    }
}

/// What an import or a restore did.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Whether anything changed.
    pub(crate) changed: bool,
    /// The restore point reached (restore at a time).
    pub(crate) point: Option<i64>,
    /// What happened to the values.
    pub(crate) values: ValuesOutcome,
}

impl Changes {
    fn from_json(v: &serde_json::Value) -> Self {
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Changes {
            changed: v["changed"].as_bool().unwrap_or(false),
            point: v["restored_point_ms"].as_i64(),
            values: ValuesOutcome {
                changed: strings("values_changed"),
                notes: strings("notes"),
            },
        }
    }

    /// Lines for stderr after the command's own first line.
    pub(crate) fn value_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.values.changed.is_empty() {
            lines.push(format!(
                "values changed: {}",
                self.values.changed.join(", ")
            ));
        }
        lines.extend(self.values.notes.iter().map(|n| format!("note: {n}")));
        lines
    }
}

/// Merges `incoming` values into the stored ones of `room` (no server: the store directly),
/// with `change` deciding what to merge; stores what changed with the CRDT merge.
async fn change_stored_values(
    store: &dyn Store,
    room: &str,
    change: impl FnOnce(&stored_values::RoomValues) -> Vec<stored_values::ValueUpdate>,
) -> anyhow::Result<ValuesOutcome> {
    let (mut values, skipped) = stored_values::from_rows(&store.load_values(room).await?);
    let incoming = change(&values);
    let (mut outcome, _) =
        stored_values::merge_updates(&mut values, incoming, |values, update| values.merge(update));
    if !outcome.changed.is_empty() {
        let rows = stored_values::to_rows(
            outcome
                .changed
                .iter()
                .filter_map(|n| values.get(n).map(|v| (n.as_str(), v))),
        );
        store
            .put_values(room, &rows, &stored_values::merge_stored)
            .await?;
    }
    outcome.notes.extend(skipped);
    Ok(outcome)
}

/// `plait import ROOM FILE`: merges the file's content (and values) into the room.
pub(crate) async fn import(target: &Target, room: &str, file: &PathBuf) -> anyhow::Result<Changes> {
    let (parsed, _, bytes) = read_file(file)?;
    match target.resolve().await? {
        Via::Server(api) => {
            let path = format!("/api/admin/rooms/{}/import", encode(room));
            let v = blocking(move || api.json("POST", &path, Some(&bytes))).await?;
            Ok(Changes::from_json(&v))
        }
        Via::Store(store) => {
            let incoming = stored_values::updates(parsed.values);
            let values = change_stored_values(store.as_ref(), room, |_| incoming).await?;
            let stored = store.load_room(room).await?;
            let (doc, _) = docs::doc_from_stored(&stored);
            let before = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&doc));
            docs::apply(&doc, &parsed.update)?;
            let document = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&doc)) != before;
            if document {
                store.append_updates(room, &[parsed.update.into()]).await?;
            }
            Ok(Changes {
                changed: document || !values.changed.is_empty(),
                point: None,
                values,
            })
        }
    }
}

/// `plait history ROOM`.
pub(crate) async fn history(
    target: &Target,
    room: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let rows: Vec<(i64, String, u64, u64)> = match target.resolve().await? {
        Via::Server(api) => {
            let path = format!("/api/admin/rooms/{}/history", encode(room));
            let v = blocking(move || api.json("GET", &path, None)).await?;
            v.as_array()
                .ok_or_else(|| anyhow!("unexpected answer {v}"))?
                .iter()
                .map(|s| {
                    (
                        s["created_at_ms"].as_i64().unwrap_or(0),
                        s["kind"].as_str().unwrap_or_default().to_owned(),
                        s["up_to_seq"].as_u64().unwrap_or(0),
                        s["bytes"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        }
        Via::Store(store) => store
            .list_snapshots(room)
            .await?
            .into_iter()
            .map(|s| {
                (
                    s.created_at_ms,
                    s.kind.as_str().to_owned(),
                    s.up_to_seq,
                    s.bytes,
                )
            })
            .collect(),
    };
    if rows.is_empty() {
        bail!("room {room:?} has no restore points yet (they are written every --history-interval-ms and when a room unloads)");
    }
    writeln!(
        out,
        "{:<22} {:<11} {:>8} {:>12}",
        "TIME", "KIND", "SEQ", "BYTES"
    )?;
    for (at, kind, seq, bytes) in rows {
        writeln!(
            out,
            "{:<22} {kind:<11} {seq:>8} {bytes:>12}",
            ms_to_text(at)
        )?;
    }
    Ok(())
}

/// What `plait restore` restores from.
#[derive(Debug)]
pub(crate) enum RestoreFrom {
    File(PathBuf),
    Time(i64),
}

/// `plait restore ROOM --from FILE | --at TIME`: a forward edit to that content, and the values
/// set back (see `stored_values::restore_updates`).
pub(crate) async fn restore(
    target: &Target,
    room: &str,
    from: RestoreFrom,
) -> anyhow::Result<Changes> {
    let file = match &from {
        RestoreFrom::File(f) => Some(read_file(f)?),
        RestoreFrom::Time(_) => None,
    };
    match target.resolve().await? {
        Via::Server(api) => {
            let path = match &from {
                RestoreFrom::Time(at) => {
                    format!("/api/admin/rooms/{}/restore?at={at}", encode(room))
                }
                RestoreFrom::File(_) => format!("/api/admin/rooms/{}/restore", encode(room)),
            };
            let body = file.map(|(_, _, bytes)| bytes);
            let v = blocking(move || api.json("POST", &path, body.as_deref())).await?;
            Ok(Changes::from_json(&v))
        }
        Via::Store(store) => {
            let stored = load_existing(store.as_ref(), room).await?;
            let (state, past_values, point) = match (file, &from) {
                (Some((parsed, Format::Plait, _)), _) => (parsed.update, Ok(parsed.values), None),
                (Some((parsed, Format::Yjs, _)), _) => (
                    parsed.update,
                    Err("the file is a bare Yjs update and holds no CRDT values".to_owned()),
                    None,
                ),
                (None, RestoreFrom::Time(at)) => {
                    let past = admin::state_at(store.as_ref(), room, *at)
                        .await
                        .map_err(|e| anyhow!(e))?;
                    (past.update, past.values, Some(past.point_ms))
                }
                (None, RestoreFrom::File(_)) => unreachable!("read above"),
            };
            let values = match past_values {
                Ok(past) => {
                    let mut notes = Vec::new();
                    let mut outcome = change_stored_values(store.as_ref(), room, |current| {
                        let mut hlc = stored_values::offline_hlc(current);
                        let (updates, restore_notes) =
                            stored_values::restore_updates(current, &past, &mut hlc);
                        notes = restore_notes;
                        updates
                    })
                    .await?;
                    notes.append(&mut outcome.notes);
                    outcome.notes = notes;
                    outcome
                }
                Err(why) if !store.load_values(room).await?.is_empty() => ValuesOutcome {
                    changed: Vec::new(),
                    notes: vec![format!("{why}: the values were left as they are")],
                },
                Err(_) => ValuesOutcome::default(),
            };
            let (current, _) = docs::doc_from_stored(&stored);
            let target_doc = docs::doc_from_update(&state)?;
            let document = match docs::restore_edit(&current, &target_doc) {
                Some(edit) => {
                    store.append_updates(room, &[edit.into()]).await?;
                    true
                }
                None => false,
            };
            Ok(Changes {
                changed: document || !values.changed.is_empty(),
                point,
                values,
            })
        }
    }
}

/// Lines for stderr describing a restore.
pub(crate) fn describe_restore(changes: &Changes) -> Vec<String> {
    let what = if changes.changed {
        "restored"
    } else {
        "already at that content; nothing changed"
    };
    let first = match changes.point {
        Some(p) => format!("{what} (restore point {})", ms_to_text(p)),
        None => what.to_owned(),
    };
    std::iter::once(first)
        .chain(changes.value_lines())
        .collect()
}

/// `plait compact [ROOM]`.
pub(crate) async fn compact(target: &Target, room: Option<&str>) -> anyhow::Result<usize> {
    match target.resolve().await? {
        Via::Server(api) => {
            let names: Vec<String> = match room {
                Some(r) => vec![r.to_owned()],
                None => {
                    let api2 = Api {
                        base: api.base.clone(),
                        token: api.token.clone(),
                        agent: api.agent.clone(),
                    };
                    let v = blocking(move || api2.json("GET", "/api/admin/rooms", None)).await?;
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                }
            };
            let n = names.len();
            blocking(move || {
                for name in names {
                    api.json(
                        "POST",
                        &format!("/api/admin/rooms/{}/compact", encode(&name)),
                        Some(&[]),
                    )?;
                }
                Ok(())
            })
            .await?;
            Ok(n)
        }
        Via::Store(store) => {
            let names = match room {
                Some(r) => vec![r.to_owned()],
                None => store
                    .list_rooms()
                    .await?
                    .into_iter()
                    .map(|r| r.name)
                    .collect(),
            };
            for name in &names {
                let stored = load_existing(store.as_ref(), name).await?;
                let (doc, _) = docs::doc_from_stored(&stored);
                let values = encoded_values(store.as_ref(), name).await?;
                store
                    .write_snapshot(
                        name,
                        &snapshot_of(&doc, stored.last_seq, SnapshotKind::Compaction, values),
                    )
                    .await?;
            }
            Ok(names.len())
        }
    }
}

/// The stored values of `room` in the snapshot encoding (rows that do not decode left out).
async fn encoded_values(store: &dyn Store, room: &str) -> anyhow::Result<Vec<u8>> {
    let (values, _) = stored_values::from_rows(&store.load_values(room).await?);
    Ok(snapshot_file::encode_values(values.iter()))
}

fn snapshot_of(doc: &yrs::Doc, up_to_seq: u64, kind: SnapshotKind, values: Vec<u8>) -> Snapshot {
    use yrs::updates::encoder::Encode;
    let sv = yrs::ReadTxn::state_vector(&yrs::Transact::transact(doc)).encode_v1();
    Snapshot {
        up_to_seq,
        kind,
        data: docs::encode_state(doc).into(),
        state_vector: sv.into(),
        created_at_ms: plait_store::now_ms(),
        values: Some(values.into()),
    }
}

/// `plait migrate --from URL --to URL`: copies every room (content, values, restore points)
/// and verifies each by comparing state vectors.
pub(crate) async fn migrate(from: &str, to: &str, out: &mut impl Write) -> anyhow::Result<usize> {
    let open = |url: String| async move {
        plait_store::open(&url, StoreOptions::default())
            .await
            .with_context(|| format!("opening {}", plait_store::redact(&url)))
    };
    let source = open(from.to_owned()).await?;
    let dest = open(to.to_owned()).await?;
    let rooms = source.list_rooms().await?;
    for r in &rooms {
        let stored = source.load_room(&r.name).await?;
        let (doc, skipped) = docs::doc_from_stored(&stored);
        if skipped > 0 {
            writeln!(
                out,
                "warning: {}: {skipped} stored updates did not apply and were not copied",
                r.name
            )?;
        }
        let existing = dest.load_room(&r.name).await?;
        if existing.last_seq == 0 && existing.snapshot.is_none() {
            // A fresh room: keep its restore points, then its state as the newest snapshot.
            for info in source.list_snapshots(&r.name).await? {
                if info.kind == SnapshotKind::Compaction {
                    continue;
                }
                if let Some(s) = source.load_snapshot(&r.name, info.id).await? {
                    dest.write_snapshot(&r.name, &s).await?;
                }
            }
            let values = encoded_values(source.as_ref(), &r.name).await?;
            dest.write_snapshot(
                &r.name,
                &snapshot_of(&doc, stored.last_seq, SnapshotKind::Compaction, values),
            )
            .await?;
        } else {
            // The destination already has the room: merge (a CRDT merge loses nothing).
            dest.append_updates(&r.name, &[docs::encode_state(&doc).into()])
                .await?;
        }
        // Values merge with any the destination already holds (so migrating twice changes
        // nothing, and counters never double).
        let values = source.load_values(&r.name).await?;
        if !values.is_empty() {
            dest.put_values(&r.name, &values, &stored_values::merge_stored)
                .await?;
        }
        let (copied, _) = docs::doc_from_stored(&dest.load_room(&r.name).await?);
        let have = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&copied));
        let need = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&doc));
        if !need.iter().all(|(c, clock)| have.get(c) >= *clock) {
            bail!("room {:?} did not verify after copying (state vectors differ); the source is untouched", r.name);
        }
        // Every source value must be contained in the destination's (merging it in changes
        // nothing).
        let (want, _) = stored_values::from_rows(&values);
        let (mut got, _) = stored_values::from_rows(&dest.load_values(&r.name).await?);
        let (missing, _) = stored_values::merge_updates(
            &mut got,
            stored_values::updates(stored_values::named(&want)),
            |values, update| values.merge(update),
        );
        if !missing.changed.is_empty() || !missing.notes.is_empty() {
            bail!(
                "room {:?} did not verify after copying (values differ: {}); the source is untouched",
                r.name,
                missing.changed.iter().chain(&missing.notes).cloned().collect::<Vec<_>>().join(", ")
            );
        }
        writeln!(out, "{}: copied and verified", r.name)?;
    }
    Ok(rooms.len())
}
