//! `rediss://`: the Redis backend over TLS, against a private redis-server
//! started here with `--tls-port` and a certificate generated here (the
//! shared Redis on 6379 has no TLS). Also checks that a server whose
//! certificate is not trusted is refused.

mod tls_certs;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use idem_core::Reply;
use tls_certs::{cmd, free_port, wait_for_port, write_certs, KillOnDrop};

const PATIENCE: Duration = Duration::from_secs(30);

fn start_tls_redis(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--tls-cert-file")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("key.pem"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed by scripts/setup.sh");
    let redis = KillOnDrop(child);
    wait_for_port(port, PATIENCE, "private redis-server (TLS)");
    (redis, port)
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path(), "ca.pem");
    let (_redis, port) = start_tls_redis(dir.path());
    let ca = dir.path().join("ca.pem");
    let url = format!("rediss://localhost:{port}/?tls_ca={}", ca.display());
    let backend = idem_backends::connect(&url).await.expect("rediss:// with the private CA");
    let set = backend.execute(cmd(&["VALUE.SET", "tls:k", "v"])).await.unwrap();
    assert_eq!(set, Reply::Array(vec![Reply::Word("ok"), Reply::Int(1)]));
    let got = backend.execute(cmd(&["VALUE.GET", "tls:k"])).await.unwrap();
    assert_eq!(got, Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"v")), Reply::Int(1)]));

    // Without the CA, the system's roots do not trust the certificate.
    let untrusted = idem_backends::connect(&format!("rediss://localhost:{port}/")).await;
    assert!(untrusted.is_err(), "a certificate from an unknown CA is refused");
    // Plain redis:// to a TLS port fails rather than talking in clear.
    assert!(idem_backends::connect(&format!("redis://localhost:{port}/")).await.is_err());
}
