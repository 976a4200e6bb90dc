//! S2 through the broker adapters (`idem scenario s2 --broker B [--kill]`):
//! orders published on NATS JetStream or RabbitMQ (every fifth one twice,
//! the duplicated upstream records), applied by consumer processes that
//! insert a row per order into a PostgreSQL table without a unique index.
//! With `--kill` a random consumer process is SIGKILLed every
//! [`KILL_EVERY_MS`] while the producer runs, and restarted. Variants, each
//! on the same load: `naive` (the at-least-once consumer), `adapter`
//! (`idem_broker::Adapter`, records on this run's idem server, the insert a
//! separate write) and `inbox` (`idem_broker::PostgresInbox`, the record in
//! the insert's transaction). Counted in the table afterwards: duplicate
//! effects (rows beyond one per order) and lost orders (no row). The run
//! itself is `idem_broker::s2`, shared with the `idem-broker-s2` binary.

use std::time::Duration;

use idem_broker::s2::{self, Broker, Engines, Plan, Variant, WorkerCommand};

use crate::harness::{rate, Ctx};
use crate::report::{summary, VariantReport};
use crate::Scenario;

/// Orders per variant by default.
pub const ORDERS_DEFAULT: usize = 1_000;
/// Every N-th order is published twice.
const DUP_EVERY: usize = 5;
/// Consumer processes per variant.
const WORKERS: usize = 3;
/// Handlers per consumer process.
const CONCURRENCY: u32 = 16;
/// With `--kill`, a random consumer is SIGKILLed this often.
pub const KILL_EVERY_MS: u64 = 300;
/// Orders published per second (the kills land while the producer runs).
const RATE_PER_S: u64 = 1_000;
/// Bound on one variant's run.
const DEADLINE: Duration = Duration::from_secs(180);

/// Which broker, whether consumers are killed, and how to start one
/// consumer process (a binary whose subcommand calls
/// `idem_broker::s2::worker`: `idem s2-worker`).
#[derive(Clone, Debug)]
pub struct BrokerRun {
    /// The broker.
    pub broker: Broker,
    /// SIGKILL consumer processes while the producer runs.
    pub kill: bool,
    /// How to start a consumer process.
    pub worker: WorkerCommand,
}

pub(crate) async fn run(ctx: &Ctx, b: &BrokerRun) -> anyhow::Result<Vec<VariantReport>> {
    let engines = Engines {
        nats_url: ctx.opts.nats_url.clone(),
        amqp_url: ctx.opts.amqp_url.clone(),
        pg: ctx.opts.pg_url.clone(),
    };
    let orders = ctx.size(ORDERS_DEFAULT);
    let mut reports = Vec::new();
    for variant in Variant::ALL {
        let plan = Plan {
            broker: b.broker,
            variant,
            orders,
            dup_every: DUP_EVERY,
            workers: WORKERS,
            kill_every_ms: if b.kill { KILL_EVERY_MS } else { 0 },
            rate: RATE_PER_S,
            crash_after_effect: None,
            concurrency: CONCURRENCY,
            deadline: DEADLINE,
            idem_url: Some(ctx.idem_url.clone()),
            worker: b.worker.clone(),
        };
        let r = s2::run(&plan, &engines).await?;
        reports.push(
            VariantReport::new(Scenario::S2, variant.name())
                .with("broker", b.broker.name())
                .with("orders", r.orders)
                .with("published", r.published)
                .with("workers", r.workers)
                .with("concurrency", r.concurrency)
                .with("kills", r.kills)
                .with("restarts", r.restarts)
                // Exactly once is broken either way: an order applied twice
                // or not at all.
                .with("anomalies", r.duplicate_effects + r.lost)
                .with("duplicate_effects", r.duplicate_effects)
                .with("lost", r.lost)
                .with("dead_letters", r.dead_letters)
                .with("elapsed_ms", r.elapsed.as_millis())
                .with_rate("ops_per_s", rate(r.orders, r.elapsed)),
        );
    }
    let at = |v: Variant| Variant::ALL.iter().position(|x| *x == v).expect("every variant ran");
    let get = |v: Variant, k: &str| reports[at(v)].field(k).unwrap_or("na").to_string();
    let mut extra = vec![
        ("broker".to_string(), b.broker.name().to_string()),
        ("kill".to_string(), b.kill.to_string()),
        ("orders".to_string(), orders.to_string()),
    ];
    for v in Variant::ALL {
        for k in ["duplicate_effects", "lost", "kills"] {
            extra.push((format!("{}_{k}", v.name()), get(v, k)));
        }
    }
    extra.push(("adapter_anomalies".to_string(), get(Variant::Adapter, "anomalies")));
    // The summary's idem column is the inbox: the variant that is exact
    // even when a consumer dies between its effect and its record.
    let s = summary(Scenario::S2, &reports[at(Variant::Naive)], &reports[at(Variant::Inbox)], extra);
    reports.push(s);
    Ok(reports)
}
