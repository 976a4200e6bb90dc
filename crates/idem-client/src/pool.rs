//! A bounded pool of connections to one idem server.
//!
//! Why a pool of exclusively checked-out connections rather than one
//! multiplexed connection: idem runs one connection's commands in order, and
//! a `WAIT` that parks delays every command behind it on the same
//! connection. Each call therefore holds a connection of its own for its
//! duration; the pool bounds how many exist, and a call that finds them all
//! busy waits for one (within its deadline).
//!
//! Reconnects: a connection that fails at the transport level is dropped,
//! and so are the idle ones (they most likely lead to the same dead server
//! process); the next call opens a fresh connection. A call is never resent
//! by the pool: a write whose connection broke may have been applied.

use std::sync::Mutex;
use std::time::Duration;

use idem_core::Command;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::Error;
use crate::wire;

pub(crate) struct Pool {
    client: redis::Client,
    config: Config,
    idle: Mutex<Vec<MultiplexedConnection>>,
    permits: Semaphore,
}

impl Pool {
    /// A pool for `config` (already validated); connections open lazily.
    pub(crate) fn new(config: Config) -> Result<Pool, Error> {
        config.validate()?;
        let client = redis::Client::open(config.url())
            .map_err(|e| Error::Config(format!("url '{}': {e}", redact(config.url()))))?;
        let permits = Semaphore::new(config.get_pool_size());
        Ok(Pool { client, config, idle: Mutex::new(Vec::new()), permits })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Sends `cmds` as one pipeline on one connection and returns one raw
    /// reply per command (error replies included, as `Value::ServerError`).
    /// The deadline is the command timeout plus the longest WAIT among them.
    pub(crate) async fn send(&self, cmds: &[Command]) -> Result<Vec<Value>, Error> {
        assert!(!cmds.is_empty(), "a pipeline carries at least one command");
        let wait_ms = cmds.iter().map(Command::wait_ms).max().unwrap_or(0);
        let timeout_ms = self.config.get_command_timeout_ms().saturating_add(wait_ms);
        let mut pipe = redis::pipe();
        for c in cmds {
            pipe.add_command(wire::encode(c));
        }
        match tokio::time::timeout(Duration::from_millis(timeout_ms), self.send_pipe(&pipe, cmds.len(), cmds[0].name()))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout { timeout_ms }),
        }
    }

    /// Sends one raw command (server commands such as DBSIZE).
    pub(crate) async fn send_raw(&self, cmd: redis::Cmd, name: &'static str) -> Result<Value, Error> {
        let timeout_ms = self.config.get_command_timeout_ms();
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let sent = tokio::time::timeout(Duration::from_millis(timeout_ms), self.send_pipe(&pipe, 1, name)).await;
        let mut values = sent.map_err(|_| Error::Timeout { timeout_ms })??;
        values.pop().ok_or_else(|| Error::Protocol { command: name, detail: "no reply".into() })
    }

    async fn send_pipe(&self, pipe: &redis::Pipeline, count: usize, name: &'static str) -> Result<Vec<Value>, Error> {
        // The permit is held until the reply is in: it is what bounds the
        // number of connections, idle or busy.
        let _permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let pooled = self.idle.lock().expect("pool mutex").pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        // Dropping this future (a caller's timeout or cancellation) drops the
        // connection with it, so a reply still on its way can never be read
        // as the reply to someone else's command.
        match conn.send_packed_commands(pipe, 0, count).await {
            Ok(values) if values.len() == count => {
                self.idle.lock().expect("pool mutex").push(conn);
                Ok(values)
            }
            Ok(values) => {
                Err(Error::Protocol { command: name, detail: format!("{} replies to {count} commands", values.len()) })
            }
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() => {
                self.idle.lock().expect("pool mutex").clear();
                Err(Error::Transport(e.to_string()))
            }
            Err(e) => {
                // An error reply that the crate raised instead of returning
                // in place: the connection itself is healthy.
                self.idle.lock().expect("pool mutex").push(conn);
                Err(wire::redis_error(name, e))
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, Error> {
        let timeout = Duration::from_millis(self.config.get_connect_timeout_ms());
        let cfg = AsyncConnectionConfig::new().set_connection_timeout(timeout);
        match tokio::time::timeout(timeout, self.client.get_multiplexed_async_connection_with_config(&cfg)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Error::Transport(format!("connect to {}: {e}", redact(self.config.url())))),
            Err(_) => Err(Error::Timeout { timeout_ms: self.config.get_connect_timeout_ms() }),
        }
    }
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}
