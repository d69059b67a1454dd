//! [`RoomOps`] through a running server's admin API: the CLI's way to the rooms when a server
//! answers, so connected clients see what a command changes. The API answers with the types
//! the server's own implementation returns, so this is only transport.

use std::io::Read;
use std::time::Duration;

use plait_server::admin;
use plait_server::ops::{
    Changed, Exported, OpsError, RestoreFrom, RestorePoint, Revoked, RoomInfo, RoomOps,
};
use plait_server::snapshot_file::{Format, SnapshotFile};
use plait_store::Revocation;
use serde::de::DeserializeOwned;

/// A running server's admin API.
#[derive(Clone)]
pub(crate) struct RemoteOps {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// An answer: its headers and its body.
struct Answer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

fn encode(room: &str) -> String {
    percent_encoding::utf8_percent_encode(room, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl RemoteOps {
    pub(crate) fn new(base: String, token: String, agent: ureq::Agent) -> Self {
        RemoteOps { base, token, agent }
    }

    /// Whether anything answers at `base` (a transport error means nothing does).
    pub(crate) async fn probe(base: &str, agent: &ureq::Agent) -> Result<bool, String> {
        let health = format!("{}/healthz", base.trim_end_matches('/'));
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || match agent.get(&health).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Transport(_)) => Ok(false),
            Err(e) => Err(e.to_string()),
        })
        .await
        .map_err(|e| e.to_string())?
    }

    pub(crate) fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(Duration::from_secs(120))
            .build()
    }

    /// One request, off the async runtime (ureq blocks); an error answer becomes the
    /// [`OpsError`] its status stands for, with the server's message.
    async fn send(
        &self,
        method: &'static str,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, OpsError> {
        let this = self.clone();
        let call = move || {
            let url = format!("{}{path}", this.base.trim_end_matches('/'));
            let req = this
                .agent
                .request(method, &url)
                .set("Authorization", &format!("Bearer {}", this.token));
            let result = match &body {
                Some(b) => req.send_bytes(b),
                None => req.call(),
            };
            match result {
                Ok(resp) => {
                    let headers: Vec<(String, String)> = resp
                        .headers_names()
                        .into_iter()
                        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_owned())))
                        .collect();
                    let mut out = Vec::new();
                    resp.into_reader()
                        .read_to_end(&mut out)
                        .map_err(|e| OpsError::Failed(format!("reading the answer: {e}")))?;
                    Ok(Answer { headers, body: out })
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or(text);
                    Err(OpsError::from_status(code, message))
                }
                Err(e) => Err(OpsError::Unavailable(format!(
                    "could not reach the server at {}: {e}",
                    this.base
                ))),
            }
        };
        tokio::task::spawn_blocking(call)
            .await
            .map_err(|e| OpsError::Failed(e.to_string()))?
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<T, OpsError> {
        let answer = self.send(method, path, body).await?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| OpsError::Failed(format!("the server sent an unexpected answer: {e}")))
    }
}

impl RoomOps for RemoteOps {
    async fn rooms(&self) -> Result<Vec<RoomInfo>, OpsError> {
        self.json("GET", "/api/admin/rooms".into(), None).await
    }

    async fn inspect(&self, room: &str) -> Result<serde_json::Value, OpsError> {
        self.json("GET", format!("/api/admin/rooms/{}", encode(room)), None)
            .await
    }

    async fn export(&self, room: &str, at: Option<i64>) -> Result<Exported, OpsError> {
        let mut path = format!("/api/admin/rooms/{}/export?format=plait", encode(room));
        if let Some(at) = at {
            path.push_str(&format!("&at={at}"));
        }
        let answer = self.send("GET", path, None).await?;
        let file = SnapshotFile::decode(&answer.body)
            .map_err(|e| OpsError::Failed(format!("the server sent a broken file: {e}")))?;
        Ok(Exported {
            file,
            point_ms: answer
                .header(admin::POINT_HEADER)
                .and_then(|v| v.parse().ok()),
            note: answer.header(admin::NOTE_HEADER),
        })
    }

    async fn import(&self, room: &str, file: SnapshotFile) -> Result<Changed, OpsError> {
        let path = format!("/api/admin/rooms/{}/import", encode(room));
        self.json("POST", path, Some(file.encode(Format::Plait)))
            .await
    }

    async fn history(&self, room: &str) -> Result<Vec<RestorePoint>, OpsError> {
        let path = format!("/api/admin/rooms/{}/history", encode(room));
        self.json("GET", path, None).await
    }

    async fn restore(&self, room: &str, from: RestoreFrom) -> Result<Changed, OpsError> {
        let base = format!("/api/admin/rooms/{}/restore", encode(room));
        match from {
            RestoreFrom::At(at) => self.json("POST", format!("{base}?at={at}"), None).await,
            // Sent in its own format: a bare Yjs update says the values are unknown.
            RestoreFrom::File(file, format) => {
                self.json("POST", base, Some(file.encode(format))).await
            }
        }
    }

    async fn compact(&self, room: &str) -> Result<(), OpsError> {
        let path = format!("/api/admin/rooms/{}/compact", encode(room));
        self.send("POST", path, Some(Vec::new())).await.map(drop)
    }

    async fn delete(&self, room: &str) -> Result<bool, OpsError> {
        #[derive(serde::Deserialize)]
        struct Deleted {
            deleted: bool,
        }
        let path = format!("/api/admin/rooms/{}", encode(room));
        let answer: Deleted = self.json("DELETE", path, None).await?;
        Ok(answer.deleted)
    }

    async fn revoke(&self, revocation: Revocation) -> Result<Revoked, OpsError> {
        let body = serde_json::json!({
            "user": revocation.user,
            "jti": revocation.jti,
            "issued_before": revocation.issued_before,
        });
        let body = serde_json::to_vec(&body).map_err(|e| OpsError::Failed(e.to_string()))?;
        self.json("POST", "/api/admin/revoke".into(), Some(body))
            .await
    }
}
