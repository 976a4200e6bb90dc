//! `idem serve` and its security settings, as an operator meets them:
//! protected mode, `[[user]]` tables with `idem acl hash-password`, and
//! TLS certificates reloaded on SIGHUP (checked with `redis-cli --tls`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use idem_testkit::{Ca, ExtendedKeyUsagePurpose};

/// Upper bound on any wait, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);
const REDIS_CLI: &str = "/usr/bin/redis-cli";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn idem() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idem"));
    // idem reads IDEM_* variables as settings; the test's own must not leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("IDEM_") {
            c.env_remove(k);
        }
    }
    c
}

/// A running `idem serve`, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `idem serve` with `args` and waits until `port` accepts.
fn serve(args: &[&str], data: &Path, port: u16) -> Serve {
    let child = idem()
        .arg("serve")
        .args(args)
        .arg("--data")
        .arg(data)
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start idem serve");
    let mut s = Serve(child);
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(s.0.try_wait().unwrap().is_none(), "idem serve exited early");
        assert!(Instant::now() < deadline, "idem serve did not open port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

/// Sends inline commands and reads until every reply line has come.
fn resp(port: u16, lines: &[&str], replies: usize) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    for l in lines {
        s.write_all(format!("{l}\r\n").as_bytes()).unwrap();
    }
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("\r\n").count() < replies {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got.split("\r\n").filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn protected_mode_refuses_an_open_server_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out: Output = idem()
        .args(["serve", "--bind", "0.0.0.0", "--port", &port.to_string(), "--http-port", "0"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .expect("run idem serve");
    assert!(!out.status.success(), "an open server beyond loopback must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protected mode"), "{err}");
    assert!(err.contains("--password") && err.contains("[[user]]") && err.contains("--insecure-no-auth"), "{err}");

    // With a password it starts; so it does with --insecure-no-auth.
    let port = free_port();
    let p = port.to_string();
    let s = serve(&["--bind", "0.0.0.0", "--port", &p, "--http-port", "0", "--password", "pw"], dir.path(), port);
    assert_eq!(resp(port, &["PING"], 1), ["-NOAUTH Authentication required."]);
    drop(s);
    let port = free_port();
    let p = port.to_string();
    let s = serve(&["--bind", "0.0.0.0", "--port", &p, "--http-port", "0", "--insecure-no-auth"], dir.path(), port);
    assert_eq!(resp(port, &["PING"], 1), ["+PONG"]);
    drop(s);
}

#[test]
fn users_from_the_config_file_with_a_hashed_password() {
    let mut hash = idem().args(["acl", "hash-password"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    hash.stdin.take().unwrap().write_all(b"tenant-a-secret\n").unwrap();
    let out = hash.wait_with_output().unwrap();
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(hex.len(), 64, "{hex}");
    assert!(!hex.contains("secret"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idem.toml");
    std::fs::write(
        &config,
        format!("[[user]]\nname = \"a\"\npassword_hash = \"{hex}\"\nrules = \"on ~tenant-a:* +@idem +@connection\"\n"),
    )
    .unwrap();
    let port = free_port();
    let p = port.to_string();
    let s = serve(&["--config", config.to_str().unwrap(), "--port", &p, "--http-port", "0"], dir.path(), port);
    let got = resp(port, &["PING", "AUTH a wrong", "AUTH a tenant-a-secret", "ACL WHOAMI", "VALUE.GET tenant-b:1"], 6);
    assert_eq!(got[0], "-NOAUTH Authentication required.");
    assert!(got[1].starts_with("-NOAUTH"), "{got:?}");
    assert_eq!(got[2], "+OK");
    assert_eq!(&got[3..5], ["$1", "a"]);
    assert!(got[5].starts_with("-NOPERM") && got[5].contains("tenant-b:1"), "{got:?}");

    drop(s);
    // A rule idem does not know stops the server with the reason.
    std::fs::write(&config, "[[user]]\nname = \"a\"\nrules = \"on +@bogus\"\n").unwrap();
    let out = idem()
        .args(["serve", "--config", config.to_str().unwrap(), "--port", &free_port().to_string(), "--http-port", "0"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("@bogus"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for localhost it signs, written as
/// `cert.pem` / `key.pem` (server) and `<ca_file>` (the CA, for clients).
fn write_identity(dir: &Path, ca_file: &str) {
    let ca = Ca::new(ca_file);
    let (cert, key) = ca.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    // Written to new files and renamed, as an operator's tooling would.
    std::fs::write(dir.join("cert.tmp"), cert).unwrap();
    std::fs::write(dir.join("key.tmp"), key).unwrap();
    std::fs::rename(dir.join("cert.tmp"), dir.join("cert.pem")).unwrap();
    std::fs::rename(dir.join("key.tmp"), dir.join("key.pem")).unwrap();
    std::fs::write(dir.join(ca_file), ca.pem()).unwrap();
}

/// `redis-cli --tls` trusting `ca` runs PING; its stdout, or None when it failed.
fn cli_ping(port: u16, ca: &Path) -> Option<String> {
    assert!(Path::new(REDIS_CLI).exists(), "redis-cli is missing: run the project's setup script");
    let out = Command::new(REDIS_CLI)
        .args(["--tls", "--cacert", ca.to_str().unwrap(), "-h", "localhost", "-p", &port.to_string(), "PING"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && text == "PONG\n").then_some(text)
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_identity(d, "old-ca.pem");
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    let port = free_port();
    let p = port.to_string();
    let s = serve(
        &[
            "--tls-port",
            &p,
            "--tls-only",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--http-port",
            "0",
        ],
        d,
        port,
    );
    assert!(cli_ping(port, &d.join("old-ca.pem")).is_some(), "serves the first certificate");

    write_identity(d, "new-ca.pem");
    let pid = s.0.id() as libc::pid_t;
    // SAFETY: kill(2) on the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + PATIENCE;
    while cli_ping(port, &d.join("new-ca.pem")).is_none() {
        assert!(Instant::now() < deadline, "the new certificate is not served after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cli_ping(port, &d.join("old-ca.pem")).is_none(), "the old certificate is gone");

    // A broken key: SIGHUP logs an error and the server keeps the new pair.
    std::fs::write(&key, "garbage").unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(cli_ping(port, &d.join("new-ca.pem")).is_some(), "still serving after a bad reload");
    drop(s);
}
