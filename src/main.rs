//! The `plait` binary: `plait serve` (the default) runs the server.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use plait_server::{Config, Durability, LogFormat};
use plait_store::SyncMode;
use tokio::net::TcpListener;
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Serve(config)) => *config,
        None => *cli.serve,
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
    let listener = TcpListener::bind(addr).await.with_context(|| {
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
