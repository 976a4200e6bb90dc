//! The server's configuration: where to listen and a bound on everything a
//! client can make the server hold.

use std::net::SocketAddr;

use idem_core::Limits;

/// How to run a [`Server`](crate::Server). Every bound has a documented
/// default (see the table in the crate docs and `docs/server.md`).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// RESP listen address. Default `127.0.0.1:7379` (not Redis's 6379, so
    /// idem can run beside a Redis on a developer machine).
    pub bind: SocketAddr,
    /// HTTP/JSON listen address; `None` (the default) serves no HTTP.
    pub http_bind: Option<SocketAddr>,
    /// Most connections served at once. Over it, a new connection gets
    /// `-BUSY max connections reached` and is closed. Default 10,000.
    pub max_connections: usize,
    /// Largest bulk string a request may declare, in bytes. Default 2 MiB:
    /// larger than `limits.value_bytes_max` (1 MiB) so that a value just
    /// over the value limit gets the command parser's clear `LIMIT` error,
    /// while a truly huge length is a protocol error and a disconnect.
    pub bulk_bytes_max: usize,
    /// Most arguments in one request (RESP array length). Default 4096.
    pub args_max: usize,
    /// Longest inline (telnet-style) request line, in bytes. Default 64 KiB.
    pub inline_bytes_max: usize,
    /// Most bytes one client may have buffered unprocessed, which is also the
    /// largest request. Default 8 MiB.
    pub query_buffer_bytes_max: usize,
    /// The same bound before a client authenticates, when `password` is set.
    /// Default 16 KiB: a stranger cannot make the server hold much.
    pub query_buffer_bytes_max_unauth: usize,
    /// Most reply bytes pending for one client; a reply that would exceed
    /// it disconnects the client. Default 64 MiB.
    pub output_buffer_bytes_max: usize,
    /// A write that makes no progress for this long disconnects the client
    /// (it is not reading its replies). 0 = never. Default 10,000 ms.
    pub write_timeout_ms: u64,
    /// Close a connection that sends nothing for this long. 0 (the default) = never.
    pub idle_timeout_ms: u64,
    /// Most commands taken from one client's buffer into one
    /// `Backend::execute_batch` call. Default 1024.
    pub batch_commands_max: usize,
    /// On shutdown, how long connections may take to finish the batch in
    /// flight (a WAIT may park it) before they are cut. Default 30,000 ms.
    pub shutdown_grace_ms: u64,
    /// Largest HTTP request body, in bytes. Default 8 MiB.
    pub http_body_bytes_max: usize,
    /// When set, clients must `AUTH` (or `HELLO 3 AUTH default <password>`,
    /// or send `Authorization: Bearer <password>` over HTTP) first; other
    /// commands get `NOAUTH`. Default `None`.
    pub password: Option<String>,
    /// Threads that run RESP connections, each a single-threaded event loop
    /// (see `loops`); connections are dealt to them in turn. On the embedded
    /// store in Always mode, each loop also does the group commit for its
    /// own connections when it runs dry. 0 runs connections as tasks on the
    /// runtime that calls [`crate::Server::run`] instead. Default: half the
    /// cores, at least 1 ([`crate::default_event_loops`]); at most 256.
    pub event_loops: usize,
    /// Limits applied while parsing primitive commands; keep them equal to
    /// the backend's. Default [`Limits::default()`].
    pub limits: Limits,
}

impl ServerConfig {
    /// Default RESP listen address.
    pub const BIND_DEFAULT: &'static str = "127.0.0.1:7379";
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
            password: None,
            event_loops: crate::loops::default_event_loops(),
            limits: Limits::default(),
        }
    }
}
