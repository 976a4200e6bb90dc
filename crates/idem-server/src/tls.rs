//! TLS for the RESP and HTTP listeners, and the gateway's (rustls, ring
//! provider).
//!
//! [`TlsSource`] holds the current rustls configuration behind a lock; each
//! new connection takes an acceptor from it, so [`TlsSource::reload`] (on
//! SIGHUP) makes the next handshake use the new certificate while
//! connections already open keep theirs. A reload that cannot read or
//! parse the files changes nothing and reports why.
//!
//! Client certificates (mTLS): with `client_auth` `Required` every client
//! must present a certificate signed by `ca`; with `Optional` a client may
//! present none, but one it presents must verify.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsClientAuth, TlsConfig};

/// Most certificates read from one PEM file (chain or CA bundle): a bound
/// on what a wrong path (say, a huge file) can make the server parse.
pub const PEM_CERTS_MAX: usize = 1024;

/// The TLS configuration in force, and the files it is reloaded from.
pub struct TlsSource {
    files: TlsConfig,
    /// ALPN protocols offered, most preferred first; empty: no ALPN.
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSource").field("files", &self.files).finish_non_exhaustive()
    }
}

impl TlsSource {
    /// Reads the certificate, key and CA named by `files`.
    /// No ALPN: RESP ignores it, and the HTTP front end serves HTTP/1.1 only.
    pub fn load(files: &TlsConfig) -> Result<TlsSource, String> {
        TlsSource::load_with_alpn(files, &[])
    }

    /// As [`TlsSource::load`], offering the ALPN protocols `alpn` (most
    /// preferred first; `b"h2"`, `b"http/1.1"` for a listener that serves both).
    pub fn load_with_alpn(files: &TlsConfig, alpn: &[&[u8]]) -> Result<TlsSource, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = build(files, &alpn)?;
        Ok(TlsSource { files: files.clone(), alpn, current: RwLock::new(Arc::new(config)) })
    }

    /// Reads the files again. On success new handshakes use them; on error
    /// the configuration in force stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.files, &self.alpn)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn build(files: &TlsConfig, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert)?;
    if certs.is_empty() {
        return Err(format!("tls_cert {}: no certificate in the file", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("tls_key {}: no usable private key: {e}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match (files.client_auth, &files.ca) {
        (TlsClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err("tls_client_auth optional or required needs tls_ca".into()),
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| format!("tls_ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("tls_ca {}: no certificate in the file", ca.display()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == TlsClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("tls_ca {}: {e}", ca.display()))?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_cert {} and tls_key {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for c in iter {
        if out.len() == PEM_CERTS_MAX {
            return Err(format!("{}: more than {PEM_CERTS_MAX} certificates", path.display()));
        }
        out.push(c.map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(out)
}

/// Reloads the certificates on every SIGHUP: new handshakes use the new
/// files; when they cannot be read, the old ones stay and the error is
/// logged. The handler is installed before this returns, so a SIGHUP sent
/// once the server runs never takes the default action (ending the process).
pub fn reload_on_sighup(tls: Arc<TlsSource>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; certificates will not be reloaded");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: cannot reload the TLS certificates; keeping the ones in use")
                    }
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
        None
    }
}

type Handshake = Pin<Box<dyn Future<Output = io::Result<TlsStream<TcpStream>>> + Send>>;

/// A connection, in clear or over TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    /// A TLS handshake under way: the first read or write drives it (for
    /// HTTP, whose listener must not wait for handshakes one by one).
    Handshaking(Handshake),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// A TLS connection whose handshake runs on first use, bounded by
    /// `timeout_ms`.
    pub(crate) fn lazy_tls(acceptor: TlsAcceptor, tcp: TcpStream, timeout_ms: u64) -> Stream {
        Stream::Handshaking(Box::pin(handshake(acceptor, tcp, timeout_ms)))
    }

    /// The TCP socket underneath, once any handshake is done.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Handshaking(_) => None,
            Stream::Tls(s) => Some(s.get_ref().0),
        }
    }

    /// Drives a pending handshake; ready once the stream can carry data.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Stream::Handshaking(h) = self {
            let tls = std::task::ready!(h.as_mut().poll(cx))?;
            *self = Stream::Tls(Box::new(tls));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_ready(cx))?;
        match this {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Handshaking(_) => unreachable!("poll_ready finished the handshake"),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_ready(cx))?;
        match this {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Handshaking(_) => unreachable!("poll_ready finished the handshake"),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Handshaking(_) => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Handshaking(_) => Poll::Ready(Ok(())),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_ready(cx))?;
        match this {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Handshaking(_) => unreachable!("poll_ready finished the handshake"),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Handshaking(_) => false,
        }
    }
}

/// The server side of a TLS handshake on `tcp`, bounded by `timeout_ms`.
async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream, timeout_ms: u64) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), acceptor.accept(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("TLS handshake not done in {timeout_ms} ms"))),
    }
}

/// Completes the server side of a TLS handshake on `tcp`, bounded by
/// `timeout_ms`.
pub(crate) async fn accept(acceptor: TlsAcceptor, tcp: TcpStream, timeout_ms: u64) -> io::Result<Stream> {
    Ok(Stream::Tls(Box::new(handshake(acceptor, tcp, timeout_ms).await?)))
}
