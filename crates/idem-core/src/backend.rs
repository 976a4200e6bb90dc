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

/// A store that executes idem commands with the semantics of docs/commands.md.
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
            let mut results = self.execute_batch(vec![cmd]).await;
            // The contract of `execute_batch`: one result per command.
            assert_eq!(results.len(), 1, "backend {} answered {} results for one command", self.name(), results.len());
            results.pop().expect("one result, asserted above")
        })
    }

    /// How many live records the store holds (for DBSIZE); may be approximate
    /// on external engines.
    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>>;

    /// Facts for the INFO command, as `(field, value)` pairs.
    fn info(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The full state of idempotency key `key` (fence, attempt, lease
    /// left and waiters), for operators' inspection; reads only. `Ok(None)`
    /// (the default): this backend cannot tell more than `IDEM.GET` does.
    fn inspect_idem<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<crate::machine::IdemView>, CmdError>> {
        let _ = key;
        Box::pin(async { Ok(None) })
    }

    /// Hooks for a server that runs its connections on its own
    /// single-threaded event loops, so that the backend can do its durable
    /// work on the loop thread when the loop runs dry (see [`LoopHooks`]).
    /// `None` (the default): the backend needs no help from the loops.
    fn loop_hooks(&self) -> Option<std::sync::Arc<dyn LoopHooks>> {
        None
    }

    /// Flushes and stops background work; called once on graceful shutdown.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What a backend does on the threads of a server's event loops. The server
/// calls [`LoopHooks::on_loop_start`] once on each loop thread before the
/// loop runs anything, and [`LoopHooks::before_loop_park`] every time the
/// loop has no task left to run, just before it waits for I/O.
///
/// The embedded store uses them for group commit inside the event loop:
/// records appended by a loop's connections are written and synced by that
/// loop itself when it runs dry, instead of being handed to a log thread and
/// back. A hook may block the loop thread for the length of one sync.
pub trait LoopHooks: Send + Sync {
    /// Called once on each loop thread, before the loop runs anything.
    fn on_loop_start(&self);

    /// Called whenever the loop has nothing left to run, before it parks.
    fn before_loop_park(&self);

    /// A task the server runs on each loop for as long as the loop runs (it
    /// need not end): through it the backend can wake a loop from another
    /// thread, so that the loop runs [`LoopHooks::before_loop_park`] again.
    fn loop_task(&self) -> BoxFuture<'static, ()>;
}
