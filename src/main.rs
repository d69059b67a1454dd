//! The `plait` binary: `plait serve` (the default) runs the server.

mod cli;
mod remote;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use plait_server::{Config, Durability, LogFormat};
use plait_store::SyncMode;
use tokio::net::{TcpListener, TcpSocket};
use tracing::info;

/// A y-websocket-compatible collaboration server for Yjs, with durable SQL storage.
#[derive(Debug, Parser)]
#[command(name = "plait", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command, `plait` serves with these flags.
    #[command(flatten)]
    serve: Box<Config>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(Box<Config>),
    /// Print a signed access token (HS256) for --auth-secret, for development and scripts.
    Token(token::TokenArgs),
    /// List stored rooms: size, updates since the last snapshot, last change, clients.
    Rooms(cli::Target),
    /// Print a room's document as JSON.
    Inspect {
        /// The room name.
        room: String,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Write a room to a file: its document and CRDT values as a plait snapshot file, or the
    /// document alone as one Yjs v1 update (`Y.applyUpdate` loads it). The file name picks
    /// which: `.ydoc`, `.yjs` and `.bin` get the Yjs update, `.plait` and any other name the
    /// plait file (with a note); `--format` overrides.
    Export {
        /// The room name.
        room: String,
        /// The file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// What to write, whatever the file is called.
        #[arg(long, value_enum)]
        format: Option<cli::FileFormat>,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Merge a file into a room: a plait snapshot file (`plait export`; its values are merged
    /// too, so importing twice changes nothing) or a Yjs v1 update (`Y.encodeStateAsUpdate`).
    Import {
        /// The room name (created if it does not exist).
        room: String,
        /// The file to read.
        file: PathBuf,
        #[command(flatten)]
        target: cli::Target,
    },
    /// List a room's restore points.
    History {
        /// The room name.
        room: String,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Restore a room's content from a file or as it was at a past time, as a new edit that
    /// connected clients merge; CRDT values are set back too where they can be (registers
    /// written again, PN-Counters adjusted; G-Counters never go down).
    Restore {
        /// The room name.
        room: String,
        /// A plait snapshot file or a Yjs v1 update holding the content to restore.
        #[arg(long, conflicts_with_all = ["at", "to_file"], required_unless_present = "at")]
        from: Option<PathBuf>,
        /// A time (2026-11-23T17:00:00Z) or how long ago (15m, 2h, 3days).
        #[arg(long)]
        at: Option<String>,
        /// Write the content at --at to this file (a plait snapshot file) instead of
        /// restoring the room.
        #[arg(long, requires = "at")]
        to_file: Option<PathBuf>,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Merge rooms' update logs into snapshots (one room, or every room).
    Compact {
        /// The room name; every room when omitted.
        room: Option<String>,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Delete a room: its clients are closed with 4404 (do not reconnect) and everything stored
    /// of it is removed, restore points too; a later connection starts it empty.
    Delete {
        /// The room name.
        room: String,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Revoke tokens (by user, by `jti`, or every token issued before a time): recorded in the
    /// store, so every server process refuses them and closes their sessions (4401).
    Revoke {
        #[command(flatten)]
        what: cli::RevokeArgs,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Copy every room from one store to another and verify it (e.g. SQLite to PostgreSQL).
    Migrate {
        /// The source store URL.
        #[arg(long)]
        from: String,
        /// The destination store URL.
        #[arg(long)]
        to: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Serve(config)) => *config,
        None => *cli.serve,
        Some(Command::Token(args)) => return token::run(args, &mut std::io::stdout()),
        Some(admin) => return run_admin(admin),
    };
    init_tracing(config.log_format);
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

fn run_admin(command: Command) -> anyhow::Result<()> {
    init_tracing(LogFormat::Pretty);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut out = std::io::stdout().lock();
    runtime.block_on(async {
        let lines = match command {
            Command::Serve(_) | Command::Token(_) => unreachable!("handled by main"),
            Command::Migrate { from, to } => {
                let n = cli::migrate(&from, &to, &mut out).await?;
                vec![format!("migrated {n} room(s)")]
            }
            Command::Rooms(target) => {
                cli::rooms(&target.resolve().await?, &mut out).await?;
                Vec::new()
            }
            Command::Inspect { room, target } => {
                cli::inspect(&target.resolve().await?, &room, &mut out).await?;
                Vec::new()
            }
            Command::Export {
                room,
                output,
                format,
                target,
            } => {
                let mut lines = Vec::new();
                let format = match format {
                    Some(format) => format,
                    None => {
                        let (format, note) = cli::FileFormat::for_file(&output);
                        lines.extend(note);
                        format
                    }
                };
                let ops = target.resolve().await?;
                lines.extend(cli::export(&ops, &room, &output, format, None).await?);
                lines
            }
            Command::Import { room, file, target } => {
                cli::import(&target.resolve().await?, &room, &file).await?
            }
            Command::History { room, target } => {
                cli::history(&target.resolve().await?, &room, &mut out).await?;
                Vec::new()
            }
            Command::Restore {
                room,
                from,
                at,
                to_file,
                target,
            } => {
                let from = match (from, at) {
                    (Some(f), _) => cli::RestoreArg::File(f),
                    (None, Some(at)) => cli::RestoreArg::Time(cli::parse_time(&at)?),
                    (None, None) => unreachable!("clap requires one"),
                };
                let ops = target.resolve().await?;
                match (from, to_file) {
                    (cli::RestoreArg::Time(at), Some(file)) => {
                        cli::export(&ops, &room, &file, cli::FileFormat::Plait, Some(at)).await?
                    }
                    (from, _) => cli::restore(&ops, &room, from).await?,
                }
            }
            Command::Compact { room, target } => {
                let n = cli::compact(&target.resolve().await?, room.as_deref()).await?;
                vec![format!("compacted {n} room(s)")]
            }
            Command::Delete { room, target } => {
                vec![cli::delete(&target.resolve().await?, &room).await?]
            }
            Command::Revoke { what, target } => {
                let ops = target.resolve().await?;
                let via_server = matches!(ops, cli::Via::Server(_));
                vec![cli::revoke(&ops, via_server, what).await?]
            }
        };
        for line in lines {
            eprintln!("{line}");
        }
        Ok(())
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let sync = match config.durability {
        Durability::Strict => SyncMode::Full,
        Durability::RelaxedMayLoseRecentEdits => SyncMode::Normal,
    };
    let options = plait_store::StoreOptions {
        sync,
        max_connections: config.store_pool_size,
    };
    let store = plait_store::open(&config.store, options)
        .await
        .with_context(|| {
            format!(
                "opening the store {} (set --store or PLAIT_STORE to sqlite://PATH or postgres://USER@HOST/DB)",
                plait_store::redact(&config.store)
            )
        })?;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = listen(addr).with_context(|| {
        format!("listening on {addr} (is another server using the port? set --port)")
    })?;
    let local = listener.local_addr()?;
    info!(
        address = %local,
        store = %plait_store::redact(&config.store),
        durability = ?config.durability,
        "plait listening on ws://{local}/ROOM (demo at http://{local}/)"
    );
    plait_server::run(listener, config, store, shutdown_signal()).await?;
    Ok(())
}

/// The accept queue asked of the kernel (which caps it at `net.core.somaxconn`).
/// `TcpListener::bind` asks for 128: when a few hundred clients reconnect at once the queue
/// overflows, the kernel drops their handshakes and they retry only after TCP's 1 s SYN
/// timeout (seen as a 1 s tail in the 500-client reconnect storm).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restart must not wait for TIME_WAIT sockets to expire.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections larger than `TcpListener::bind`'s queue of 128 all complete
    /// their TCP handshakes while the server is not accepting (busy), instead of some waiting
    /// out a 1 s SYN retransmission.
    #[tokio::test]
    async fn a_burst_of_connections_fits_in_the_accept_queue() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..400).map(|_| {
            tokio::time::timeout(
                std::time::Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures_util::future::join_all(connects).await;
        let completed = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(completed, 400, "handshakes dropped by a full accept queue");
        drop(listener);
    }
}
