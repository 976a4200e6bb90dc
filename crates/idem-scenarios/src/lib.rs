//! # idem-scenarios
//!
//! The proof: each scenario from docs/scenarios.md (S1–S5) reproduced against the
//! real local engines, with the naive approach and the idem approach side by
//! side in the same run. Every scenario:
//! - creates its own uniquely named tables (so parallel runs never collide) and
//!   drops them at the end;
//! - drives the naive code and the idem code with the same load;
//! - counts anomalies by querying the real tables afterwards (`GROUP BY ...
//!   HAVING COUNT(*) > 1` and the like), never by trusting the code under test;
//! - returns one [`VariantReport`] per variant and, last, a summary line of the
//!   shape `scenario=s1 naive_anomalies=N idem_anomalies=M naive_ops_per_s=X
//!   idem_ops_per_s=Y ...`.
//!
//! idem itself is either started in-process (embedded durable store in a
//! temporary directory, RESP server on a free port) or reached at
//! [`ScenarioOpts::idem_url`]; scenarios talk to it with the `redis` crate over
//! TCP, exactly as a user would.
//!
//! | scenario | module | engines |
//! |---|---|---|
//! | S1 replayed registration | [`s1`] | axum + MariaDB + idem (in the handler, and the unchanged handler behind `idem-gateway`) |
//! | S2 product copy via MQ | [`s2`] | NATS JetStream + MariaDB (+ Redis lock) + idem in-transaction claims (MariaDB, PostgreSQL) |
//! | S2 through the broker adapters | [`s2_broker`] | JetStream or RabbitMQ + PostgreSQL + killed consumer processes + `idem-broker` |
//! | S3 prize grant | [`s3`] | MariaDB (REPEATABLE READ) + Redis lock + idem keys (server, and in the transaction) |
//! | S4 meeting-room rush | [`s4`] | MariaDB + idem `SLOTS.RESERVE` |
//! | S5 points, budget, callbacks | [`s5`] | MariaDB + NATS JetStream + idem counters and keys |
//!
//! What each run does and the figures measured are in `docs/scenarios.md`.

use std::fmt;
use std::str::FromStr;

mod broker;
mod harness;
mod pg;
mod report;
pub mod s1;
mod s1_gateway;
pub mod s2;
pub mod s2_broker;
pub mod s3;
pub mod s4;
pub mod s5;

pub use report::VariantReport;

/// Which scenario to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Replayed registration (check-then-insert behind an HTTP handler).
    S1,
    /// Batch product copy through a multi-worker MQ consumer, logical delete.
    S2,
    /// Prize grant: a lock released before the transaction commits.
    S3,
    /// Meeting-room rush: multi-slot bookings under heavy contention.
    S4,
    /// Points, red-envelope budget, and redelivered callbacks.
    S5,
}

impl Scenario {
    /// All scenarios, in order.
    pub const ALL: [Scenario; 5] = [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S4, Scenario::S5];

    /// The short lowercase name used on the command line and in reports (`s1`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::S1 => "s1",
            Scenario::S2 => "s2",
            Scenario::S3 => "s3",
            Scenario::S4 => "s4",
            Scenario::S5 => "s5",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| anyhow::anyhow!("unknown scenario '{s}': expected one of s1, s2, s3, s4, s5"))
    }
}

/// Where the engines are and how big a run is.
#[derive(Clone, Debug)]
pub struct ScenarioOpts {
    /// The scenario's load size; `None` takes the scenario's default (the size
    /// of the original write-up where it gives one). What it counts depends on
    /// the scenario: users (S1; default 50), products per copy request (S2;
    /// 50), (user, prize) pairs (S3; 40), booking attempts (S4; 3,000), budget
    /// adds (S5; 2,000 — with half as many callbacks and one points user per
    /// 40).
    pub size: Option<usize>,
    /// MariaDB / MySQL, e.g. `mysql://root@127.0.0.1:3306/test`.
    pub mysql_url: String,
    /// PostgreSQL, e.g. `postgres://postgres@127.0.0.1:5432/test`.
    pub pg_url: String,
    /// Redis (for the naive `SET NX PX` locks), e.g. `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// NATS with JetStream, e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// RabbitMQ, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (S2 with
    /// [`ScenarioOpts::s2_broker`] on RabbitMQ).
    pub amqp_url: String,
    /// An external idem server (`redis://host:port`); `None` starts one
    /// in-process with the embedded store in a temporary directory.
    pub idem_url: Option<String>,
    /// S2 only: run it through the broker adapters (naive, adapter and
    /// inbox consumer processes, optionally killed) instead of the product
    /// copy ([`s2_broker`]).
    pub s2_broker: Option<s2_broker::BrokerRun>,
}

impl Default for ScenarioOpts {
    fn default() -> Self {
        ScenarioOpts {
            size: None,
            mysql_url: "mysql://root@127.0.0.1:3306/test".into(),
            pg_url: "postgres://postgres@127.0.0.1:5432/test".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            idem_url: None,
            s2_broker: None,
        }
    }
}

/// Runs one scenario: the naive variant(s) and the idem variant against the
/// real engines, then checks the tables. Returns one report per variant and,
/// last, the summary (`scenario=sN naive_anomalies=.. idem_anomalies=..
/// naive_ops_per_s=.. idem_ops_per_s=.. ...`). Each report prints as one line.
///
/// Errors mean the scenario could not be run (an engine unreachable, a
/// schema refused), never that an anomaly was found: anomalies are counted in
/// the reports.
pub async fn run(which: Scenario, opts: ScenarioOpts) -> anyhow::Result<Vec<VariantReport>> {
    let ctx = harness::Ctx::start(which, opts).await?;
    let result = match which {
        Scenario::S1 => s1::run(&ctx).await,
        Scenario::S2 => match &ctx.opts.s2_broker {
            Some(b) => s2_broker::run(&ctx, b).await,
            None => s2::run(&ctx).await,
        },
        Scenario::S3 => s3::run(&ctx).await,
        Scenario::S4 => s4::run(&ctx).await,
        Scenario::S5 => s5::run(&ctx).await,
    };
    // Tables and the in-process idem server are cleaned up whether or not the
    // scenario succeeded, so a failed run leaves nothing behind.
    ctx.finish().await;
    result
}
