//! The server's configuration: where to listen and a bound on everything a
//! client can make the server hold.

use std::net::SocketAddr;
use std::path::PathBuf;

use idem_core::Limits;

use crate::acl::UserConfig;

/// How to run a [`Server`](crate::Server). Every bound has a documented
/// default: [`ServerConfig::documented_defaults`] lists them as the crate
/// docs, docs/server.md and the README show them, and a test checks those
/// tables against [`ServerConfig::default`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// RESP listen address. Default `127.0.0.1:7379` (not Redis's 6379, so
    /// idem can run beside a Redis on a developer machine).
    pub bind: SocketAddr,
    /// HTTP/JSON listen address; `None` (the default) serves no HTTP.
    pub http_bind: Option<SocketAddr>,
    /// Most connections served at once. Over it, a new connection gets
    /// `-BUSY max connections reached` and is closed.
    pub max_connections: usize,
    /// Largest bulk string a request may declare, in bytes. Must be larger
    /// than `limits.value_bytes_max` (checked at bind), so that a value just
    /// over the value limit gets the command parser's clear `LIMIT` error,
    /// while a truly huge length is a protocol error and a disconnect.
    pub bulk_bytes_max: usize,
    /// Most arguments in one request (RESP array length).
    pub args_max: usize,
    /// Longest inline (telnet-style) request line, in bytes.
    pub inline_bytes_max: usize,
    /// Most bytes one client may have buffered unprocessed, which is also the
    /// largest request.
    pub query_buffer_bytes_max: usize,
    /// The same bound before a client authenticates, when `password` is set:
    /// small, so a stranger cannot make the server hold much.
    pub query_buffer_bytes_max_unauth: usize,
    /// Most reply bytes pending for one client; a reply that would exceed
    /// it disconnects the client.
    pub output_buffer_bytes_max: usize,
    /// A write that makes no progress for this long disconnects the client
    /// (it is not reading its replies). 0 = never.
    pub write_timeout_ms: u64,
    /// Close a connection that sends nothing for this long. 0 = never.
    pub idle_timeout_ms: u64,
    /// Most commands taken from one client's buffer into one
    /// `Backend::execute_batch` call.
    pub batch_commands_max: usize,
    /// On shutdown, how long connections may take to finish the batch in
    /// flight (a WAIT may park it) before they are cut.
    pub shutdown_grace_ms: u64,
    /// Largest HTTP request body, in bytes. A `Content-Length` over it is
    /// refused with 413 from the header, before any of the body is read.
    pub http_body_bytes_max: usize,
    /// Time an HTTP client has to send a request head (request line and
    /// headers), from its first byte; over it the connection is closed.
    /// Also the most an idle keep-alive connection is kept.
    pub http_header_read_timeout_ms: u64,
    /// Time an HTTP client has to send a request body, from the end of its
    /// head; over it the request gets 408 and the connection is closed.
    pub http_body_read_timeout_ms: u64,
    /// Most bytes the buffers of all clients together may hold: the read
    /// and write buffers of every RESP connection and the bodies of HTTP
    /// requests being read. Over it, the client holding the most is
    /// disconnected (as Redis's client eviction).
    pub client_buffers_bytes_max: usize,
    /// When set, clients must `AUTH` (or `HELLO 3 AUTH default <password>`,
    /// or send `Authorization: Bearer <password>` over HTTP) first; other
    /// commands get `NOAUTH`.
    pub password: Option<String>,
    /// Threads that run RESP connections, each a single-threaded event loop
    /// (see `loops`); connections are dealt to them in turn. On the embedded
    /// store in Always mode, one loop also does the group commit for its
    /// connections when it runs dry; with two loops or more the log's
    /// writer thread syncs for them instead (docs/durability.md; about 0.9x
    /// the rate of one loop for `idem serve`, see docs/benchmarks.md). 0 runs
    /// connections as tasks on the
    /// runtime that calls [`crate::Server::run`] instead. Default
    /// [`crate::default_event_loops`]; at most [`crate::EVENT_LOOPS_MAX`].
    pub event_loops: usize,
    /// Limits applied while parsing primitive commands; keep them equal to
    /// the backend's.
    pub limits: Limits,
    /// ACL users (see [`crate::acl`]). Empty (the default): the single
    /// `password`, or no authentication, exactly as without ACLs.
    pub users: Vec<UserConfig>,
    /// Certificate, key and client CA for the TLS listeners; `None` = no TLS.
    pub tls: Option<TlsConfig>,
    /// RESP over TLS listen address (needs `tls`); `None` = none.
    pub tls_bind: Option<SocketAddr>,
    /// HTTP over TLS listen address (needs `tls`); `None` = none.
    pub https_bind: Option<SocketAddr>,
    /// Serve TLS only: `bind` and `http_bind` are not listened on (needs
    /// `tls_bind` or `https_bind`).
    pub tls_only: bool,
    /// Time a new TLS connection has to finish its handshake; over it the
    /// connection is closed.
    pub tls_handshake_timeout_ms: u64,
}

/// Whether TLS clients must present a certificate signed by `ca`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client may present one; if it does, it must verify.
    Optional,
    /// Every client must present one that verifies (mTLS).
    Required,
}

/// The files of the TLS identity, read at bind and again on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates; needed unless
    /// `client_auth` is `None`.
    pub ca: Option<PathBuf>,
    /// Client certificate policy.
    pub client_auth: TlsClientAuth,
}

impl ServerConfig {
    /// Default RESP listen address.
    pub const BIND_DEFAULT: &'static str = "127.0.0.1:7379";

    /// The default of every bound, as the docs write it: `(field, default)`,
    /// read from [`ServerConfig::default`] (with `key_bytes_max` and
    /// `value_bytes_max` from its `limits`). The tables in the crate docs,
    /// docs/server.md and the README are checked against it by a test.
    pub fn documented_defaults() -> Vec<(&'static str, String)> {
        let d = ServerConfig::default();
        vec![
            ("event_loops", "half the cores, at least 1".to_string()),
            ("max_connections", count(d.max_connections as u64)),
            ("bulk_bytes_max", bytes(d.bulk_bytes_max)),
            ("args_max", count(d.args_max as u64)),
            ("inline_bytes_max", bytes(d.inline_bytes_max)),
            ("query_buffer_bytes_max", bytes(d.query_buffer_bytes_max)),
            ("query_buffer_bytes_max_unauth", bytes(d.query_buffer_bytes_max_unauth)),
            ("output_buffer_bytes_max", bytes(d.output_buffer_bytes_max)),
            ("write_timeout_ms", count(d.write_timeout_ms)),
            ("idle_timeout_ms", count(d.idle_timeout_ms)),
            ("batch_commands_max", count(d.batch_commands_max as u64)),
            ("shutdown_grace_ms", count(d.shutdown_grace_ms)),
            ("http_body_bytes_max", bytes(d.http_body_bytes_max)),
            ("http_header_read_timeout_ms", count(d.http_header_read_timeout_ms)),
            ("http_body_read_timeout_ms", count(d.http_body_read_timeout_ms)),
            ("client_buffers_bytes_max", bytes(d.client_buffers_bytes_max)),
            ("password", d.password.unwrap_or_else(|| "none".to_string())),
            ("tls_handshake_timeout_ms", count(d.tls_handshake_timeout_ms)),
            ("key_bytes_max", bytes(d.limits.key_bytes_max)),
            ("value_bytes_max", bytes(d.limits.value_bytes_max)),
        ]
    }
}

/// A count as the docs write it: `10,000`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size as the docs write it: `2 MiB`, `16 KiB`, or a count of bytes.
fn bytes(n: usize) -> String {
    const KIB: usize = 1024;
    match n {
        0 => "0".to_string(),
        n if n % (KIB * KIB) == 0 => format!("{} MiB", n / (KIB * KIB)),
        n if n % KIB == 0 => format!("{} KiB", n / KIB),
        n => count(n as u64),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: Self::BIND_DEFAULT.parse().expect("valid default address"),
            http_bind: None,
            max_connections: 10_000,
            bulk_bytes_max: 2 * 1024 * 1024,
            args_max: 4096,
            inline_bytes_max: 64 * 1024,
            query_buffer_bytes_max: 8 * 1024 * 1024,
            query_buffer_bytes_max_unauth: 16 * 1024,
            output_buffer_bytes_max: 64 * 1024 * 1024,
            write_timeout_ms: 10_000,
            idle_timeout_ms: 0,
            batch_commands_max: 1024,
            shutdown_grace_ms: 30_000,
            http_body_bytes_max: 8 * 1024 * 1024,
            http_header_read_timeout_ms: 10_000,
            http_body_read_timeout_ms: 10_000,
            client_buffers_bytes_max: 256 * 1024 * 1024,
            password: None,
            event_loops: crate::loops::default_event_loops(),
            limits: Limits::default(),
            users: Vec::new(),
            tls: None,
            tls_bind: None,
            https_bind: None,
            tls_only: false,
            tls_handshake_timeout_ms: 10_000,
        }
    }
}
