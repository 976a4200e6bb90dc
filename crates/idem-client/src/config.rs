//! How a client connects: the server's URL, how many connections it may
//! hold, and how long it waits. Every bound is named here and checked when
//! the client is built.

use crate::error::Error;

/// Connections a client holds at most, by default.
pub const POOL_SIZE_DEFAULT: usize = 16;
/// Largest pool a client may be configured with. A parked `WAIT` holds a
/// connection for its whole wait, so the pool is also the number of waits
/// one client can have in flight; beyond a thousand, a process should use
/// several clients (or fewer waits), not one huge pool.
pub const POOL_SIZE_MAX: usize = 1024;
/// Time allowed to open a TCP connection (and say HELLO/AUTH), by default.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Longest connect timeout accepted.
pub const CONNECT_TIMEOUT_MS_MAX: u64 = 60_000;
/// Time allowed for one call, by default: waiting for a pooled connection,
/// opening it if needed, and the reply. A command's own `WAIT` is added on top.
pub const COMMAND_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest command timeout accepted (the contract's longest WAIT, 5 minutes).
pub const COMMAND_TIMEOUT_MS_MAX: u64 = 300_000;

/// A client's configuration. Build with [`Config::new`] and the setters; the
/// bounds are checked by [`crate::Client::connect`].
///
/// | setting | default | bounds |
/// |---|---|---|
/// | `url` | — | `redis://[user:pass@]host:port` |
/// | `pool_size` | 16 | 1..=1024 |
/// | `connect_timeout_ms` | 5,000 | 1..=60,000 |
/// | `command_timeout_ms` | 10,000 (plus the command's WAIT) | 1..=300,000 |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    url: String,
    pool_size: usize,
    connect_timeout_ms: u64,
    command_timeout_ms: u64,
}

impl Config {
    /// The defaults for the server at `url` (`redis://127.0.0.1:7379`).
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            pool_size: POOL_SIZE_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            command_timeout_ms: COMMAND_TIMEOUT_MS_DEFAULT,
        }
    }

    /// At most `n` connections (1..=[`POOL_SIZE_MAX`]).
    pub fn pool_size(mut self, n: usize) -> Config {
        self.pool_size = n;
        self
    }

    /// Time to open a connection (1..=[`CONNECT_TIMEOUT_MS_MAX`] ms).
    pub fn connect_timeout_ms(mut self, ms: u64) -> Config {
        self.connect_timeout_ms = ms;
        self
    }

    /// Time for one call, WAIT excluded (1..=[`COMMAND_TIMEOUT_MS_MAX`] ms).
    pub fn command_timeout_ms(mut self, ms: u64) -> Config {
        self.command_timeout_ms = ms;
        self
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pool's bound.
    pub fn get_pool_size(&self) -> usize {
        self.pool_size
    }

    /// The connect timeout, in milliseconds.
    pub fn get_connect_timeout_ms(&self) -> u64 {
        self.connect_timeout_ms
    }

    /// The command timeout (WAIT excluded), in milliseconds.
    pub fn get_command_timeout_ms(&self) -> u64 {
        self.command_timeout_ms
    }

    /// Checks every bound; the error names the setting and its bounds.
    pub fn validate(&self) -> Result<(), Error> {
        let check = |name: &str, v: u64, max: u64| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} is {v}, expected 1..={max}")))
            }
        };
        check("pool_size", self.pool_size as u64, POOL_SIZE_MAX as u64)?;
        check("connect_timeout_ms", self.connect_timeout_ms, CONNECT_TIMEOUT_MS_MAX)?;
        check("command_timeout_ms", self.command_timeout_ms, COMMAND_TIMEOUT_MS_MAX)?;
        Ok(())
    }
}
