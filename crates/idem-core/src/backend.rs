//! The backend interface: what a front end (RESP, HTTP, the Rust library)
//! needs from a store. It depends on no engine; the embedded store and each
//! external engine implement it.

use std::future::Future;
use std::pin::Pin;

use crate::command::Command;
use crate::error::CmdError;
use crate::reply::Reply;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of one command.
pub type CmdResult = Result<Reply, CmdError>;

/// A store that executes idem commands with the semantics of SEMANTICS.md.
pub trait Backend: Send + Sync + 'static {
    /// A short name for INFO and logs ("embedded", "postgres", ...).
    fn name(&self) -> &'static str;

    /// Executes `cmds` in order, as one client's pipeline: each command sees
    /// the effects of the ones before it, and a command that parks (WAIT)
    /// delays the ones after it. Returns one result per command, in order.
    /// A reply is returned only once its effects are as durable as the
    /// backend promises. Dropping the future abandons parked waits.
    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>>;

    /// Executes one command.
    fn execute(&self, cmd: Command) -> BoxFuture<'_, CmdResult> {
        Box::pin(async move {
            let mut v = self.execute_batch(vec![cmd]).await;
            v.pop().unwrap_or_else(|| Err(CmdError::busy("backend returned no reply")))
        })
    }

    /// How many live records the store holds (for DBSIZE); may be approximate
    /// on external engines.
    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>>;

    /// Facts for the INFO command, as `(field, value)` pairs.
    fn info(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Flushes and stops background work; called once on graceful shutdown.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
