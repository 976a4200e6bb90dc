//! HTTPS on the gateway's listener, over real sockets, with curl as the
//! client and certificates generated here (no key is ever committed): plain
//! and TLS side by side, HTTP/2 by ALPN, a replay over TLS, client
//! certificates (required and optional), a reload that takes effect on the
//! next handshake, a bad reload that changes nothing, a client that never
//! finishes its handshake, and an HTTP/2 client that sends no request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use idem_gateway::tls::{TlsClientAuth, TlsConfig, TlsSource};
use idem_gateway::{IdempotencyLayer, LayerConfig, Listeners, ServerConfig};
use idem_testkit::{Ca, ExtendedKeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Longest wait for anything a test expects to happen.
const PATIENCE: Duration = Duration::from_secs(30);

/// The test CA's files.
trait CaFiles {
    /// Writes a leaf for `localhost` / 127.0.0.1 with `usage` to
    /// `dir/<name>.pem` and `dir/<name>-key.pem`; returns both paths.
    fn leaf_files(&self, dir: &Path, name: &str, usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf);
    /// Writes the CA certificate to `dir/<name>.pem`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf;
}

impl CaFiles for Ca {
    fn leaf_files(&self, dir: &Path, name: &str, usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf(usage);
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, self.pem()).unwrap();
        p
    }
}
/// The server's files in `dir`: a certificate from `ca`, and `client_ca`
/// as the CA of client certificates.
fn server_files(dir: &Path, ca: &Ca, client_ca: &Ca, client_auth: TlsClientAuth) -> TlsConfig {
    let (cert, key) = ca.leaf_files(dir, "server", ExtendedKeyUsagePurpose::ServerAuth);
    let ca_path = client_ca.write(dir, "client-ca");
    TlsConfig { cert, key, ca: (client_auth != TlsClientAuth::None).then_some(ca_path), client_auth }
}

/// Counts the runs of `POST /things`.
async fn create(State(runs): State<Arc<AtomicU64>>) -> (StatusCode, String) {
    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, format!("run {n}"))
}

/// A gateway (the layer in front of an in-process app, over the embedded
/// store in memory) on a TLS listener and, unless `tls_only`, a plain one.
struct Gateway {
    plain: Option<SocketAddr>,
    https: SocketAddr,
    tls: Arc<TlsSource>,
    runs: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    async fn start(files: &TlsConfig, tls_only: bool, config: ServerConfig) -> Gateway {
        let tls = Arc::new(idem_gateway::tls::load(files).unwrap());
        let secure = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https = secure.local_addr().unwrap();
        let plain = match tls_only {
            true => None,
            false => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let plain_addr = plain.as_ref().map(|l| l.local_addr().unwrap());
        let store = idem_store::Store::open(idem_store::StoreConfig::default()).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new()
            .route("/things", post(create))
            .with_state(runs.clone())
            .layer(IdempotencyLayer::new(store, LayerConfig::default()).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners::new(plain, Some((secure, tls.clone())));
        let task = tokio::spawn(idem_gateway::serve(listeners, app, config, async {
            let _ = stopped.await;
        }));
        Gateway { plain: plain_addr, https, tls, runs, stop: Some(stop), task: Some(task) }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, self.task.take().unwrap()).await.expect("the gateway stops").unwrap();
    }
}

/// What curl got: whether it succeeded, the response head (lower-cased)
/// with the body, the HTTP version and curl's error.
#[derive(Debug)]
struct Curl {
    ok: bool,
    out: String,
    version: String,
    #[expect(dead_code, reason = "shown by Debug in failure messages")]
    err: String,
}

/// `POST /things` with `key` through curl on `url`, trusting `ca`, with
/// the extra curl `args` (a client certificate, `--http1.1`).
async fn curl(url: &str, ca: &Path, key: &str, args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-X", "POST", "-H", "content-type: application/json", "-d", "{}"])
        .args(["-H", &format!("idempotency-key: {key}"), "-w", "\n%{http_version}", "--max-time", "30"])
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .arg(format!("{url}/things"))
        .output();
    let out = tokio::time::timeout(PATIENCE, out).await.expect("curl in time").expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    Curl {
        ok: out.status.success(),
        out: body.to_ascii_lowercase(),
        version: version.to_string(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn https(addr: SocketAddr) -> String {
    format!("https://127.0.0.1:{}", addr.port())
}

#[tokio::test]
async fn https_beside_plain_http_and_a_replay_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let files = server_files(dir.path(), &ca, &client_ca, TlsClientAuth::None);
    let trust = ca.write(dir.path(), "ca");
    let gw = Gateway::start(&files, false, ServerConfig::default()).await;

    let first = curl(&https(gw.https), &trust, "k1", &[]).await;
    assert!(first.ok, "{first:?}");
    assert_eq!(first.version, "2", "curl and the gateway agree on HTTP/2 by ALPN: {first:?}");
    assert!(first.out.contains("run 1") && !first.out.contains("idempotent-replayed"), "{first:?}");
    let again = curl(&https(gw.https), &trust, "k1", &["--http1.1"]).await;
    assert_eq!(again.version, "1.1", "{again:?}");
    assert!(again.out.contains("idempotent-replayed: true") && again.out.contains("run 1"), "{again:?}");
    assert_eq!(gw.runs.load(Ordering::SeqCst), 1, "the duplicate over TLS was replayed");

    let plain = format!("http://{}", gw.plain.unwrap());
    let clear = curl(&plain, &trust, "k2", &[]).await;
    assert!(clear.ok && clear.out.contains("run 2"), "the plain listener serves too: {clear:?}");
    let not_trusted = curl(&https(gw.https), &client_ca.write(dir.path(), "other"), "k3", &[]).await;
    assert!(!not_trusted.ok, "a client that does not trust the CA refuses the server: {not_trusted:?}");
    assert_eq!(gw.runs.load(Ordering::SeqCst), 2);
    gw.stop().await;
}

#[tokio::test]
async fn required_client_certificates_refuse_a_client_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_ca, stranger) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("stranger CA"));
    let files = server_files(dir.path(), &ca, &client_ca, TlsClientAuth::Required);
    let trust = ca.write(dir.path(), "ca");
    let (cert, key) = client_ca.leaf_files(dir.path(), "client", ExtendedKeyUsagePurpose::ClientAuth);
    let (bad_cert, bad_key) = stranger.leaf_files(dir.path(), "stranger", ExtendedKeyUsagePurpose::ClientAuth);
    let gw = Gateway::start(&files, true, ServerConfig::default()).await;
    assert!(gw.plain.is_none());

    let none = curl(&https(gw.https), &trust, "k1", &[]).await;
    assert!(!none.ok, "no client certificate: refused: {none:?}");
    let wrong = curl(&https(gw.https), &trust, "k2", &["--cert", path(&bad_cert), "--key", path(&bad_key)]).await;
    assert!(!wrong.ok, "a certificate from another CA: refused: {wrong:?}");
    assert_eq!(gw.runs.load(Ordering::SeqCst), 0, "no refused request reached the app");
    let good = curl(&https(gw.https), &trust, "k3", &["--cert", path(&cert), "--key", path(&key)]).await;
    assert!(good.ok && good.out.contains("run 1"), "{good:?}");
    gw.stop().await;
}

#[tokio::test]
async fn optional_client_certificates_admit_none_but_check_one_presented() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_ca, stranger) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("stranger CA"));
    let files = server_files(dir.path(), &ca, &client_ca, TlsClientAuth::Optional);
    let trust = ca.write(dir.path(), "ca");
    let (cert, key) = client_ca.leaf_files(dir.path(), "client", ExtendedKeyUsagePurpose::ClientAuth);
    let (bad_cert, bad_key) = stranger.leaf_files(dir.path(), "stranger", ExtendedKeyUsagePurpose::ClientAuth);
    let gw = Gateway::start(&files, true, ServerConfig::default()).await;

    let none = curl(&https(gw.https), &trust, "k1", &[]).await;
    assert!(none.ok && none.out.contains("run 1"), "{none:?}");
    let good = curl(&https(gw.https), &trust, "k2", &["--cert", path(&cert), "--key", path(&key)]).await;
    assert!(good.ok && good.out.contains("run 2"), "{good:?}");
    let wrong = curl(&https(gw.https), &trust, "k3", &["--cert", path(&bad_cert), "--key", path(&bad_key)]).await;
    assert!(!wrong.ok, "a presented certificate must verify: {wrong:?}");
    assert_eq!(gw.runs.load(Ordering::SeqCst), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca, client_ca) = (Ca::new("old CA"), Ca::new("new CA"), Ca::new("client CA"));
    let files = server_files(dir.path(), &old_ca, &client_ca, TlsClientAuth::None);
    let (old_trust, new_trust) = (old_ca.write(dir.path(), "old-ca"), new_ca.write(dir.path(), "new-ca"));
    let gw = Gateway::start(&files, true, ServerConfig::default()).await;
    assert!(curl(&https(gw.https), &old_trust, "k1", &[]).await.ok);
    assert!(!curl(&https(gw.https), &new_trust, "k2", &[]).await.ok);

    // A certificate that cannot be read: the reload says why, the old one stays.
    let kept_cert = std::fs::read(&files.cert).unwrap();
    std::fs::write(&files.cert, "not a certificate").unwrap();
    let e = gw.tls.reload().unwrap_err();
    assert!(e.contains("tls_cert"), "{e}");
    let still = curl(&https(gw.https), &old_trust, "k3", &[]).await;
    assert!(still.ok, "a bad reload changes nothing: {still:?}");
    std::fs::write(&files.cert, kept_cert).unwrap();

    // The new certificate, in the same files.
    let (cert, key) = new_ca.leaf_files(dir.path(), "next", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::rename(cert, &files.cert).unwrap();
    std::fs::rename(key, &files.key).unwrap();
    gw.tls.reload().unwrap();
    let new = curl(&https(gw.https), &new_trust, "k4", &[]).await;
    assert!(new.ok, "the next handshake uses the new certificate: {new:?}");
    let old = curl(&https(gw.https), &old_trust, "k5", &[]).await;
    assert!(!old.ok, "and no longer the old one: {old:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let files = server_files(dir.path(), &ca, &client_ca, TlsClientAuth::None);
    let trust = ca.write(dir.path(), "ca");
    let config = ServerConfig { tls_handshake_timeout_ms: 200, max_connections: 1, ..ServerConfig::default() };
    let gw = Gateway::start(&files, true, config).await;

    // Connects and sends nothing: it holds the only connection slot until
    // the handshake bound closes it.
    let mut silent = TcpStream::connect(gw.https).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, silent.read(&mut buf)).await.expect("closed by the server");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let next = curl(&https(gw.https), &trust, "k1", &[]).await;
    assert!(next.ok, "the slot is free again: {next:?}");
    gw.stop().await;
}

#[tokio::test]
async fn an_http2_client_that_sends_no_request_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let files = server_files(dir.path(), &ca, &client_ca, TlsClientAuth::None);
    let config = ServerConfig { header_read_timeout_ms: 200, ..ServerConfig::default() };
    let gw = Gateway::start(&files, true, config).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(gw.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 chosen by ALPN");
    // The preface and an empty SETTINGS frame, then nothing, and no answer to the server's PING.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection was never closed");
    gw.stop().await;
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
