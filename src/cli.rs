//! The admin commands, written once over [`RoomOps`]: each goes through a running server's
//! admin API when one answers at `--server` (so connected clients see changes), and works on
//! the store directly when none does.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use plait_server::docs;
use plait_server::ops::{
    self, Changed, Exported, OpsError, RestoreFrom, RestorePoint, Revoked, RoomInfo, RoomOps,
    StoreOps,
};
use plait_server::snapshot_file::{self, Format, SnapshotFile};
use plait_server::stored_values;
use plait_store::{Revocation, SnapshotKind, StoreOptions};

use crate::remote::RemoteOps;

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

/// How a command reaches the rooms.
pub(crate) enum Via {
    Server(RemoteOps),
    Store(StoreOps),
}

impl Target {
    pub(crate) async fn resolve(&self) -> anyhow::Result<Via> {
        if !self.offline {
            let agent = RemoteOps::agent();
            match RemoteOps::probe(&self.server, &agent).await {
                Ok(true) => {
                    let token = self.admin_token.clone().ok_or_else(|| {
                        anyhow!(
                            "a plait server is running at {}: pass its --admin-token (or set \
                             PLAIT_ADMIN_TOKEN) so the command goes through it, or use --offline",
                            self.server
                        )
                    })?;
                    return Ok(Via::Server(RemoteOps::new(
                        self.server.clone(),
                        token,
                        agent,
                    )));
                }
                Ok(false) => {}
                Err(e) => bail!("{} answered /healthz with an error: {e}", self.server),
            }
        }
        let store = plait_store::open(&self.store, StoreOptions::default())
            .await
            .with_context(|| format!("opening the store {}", plait_store::redact(&self.store)))?;
        Ok(Via::Store(StoreOps::new(store)))
    }
}

/// Each operation goes the way [`Target::resolve`] found.
impl RoomOps for Via {
    async fn rooms(&self) -> Result<Vec<RoomInfo>, OpsError> {
        match self {
            Via::Server(o) => o.rooms().await,
            Via::Store(o) => o.rooms().await,
        }
    }
    async fn inspect(&self, room: &str) -> Result<serde_json::Value, OpsError> {
        match self {
            Via::Server(o) => o.inspect(room).await,
            Via::Store(o) => o.inspect(room).await,
        }
    }
    async fn export(&self, room: &str, at: Option<i64>) -> Result<Exported, OpsError> {
        match self {
            Via::Server(o) => o.export(room, at).await,
            Via::Store(o) => o.export(room, at).await,
        }
    }
    async fn import(&self, room: &str, file: SnapshotFile) -> Result<Changed, OpsError> {
        match self {
            Via::Server(o) => o.import(room, file).await,
            Via::Store(o) => o.import(room, file).await,
        }
    }
    async fn history(&self, room: &str) -> Result<Vec<RestorePoint>, OpsError> {
        match self {
            Via::Server(o) => o.history(room).await,
            Via::Store(o) => o.history(room).await,
        }
    }
    async fn restore(&self, room: &str, from: RestoreFrom) -> Result<Changed, OpsError> {
        match self {
            Via::Server(o) => o.restore(room, from).await,
            Via::Store(o) => o.restore(room, from).await,
        }
    }
    async fn compact(&self, room: &str) -> Result<(), OpsError> {
        match self {
            Via::Server(o) => o.compact(room).await,
            Via::Store(o) => o.compact(room).await,
        }
    }
    async fn delete(&self, room: &str) -> Result<bool, OpsError> {
        match self {
            Via::Server(o) => o.delete(room).await,
            Via::Store(o) => o.delete(room).await,
        }
    }
    async fn revoke(&self, revocation: Revocation) -> Result<Revoked, OpsError> {
        match self {
            Via::Server(o) => o.revoke(revocation).await,
            Via::Store(o) => o.revoke(revocation).await,
        }
    }
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

/// `plait rooms`.
pub(crate) async fn rooms(ops: &impl RoomOps, out: &mut impl Write) -> anyhow::Result<()> {
    let rooms = ops.rooms().await?;
    writeln!(
        out,
        "{:<32} {:>12} {:>10} {:<22} {:>9}",
        "ROOM", "BYTES", "UPDATES", "LAST CHANGE", "CLIENTS"
    )?;
    for r in rooms {
        let clients = r.connected.map_or("-".to_owned(), |c| c.to_string());
        writeln!(
            out,
            "{:<32} {:>12} {:>10} {:<22} {clients:>9}",
            r.name,
            r.stored_bytes,
            r.updates_since_snapshot,
            ms_to_text(r.updated_at_ms)
        )?;
    }
    Ok(())
}

/// `plait inspect ROOM`.
pub(crate) async fn inspect(
    ops: &impl RoomOps,
    room: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let json = ops.inspect(room).await?;
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

/// Lines for stderr saying what `plait export` wrote (`bytes` of `format` to `file`), and what
/// was left out.
pub(crate) fn describe_export(
    exported: &Exported,
    bytes: usize,
    file: &std::path::Path,
    format: FileFormat,
) -> Vec<String> {
    let values = exported.file.values.len();
    let mut lines = vec![match format {
        FileFormat::Plait => format!(
            "wrote {bytes} bytes to {} (plait snapshot: the document and {values} CRDT value(s))",
            file.display(),
        ),
        FileFormat::Yjs => format!(
            "wrote {bytes} bytes to {} (one Yjs v1 update)",
            file.display()
        ),
    }];
    if let Some(p) = exported.point_ms {
        lines.push(format!("content as of the restore point {}", ms_to_text(p)));
    }
    if format == FileFormat::Yjs && values > 0 {
        lines.push(format!(
            "note: the room's {values} CRDT value(s) were left out: --format yjs writes the document alone (the default format keeps them)"
        ));
    }
    if let Some(note) = &exported.note {
        lines.push(format!("note: {note}: the file holds no values"));
    }
    lines
}

/// `plait export ROOM -o FILE [--format F]`, and `plait restore ROOM --at T --to-file FILE`
/// (`at`: the content at that time). Answers the lines for stderr.
pub(crate) async fn export(
    ops: &impl RoomOps,
    room: &str,
    file: &PathBuf,
    format: FileFormat,
    at: Option<i64>,
) -> anyhow::Result<Vec<String>> {
    let exported = ops.export(room, at).await?;
    let bytes = exported.file.encode(format.into());
    // Write to a temporary file first so a failure never leaves half a file behind.
    let tmp = file.with_extension("partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(describe_export(&exported, bytes.len(), file, format))
}

/// Reads a room file: a plait snapshot file, or a bare Yjs v1 update.
fn read_file(file: &PathBuf) -> anyhow::Result<(SnapshotFile, Format)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match SnapshotFile::read(&bytes) {
        Ok(read) => Ok(read),
        Err(e) if snapshot_file::is_snapshot_file(&bytes) => {
            Err(anyhow!(e).context(format!("{} is a broken plait snapshot file", file.display())))
        }
        Err(e) => Err(anyhow!(e).context(format!(
            "{} is not a Yjs v1 update (as Y.encodeStateAsUpdate writes) nor a plait snapshot file (as plait export writes)",
            file.display()
        ))),
    }
}

/// Lines for stderr about the values, after a command's own first line.
fn value_lines(changed: &Changed) -> Vec<String> {
    let mut lines = Vec::new();
    if !changed.values_changed.is_empty() {
        lines.push(format!(
            "values changed: {}",
            changed.values_changed.join(", ")
        ));
    }
    lines.extend(changed.notes.iter().map(|n| format!("note: {n}")));
    lines
}

/// `plait import ROOM FILE`: merges the file's content (and values) into the room. Answers
/// the lines for stderr.
pub(crate) async fn import(
    ops: &impl RoomOps,
    room: &str,
    file: &PathBuf,
) -> anyhow::Result<Vec<String>> {
    let (parsed, _) = read_file(file)?;
    let changed = ops.import(room, parsed).await?;
    let first = if changed.changed {
        "imported"
    } else {
        "nothing new: the room already had all of it"
    };
    Ok(std::iter::once(first.to_owned())
        .chain(value_lines(&changed))
        .collect())
}

/// `plait history ROOM`.
pub(crate) async fn history(
    ops: &impl RoomOps,
    room: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let points = ops.history(room).await?;
    if points.is_empty() {
        bail!("room {room:?} has no restore points yet (they are written every --history-interval-ms and when a room unloads)");
    }
    writeln!(
        out,
        "{:<22} {:<11} {:>8} {:>12}",
        "TIME", "KIND", "SEQ", "BYTES"
    )?;
    for p in points {
        writeln!(
            out,
            "{:<22} {:<11} {:>8} {:>12}",
            ms_to_text(p.created_at_ms),
            p.kind,
            p.up_to_seq,
            p.bytes
        )?;
    }
    Ok(())
}

/// What `plait restore` restores from, as given on the command line.
#[derive(Debug)]
pub(crate) enum RestoreArg {
    File(PathBuf),
    Time(i64),
}

/// `plait restore ROOM --from FILE | --at TIME`: a forward edit to that content, and the
/// values set back. Answers the lines for stderr.
pub(crate) async fn restore(
    ops: &impl RoomOps,
    room: &str,
    from: RestoreArg,
) -> anyhow::Result<Vec<String>> {
    let from = match from {
        RestoreArg::File(f) => {
            let (file, format) = read_file(&f)?;
            RestoreFrom::File(file, format)
        }
        RestoreArg::Time(at) => RestoreFrom::At(at),
    };
    let changed = ops.restore(room, from).await?;
    let what = if changed.changed {
        "restored"
    } else {
        "already at that content; nothing changed"
    };
    let first = match changed.restored_point_ms {
        Some(p) => format!("{what} (restore point {})", ms_to_text(p)),
        None => what.to_owned(),
    };
    Ok(std::iter::once(first)
        .chain(value_lines(&changed))
        .collect())
}

/// `plait compact [ROOM]`: one room, or every stored room; answers how many.
pub(crate) async fn compact(ops: &impl RoomOps, room: Option<&str>) -> anyhow::Result<usize> {
    let names = match room {
        Some(r) => vec![r.to_owned()],
        None => ops.rooms().await?.into_iter().map(|r| r.name).collect(),
    };
    for name in &names {
        ops.compact(name)
            .await
            .with_context(|| format!("compacting {name:?}"))?;
    }
    Ok(names.len())
}

/// `plait delete ROOM`: answers the line for stderr.
pub(crate) async fn delete(ops: &impl RoomOps, room: &str) -> anyhow::Result<String> {
    Ok(if ops.delete(room).await? {
        format!("deleted {room:?}: its clients were closed (4404) and everything stored of it removed, restore points too")
    } else {
        format!("nothing was stored of {room:?}; nothing to delete")
    })
}

/// What `plait revoke` revokes: exactly one of them (clap enforces it).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct RevokeArgs {
    /// Every token naming this user.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// The token with this `jti` (`plait token --jti`).
    #[arg(long)]
    pub(crate) jti: Option<String>,
    /// Every token issued before this time (2026-11-23T17:00:00Z) or this long ago (15m, 2h).
    #[arg(long)]
    pub(crate) issued_before: Option<String>,
}

/// `plait revoke`: answers the line for stderr.
pub(crate) async fn revoke(
    ops: &impl RoomOps,
    via_server: bool,
    args: RevokeArgs,
) -> anyhow::Result<String> {
    let issued_before = args
        .issued_before
        .as_deref()
        .map(|t| parse_time(t).map(|ms| (ms / 1000) as u64))
        .transpose()?;
    let revocation = Revocation {
        user: args.user,
        jti: args.jti,
        issued_before,
        created_at_ms: plait_store::now_ms(),
    };
    let revoked = ops.revoke(revocation).await?;
    Ok(if via_server {
        format!(
            "revoked: {} session(s) closed here (4401); other processes close theirs within {} s",
            revoked.closed,
            plait_server::REVOCATIONS_POLL.as_secs()
        )
    } else {
        format!(
            "revoked in the store: running servers close the sessions it covers within {} s",
            plait_server::REVOCATIONS_POLL.as_secs()
        )
    })
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
            let values = ops::encoded_values(source.as_ref(), &r.name).await?;
            dest.write_snapshot(
                &r.name,
                &ops::snapshot_of(&doc, stored.last_seq, SnapshotKind::Compaction, values),
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
