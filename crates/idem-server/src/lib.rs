//! # idem-server
//!
//! idem over the network, on top of any [`idem_core::Backend`]:
//! - RESP2/RESP3, so every Redis client (and `redis-cli`) can call it;
//! - an HTTP/JSON API (`POST /v1/command`, `GET /healthz`), see `http`.
//!
//! ```no_run
//! # async fn example(backend: std::sync::Arc<dyn idem_core::Backend>) -> Result<(), idem_server::ServerError> {
//! use idem_server::{Server, ServerConfig};
//! let server = Server::bind(ServerConfig::default()).await?;
//! server.run(backend, idem_server::shutdown_signal()).await;
//! # Ok(()) }
//! ```
//!
//! ## Where things are
//! - [`resp`]: framing. `resp::check` proves a whole request is buffered
//!   (no allocation), `resp::parse` cuts its arguments out without copying;
//!   `resp::encode` writes replies.
//! - `conn`: one task per connection: pipelining, backpressure, timeouts;
//!   `wake_gate`: its shutdown and eviction waits, polled only after a wake-up.
//! - `cmd`: the server commands (one file each): PING, ECHO, HELLO, AUTH,
//!   QUIT, INFO, CLIENT, COMMAND, DBSIZE, SELECT, ACL.
//! - [`acl`]: ACL users, their rules and the per-command check;
//!   `http_auth`: HTTP `Authorization` mapped onto the same users.
//! - [`tls`]: TLS on the RESP and HTTP listeners, reloaded on SIGHUP. Everything else is parsed
//!   by `idem_core::Command::parse` and run by the backend.
//! - `server`: bind, accept, connection bound, graceful shutdown.
//! - `state`: what every connection shares (configuration, backend,
//!   counters, metrics); `server_commands`: the table of server commands.
//! - `loops`: the event loop threads that run connections (and, on the
//!   embedded store, do its group commit).
//! - `http`: the JSON API. `metrics`: counters.
//!
//! ## Bounds ([`ServerConfig`])
//!
//! Checked against [`ServerConfig::default`] by a test
//! ([`ServerConfig::documented_defaults`]).
//!
//! | field | default | over the bound |
//! |---|---|---|
//! | `event_loops` | half the cores, at least 1 | at most 256 (`Config` error at bind); 0 = connections on the caller's runtime |
//! | `max_connections` | 10,000 | `-BUSY max connections reached`, then close (HTTP has its own pool of the same size; extra connections wait in the backlog) |
//! | `bulk_bytes_max` | 2 MiB | `-ERR Protocol error: bulk length ...`, close |
//! | `args_max` | 4,096 | `-ERR Protocol error: request has N arguments ...`, close (HTTP: 413 `LIMIT`) |
//! | `inline_bytes_max` | 64 KiB | `-ERR Protocol error: too big inline request`, close |
//! | `query_buffer_bytes_max` | 8 MiB | `-ERR Protocol error: request of at least N bytes ...`, close |
//! | `query_buffer_bytes_max_unauth` | 16 KiB | same, before AUTH when a password is set |
//! | `output_buffer_bytes_max` | 64 MiB | disconnect |
//! | `write_timeout_ms` | 10,000 | a write with no progress for this long: disconnect (0 = never) |
//! | `idle_timeout_ms` | 0 (never) | no input for this long: close |
//! | `batch_commands_max` | 1,024 | the rest waits for the next batch |
//! | `shutdown_grace_ms` | 30,000 | connections still busy at shutdown are cut |
//! | `http_body_bytes_max` | 8 MiB | HTTP 413 `LIMIT`, from the `Content-Length` header when it declares more |
//! | `http_header_read_timeout_ms` | 10,000 | an HTTP head (or an idle keep-alive connection) this slow: close |
//! | `http_body_read_timeout_ms` | 10,000 | an HTTP body this slow after its head: 408, close |
//! | `client_buffers_bytes_max` | 256 MiB | all clients' buffers together: the client holding the most is evicted (`buffers`) |
//! | `password` | none | commands before AUTH get `-NOAUTH Authentication required.` |
//! | `users` | none | ACL users ([`acl`]): a refused command or key gets `-NOPERM` naming it |
//! | `tls_handshake_timeout_ms` | 10,000 | a TLS handshake not done by then: close |
//! | `limits` | `Limits::default()` | command errors from the parser (`LIMIT ...`) |
//!
//! Values are bounded twice on purpose: a value just over
//! `limits.value_bytes_max` (1 MiB) passes framing (`bulk_bytes_max`, 2 MiB)
//! and gets the parser's clear `-LIMIT ...` reply on a connection that stays
//! usable; only absurd lengths are protocol errors.
//!
//! Every refused request gets an error reply, changes nothing and leaves
//! the connection usable, except protocol errors, which close it after the
//! reply (as in Redis: the server can no longer find the next request).
#![warn(missing_docs)]

pub mod acl;
mod api;
mod base64;
mod buffers;
mod cmd;
mod config;
mod conn;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod http;
mod http_auth;
mod http_body;
pub mod http_conn;
mod loops;
mod metrics;
mod observe;
pub mod resp;
mod server;
mod server_commands;
mod state;
pub mod tls;
mod wake_gate;

pub use config::{ServerConfig, TlsClientAuth, TlsConfig};
pub use error::ServerError;
pub use loops::{default_event_loops, EVENT_LOOPS_MAX};
pub use observe::install_recorder;
pub use server::{shutdown_signal, Server};
