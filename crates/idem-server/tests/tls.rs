//! TLS on the RESP and HTTP listeners, over real sockets, with certificates
//! generated here (no key is ever committed): plain and TLS side by side,
//! TLS-only, client certificates (required and optional), a reload that
//! takes effect on the next handshake, a bad reload that changes nothing,
//! and redis-cli --tls.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Raw, PATIENCE, V};
use idem_server::{Server, ServerConfig, TlsClientAuth, TlsConfig};
use idem_testkit::{Ca, ExtendedKeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// Writes the server's files into `dir`: cert.pem, key.pem, ca.pem (the CA
/// that signs client certificates).
fn write_server_files(dir: &Path, ca: &Ca, client_ca: &Ca) -> TlsConfig {
    let (cert, key) = ca.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("ca.pem"), client_ca.pem()).unwrap();
    TlsConfig {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: Some(dir.join("ca.pem")),
        client_auth: TlsClientAuth::None,
    }
}

fn connector(trust: &Ca, client: Option<(String, String)>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(trust.pem().as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Connects over TLS, sends PING and returns the first reply line, or the
/// error that ended the attempt (handshake refused, connection closed).
async fn tls_ping(addr: std::net::SocketAddr, connector: &TlsConnector) -> Result<String, String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64];
        let n = tls.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".to_string());
        }
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    tokio::time::timeout(PATIENCE, attempt).await.expect("TLS attempt in time")
}

/// A server with TLS on RESP and HTTP (and, unless `tls_only`, plain too).
struct TlsServer {
    plain: Option<std::net::SocketAddr>,
    resp: std::net::SocketAddr,
    https: std::net::SocketAddr,
    tls: Arc<idem_server::tls::TlsSource>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(tls: TlsConfig, tls_only: bool) -> TlsServer {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        bind: any,
        http_bind: Some(any),
        tls: Some(tls),
        tls_bind: Some(any),
        https_bind: Some(any),
        tls_only,
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.expect("bind");
    let plain = (!tls_only).then(|| server.local_addr());
    assert_eq!(server.http_local_addr().is_some(), !tls_only, "TLS-only serves no plain HTTP");
    let resp = server.tls_local_addr().unwrap();
    let https = server.https_local_addr().unwrap();
    let source = server.tls().unwrap();
    let store = idem_store::Store::open(idem_store::StoreConfig::default()).unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(store, async move {
        let _ = rx.await;
    }));
    TlsServer { plain, resp, https, tls: source, stop, task }
}

impl TlsServer {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_and_http_over_tls_beside_plain() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("idem test CA");
    let files = TlsConfig { ca: None, ..write_server_files(dir.path(), &ca, &ca) };
    let srv = start(files, false).await;
    assert_eq!(tls_ping(srv.resp, &connector(&ca, None)).await.unwrap(), "+PONG\r\n");
    // A client that does not trust the CA is refused at the handshake.
    let stranger = Ca::new("someone else");
    assert!(tls_ping(srv.resp, &connector(&stranger, None)).await.is_err());
    // Plain RESP still works beside it; plain bytes on the TLS port get no reply.
    let mut plain = Raw::connect(srv.plain.unwrap()).await;
    assert_eq!(plain.cmd(&["PING"]).await, V::Simple("PONG".into()));
    let mut wrong = TcpStream::connect(srv.resp).await.unwrap();
    wrong.write_all(b"PING\r\n").await.unwrap();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, wrong.read_to_end(&mut seen)).await.unwrap();
    assert_eq!(seen.first(), Some(&0x15), "plaintext on the TLS port gets a TLS alert, then close: {seen:?}");

    // HTTPS: a real request over TLS.
    let tcp = TcpStream::connect(srv.https).await.unwrap();
    let mut tls = connector(&ca, None).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut resp)).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok\n"), "{text}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let files = write_server_files(dir.path(), &ca, &clients);
    let good = clients.leaf(ExtendedKeyUsagePurpose::ClientAuth);
    let forged = Ca::new("not the client CA").leaf(ExtendedKeyUsagePurpose::ClientAuth);

    let required = start(TlsConfig { client_auth: TlsClientAuth::Required, ..files.clone() }, true).await;
    assert_eq!(tls_ping(required.resp, &connector(&ca, Some(good.clone()))).await.unwrap(), "+PONG\r\n");
    let none = tls_ping(required.resp, &connector(&ca, None)).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let bad = tls_ping(required.resp, &connector(&ca, Some(forged.clone()))).await;
    assert!(bad.is_err(), "a certificate from another CA: {bad:?}");
    required.stop().await;

    let optional = start(TlsConfig { client_auth: TlsClientAuth::Optional, ..files }, true).await;
    assert_eq!(tls_ping(optional.resp, &connector(&ca, None)).await.unwrap(), "+PONG\r\n");
    assert_eq!(tls_ping(optional.resp, &connector(&ca, Some(good))).await.unwrap(), "+PONG\r\n");
    assert!(tls_ping(optional.resp, &connector(&ca, Some(forged))).await.is_err());
    optional.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = Ca::new("old CA");
    let files = TlsConfig { ca: None, ..write_server_files(dir.path(), &old, &old) };
    let srv = start(files.clone(), true).await;
    // A connection opened before the reload keeps working after it.
    let tcp = TcpStream::connect(srv.resp).await.unwrap();
    let mut before = connector(&old, None).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();

    let new = Ca::new("new CA");
    write_server_files(dir.path(), &new, &new);
    srv.tls.reload().expect("reload");
    assert_eq!(tls_ping(srv.resp, &connector(&new, None)).await.unwrap(), "+PONG\r\n");
    assert!(tls_ping(srv.resp, &connector(&old, None)).await.is_err(), "the old certificate is no longer served");
    before.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    before.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"+PONG\r\n");

    // A broken key file: the reload fails, the certificate in use stays.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let err = srv.tls.reload().expect_err("a bad key is refused");
    assert!(err.contains("tls_key"), "{err}");
    assert_eq!(tls_ping(srv.resp, &connector(&new, None)).await.unwrap(), "+PONG\r\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_over_tls() {
    let cli = Path::new("/usr/bin/redis-cli");
    assert!(cli.exists(), "redis-cli is missing: run the project's setup script (it installs redis-tools)");
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("idem test CA");
    let files = TlsConfig { ca: None, ..write_server_files(dir.path(), &ca, &ca) };
    let srv = start(files, true).await;
    std::fs::write(dir.path().join("trust.pem"), ca.pem()).unwrap();
    let trust: PathBuf = dir.path().join("trust.pem");
    let port = srv.resp.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/redis-cli")
            .args(["--tls", "--cacert", trust.to_str().unwrap(), "-h", "localhost", "-p", &port])
            .args(["VALUE.SET", "tls:k", "over-tls"])
            .output()
    })
    .await
    .unwrap()
    .expect("run redis-cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n1\n");
    srv.stop().await;
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_at_bind() {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let no_tls = ServerConfig { bind: any, tls_bind: Some(any), ..ServerConfig::default() };
    assert!(Server::bind(no_tls).await.is_err(), "a TLS port needs a certificate");
    let missing = TlsConfig {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
        ca: None,
        client_auth: TlsClientAuth::None,
    };
    let err =
        Server::bind(ServerConfig { bind: any, tls: Some(missing), tls_bind: Some(any), ..ServerConfig::default() })
            .await
            .expect_err("missing files")
            .to_string();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let files =
        TlsConfig { ca: None, client_auth: TlsClientAuth::Required, ..write_server_files(dir.path(), &ca, &ca) };
    let err =
        Server::bind(ServerConfig { bind: any, tls: Some(files), tls_bind: Some(any), ..ServerConfig::default() })
            .await
            .expect_err("required client auth without a CA")
            .to_string();
    assert!(err.contains("tls_ca"), "{err}");
}
