//! `mysql://…?ssl-mode=VERIFY_IDENTITY&ssl-ca=ca.pem`: the MySQL/MariaDB
//! backend over TLS, against a private MariaDB started here with a
//! certificate generated here (the shared MariaDB on 3306 has no TLS).

mod tls_certs;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use idem_core::Reply;
use tls_certs::{cmd, free_port, write_certs, KillOnDrop};

const PATIENCE: Duration = Duration::from_secs(60);

fn start_mariadb(dir: &Path) -> (KillOnDrop, u16) {
    write_certs(dir, "other-ca.pem");
    // Written last: the served pair is the one ca.pem signed.
    write_certs(dir, "ca.pem");
    let data = dir.join("data");
    let out = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .output()
        .expect("mariadb-install-db is installed by scripts/setup.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let child = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg("--user=root")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--ssl-cert={}", dir.join("cert.pem").display()))
        .arg(format!("--ssl-key={}", dir.join("key.pem").display()))
        .arg(format!("--ssl-ca={}", dir.join("ca.pem").display()))
        .args(["--skip-log-bin", "--innodb-flush-log-at-trx-commit=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = KillOnDrop(child);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let created = Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "-u",
                "root",
                "-e",
                "CREATE DATABASE IF NOT EXISTS idem",
            ])
            .output();
        if created.is_ok_and(|o| o.status.success()) {
            break;
        }
        assert!(Instant::now() < deadline, "private MariaDB did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (db, port)
}

// Out of the default suite: initialising a MariaDB data directory takes
// about 6 s here. Run it with
// `cargo nextest run -p idem-backends --run-ignored all -E 'binary(mysql_tls)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a private MariaDB (about 6 s); see the comment for the command"]
async fn ssl_mode_verify_identity_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, port) = start_mariadb(dir.path());
    let base = format!("mysql://root@localhost:{port}/idem");
    let ca = dir.path().join("ca.pem");
    let url = format!("{base}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display());
    let backend = idem_backends::connect(&url).await.expect("TLS with the private CA");
    let set = backend.execute(cmd(&["VALUE.SET", "tls:k", "v"])).await.unwrap();
    assert_eq!(set, Reply::Array(vec![Reply::Word("ok"), Reply::Int(1)]));

    let other = dir.path().join("other-ca.pem");
    let refused = idem_backends::connect(&format!("{base}?ssl-mode=REQUIRED&ssl-ca={}", other.display())).await;
    assert!(refused.is_err(), "a certificate from another CA is refused");
    let err = idem_backends::connect(&format!("{base}?ssl-mode=SOMETIMES")).await.err().expect("bad ssl-mode");
    assert!(err.to_string().contains("VERIFY_IDENTITY"), "{err}");
}
