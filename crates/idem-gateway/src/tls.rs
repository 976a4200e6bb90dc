//! HTTPS on the gateway's listener. The certificate, key and client CA are
//! `idem serve`'s [`TlsSource`]: the same settings, the same checks, mTLS,
//! and a reload that takes effect on the next handshake (the `idem gateway`
//! binary reloads on SIGHUP). The gateway offers HTTP/2 and HTTP/1.1 by ALPN,
//! since its listener serves both.

use std::sync::Arc;

use tokio::net::TcpListener;

pub use idem_server::tls::{reload_on_sighup, TlsSource};
pub use idem_server::{TlsClientAuth, TlsConfig};

/// ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Reads the certificate, key and CA named by `files`, offering [`ALPN`].
pub fn load(files: &TlsConfig) -> Result<TlsSource, String> {
    TlsSource::load_with_alpn(files, &ALPN)
}

/// Where the listener accepts: plain HTTP, HTTPS, or both (one connection
/// bound across them). A plain [`TcpListener`] converts into one.
#[derive(Debug)]
pub struct Listeners {
    pub(crate) plain: Option<TcpListener>,
    pub(crate) tls: Option<(TcpListener, Arc<TlsSource>)>,
}

impl Listeners {
    /// Plain HTTP on `plain`, HTTPS on `tls`; `None` for either: not served
    /// (a TLS-only gateway has no plain listener). At least one is needed.
    pub fn new(plain: Option<TcpListener>, tls: Option<(TcpListener, Arc<TlsSource>)>) -> Listeners {
        assert!(plain.is_some() || tls.is_some(), "a gateway needs a plain or a TLS listener");
        Listeners { plain, tls }
    }
}

impl From<TcpListener> for Listeners {
    fn from(plain: TcpListener) -> Listeners {
        Listeners { plain: Some(plain), tls: None }
    }
}
