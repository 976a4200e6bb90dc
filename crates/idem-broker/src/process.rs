//! What happens to one message, whatever the broker: claim its key, run the
//! handler, record the result, and tell the broker module what to do with
//! the delivery ([`Action`]). Three ways to keep the record:
//! - [`Adapter`]: on an idem server (`IDEM.BEGIN` / `COMMIT` / `ABORT`);
//! - [`PostgresInbox`], [`MysqlInbox`]: in the handler's own database
//!   transaction, through idem's in-transaction functions.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use idem_backends::{mysql::tx as mytx, postgres::tx as pgtx};
use idem_client::{Begin, Client};
use idem_core::{Backend, Command, ErrorCode};
use tokio::sync::{watch, Semaphore, SemaphorePermit};

use crate::pipeline::{Pipeline, PipelineLimits};
use crate::settings::Settings;

/// A message as the handler sees it.
#[derive(Clone, Debug)]
pub struct Message {
    key: Bytes,
    payload: Bytes,
    deliveries: u32,
    fence: u64,
    attempt: u64,
}

impl Message {
    /// The idempotency key (without the consumer's prefix).
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The body.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
    /// Which delivery of the message this is, as the broker counts (1 = first).
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }
    /// The fence of this run's claim: pass it to any resource that checks
    /// fences, so that a run whose lease ran out cannot overwrite a later one.
    pub fn fence(&self) -> u64 {
        self.fence
    }
    /// 1, or more when an earlier run's lease ran out (maybe halfway through
    /// its effects: look for them).
    pub fn attempt(&self) -> u64 {
        self.attempt
    }
}

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Worth retrying (a timeout, a deadlock): the message comes back after
    /// a backoff, until the delivery limit.
    #[error("retryable: {0}")]
    Retry(String),
    /// Never worth retrying (a malformed order): dead-lettered at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// What the broker module does with a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Acknowledge: the effect is recorded (now or earlier).
    Ack,
    /// Deliver again after this many milliseconds.
    Redeliver {
        /// The delay.
        delay_ms: u64,
    },
    /// Give it back at once, unprocessed (shutdown).
    Release,
    /// Send to the dead-letter queue and acknowledge here.
    DeadLetter {
        /// Why, for the dead-letter headers.
        reason: String,
    },
}

/// The handler of [`Adapter`]: its effects are its own business; its result
/// is stored and answers every duplicate.
pub trait Handler: Send + Sync + 'static {
    /// Applies `msg`.
    fn handle(&self, msg: Message) -> BoxFuture<'static, Result<Bytes, Failure>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Failure>> + Send + 'static,
{
    fn handle(&self, msg: Message) -> BoxFuture<'static, Result<Bytes, Failure>> {
        Box::pin(self(msg))
    }
}

/// The handler of [`PostgresInbox`]: writes its effects through `tx`, the
/// transaction that also holds the message's idem record.
pub trait PgHandler: Send + Sync + 'static {
    /// Applies `msg` inside `tx` (without committing it).
    fn handle<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Bytes, Failure>>;
}

/// The handler of [`MysqlInbox`]: writes its effects through `tx`.
pub trait MysqlHandler: Send + Sync + 'static {
    /// Applies `msg` inside `tx` (without committing it).
    fn handle<'a>(
        &'a self,
        tx: &'a mut mysql_async::Transaction<'static>,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Bytes, Failure>>;
}

/// Outcomes counted by a consumer.
#[derive(Debug, Default)]
pub struct Stats {
    applied: AtomicU64,
    duplicates: AtomicU64,
    busy: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    released: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Handler ran and its record was committed.
    pub applied: u64,
    /// Acknowledged without running: the record was done.
    pub duplicates: u64,
    /// Redelivered later: the key was in flight elsewhere.
    pub busy: u64,
    /// Redelivered after a failure (handler, idem or database).
    pub retried: u64,
    /// Sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Given back unprocessed at shutdown.
    pub released: u64,
}

impl Stats {
    /// The counts now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            applied: g(&self.applied),
            duplicates: g(&self.duplicates),
            busy: g(&self.busy),
            retried: g(&self.retried),
            dead_lettered: g(&self.dead_lettered),
            released: g(&self.released),
        }
    }
    pub(crate) fn count(&self, outcome: Outcome) {
        let field = match outcome {
            Outcome::Processed => &self.applied,
            Outcome::Duplicate => &self.duplicates,
            Outcome::InFlight => &self.busy,
            Outcome::Failed => &self.retried,
            Outcome::DeadLettered => &self.dead_lettered,
            Outcome::Released => &self.released,
        };
        field.fetch_add(1, Ordering::Relaxed);
    }
}

/// What happened to one delivery: the one classification both [`Stats`]
/// and the metrics (`idem_broker_messages_total{outcome}`) count by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler ran and its record was committed; acked.
    Processed,
    /// The record was done: acked without running the handler.
    Duplicate,
    /// Another run holds the key: redelivered later.
    InFlight,
    /// The handler, idem or the database failed: redelivered after a backoff.
    Failed,
    /// Sent to the dead-letter queue.
    DeadLettered,
    /// Given back unprocessed at shutdown.
    Released,
}

impl Outcome {
    /// Every outcome, in the order of [`Outcome::index`].
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Processed,
        Outcome::Duplicate,
        Outcome::InFlight,
        Outcome::Failed,
        Outcome::DeadLettered,
        Outcome::Released,
    ];

    pub(crate) fn of(action: &Action, counted: Counted) -> Outcome {
        match (action, counted) {
            (Action::Ack, Counted::Applied) => Outcome::Processed,
            (Action::Ack, _) => Outcome::Duplicate,
            (Action::Redeliver { .. }, Counted::Busy) => Outcome::InFlight,
            (Action::Redeliver { .. }, _) => Outcome::Failed,
            (Action::Release, _) => Outcome::Released,
            (Action::DeadLetter { .. }, _) => Outcome::DeadLettered,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The `outcome` label.
    pub(crate) fn label(self) -> &'static str {
        use idem_metrics::broker::outcome as o;
        match self {
            Outcome::Processed => o::PROCESSED,
            Outcome::Duplicate => o::DUPLICATE,
            Outcome::InFlight => o::IN_FLIGHT,
            Outcome::Failed => o::FAILED,
            Outcome::DeadLettered => o::DEAD_LETTERED,
            Outcome::Released => o::RELEASED,
        }
    }
}

/// How an action came about, for the counts (not part of the API: the
/// module is private).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum Counted {
    Applied,
    Duplicate,
    Busy,
    Other,
}

/// The consumer's handler slots: [`Settings::concurrency`] of them. A
/// [`Process`] holds one while its handler runs, and not while it claims or
/// commits the message's record on an idem server, so those round trips
/// overlap other handlers.
#[doc(hidden)]
pub struct HandlerSlots(Semaphore);

impl HandlerSlots {
    pub(crate) fn new(n: usize) -> HandlerSlots {
        HandlerSlots(Semaphore::new(n))
    }

    /// Waits for a free slot; it is free again when the permit drops.
    pub(crate) async fn acquire(&self) -> SemaphorePermit<'_> {
        self.0.acquire().await.expect("the handler slots are never closed")
    }
}

/// One way to keep the records. Broker modules call [`Process::process`]
/// for each delivery with a key.
pub trait Process: Send + Sync + 'static {
    /// Processes one delivery, running its handler (if it runs) in one of
    /// `slots`; `stop` turns true when shutdown wants the running handlers
    /// released.
    #[doc(hidden)]
    fn process<'a>(
        &'a self,
        settings: &'a Settings,
        msg: Message,
        slots: &'a HandlerSlots,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'a, (Action, Counted)>;
}

pub(crate) fn message(key: Vec<u8>, payload: Bytes, deliveries: u32) -> Message {
    Message { key: Bytes::from(key), payload, deliveries, fence: 0, attempt: 0 }
}

/// What follows a failure of the `msg.deliveries`-th delivery.
fn after_failure(settings: &Settings, msg: &Message, failure: &Failure) -> Action {
    match failure {
        Failure::Permanent(why) => Action::DeadLetter { reason: why.clone() },
        Failure::Retry(why) if msg.deliveries >= settings.deliveries_limit() => {
            Action::DeadLetter { reason: format!("{} deliveries, last failure: {why}", msg.deliveries) }
        }
        Failure::Retry(_) => Action::Redeliver { delay_ms: settings.backoff_after(msg.deliveries) },
    }
}

/// A step of an inbox's transaction failed: nothing of it took effect, or
/// (a failed COMMIT) the redelivery's BEGIN finds out whether it did. The
/// delivery comes back after the backoff.
fn inbox_retry(settings: &Settings, msg: &Message, why: &dyn std::fmt::Display) -> (Action, Counted) {
    tracing::warn!(why = %why, "inbox transaction failed; redelivering");
    (Action::Redeliver { delay_ms: settings.backoff_after(msg.deliveries) }, Counted::Other)
}

/// What an inbox's IDEM.BEGIN (in the handler's transaction) means for the
/// delivery: `None` to run the handler, with the grant's fence and attempt
/// set on `msg`; otherwise the answer now (a duplicate is acked, a key still
/// running elsewhere comes back when its lease may have ended).
fn inbox_begun<E: std::fmt::Display>(
    settings: &Settings,
    msg: &mut Message,
    begun: Result<idem_core::outcome::Begin, E>,
) -> Option<(Action, Counted)> {
    use idem_core::outcome::Begin;
    match begun {
        Ok(Begin::Done { .. }) => Some((Action::Ack, Counted::Duplicate)),
        Ok(Begin::Running { left_ms, .. }) => {
            Some((Action::Redeliver { delay_ms: settings.busy_delay(left_ms) }, Counted::Busy))
        }
        Ok(Begin::Started { fence, attempt }) => {
            msg.fence = fence;
            msg.attempt = attempt.into();
            None
        }
        Err(e) => Some(inbox_retry(settings, msg, &e)),
    }
}

/// The answer once an inbox's record and transaction were committed (or
/// not: the outcome is then unknown, and the redelivery's BEGIN finds the
/// record or not).
fn inbox_settled(settings: &Settings, msg: &Message, committed: Result<(), String>) -> (Action, Counted) {
    match committed {
        Ok(()) => (Action::Ack, Counted::Applied),
        Err(e) => inbox_retry(settings, msg, &e),
    }
}

/// Resolves when `stop` turns true (never, if its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        futures::future::pending::<()>().await;
    }
}

/// No records at all: the handler runs for every delivery and the delivery
/// is acked after it. This is the plain at-least-once consumer, the
/// baseline the others are measured and tested against: every duplicate
/// and every redelivery after a crash runs the handler again.
pub struct Unguarded<H> {
    handler: H,
}

impl<H: Handler> Unguarded<H> {
    /// Runs `handler` for every delivery.
    pub fn new(handler: H) -> Arc<Unguarded<H>> {
        Arc::new(Unguarded { handler })
    }
}

impl<H: Handler> Process for Unguarded<H> {
    fn process<'a>(
        &'a self,
        settings: &'a Settings,
        msg: Message,
        slots: &'a HandlerSlots,
        _stop: watch::Receiver<bool>,
    ) -> BoxFuture<'a, (Action, Counted)> {
        Box::pin(async move {
            let _slot = slots.acquire().await;
            match self.handler.handle(msg.clone()).await {
                Ok(_) => (Action::Ack, Counted::Applied),
                Err(failure) => (after_failure(settings, &msg, &failure), Counted::Other),
            }
        })
    }
}

/// The records on an idem store: an idem server reached through a
/// [`Client`] ([`Adapter::new`]), or any [`Backend`] ([`Adapter::over`]),
/// such as the embedded durable store (`idem_store::Store`) in this process.
/// The handler's effects and the record are two writes: a process that dies
/// after the effect and before `COMMIT` leaves the effect without its
/// record, and the message runs again when the lease runs out. Use an
/// inbox, or effects that check the fence, when that must not happen.
///
/// The dedup scope is the store's: an idem server (or an external store)
/// serves every consumer process that uses it; an embedded store serves
/// the one process that opened it (its data directory is locked), so
/// several consumer processes of one queue need a shared idem server or an
/// inbox.
pub struct Adapter<H> {
    backend: Arc<dyn Backend>,
    pipeline: Pipeline,
    handler: H,
}

impl<H: Handler> Adapter<H> {
    /// Records on the server behind `client`. The claims and commits of
    /// messages in flight at once share pipelines on its pool (by default
    /// at most [`crate::PIPELINES_IN_FLIGHT_MAX`] connections for them).
    pub fn new(client: Client, handler: H) -> Arc<Adapter<H>> {
        Adapter::with_limits(client, handler, PipelineLimits::default())
    }

    /// As [`Adapter::new`], with the claims and commits coalesced as
    /// `limits` says.
    pub fn with_limits(client: Client, handler: H, limits: PipelineLimits) -> Arc<Adapter<H>> {
        Adapter::over(Arc::new(client.backend()), handler, limits)
    }

    /// Records on `backend`, called directly: with the embedded store
    /// (`idem_store::Store`) in this process, a claim or commit is a
    /// function call (no protocol, no socket, no second runtime), still
    /// answered only after the fsync that covers its record (the store's
    /// group commit: one fsync for the pipeline and whatever else was
    /// written meanwhile). Claims and commits in flight at once are
    /// coalesced as `limits` says; `IDEM.RENEW` and `IDEM.ABORT` go one by
    /// one.
    pub fn over(backend: Arc<dyn Backend>, handler: H, limits: PipelineLimits) -> Arc<Adapter<H>> {
        let pipeline = Pipeline::new(backend.clone(), limits);
        Arc::new(Adapter { backend, pipeline, handler })
    }

    async fn run(
        &self,
        settings: &Settings,
        mut msg: Message,
        slots: &HandlerSlots,
        stop: watch::Receiver<bool>,
    ) -> (Action, Counted) {
        let key = settings.idem_key(&msg.key);
        let key = Bytes::from(key);
        let cmd = Command::IdemBegin { key: key.clone(), fingerprint: None, lease_ms: settings.lease(), wait_ms: 0 };
        let begin = match self.pipeline.call(cmd).await {
            Ok(reply) => Begin::from_reply(reply).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (fence, attempt) = match begin {
            Ok(Begin::Done(_)) => return (Action::Ack, Counted::Duplicate),
            Ok(Begin::Running { left_ms, .. }) => {
                return (Action::Redeliver { delay_ms: settings.busy_delay(left_ms) }, Counted::Busy)
            }
            Ok(Begin::Started { fence, attempt }) => (fence, attempt),
            Err(e) => {
                tracing::warn!(error = %e, "IDEM.BEGIN failed; redelivering");
                return (Action::Redeliver { delay_ms: settings.backoff_after(msg.deliveries) }, Counted::Other);
            }
        };
        msg.fence = fence;
        msg.attempt = attempt;
        // The lease is renewed (IDEM.RENEW) every third of it from the
        // claim on, while the message waits for a handler slot and while the
        // handler runs, so a long handler keeps its claim and a dead one
        // loses it within one lease.
        let renewals = self.renew_until_lost(&key, fence, settings.lease());
        // The slot is held by the handler only: it is free again before the
        // commit, so the next handler starts while this record commits.
        let work = async {
            let _slot = slots.acquire().await;
            self.handler.handle(msg.clone()).await
        };
        let outcome = tokio::select! {
            r = work => Ok(r),
            () = renewals => Err(()),
            () = stopped(stop) => {
                self.abort(&key, fence).await;
                return (Action::Release, Counted::Other);
            }
        };
        match outcome {
            Ok(Ok(result)) => match self.commit(key.clone(), fence, result, settings.keep()).await {
                Ok(()) => (Action::Ack, Counted::Applied),
                Err(e) => {
                    // Unknown or refused: the next delivery's BEGIN says
                    // whether the record is done.
                    tracing::warn!(error = %e, "IDEM.COMMIT failed; redelivering");
                    (Action::Redeliver { delay_ms: settings.backoff_after(msg.deliveries) }, Counted::Other)
                }
            },
            Ok(Err(failure)) => {
                self.abort(&key, fence).await;
                (after_failure(settings, &msg, &failure), Counted::Other)
            }
            Err(()) => {
                // The claim is gone (another run may hold the key): this
                // run's commit would be refused, so stop it and let the
                // redelivery's BEGIN decide.
                tracing::warn!("the claim was lost while the handler ran; redelivering");
                (Action::Redeliver { delay_ms: settings.backoff_after(msg.deliveries) }, Counted::Other)
            }
        }
    }

    /// `IDEM.COMMIT` in a pipeline; any error (refused, or the outcome
    /// unknown) is the caller's cue to redeliver.
    async fn commit(&self, key: Bytes, fence: u64, result: Bytes, keep_ms: u64) -> Result<(), String> {
        let cmd = Command::IdemCommit { key, fence, result, keep_ms };
        match self.pipeline.call(cmd).await {
            Ok(reply) => idem_client::ok_reply("IDEM.COMMIT", reply).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Renews the claim every third of `lease_ms`; returns once the fence no
    /// longer holds the key. A renewal that fails otherwise (transport) is
    /// retried at the next tick: the lease still has two thirds to run.
    async fn renew_until_lost(&self, key: &Bytes, fence: u64, lease_ms: u64) {
        let mut tick = tokio::time::interval(Duration::from_millis((lease_ms / 3).max(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            let cmd = Command::IdemRenew { key: key.clone(), fence, lease_ms };
            match self.backend.execute(cmd).await {
                Ok(reply) => {
                    if let Err(e) = idem_client::renew_reply(reply, fence) {
                        tracing::warn!(error = %e, "IDEM.RENEW answered out of contract; retrying at the next tick");
                    }
                }
                Err(e) if e.code == ErrorCode::Stale => return,
                Err(e) => tracing::warn!(error = %e, "IDEM.RENEW failed; retrying at the next tick"),
            }
        }
    }

    async fn abort(&self, key: &Bytes, fence: u64) {
        let outcome = match self.backend.execute(Command::IdemAbort { key: key.clone(), fence }).await {
            Ok(reply) => idem_client::ok_reply("IDEM.ABORT", reply).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "IDEM.ABORT failed; the key frees when its lease runs out");
        }
    }
}

impl<H: Handler> Process for Adapter<H> {
    fn process<'a>(
        &'a self,
        settings: &'a Settings,
        msg: Message,
        slots: &'a HandlerSlots,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'a, (Action, Counted)> {
        Box::pin(self.run(settings, msg, slots, stop))
    }
}

/// The inbox in PostgreSQL: the record is written by `idem_begin` /
/// `idem_commit` inside the transaction the handler writes through, so the
/// effect and the record commit together or not at all. A second delivery
/// of a key being processed waits on the record's row lock, then finds it
/// done (or gone, after a rollback). Needs idem's schema
/// (`idem_backends::postgres::migrate`).
pub struct PostgresInbox<H> {
    pool: deadpool_postgres::Pool,
    handler: H,
}

impl<H: PgHandler> PostgresInbox<H> {
    /// Records in the database behind `pool`.
    pub fn new(pool: deadpool_postgres::Pool, handler: H) -> Arc<PostgresInbox<H>> {
        Arc::new(PostgresInbox { pool, handler })
    }

    async fn run(&self, settings: &Settings, mut msg: Message, stop: watch::Receiver<bool>) -> (Action, Counted) {
        let mut conn = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => return inbox_retry(settings, &msg, &e),
        };
        let tx = match conn.transaction().await {
            Ok(t) => t,
            Err(e) => return inbox_retry(settings, &msg, &e),
        };
        let key = settings.idem_key(&msg.key);
        if let Some(answer) = inbox_begun(settings, &mut msg, pgtx::idem_begin(&tx, &key, None, settings.lease()).await)
        {
            return answer;
        }
        let outcome = tokio::select! {
            r = self.handler.handle(&tx, &msg) => r,
            // Dropping the transaction rolls it back: nothing happened.
            () = stopped(stop) => return (Action::Release, Counted::Other),
        };
        match outcome {
            Ok(result) => {
                let committed = match pgtx::idem_commit(&tx, &key, msg.fence, &result, settings.keep()).await {
                    Ok(()) => tx.commit().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                inbox_settled(settings, &msg, committed)
            }
            Err(failure) => {
                drop(tx);
                (after_failure(settings, &msg, &failure), Counted::Other)
            }
        }
    }
}

impl<H: PgHandler> Process for PostgresInbox<H> {
    fn process<'a>(
        &'a self,
        settings: &'a Settings,
        msg: Message,
        slots: &'a HandlerSlots,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'a, (Action, Counted)> {
        // The record is written in the handler's transaction: the slot is
        // held for all of it (which also bounds the database connections).
        Box::pin(async move {
            let _slot = slots.acquire().await;
            self.run(settings, msg, stop).await
        })
    }
}

/// The inbox in MySQL / MariaDB, as [`PostgresInbox`] (needs
/// `idem_backends::mysql::migrate`).
pub struct MysqlInbox<H> {
    pool: mysql_async::Pool,
    handler: H,
}

impl<H: MysqlHandler> MysqlInbox<H> {
    /// Records in the database behind `pool`.
    pub fn new(pool: mysql_async::Pool, handler: H) -> Arc<MysqlInbox<H>> {
        Arc::new(MysqlInbox { pool, handler })
    }

    async fn run(&self, settings: &Settings, mut msg: Message, stop: watch::Receiver<bool>) -> (Action, Counted) {
        let mut tx = match self.pool.start_transaction(mysql_async::TxOpts::default()).await {
            Ok(t) => t,
            Err(e) => return inbox_retry(settings, &msg, &e),
        };
        let key = settings.idem_key(&msg.key);
        if let Some(answer) =
            inbox_begun(settings, &mut msg, mytx::idem_begin(&mut tx, &key, None, settings.lease()).await)
        {
            return answer;
        }
        let outcome = tokio::select! {
            r = self.handler.handle(&mut tx, &msg) => r,
            () = stopped(stop) => return (Action::Release, Counted::Other),
        };
        match outcome {
            Ok(result) => {
                let committed = match mytx::idem_commit(&mut tx, &key, msg.fence, &result, settings.keep()).await {
                    Ok(()) => tx.commit().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                inbox_settled(settings, &msg, committed)
            }
            Err(failure) => {
                drop(tx);
                (after_failure(settings, &msg, &failure), Counted::Other)
            }
        }
    }
}

impl<H: MysqlHandler> Process for MysqlInbox<H> {
    fn process<'a>(
        &'a self,
        settings: &'a Settings,
        msg: Message,
        slots: &'a HandlerSlots,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'a, (Action, Counted)> {
        // The record is written in the handler's transaction: the slot is
        // held for all of it (which also bounds the database connections).
        Box::pin(async move {
            let _slot = slots.acquire().await;
            self.run(settings, msg, stop).await
        })
    }
}
