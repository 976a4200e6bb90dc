//! Idem calls made at the same moment for different messages, sent as one
//! pipeline on one pooled connection. A consumer with many handlers sends
//! an `IDEM.BEGIN` or `IDEM.COMMIT` per message; sent one by one, each pays
//! its own write, read and wake-ups on both sides. Coalesced, a burst of
//! them costs one of each, and the server's group commit makes their
//! records durable with one fsync. Nothing is acknowledged early: every
//! caller still waits for its own reply.

use std::sync::OnceLock;

use idem_client::RemoteBackend;
use idem_core::{Backend, CmdResult, Command};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// At most this many commands in one pipeline.
pub const PIPELINE_COMMANDS_MAX: usize = 64;
/// At most this many pipelines on the wire at once (each holds one pooled
/// connection). While they are all out, new calls wait and join the next
/// pipeline: the busier the server, the larger the batches.
pub const PIPELINES_IN_FLIGHT_MAX: usize = 4;

struct Call {
    cmd: Command,
    reply: oneshot::Sender<CmdResult>,
}

/// Coalesces calls onto `backend` (the adapter's pooled client). Its
/// collector task starts with the first call (so that building an adapter
/// needs no runtime) and ends when the pipeline is dropped.
pub(crate) struct Pipeline {
    backend: RemoteBackend,
    calls: OnceLock<mpsc::UnboundedSender<Call>>,
}

impl Pipeline {
    pub(crate) fn new(backend: RemoteBackend) -> Pipeline {
        Pipeline { backend, calls: OnceLock::new() }
    }

    /// Sends `cmd` with whatever other calls are waiting, and returns its
    /// reply. The queue is unbounded in type only: each caller waits for its
    /// reply, so it holds at most one call per message in flight
    /// (concurrency + prefetch).
    pub(crate) async fn call(&self, cmd: Command) -> CmdResult {
        let calls = self.calls.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(collect(self.backend.clone(), rx));
            tx
        });
        let (reply, rx) = oneshot::channel();
        if calls.send(Call { cmd, reply }).is_err() {
            unreachable!("the collector runs while the pipeline exists");
        }
        rx.await.expect("the collector answers every call it takes")
    }
}

/// Once a pipeline may go out (fewer than [`PIPELINES_IN_FLIGHT_MAX`] on the
/// wire), takes the waiting calls (up to [`PIPELINE_COMMANDS_MAX`]) and sends
/// them as one.
async fn collect(backend: RemoteBackend, mut rx: mpsc::UnboundedReceiver<Call>) {
    let in_flight = Arc::new(Semaphore::new(PIPELINES_IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        let mut batch = Vec::with_capacity(PIPELINE_COMMANDS_MAX.min(rx.len() + 1));
        batch.push(first);
        while batch.len() < PIPELINE_COMMANDS_MAX {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let backend = backend.clone();
        tokio::spawn(async move {
            let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<CmdResult>>) =
                batch.into_iter().map(|c| (c.cmd, c.reply)).unzip();
            let results = backend.execute_batch(cmds).await;
            assert_eq!(results.len(), replies.len(), "one result per command of a pipeline");
            for (r, tx) in results.into_iter().zip(replies) {
                // A caller that stopped waiting (shutdown) needs no reply.
                let _ = tx.send(r);
            }
            drop(permit);
        });
    }
}
