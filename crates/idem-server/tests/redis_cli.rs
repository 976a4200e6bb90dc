//! `redis-cli` against idem, non-interactively.

mod common;

use std::process::Command;

use common::TestServer;
use idem_server::ServerConfig;

const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Runs redis-cli with `args` against `srv`; returns stdout. `--no-raw`
/// forces the formatted output a person sees at a terminal.
async fn cli(srv: &TestServer, args: &[&str]) -> String {
    assert!(
        std::path::Path::new(REDIS_CLI).exists(),
        "{REDIS_CLI} is missing: run the project's setup script (it installs redis-tools)"
    );
    let port = srv.addr.port().to_string();
    let mut full = vec!["-h", "127.0.0.1", "-p", &port];
    full.extend_from_slice(args);
    let full: Vec<String> = full.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new(REDIS_CLI).args(&full).output())
        .await
        .unwrap()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_server_commands() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    assert_eq!(cli(&srv, &["PING"]).await, "PONG\n");
    assert_eq!(cli(&srv, &["--no-raw", "PING"]).await, "PONG\n");
    assert_eq!(cli(&srv, &["--no-raw", "DBSIZE"]).await, "(integer) 0\n");
    assert!(cli(&srv, &["INFO", "server"]).await.contains("idem_version:"));
    assert_eq!(cli(&srv, &["--no-raw", "COMMAND", "DOCS"]).await, "(empty array)\n");
    // RESP3 (-3 sends HELLO 3 first).
    assert_eq!(cli(&srv, &["-3", "--no-raw", "OWNER", "nobody"]).await, "(nil)\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_commit_replay() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let out = cli(&srv, &["--no-raw", "IDEM.BEGIN", "pay:42", "LEASE", "60000"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "1) \"started\"");
    let fence = lines[1].strip_prefix("2) (integer) ").expect(&out).to_string();
    assert_eq!(lines[2], "3) (integer) 1");

    assert_eq!(cli(&srv, &["--no-raw", "IDEM.COMMIT", "pay:42", &fence, "charged"]).await, "1) \"ok\"\n");
    // The replay: the same key returns the stored result.
    assert_eq!(cli(&srv, &["--no-raw", "IDEM.BEGIN", "pay:42"]).await, "1) \"done\"\n2) \"charged\"\n");
    // Raw output (what scripts read): one element per line.
    assert_eq!(cli(&srv, &["IDEM.BEGIN", "pay:42"]).await, "done\ncharged\n");
    // An error reply is shown as one.
    let stale = cli(&srv, &["--no-raw", "IDEM.ABORT", "pay:42", &fence]).await;
    assert!(stale.starts_with("(error) STALE"), "{stale}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_stdin() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let port = srv.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(REDIS_CLI)
            .args(["-h", "127.0.0.1", "-p", &port])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn redis-cli");
        child.stdin.take().unwrap().write_all(b"PING\nCOUNTER.ADD c 3\nCOUNTER.GET c\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PONG\nok\n3\n3\n");
    srv.stop().await;
}
