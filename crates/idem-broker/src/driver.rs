//! The loop every broker module shares: take a delivery while fewer than
//! concurrency + prefetch are in flight, run it in its own task (its handler
//! waits for one of `concurrency` handler slots), settle it as its [`Action`]
//! says, and on shutdown stop taking deliveries, let the running ones finish
//! for `drain_ms`, then release the rest.
//!
//! Two bounds, because a message's record work is not handler work: the
//! adapter claims a message (`IDEM.BEGIN`) as soon as it arrives, while it
//! waits for a handler slot, and commits it and acks it after its slot is
//! free again. Both round trips then overlap other messages' handlers
//! instead of holding a slot, and more of them share a pipeline and a group
//! commit. Handlers at once stay within `concurrency`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::error::KeyError;
use crate::key::KeySource;
use crate::meter::Meter;
use crate::ordering::OrderGate;
use crate::process::{message, Action, Counted, HandlerSlots, Outcome, Process, Stats, StatsSnapshot};
use crate::settings::Settings;

/// One delivery, as a broker module hands it to the loop.
pub(crate) trait Delivery: Send + 'static {
    /// The `broker` label of the metrics (`idem_metrics::broker::brokers`).
    const BROKER: &'static str;
    /// Reads a key from the delivery (header, property or body).
    fn key(&self, source: &KeySource) -> Result<Vec<u8>, KeyError>;
    /// The body.
    fn payload(&self) -> Bytes;
    /// Which delivery this is (1 = first).
    fn deliveries(&self) -> u32;
    /// Keeps the broker from redelivering while the handler runs, where the
    /// broker has a per-message timer (JetStream's ack wait): a future that
    /// never ends, polled alongside the handler (no task of its own), whose
    /// first signal goes out after `every_ms`, so a short handler sends none.
    fn keep_alive(&self, every_ms: u64) -> Option<BoxFuture<'static, ()>>;
    /// Acknowledges, redelivers or dead-letters the delivery.
    fn settle(self, action: &Action) -> BoxFuture<'static, Result<(), String>>;
}

struct Shared<P> {
    settings: Settings,
    process: Arc<P>,
    stats: Arc<Stats>,
    meter: Meter,
    gate: OrderGate,
    slots: HandlerSlots,
}

/// Runs until `deliveries` ends or `shutdown` resolves, then drains.
pub(crate) async fn run<D, S, P>(
    deliveries: S,
    settings: Settings,
    process: Arc<P>,
    stats: Arc<Stats>,
    shutdown: impl std::future::Future<Output = ()>,
) -> StatsSnapshot
where
    D: Delivery,
    S: Stream<Item = D> + Unpin,
    P: Process,
{
    let in_flight = (settings.concurrency_n() + settings.prefetch_n()) as usize;
    let taken = Arc::new(Semaphore::new(in_flight));
    let slots = HandlerSlots::new(settings.concurrency_n() as usize);
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain = Duration::from_millis(settings.drain());
    let meter = Meter::register(D::BROKER);
    let shared = Arc::new(Shared { settings, process, stats: stats.clone(), meter, gate: OrderGate::default(), slots });
    let mut tasks = JoinSet::new();
    let mut deliveries = deliveries;
    tokio::pin!(shutdown);
    loop {
        // A place first, then a delivery: messages taken from the broker and
        // not yet settled stay within concurrency + prefetch.
        let permit = tokio::select! {
            p = taken.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let delivery = tokio::select! {
            d = deliveries.next() => match d { Some(d) => d, None => break },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        tasks.spawn(async move {
            one(&shared, delivery, stop).await;
            drop(permit);
        });
    }
    // Stop taking deliveries: what the broker sent ahead comes back to it
    // (JetStream after its ack wait, AMQP when the channel closes).
    drop(deliveries);
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, all_done).await.is_err() {
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
    stats.snapshot()
}

async fn one<D: Delivery, P: Process>(shared: &Shared<P>, delivery: D, stop: watch::Receiver<bool>) {
    let arrived = Instant::now();
    let settings = &shared.settings;
    let key = match delivery.key(settings.key()) {
        Ok(k) => k,
        Err(e) => {
            // No redelivery can give the message a key.
            let action = Action::DeadLetter { reason: e.to_string() };
            settle(shared, delivery, action, Counted::Other, arrived).await;
            return;
        }
    };
    let order_key = settings.order_key_source().map(|src| delivery.key(src).unwrap_or_else(|_| key.clone()));
    let _turn = match order_key {
        Some(k) => Some(shared.gate.turn(k).await),
        None => None,
    };
    let msg = message(key, delivery.payload(), delivery.deliveries());
    let work = shared.process.process(settings, msg, &shared.slots, stop);
    let (action, counted) = match delivery.keep_alive(settings.progress_every()) {
        Some(keep_alive) => tokio::select! {
            biased;
            r = work => r,
            () = keep_alive => unreachable!("a keep-alive never ends"),
        },
        None => work.await,
    };
    settle(shared, delivery, action, counted, arrived).await;
}

async fn settle<D: Delivery, P>(shared: &Shared<P>, delivery: D, action: Action, counted: Counted, arrived: Instant) {
    if let Err(e) = delivery.settle(&action).await {
        // The broker redelivers an unsettled message; its record answers it.
        tracing::warn!(error = %e, ?action, "settling a delivery failed");
    }
    let outcome = Outcome::of(&action, counted);
    shared.stats.count(outcome);
    shared.meter.record(outcome, arrived.elapsed());
}
