//! Runs the real `plait` binary on a free loopback port.
#![allow(dead_code, unreachable_pub)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub struct Server {
    pub port: u16,
    child: Child,
}

impl Server {
    /// Starts `plait serve` on `store` and waits until `/healthz` answers.
    pub async fn start(store: &str, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_plait"))
            .args(["serve", "--port", &port.to_string(), "--store", store])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn plait");
        let server = Server { port, child };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while server.get("/healthz").await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "plait did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://127.0.0.1:{}/{}", self.port, room)
    }

    /// A plain HTTP GET; `None` if nothing listens.
    pub async fn get(&self, path: &str) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.start_kill();
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("plait exits after SIGTERM")
            .unwrap()
    }
}
