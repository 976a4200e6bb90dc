//! `postgres://…?sslmode=require&sslrootcert=ca.pem`: the PostgreSQL
//! backend over TLS, against a private PostgreSQL started here with
//! `ssl=on` and a certificate generated here (the shared PostgreSQL on
//! 5432 has no TLS). Also: a certificate from an unknown CA is refused, and
//! no `sslmode` keeps the plain connection of before.

mod tls_certs;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use idem_core::Reply;
use tls_certs::{cmd, free_port, write_certs, KillOnDrop};

const PATIENCE: Duration = Duration::from_secs(60);

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed by scripts/setup.sh")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().expect("a PostgreSQL bin directory")
}

/// PostgreSQL refuses to run as root: run it as the postgres user.
fn as_postgres(cmd: &mut Command) -> &mut Command {
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at
    // once, before any other call could reuse its buffer.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "no postgres user");
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    cmd.uid(uid).gid(gid).env("HOME", "/tmp")
}

fn start_pg(dir: &Path) -> (KillOnDrop, u16) {
    let run = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    write_certs(dir, "other-ca.pem");
    // Written last: the served pair is the one ca.pem signed.
    write_certs(dir, "ca.pem");
    run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir));
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    run(as_postgres(&mut Command::new(pg_bin("initdb")))
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(dir.join("data")));
    let port = free_port();
    let child = as_postgres(&mut Command::new(pg_bin("postgres")))
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "ssl=on"])
        .arg("-c")
        .arg(format!("ssl_cert_file={}", dir.join("cert.pem").display()))
        .arg("-c")
        .arg(format!("ssl_key_file={}", dir.join("key.pem").display()))
        .arg("-k")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pg = KillOnDrop(child);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = Command::new(pg_bin("pg_isready")).args(["-h", "127.0.0.1", "-p", &port.to_string()]).output();
        if ready.is_ok_and(|o| o.status.success()) {
            break;
        }
        assert!(Instant::now() < deadline, "private PostgreSQL did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (pg, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, port) = start_pg(dir.path());
    let base = format!("postgres://postgres@localhost:{port}/postgres");
    let ca = dir.path().join("ca.pem");
    let url = format!("{base}?sslmode=require&sslrootcert={}", ca.display());
    let backend = idem_backends::connect(&url).await.expect("TLS with the private CA");
    let set = backend.execute(cmd(&["VALUE.SET", "tls:k", "v"])).await.unwrap();
    assert_eq!(set, Reply::Array(vec![Reply::Word("ok"), Reply::Int(1)]));

    // A CA that did not sign the server's certificate: refused.
    let other = dir.path().join("other-ca.pem");
    let refused = idem_backends::connect(&format!("{base}?sslmode=verify-full&sslrootcert={}", other.display())).await;
    assert!(refused.is_err(), "an untrusted certificate is refused");
    // An unknown sslmode is refused with the accepted ones.
    let err = idem_backends::connect(&format!("{base}?sslmode=sometimes")).await.err().expect("bad sslmode");
    assert!(err.to_string().contains("verify-full"), "{err}");
    // No sslmode: plain, as before TLS support.
    let plain = idem_backends::connect(&base).await.expect("plain connection");
    let got = plain.execute(cmd(&["VALUE.GET", "tls:k"])).await.unwrap();
    assert_eq!(got, Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"v")), Reply::Int(1)]));
}
