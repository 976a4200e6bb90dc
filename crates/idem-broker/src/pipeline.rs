//! Idem calls made at the same moment for different messages, sent as one
//! pipeline (one `Backend::execute_batch`). A consumer with many handlers
//! sends an `IDEM.BEGIN` or `IDEM.COMMIT` per message; sent one by one to a
//! server, each pays its own write, read and wake-ups on both sides, and its
//! own group commit. Coalesced, a burst of them costs one of each, and the
//! store's group commit makes their records durable with one fsync. On the
//! embedded store in this process a pipeline is a direct call: the batch is
//! applied and waits once for the fsync that covers its last record.
//! Nothing is acknowledged early: every caller still waits for its own
//! reply.
//!
//! The fewer pipelines may be out at once, the more calls each one carries
//! (calls that arrive while the limit is reached wait and join the next
//! one): fewer pipelines in flight trade a little latency for less CPU per
//! call, since the per-pipeline costs (syscalls, wake-ups, an fsync) are
//! shared by more calls.

use std::sync::{Arc, OnceLock};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use idem_core::{Backend, CmdResult, Command};
use tokio::sync::{mpsc, oneshot};

use crate::error::SettingsError;

/// At most this many commands in one pipeline, by default.
pub const PIPELINE_COMMANDS_MAX: usize = 64;
/// At most this many pipelines out at once, by default (on an idem server,
/// each holds one pooled connection). While they are all out, new calls
/// wait and join the next pipeline: the busier the store, the larger the
/// batches.
pub const PIPELINES_IN_FLIGHT_MAX: usize = 4;
/// The largest value accepted for either limit.
pub const PIPELINE_LIMIT_MAX: usize = 1_024;

/// How calls are coalesced: at most `commands` per pipeline and `in_flight`
/// pipelines on the wire at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineLimits {
    commands: usize,
    in_flight: usize,
}

impl Default for PipelineLimits {
    fn default() -> PipelineLimits {
        PipelineLimits { commands: PIPELINE_COMMANDS_MAX, in_flight: PIPELINES_IN_FLIGHT_MAX }
    }
}

impl PipelineLimits {
    /// `commands` per pipeline and `in_flight` pipelines at once, each in
    /// 1..=[`PIPELINE_LIMIT_MAX`]. The pool of the adapter's client must have
    /// at least `in_flight` connections for them all to be out at once.
    pub fn new(commands: usize, in_flight: usize) -> Result<PipelineLimits, SettingsError> {
        let check = |name, value: usize| {
            if (1..=PIPELINE_LIMIT_MAX).contains(&value) {
                Ok(())
            } else {
                Err(SettingsError { name, value: value as u64, min: 1, max: PIPELINE_LIMIT_MAX as u64 })
            }
        };
        check("pipeline commands", commands)?;
        check("pipelines in flight", in_flight)?;
        Ok(PipelineLimits { commands, in_flight })
    }
}

struct Call {
    cmd: Command,
    reply: oneshot::Sender<CmdResult>,
}

/// Coalesces calls onto `backend` (the adapter's pooled client, or the
/// embedded store). Its collector task starts with the first call (so that
/// building an adapter needs no runtime) and ends when the pipeline is
/// dropped.
pub(crate) struct Pipeline {
    backend: Arc<dyn Backend>,
    limits: PipelineLimits,
    calls: OnceLock<mpsc::UnboundedSender<Call>>,
}

impl Pipeline {
    pub(crate) fn new(backend: Arc<dyn Backend>, limits: PipelineLimits) -> Pipeline {
        Pipeline { backend, limits, calls: OnceLock::new() }
    }

    /// Sends `cmd` with whatever other calls are waiting, and returns its
    /// reply. The queue is unbounded in type only: each caller waits for its
    /// reply, so it holds at most one call per message in flight
    /// (concurrency + prefetch).
    pub(crate) async fn call(&self, cmd: Command) -> CmdResult {
        let calls = self.calls.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(collect(self.backend.clone(), self.limits, rx));
            tx
        });
        let (reply, rx) = oneshot::channel();
        if calls.send(Call { cmd, reply }).is_err() {
            unreachable!("the collector runs while the pipeline exists");
        }
        rx.await.expect("the collector answers every call it takes")
    }
}

/// Sends one pipeline and hands each caller its reply.
async fn send(backend: &dyn Backend, batch: Vec<Call>) {
    let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<CmdResult>>) =
        batch.into_iter().map(|c| (c.cmd, c.reply)).unzip();
    let results = backend.execute_batch(cmds).await;
    assert_eq!(results.len(), replies.len(), "one result per command of a pipeline");
    for (r, tx) in results.into_iter().zip(replies) {
        // A caller that stopped waiting (shutdown) needs no reply.
        let _ = tx.send(r);
    }
}

/// While fewer than `limits.in_flight` pipelines are out, takes the waiting
/// calls (up to `limits.commands`) and sends them as one. The pipelines out
/// are polled by this task itself (no task per pipeline).
async fn collect(backend: Arc<dyn Backend>, limits: PipelineLimits, mut rx: mpsc::UnboundedReceiver<Call>) {
    let mut out = FuturesUnordered::new();
    let mut open = true;
    while open || !out.is_empty() {
        assert!(out.len() <= limits.in_flight, "no more pipelines out than the limit");
        tokio::select! {
            // Replies first: each one frees a place for the next pipeline.
            biased;
            Some(()) = out.next(), if !out.is_empty() => {}
            first = rx.recv(), if open && out.len() < limits.in_flight => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut batch = Vec::with_capacity(limits.commands.min(rx.len() + 1));
                batch.push(first);
                while batch.len() < limits.commands {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                out.push(send(&*backend, batch));
            }
        }
    }
}
