//! PostgreSQL for the binary's tests: a fresh database on the shared server, or a throwaway
//! cluster started in a temp dir for tests that stop the database.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared test server (`PLAIT_TEST_POSTGRES_URL`, default the local `test` database).
pub fn shared_url() -> String {
    std::env::var("PLAIT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether a missing PostgreSQL fails the test (CI) or skips it (a laptop without one).
pub fn required() -> bool {
    std::env::var("PLAIT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

fn skip<T>(why: &str) -> Option<T> {
    assert!(
        !required(),
        "PostgreSQL is required (PLAIT_REQUIRE_POSTGRES=1): {why}"
    );
    eprintln!("SKIPPED PostgreSQL: {why}");
    None
}

/// A fresh, empty database on the shared server; its URL.
pub async fn fresh_database(prefix: &str) -> Option<String> {
    let url = shared_url();
    let admin = match sqlx::PgPool::connect(&url).await {
        Ok(p) => p,
        Err(e) => return skip(&format!("{url} unreachable: {e}")),
    };
    let name = format!("{prefix}_{}_{}", std::process::id(), rand_suffix());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let base = url
        .rsplit_once('/')
        .map_or(url.as_str(), |(b, _)| b)
        .to_owned();
    Some(format!("{base}/{name}"))
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// A PostgreSQL cluster of our own, in a temp dir, on a free port, run as the `postgres` user
/// (initdb refuses root). Stopped and removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = if nix_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.args(args).output().expect("run a PostgreSQL tool")
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    /// Starts a throwaway cluster, or `None` (skipped) when PostgreSQL's tools are missing.
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .find(|p| p.join("initdb").exists())
        });
        let Some(bin) = bin else {
            return skip("initdb not found under /usr/lib/postgresql");
        };
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres", dir.path().to_str().unwrap()])
            .status();
        let data = dir.path().join("data");
        let out = as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, bin, port };
        cluster.up();
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    pub fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").to_str().unwrap().to_owned();
        let out = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn down(&self) {
        let out = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}
