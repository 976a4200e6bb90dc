//! The dashboard in headless Chromium (scripts/setup-browser.sh installs
//! Debian's chromium and playwright-core; a machine where that fails fails
//! this test). Sends traffic, then checks that the charts and totals move
//! and that the key inspector shows a running attempt.
//!
//! `IDEM_UI_SCREENSHOTS=<dir>` also writes the screenshot used in the docs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{http, TestServer};
use idem_server::ServerConfig;

const PASSWORD: &str = "ui-secret";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_charts_move_and_the_inspector_shows_a_key() {
    let root = repo_root();
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let setup = Command::new(root.join("scripts/setup-browser.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run scripts/setup-browser.sh");
    assert!(setup.success(), "scripts/setup-browser.sh failed: the dashboard test needs chromium and playwright-core");

    let config = ServerConfig {
        http_bind: Some("127.0.0.1:0".parse().unwrap()),
        password: Some(PASSWORD.to_string()),
        ..ServerConfig::default()
    };
    let srv = TestServer::with_store(config).await;
    let addr = srv.http.unwrap();

    // Same authentication as the API: no password, no page.
    let (status, headers, _) = http(addr, "GET", "/ui/", &[], b"").await;
    assert_eq!(status, 401);
    assert!(headers.to_ascii_lowercase().contains("www-authenticate: basic"), "{headers}");

    let mut node = Command::new("node");
    node.arg(root.join("crates/idem-server/tests/ui/dashboard.mjs"))
        .arg(format!("http://{addr}"))
        .arg(PASSWORD)
        .env("PLAYWRIGHT_CORE_DIR", target.join("browser/node_modules/playwright-core"));
    if let Ok(dir) = std::env::var("IDEM_UI_SCREENSHOTS") {
        node.arg(dir);
    }
    let out = tokio::task::spawn_blocking(move || node.output()).await.unwrap().expect("run node");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dashboard check failed\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    srv.stop().await;
}
