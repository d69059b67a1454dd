//! Webhooks to an `https://` receiver: a Python HTTPS server with a certificate from a test CA,
//! which plait trusts through `SSL_CERT_FILE` (as an operator with a private CA would), and
//! refuses without it.

mod binary;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::TestClient;

#[path = "../crates/plait-server/tests/support/mod.rs"]
mod support;

const SECRET: &str = "tls-webhook-secret";

/// Runs a command, failing the test with its output if it fails.
fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem).
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=plait test CA",
        "-days",
        "1",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("key.pem"),
        "-out",
        &p("cert.csr"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("cert.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

const RECEIVER: &str = r#"
import http.server, json, ssl, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['content-length']))
        print(json.dumps({"signature": self.headers['x-plait-signature'], "body": body.decode()}), flush=True)
        self.send_response(200)
        self.send_header('content-length', '0')
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', 0), Hook)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The receiver process, stopped when the test ends, whether it passes or not.
struct Receiver(std::process::Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_an_https_receiver_that_the_system_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let mut receiver = Receiver(
        Command::new("python3")
            .args(["-c", RECEIVER, &cert, &key])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the receiver"),
    );
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = receiver.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = lines.recv().await.expect("the receiver's port");
    let url = format!("https://127.0.0.1:{port}/hook");
    let store = format!("sqlite://{}/plait.db", dir.path().display());
    let args = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--webhook-debounce-ms",
        "50",
        "--webhook-max-attempts",
        "2",
    ];

    // Without the CA, the receiver's certificate is refused: nothing is delivered.
    std::env::set_var("SSL_CERT_FILE", dir.path().join("empty.pem"));
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let server = binary::Server::start(&store, &args).await;
    let client = TestClient::connect(&server.url("secure")).await;
    client.insert(0, "first");
    let observer = TestClient::connect(&server.url("secure")).await;
    observer.wait_text("first").await;
    let refused = tokio::time::timeout(Duration::from_secs(3), lines.recv()).await;
    assert!(
        refused.is_err(),
        "delivered to an untrusted receiver: {refused:?}"
    );
    // Stopped cleanly, it hands its delivery lease back: killed, it left the next server (on
    // another port, so another holder) waiting up to the lease's 15 s, as long as the wait
    // below, and the test failed whenever the machine was slow.
    assert!(server.terminate().await.success());

    // With the CA in SSL_CERT_FILE: delivered, signed.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let server = binary::Server::start(&store, &args).await;
    let client = TestClient::connect(&server.url("secure")).await;
    client.insert(0, "second ");
    let line = tokio::time::timeout(Duration::from_secs(15), lines.recv())
        .await
        .expect("an event over https")
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&line).unwrap();
    let body = got["body"].as_str().unwrap();
    assert_eq!(
        got["signature"],
        plait_server::webhooks::signature(SECRET, body.as_bytes())
    );
    let event: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["room"], "secure");
    assert_eq!(event["type"], "room.changed");
    server.kill();
}
