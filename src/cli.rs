//! The admin commands. Each one goes through a running server's admin API when one answers
//! at `--server` (so connected clients see changes), and works on the store directly when
//! none does.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use plait_server::docs;
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
        let req = self
            .agent
            .request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token));
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => {
                let mut out = Vec::new();
                resp.into_reader().read_to_end(&mut out)?;
                Ok(out)
            }
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

/// `plait export ROOM -o FILE`.
pub(crate) async fn export(target: &Target, room: &str, file: &PathBuf) -> anyhow::Result<usize> {
    let bytes = match target.resolve().await? {
        Via::Server(api) => {
            let path = format!("/api/admin/rooms/{}/export", encode(room));
            blocking(move || api.call("GET", &path, None)).await?
        }
        Via::Store(store) => {
            let stored = load_existing(store.as_ref(), room).await?;
            docs::encode_state(&docs::doc_from_stored(&stored).0)
        }
    };
    // Write to a temporary file first so a failure never leaves half a file behind.
    let tmp = file.with_extension("partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(bytes.len())
}

fn read_update(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    docs::doc_from_update(&bytes).with_context(|| {
        format!(
            "{} is not a Yjs v1 update (as Y.encodeStateAsUpdate writes)",
            file.display()
        )
    })?;
    Ok(bytes)
}

/// `plait import ROOM FILE`: merges the file's content into the room.
pub(crate) async fn import(target: &Target, room: &str, file: &PathBuf) -> anyhow::Result<bool> {
    let bytes = read_update(file)?;
    match target.resolve().await? {
        Via::Server(api) => {
            let path = format!("/api/admin/rooms/{}/import", encode(room));
            let v = blocking(move || api.json("POST", &path, Some(&bytes))).await?;
            Ok(v["changed"].as_bool().unwrap_or(false))
        }
        Via::Store(store) => {
            let stored = store.load_room(room).await?;
            let (doc, _) = docs::doc_from_stored(&stored);
            let before = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&doc));
            docs::apply(&doc, &bytes)?;
            let changed = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&doc)) != before;
            if changed {
                store.append_updates(room, &[bytes.into()]).await?;
            }
            Ok(changed)
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

/// `plait restore ROOM --from FILE | --at TIME`: a forward edit to that content.
pub(crate) async fn restore(
    target: &Target,
    room: &str,
    from: RestoreFrom,
) -> anyhow::Result<String> {
    let file_state = match &from {
        RestoreFrom::File(f) => Some(read_update(f)?),
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
            let v = blocking(move || api.json("POST", &path, file_state.as_deref())).await?;
            Ok(describe_restore(
                v["changed"].as_bool().unwrap_or(false),
                v["restored_point_ms"].as_i64(),
            ))
        }
        Via::Store(store) => {
            let stored = load_existing(store.as_ref(), room).await?;
            let (state, point) = match (file_state, &from) {
                (Some(s), _) => (s, None),
                (None, RestoreFrom::Time(at)) => {
                    let (s, p) = plait_server::admin::state_at(store.as_ref(), room, *at)
                        .await
                        .map_err(|e| anyhow!(e))?;
                    (s, Some(p))
                }
                (None, RestoreFrom::File(_)) => unreachable!("read above"),
            };
            let (current, _) = docs::doc_from_stored(&stored);
            let target_doc = docs::doc_from_update(&state)?;
            let changed = match docs::restore_edit(&current, &target_doc) {
                Some(edit) => {
                    store.append_updates(room, &[edit.into()]).await?;
                    true
                }
                None => false,
            };
            Ok(describe_restore(changed, point))
        }
    }
}

fn describe_restore(changed: bool, point: Option<i64>) -> String {
    let what = if changed {
        "restored"
    } else {
        "already at that content; nothing changed"
    };
    match point {
        Some(p) => format!("{what} (restore point {})", ms_to_text(p)),
        None => what.to_owned(),
    }
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
                store
                    .write_snapshot(
                        name,
                        &snapshot_of(&doc, stored.last_seq, SnapshotKind::Compaction),
                    )
                    .await?;
            }
            Ok(names.len())
        }
    }
}

fn snapshot_of(doc: &yrs::Doc, up_to_seq: u64, kind: SnapshotKind) -> Snapshot {
    use yrs::updates::encoder::Encode;
    let sv = yrs::ReadTxn::state_vector(&yrs::Transact::transact(doc)).encode_v1();
    Snapshot {
        up_to_seq,
        kind,
        data: docs::encode_state(doc).into(),
        state_vector: sv.into(),
        created_at_ms: plait_store::now_ms(),
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
            dest.write_snapshot(
                &r.name,
                &snapshot_of(&doc, stored.last_seq, SnapshotKind::Compaction),
            )
            .await?;
        } else {
            // The destination already has the room: merge (a CRDT merge loses nothing).
            dest.append_updates(&r.name, &[docs::encode_state(&doc).into()])
                .await?;
        }
        let values = source.load_values(&r.name).await?;
        if !values.is_empty() {
            dest.put_values(&r.name, &values).await?;
        }
        let (copied, _) = docs::doc_from_stored(&dest.load_room(&r.name).await?);
        let have = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&copied));
        let need = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&doc));
        if !need.iter().all(|(c, clock)| have.get(c) >= *clock) {
            bail!("room {:?} did not verify after copying (state vectors differ); the source is untouched", r.name);
        }
        writeln!(out, "{}: copied and verified", r.name)?;
    }
    Ok(rooms.len())
}
