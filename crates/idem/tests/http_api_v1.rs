//! HTTP API v1 against the `idem` binary: the OpenAPI document it serves is
//! docs/openapi.json, REST paths run the primitives with problem+json
//! errors and request ids, and schemathesis (installed into target/py from
//! tests/requirements-api.txt when missing) finds no failure.
//!
//! `IDEM_UPDATE_OPENAPI=1` rewrites docs/openapi.json from the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "api-secret";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An `idem serve` on free ports and a temporary data directory.
struct Idem {
    child: Child,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Idem {
    fn start() -> Idem {
        let dir = tempfile::tempdir().unwrap();
        let (port, http_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_idem"))
            .args(["serve", "--port", &port.to_string(), "--http-port", &http_port.to_string(), "--password", PASSWORD])
            .arg("--data")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start idem serve");
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(http).is_err() {
            assert!(Instant::now() < deadline, "idem serve did not open its HTTP port");
            std::thread::sleep(Duration::from_millis(50));
        }
        Idem { child, http, _dir: dir }
    }

    /// One request; returns status, lower-cased head, body.
    fn call(&self, method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(self.http).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {PASSWORD}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }
}

impl Drop for Idem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn served_openapi_is_the_one_in_docs() {
    let idem = Idem::start();
    let (status, _, body) = idem.call("GET", "/openapi.json", &[], "");
    assert_eq!(status, 200);
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    let file = root().join("docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&served).unwrap() + "\n";
    if std::env::var_os("IDEM_UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, &pretty).unwrap();
    }
    let kept = std::fs::read_to_string(&file).expect("docs/openapi.json (IDEM_UPDATE_OPENAPI=1 writes it)");
    assert_eq!(kept, pretty, "docs/openapi.json differs from /openapi.json; rerun with IDEM_UPDATE_OPENAPI=1");
}

#[test]
fn rest_paths_run_the_primitives() {
    let idem = Idem::start();
    let (s, head, body) =
        idem.call("POST", "/v1/idem/o%3A1/begin", &[("X-Request-Id", "req-42")], r#"{"fp":"a","lease_ms":60000}"#);
    assert_eq!(s, 200, "{body}");
    assert!(head.contains("x-request-id: req-42"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "started");
    let fence = v["reply"][1].as_u64().unwrap();
    let (s, _, body) =
        idem.call("POST", "/v1/idem/o%3A1/renew", &[], &format!(r#"{{"fence":{fence},"lease_ms":60000}}"#));
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["status"].as_str(), v["reply"][1].as_u64()), (Some("renewed"), Some(fence)));
    let (s, _, body) =
        idem.call("POST", "/v1/idem/o%3A1/commit", &[], &format!(r#"{{"fence":{fence},"result":"paid"}}"#));
    assert_eq!(s, 200, "{body}");
    let (_, _, body) = idem.call("POST", "/v1/idem/o%3A1/begin", &[], "{}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["status"].as_str(), v["reply"][1].as_str()), (Some("done"), Some("paid")));
    // The same key with another fingerprint: 422, as a problem document.
    let (s, head, body) = idem.call("POST", "/v1/idem/o%3A1/begin", &[], r#"{"fp":"b"}"#);
    assert_eq!(s, 422);
    assert!(head.contains("content-type: application/problem+json"), "{head}");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((p["status"].as_u64(), p["code"].as_str()), (Some(422), Some("MISMATCH")));
    // Bad input changes nothing and says why.
    let (s, _, body) = idem.call("POST", "/v1/locks/l1", &[], r#"{"owner":"w","lease_ms":"soon"}"#);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("lease_ms"), "{body}");
    let (_, _, body) = idem.call("GET", "/v1/locks/l1", &[], "");
    assert!(body.contains("\"free\""), "{body}");
    let (_, _, body) = idem.call("POST", "/v1/locks/l1", &[], r#"{"owner":"w","lease_ms":5000}"#);
    assert!(body.contains("\"acquired\""), "{body}");
    let (_, _, body) = idem.call("POST", "/v1/counters/c/add", &[], r#"{"delta":5,"max":10,"op":"x"}"#);
    assert!(body.contains("\"ok\""), "{body}");
    let (_, _, body) = idem.call("POST", "/v1/counters/c/add", &[], r#"{"delta":5,"max":10,"op":"x"}"#);
    assert!(body.contains("\"replayed\""), "{body}");
    // Without the password: 401 problem.
    let mut s = TcpStream::connect(idem.http).unwrap();
    s.write_all(b"GET /v1/idem/k HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    // /metrics counted the duplicate and the replay.
    let (_, _, metrics) = idem.call("GET", "/metrics", &[], "");
    assert!(metrics.contains("idem_duplicates_absorbed_total{primitive=\"idem\"} 1\n"), "{metrics}");
    assert!(metrics.contains("idem_duplicates_absorbed_total{primitive=\"counter\"} 1\n"), "{metrics}");
    assert!(
        metrics.contains("idem_command_outcomes_total{command=\"IDEM.BEGIN\",outcome=\"mismatch\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("idem_wal_sync_duration_seconds_count "), "{metrics}");
}

/// target/py/bin/schemathesis, installed from tests/requirements-api.txt
/// into the project's venv when missing.
fn schemathesis(root: &Path) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let venv = target.join("py");
    let bin = venv.join("bin/schemathesis");
    if !bin.exists() {
        if !venv.join("bin/python").exists() {
            let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap().success();
            assert!(ok, "python3 -m venv {} failed", venv.display());
        }
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(root.join("tests/requirements-api.txt"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install -r tests/requirements-api.txt failed");
    }
    bin
}

#[test]
fn schemathesis_finds_no_failure() {
    let root = root();
    let bin = schemathesis(&root);
    let idem = Idem::start();
    let out = Command::new(bin)
        .arg("run")
        .arg(format!("http://{}/openapi.json", idem.http))
        .args(["--header", &format!("Authorization: Bearer {PASSWORD}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
        ])
        .args(["--max-examples", "25", "--phases", "examples,coverage,fuzzing", "--seed", "21"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn idem_inspect_shows_a_running_key() {
    let idem = Idem::start();
    let (_, _, body) = idem.call("POST", "/v1/idem/job%2F7/begin", &[], r#"{"lease_ms":60000}"#);
    let fence = serde_json::from_str::<serde_json::Value>(&body).unwrap()["reply"][1].as_u64().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["inspect", "job/7", "--http", &idem.http.to_string(), "--password", PASSWORD])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["key"], "job/7");
    assert_eq!(v["idem"]["state"], "running");
    assert_eq!(v["idem"]["fence"].as_u64(), Some(fence));
    assert_eq!(v["idem"]["attempt"].as_u64(), Some(1));
    let wrong = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["inspect", "job/7", "--http", &idem.http.to_string(), "--password", "nope"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
}
