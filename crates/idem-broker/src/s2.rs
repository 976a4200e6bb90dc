//! Scenario S2 over a real broker with consumer processes killed and
//! restarted, and the adapter's throughput benchmark (feature `scenario`).
//! `idem-scenario s2 --broker ... [--kill]` and the `idem-broker-s2` binary
//! both run it from here.
//!
//! [`run`]: a producer publishes `orders` orders (and again every
//! `dup_every`-th one: the duplicated upstream records) on JetStream or
//! RabbitMQ; `workers` consumer processes ([`worker`], started through
//! [`WorkerCommand`]) apply each order by inserting a row into a PostgreSQL
//! table that has no unique index, so every duplicate effect stays visible.
//! The driver SIGKILLs a random worker every `kill_every_ms` and restarts
//! it. At the end the table is counted: duplicate effects (rows beyond one
//! per order) and lost orders (published, no row). Variants: `naive` (no
//! records), `adapter` (records on an idem server, the insert outside them),
//! `inbox` (records in the insert's own transaction). `crash_after_effect`
//! makes the first run of one order abort its process between its insert and
//! its record: the adapter's one inexact window, which the inbox closes.
//!
//! [`bench`]: one process consumes pre-published messages with the raw
//! consumer (no records) or the adapter: same broker, same durable queue,
//! same concurrency and prefetch.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use clap::ValueEnum;
use futures::future::BoxFuture;
use futures::StreamExt;
use idem_client::{Client, Config};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::Rng;
use tokio_postgres::NoTls;

use crate::{
    amqp, jetstream as js_adapter, Adapter, Failure, KeySource, Message, PgHandler, PipelineLimits, PostgresInbox,
    Process, Settings, Stats, StatsSnapshot, Unguarded,
};

/// JetStream redelivers an unacked message after this long (a killed
/// worker's messages come back then).
const ACK_WAIT_MS: u64 = 3_000;
/// The idem lease of one run in the scenario: a killed run's key frees then.
const LEASE_MS: u64 = 2_000;
/// A live run marks its JetStream message in progress this often.
const PROGRESS_EVERY_MS: u64 = 1_000;
/// Redelivery delays offered on RabbitMQ.
const DELAY_TIERS_MS: [u64; 3] = [100, 500, 2_000];
/// The JetStream consumer's own delivery limit, above the adapter's.
const JS_MAX_DELIVER: i64 = 100;
/// Delivered-but-unacked messages the JetStream consumer allows, across
/// every worker: above the workers' prefetch, so it never throttles them.
const JS_ACK_PENDING_MAX: i64 = 10_000;
/// PostgreSQL connections per worker process.
const PG_CONNS_PER_WORKER: usize = 8;
/// The idem connections per worker process.
const IDEM_POOL_SIZE: usize = 16;
/// After every order has its row and the broker holds nothing, a run with
/// kills or a crash still waits this long (JetStream's ack wait) for late
/// redeliveries of messages a dead worker held, before counting.
const SETTLE_MS: u64 = ACK_WAIT_MS;
/// The same wait without kills: every message has then been settled by a
/// live worker (acked, or moved to a delay queue, which the backlog counts),
/// so nothing comes late; this only confirms the backlog stays empty.
const SETTLE_MS_NO_KILLS: u64 = 2 * POLL_MS;
/// How often the driver restarts dead workers and checks for the end.
const POLL_MS: u64 = 50;
/// Messages published at once while the benchmark fills its queue.
const BENCH_PUBLISH_CHUNK: usize = 256;

/// The broker of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Broker {
    /// NATS JetStream (file storage, durable pull consumer).
    Jetstream,
    /// RabbitMQ (durable quorum queue, persistent messages).
    Rabbitmq,
}

impl Broker {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Jetstream => "jetstream",
            Broker::Rabbitmq => "rabbitmq",
        }
    }
}

/// How the consumers keep their records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// No records: the at-least-once consumer (the benchmark's raw peer).
    Naive,
    /// Records on an idem server; the effect is a separate write.
    Adapter,
    /// Records in the effect's own PostgreSQL transaction.
    Inbox,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 3] = [Variant::Naive, Variant::Adapter, Variant::Inbox];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Naive => "naive",
            Variant::Adapter => "adapter",
            Variant::Inbox => "inbox",
        }
    }
}

/// Where the engines are. PostgreSQL takes a URL or key=value pairs.
#[derive(clap::Args, Clone, Debug)]
pub struct Engines {
    /// NATS with JetStream.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// RabbitMQ.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// PostgreSQL, for the effects table and the inbox.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg: String,
}

/// How to start one worker process: `program args... <WorkerArgs flags>`,
/// where `args` select the subcommand that calls [`worker`].
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// The arguments before the worker's flags (its subcommand).
    pub args: Vec<OsString>,
}

/// One run of the scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The broker.
    pub broker: Broker,
    /// The consumers' variant.
    pub variant: Variant,
    /// Orders published (each applied once is the goal).
    pub orders: usize,
    /// Every N-th order is published twice (0: none).
    pub dup_every: usize,
    /// Consumer processes.
    pub workers: usize,
    /// SIGKILL a random worker this often while the producer runs (0: never).
    pub kill_every_ms: u64,
    /// Orders published per second (0: as fast as the broker takes them).
    pub rate: u64,
    /// The first run of this order aborts its process right after the effect.
    pub crash_after_effect: Option<String>,
    /// Handlers per worker process.
    pub concurrency: u32,
    /// Give up waiting for the effects after this long.
    pub deadline: Duration,
    /// The idem server of the adapter variant (`redis://host:port`).
    pub idem_url: Option<String>,
    /// How to start a worker.
    pub worker: WorkerCommand,
}

/// What a run counted in the table and the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The broker.
    pub broker: Broker,
    /// The variant.
    pub variant: Variant,
    /// Orders.
    pub orders: u64,
    /// Messages published (orders and their duplicates).
    pub published: u64,
    /// Consumer processes.
    pub workers: u64,
    /// Handlers per worker.
    pub concurrency: u32,
    /// SIGKILLs sent.
    pub kills: u64,
    /// Workers restarted (killed or crashed on purpose).
    pub restarts: u64,
    /// Rows beyond one per order.
    pub duplicate_effects: u64,
    /// Orders without a row.
    pub lost: u64,
    /// Messages in the dead-letter queue.
    pub dead_letters: u64,
    /// From the first worker's start to the end of the run.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scenario=s2-kill broker={} variant={} orders={} published={} workers={} concurrency={} kills={} restarts={} duplicate_effects={} lost={} dead_letters={} elapsed_s={:.1}",
            self.broker.name(),
            self.variant.name(),
            self.orders,
            self.published,
            self.workers,
            self.concurrency,
            self.kills,
            self.restarts,
            self.duplicate_effects,
            self.lost,
            self.dead_letters,
            self.elapsed.as_secs_f64()
        )
    }
}

fn unique_name(prefix: &str) -> String {
    let n: u32 = rand::thread_rng().gen();
    format!("{prefix}_{}_{n:08x}", std::process::id())
}

fn order_body(id: &str) -> Bytes {
    Bytes::from(format!(r#"{{"id":"{id}","sku":"p-1","qty":1}}"#))
}

fn settings(name: &str, concurrency: u32) -> Settings {
    Settings::new(name, KeySource::JsonField("/id".into()))
        .concurrency(concurrency)
        .prefetch(concurrency * 2)
        .lease_ms(LEASE_MS)
        .progress_every_ms(PROGRESS_EVERY_MS)
        .backoff_ms(50, 1_000)
        .drain_ms(2_000)
}

async fn pg_pool(pg: &str, size: usize) -> anyhow::Result<deadpool_postgres::Pool> {
    let config: tokio_postgres::Config = pg.parse().context("PostgreSQL connection string")?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    Ok(deadpool_postgres::Pool::builder(manager).max_size(size).build()?)
}

/// The broker objects of one run.
enum Queue {
    Js { js: jetstream::Context, stream: String },
    Rabbit { conn: Connection, queue: String },
}

impl Queue {
    async fn create(broker: Broker, name: &str, e: &Engines) -> anyhow::Result<Queue> {
        match broker {
            Broker::Jetstream => {
                let js = jetstream::new(async_nats::connect(&e.nats_url).await.context("connecting to NATS")?);
                let stream = js
                    .create_stream(stream::Config {
                        name: name.to_string(),
                        subjects: vec![format!("{name}.work"), format!("{name}.dlq")],
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .context("creating the stream")?;
                stream
                    .create_consumer(pull::Config {
                        durable_name: Some("workers".into()),
                        filter_subject: format!("{name}.work"),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: Duration::from_millis(ACK_WAIT_MS),
                        max_deliver: JS_MAX_DELIVER,
                        max_ack_pending: JS_ACK_PENDING_MAX,
                        ..Default::default()
                    })
                    .await
                    .context("creating the consumer")?;
                Ok(Queue::Js { js, stream: name.to_string() })
            }
            Broker::Rabbitmq => {
                let conn = Connection::connect(&e.amqp_url, ConnectionProperties::default())
                    .await
                    .context("connecting to RabbitMQ")?;
                let ch = conn.create_channel().await?;
                amqp::declare_queue(&ch, name).await?;
                Ok(Queue::Rabbit { conn, queue: name.to_string() })
            }
        }
    }

    async fn publisher(&self) -> anyhow::Result<Publisher> {
        Ok(match self {
            Queue::Js { js, stream } => Publisher::Js { js: js.clone(), subject: format!("{stream}.work") },
            Queue::Rabbit { conn, queue } => {
                let ch = conn.create_channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                Publisher::Rabbit { ch, queue: queue.clone() }
            }
        })
    }

    /// Messages the broker still holds for the consumers (not yet acked).
    async fn backlog(&self) -> anyhow::Result<u64> {
        match self {
            Queue::Js { js, stream } => {
                let mut c: jetstream::consumer::Consumer<pull::Config> =
                    js.get_stream(stream).await?.get_consumer("workers").await.map_err(|e| anyhow::anyhow!("{e}"))?;
                let info = c.info().await?;
                Ok(info.num_pending + info.num_ack_pending as u64)
            }
            Queue::Rabbit { conn, queue } => {
                let ch = conn.create_channel().await?;
                let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                let mut n = 0u64;
                let mut names = vec![queue.clone()];
                names.extend(DELAY_TIERS_MS.iter().map(|ms| format!("{queue}.delay-{ms}ms")));
                for q in names {
                    if let Ok(info) = ch.queue_declare(&q, passive, FieldTable::default()).await {
                        n += u64::from(info.message_count());
                    }
                }
                let _ = ch.close(200, "done").await;
                Ok(n)
            }
        }
    }

    /// Messages in the dead-letter queue.
    async fn dead_letters(&self) -> anyhow::Result<u64> {
        match self {
            Queue::Js { js, stream } => {
                let s = js.get_stream(stream).await?;
                let mut subjects = s.info_with_subjects(format!("{stream}.dlq")).await?;
                let mut n = 0u64;
                while let Some(entry) = subjects.next().await {
                    n += entry?.1 as u64;
                }
                Ok(n)
            }
            Queue::Rabbit { conn, queue } => {
                let ch = conn.create_channel().await?;
                let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                let info = ch.queue_declare(&format!("{queue}.dlq"), passive, FieldTable::default()).await?;
                Ok(u64::from(info.message_count()))
            }
        }
    }

    async fn delete(self) {
        match self {
            Queue::Js { js, stream } => {
                let _ = js.delete_stream(&stream).await;
            }
            Queue::Rabbit { conn, queue } => {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = amqp::delete_queue(&ch, &queue, &DELAY_TIERS_MS).await;
                }
                let _ = conn.close(200, "done").await;
            }
        }
    }
}

enum Publisher {
    Js { js: jetstream::Context, subject: String },
    Rabbit { ch: lapin::Channel, queue: String },
}

impl Publisher {
    /// Publishes and waits until the broker has stored the message.
    async fn publish(&self, id: &str) -> anyhow::Result<()> {
        let body = order_body(id);
        match self {
            // No Nats-Msg-Id: the duplicates come from upstream, after any
            // broker dedup window; the key is the body's order id.
            Publisher::Js { js, subject } => {
                js.publish(subject.clone(), body).await?.await?;
            }
            Publisher::Rabbit { ch, queue } => {
                let props = BasicProperties::default().with_delivery_mode(2);
                ch.basic_publish("", queue, BasicPublishOptions::default(), &body, props).await?.await?;
            }
        }
        Ok(())
    }
}

fn spawn_worker(plan: &Plan, e: &Engines, name: &str, table: &str, dir: &std::path::Path) -> anyhow::Result<Child> {
    let mut cmd = Command::new(&plan.worker.program);
    cmd.args(&plan.worker.args)
        .args(["--broker", plan.broker.name(), "--variant", plan.variant.name()])
        .args(["--name", name, "--table", table, "--concurrency", &plan.concurrency.to_string()])
        .args(["--nats-url", &e.nats_url, "--amqp-url", &e.amqp_url, "--pg", &e.pg])
        .stdin(Stdio::null());
    if let Some(u) = &plan.idem_url {
        cmd.args(["--idem-url", u]);
    }
    if let Some(id) = &plan.crash_after_effect {
        cmd.args(["--crash-after-effect", id]).arg("--crash-marker-dir").arg(dir);
    }
    Ok(cmd.spawn()?)
}

/// Runs the scenario once: creates the table and the queue, drives the
/// workers, counts, and removes what it created.
pub async fn run(plan: &Plan, e: &Engines) -> anyhow::Result<Report> {
    if plan.variant == Variant::Adapter && plan.idem_url.is_none() {
        bail!("the adapter variant needs an idem server");
    }
    let name = unique_name("s2k");
    let table = format!("{name}_effects");
    let pool = pg_pool(&e.pg, 4).await?;
    pool.get()
        .await?
        .batch_execute(&format!("CREATE TABLE {table} (order_id text NOT NULL, pid int NOT NULL)"))
        .await?;
    if plan.variant == Variant::Inbox {
        idem_backends::postgres::migrate(&pg_url(&e.pg)).await.context("installing idem's schema")?;
    }
    let queue = Queue::create(plan.broker, &name, e).await?;
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir)?;
    let result = drive(plan, e, &name, &table, &dir, &queue, &pool).await;
    queue.delete().await;
    let _ = pool.get().await?.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn drive(
    plan: &Plan,
    e: &Engines,
    name: &str,
    table: &str,
    dir: &std::path::Path,
    queue: &Queue,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut workers: Vec<Child> =
        (0..plan.workers).map(|_| spawn_worker(plan, e, name, table, dir)).collect::<Result<_, _>>()?;
    let publisher = queue.publisher().await?;
    let ids: Vec<String> = (0..plan.orders).map(|i| format!("o-{i}")).collect();
    let (dup_every, rate) = (plan.dup_every, plan.rate);
    let producer = tokio::spawn(async move {
        let mut published = 0u64;
        let gap = (rate > 0).then(|| Duration::from_micros(1_000_000 / rate));
        for (i, id) in ids.iter().enumerate() {
            publisher.publish(id).await?;
            published += 1;
            if dup_every > 0 && i % dup_every == 0 {
                publisher.publish(id).await?;
                published += 1;
            }
            if let Some(g) = gap {
                tokio::time::sleep(g).await;
            }
        }
        anyhow::Ok(published)
    });
    let mut kills = 0u64;
    let mut restarts = 0u64;
    let count = |sql: String| async move {
        let row = pool.get().await?.query_one(&sql, &[]).await?;
        anyhow::Ok(row.get::<_, i64>(0) as u64)
    };
    let distinct_sql = format!("SELECT count(DISTINCT order_id) FROM {table}");
    let mut next_kill = Instant::now() + Duration::from_millis(plan.kill_every_ms.max(1));
    let mut settled_since: Option<Instant> = None;
    let quiet = plan.kill_every_ms == 0 && plan.crash_after_effect.is_none();
    let settle = Duration::from_millis(if quiet { SETTLE_MS_NO_KILLS } else { SETTLE_MS });
    loop {
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        // Restart any worker that died (killed, or crashed on purpose).
        for w in workers.iter_mut() {
            if w.try_wait()?.is_some() {
                *w = spawn_worker(plan, e, name, table, dir)?;
                restarts += 1;
            }
        }
        let producing = !producer.is_finished();
        if producing && plan.kill_every_ms > 0 && Instant::now() >= next_kill {
            let i = rand::thread_rng().gen_range(0..workers.len());
            // SAFETY: kill(2) on a child's pid; no memory is touched.
            unsafe { libc::kill(workers[i].id() as i32, libc::SIGKILL) };
            kills += 1;
            next_kill = Instant::now() + Duration::from_millis(plan.kill_every_ms);
        }
        if !producing {
            let done = count(distinct_sql.clone()).await? == plan.orders as u64 && queue.backlog().await? == 0;
            match (done, settled_since) {
                (true, None) => settled_since = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() >= settle => break,
                (false, _) => settled_since = None,
                _ => {}
            }
        }
        if started.elapsed() > plan.deadline {
            eprintln!("deadline reached before every order had its effect");
            break;
        }
    }
    let published = if producer.is_finished() {
        producer.await??
    } else {
        producer.abort();
        0
    };
    let elapsed = started.elapsed();
    for w in workers.iter_mut() {
        // SAFETY: as above; SIGTERM asks for the graceful drain.
        unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    }
    for w in workers.iter_mut() {
        let _ = w.wait();
    }
    let rows = count(format!("SELECT count(*) FROM {table}")).await?;
    let distinct = count(distinct_sql).await?;
    let dead = queue.dead_letters().await?;
    Ok(Report {
        broker: plan.broker,
        variant: plan.variant,
        orders: plan.orders as u64,
        published,
        workers: plan.workers as u64,
        concurrency: plan.concurrency,
        kills,
        restarts,
        duplicate_effects: rows - distinct,
        lost: plan.orders as u64 - distinct,
        dead_letters: dead,
        elapsed,
    })
}

/// A PostgreSQL URL for idem's migration, from a URL or key=value pairs.
fn pg_url(pg: &str) -> String {
    if pg.starts_with("postgres://") || pg.starts_with("postgresql://") {
        return pg.to_string();
    }
    let mut parts: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for kv in pg.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            parts.insert(k, v);
        }
    }
    format!(
        "postgres://{}@{}:{}/{}",
        parts.get("user").unwrap_or(&"postgres"),
        parts.get("host").unwrap_or(&"127.0.0.1"),
        parts.get("port").unwrap_or(&"5432"),
        parts.get("dbname").unwrap_or(&"test")
    )
}

/// Aborts the process after the effect of `id`'s first run: the marker file
/// makes it happen once across restarts.
fn maybe_crash(crash: &Option<(String, PathBuf)>, id: &str) {
    if let Some((target, dir)) = crash {
        if target == id {
            let marker = dir.join(format!("crashed-{id}"));
            if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
                std::process::abort();
            }
        }
    }
}

fn order_id(msg: &Message) -> String {
    String::from_utf8_lossy(msg.key()).into_owned()
}

struct InsertInTx {
    table: String,
    crash: Option<(String, PathBuf)>,
}

impl PgHandler for InsertInTx {
    fn handle<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Bytes, Failure>> {
        Box::pin(async move {
            let id = order_id(msg);
            let sql = format!("INSERT INTO {} (order_id, pid) VALUES ($1, $2)", self.table);
            tx.execute(&sql, &[&id, &(std::process::id() as i32)]).await.map_err(|e| Failure::Retry(e.to_string()))?;
            maybe_crash(&self.crash, &id);
            Ok(Bytes::from_static(b"inserted"))
        })
    }
}

/// The handler of the naive and adapter variants: an insert in its own
/// autocommit statement.
fn insert_handler(
    pool: deadpool_postgres::Pool,
    table: String,
    crash: Option<(String, PathBuf)>,
) -> impl Fn(Message) -> BoxFuture<'static, Result<Bytes, Failure>> + Send + Sync + 'static {
    let sql = Arc::new(format!("INSERT INTO {table} (order_id, pid) VALUES ($1, $2)"));
    let crash = Arc::new(crash);
    move |msg: Message| {
        let (pool, sql, crash) = (pool.clone(), sql.clone(), crash.clone());
        Box::pin(async move {
            let id = order_id(&msg);
            let conn = pool.get().await.map_err(|e| Failure::Retry(e.to_string()))?;
            conn.execute(sql.as_str(), &[&id, &(std::process::id() as i32)])
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            maybe_crash(&crash, &id);
            Ok(Bytes::from_static(b"inserted"))
        })
    }
}

async fn consume_with<P: Process>(
    broker: Broker,
    name: &str,
    e: &Engines,
    settings: Settings,
    process: Arc<P>,
    stats: Arc<Stats>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<StatsSnapshot> {
    match broker {
        Broker::Jetstream => {
            let js = jetstream::new(async_nats::connect(&e.nats_url).await?);
            let consumer: jetstream::consumer::Consumer<pull::Config> =
                js.get_stream(name).await?.get_consumer("workers").await.map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(js_adapter::consume(js, consumer, format!("{name}.dlq"), settings, process, stats, shutdown).await?)
        }
        Broker::Rabbitmq => {
            let conn = Connection::connect(&e.amqp_url, ConnectionProperties::default()).await?;
            let snap = amqp::consume(&conn, name, &DELAY_TIERS_MS, settings, process, stats, shutdown).await?;
            let _ = conn.close(200, "shutdown").await;
            Ok(snap)
        }
    }
}

/// The flags of one consumer process (started by [`run`]).
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    broker: Broker,
    #[arg(long, value_enum)]
    variant: Variant,
    /// The queue (stream) and consumer name.
    #[arg(long)]
    name: String,
    /// The effects table.
    #[arg(long)]
    table: String,
    #[arg(long)]
    idem_url: Option<String>,
    #[arg(long)]
    crash_after_effect: Option<String>,
    #[arg(long)]
    crash_marker_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    #[command(flatten)]
    engines: Engines,
}

/// One consumer process: consumes until SIGTERM, then drains.
pub async fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let crash = a.crash_after_effect.clone().zip(a.crash_marker_dir.clone());
    let s = settings(&a.name, a.concurrency);
    let (broker, name, table, e) = (a.broker, a.name.as_str(), a.table.as_str(), &a.engines);
    let pool = pg_pool(&e.pg, PG_CONNS_PER_WORKER).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        term.recv().await;
    };
    let snap = match a.variant {
        Variant::Naive => {
            let p = Unguarded::new(insert_handler(pool, table.to_string(), crash));
            consume_with(broker, name, e, s, p, Arc::default(), shutdown).await?
        }
        Variant::Adapter => {
            let Some(url) = a.idem_url.clone() else { bail!("the adapter variant needs --idem-url") };
            let client = Client::connect(Config::new(url).pool_size(IDEM_POOL_SIZE)).await?;
            let p = Adapter::new(client, insert_handler(pool, table.to_string(), crash));
            consume_with(broker, name, e, s, p, Arc::default(), shutdown).await?
        }
        Variant::Inbox => {
            let p = PostgresInbox::new(pool, InsertInTx { table: table.to_string(), crash });
            consume_with(broker, name, e, s, p, Arc::default(), shutdown).await?
        }
    };
    eprintln!("worker {} stopped: {snap:?}", std::process::id());
    Ok(())
}

/// The benchmark's result: messages per second through one consumer.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The broker.
    pub broker: Broker,
    /// `naive` (the raw consumer) or `adapter`.
    pub variant: Variant,
    /// Where the adapter kept its records (`None` for the raw consumer).
    pub idem: Option<IdemAt>,
    /// Messages consumed.
    pub messages: u64,
    /// Handlers at once.
    pub concurrency: u32,
    /// Whether the handler inserted a row into PostgreSQL.
    pub pg_effect: bool,
    /// Messages applied.
    pub applied: u64,
    /// Applied per second of consumption.
    pub msgs_per_s: f64,
    /// CPU seconds (user + system) this process spent consuming, per
    /// message: the consumer, and for the adapter the in-process idem server.
    pub cpu_us_per_msg: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bench broker={} variant={} idem={} messages={} concurrency={} pg_effect={} applied={} msgs_per_s={:.0} cpu_us_per_msg={:.1}",
            self.broker.name(),
            self.variant.name(),
            self.idem.map_or("none", IdemAt::name),
            self.messages,
            self.concurrency,
            self.pg_effect,
            self.applied,
            self.msgs_per_s,
            self.cpu_us_per_msg
        )
    }
}

/// This process's CPU time so far (user + system).
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given; nothing else is touched.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The benchmark's consumer, built before the clock starts: the adapter or
/// the raw consumer (two types, one `consume_with` each).
enum Consumer<A, R> {
    Adapter(A),
    Raw(R),
}

/// Where the benchmark's adapter keeps its records: both are the embedded
/// durable store in the consumer's process (fsync before each reply), so
/// the dedup scope is the same; they differ in how the adapter reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdemAt {
    /// An idem server in this process, over loopback RESP through
    /// `idem_client` (`Adapter::new`): the path of a shared idem server.
    Server,
    /// The store itself, called directly (`Adapter::over`).
    Embedded,
}

impl IdemAt {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            IdemAt::Server => "server",
            IdemAt::Embedded => "embedded",
        }
    }
}

/// Consumes `messages` pre-published messages with the raw consumer
/// (`naive`) or the adapter (records on `idem`, its calls coalesced as
/// `limits` says), `concurrency` handlers, prefetch twice that, on a
/// durable queue.
#[allow(clippy::too_many_arguments)]
pub async fn bench(
    broker: Broker,
    variant: Variant,
    messages: usize,
    concurrency: u32,
    pg_effect: bool,
    idem: Option<&DurableIdem>,
    limits: PipelineLimits,
    e: &Engines,
) -> anyhow::Result<BenchReport> {
    if variant == Variant::Inbox {
        bail!("bench compares naive (raw) and adapter");
    }
    if (variant == Variant::Adapter) != idem.is_some() {
        bail!("the adapter variant needs idem records, the raw consumer none");
    }
    let name = unique_name("bench");
    let table = format!("{name}_effects");
    let pool = pg_pool(&e.pg, concurrency as usize).await?;
    if pg_effect {
        pool.get()
            .await?
            .batch_execute(&format!("CREATE TABLE {table} (order_id text NOT NULL, pid int NOT NULL)"))
            .await?;
    }
    let queue = Queue::create(broker, &name, e).await?;
    let result = async {
        let publisher = queue.publisher().await?;
        // Published up front (concurrently, in chunks) so that only
        // consumption is timed.
        for chunk in (0..messages).collect::<Vec<_>>().chunks(BENCH_PUBLISH_CHUNK) {
            let futs = chunk.iter().map(|i| publisher.publish_owned(format!("b-{i}")));
            for r in futures::future::join_all(futs).await {
                r?;
            }
        }
        let stats = Arc::new(Stats::default());
        let watch_stats = stats.clone();
        let total = messages as u64;
        let done = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let s = watch_stats.snapshot();
                if s.applied + s.duplicates >= total {
                    break;
                }
            }
        };
        let s = settings(&name, concurrency);
        let handler: Box<dyn Fn(Message) -> BoxFuture<'static, Result<Bytes, Failure>> + Send + Sync> = if pg_effect {
            Box::new(insert_handler(pool.clone(), table.clone(), None))
        } else {
            Box::new(|_m: Message| -> BoxFuture<'static, Result<Bytes, Failure>> {
                Box::pin(async { Ok(Bytes::new()) })
            })
        };
        // Connections are opened before the clock starts, on both sides.
        let process = match idem {
            Some(idem) => Consumer::Adapter(match idem.url() {
                Some(url) => {
                    let client = Client::connect(Config::new(url).pool_size(IDEM_POOL_SIZE)).await?;
                    Adapter::with_limits(client, handler, limits)
                }
                None => Adapter::over(idem.store(), handler, limits),
            }),
            None => Consumer::Raw(Unguarded::new(handler)),
        };
        let (started, cpu) = (Instant::now(), cpu_time());
        let snap = match process {
            Consumer::Adapter(adapter) => consume_with(broker, &name, e, s, adapter, stats, done).await?,
            Consumer::Raw(raw) => consume_with(broker, &name, e, s, raw, stats, done).await?,
        };
        let (secs, cpu) = (started.elapsed().as_secs_f64(), cpu_time() - cpu);
        anyhow::Ok(BenchReport {
            broker,
            variant,
            idem: idem.map(DurableIdem::at),
            messages: total,
            concurrency,
            pg_effect,
            applied: snap.applied,
            msgs_per_s: snap.applied as f64 / secs,
            cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / snap.applied.max(1) as f64,
        })
    }
    .await;
    queue.delete().await;
    if pg_effect {
        let _ = pool.get().await?.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await;
    }
    result
}

impl Publisher {
    async fn publish_owned(&self, id: String) -> anyhow::Result<()> {
        self.publish(&id).await
    }
}

/// The idem records of the adapter variant and the benchmark: the embedded
/// durable store (fsync before every reply, as in production) in a
/// temporary directory, in this process; with an idem server on it (RESP on
/// a free loopback port) unless the adapter calls the store directly.
pub struct DurableIdem {
    store: Arc<idem_store::Store>,
    dir: PathBuf,
    server: Option<InProcessServer>,
}

struct InProcessServer {
    url: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DurableIdem {
    /// Starts an idem server on a fresh store.
    pub async fn start() -> anyhow::Result<DurableIdem> {
        DurableIdem::open(IdemAt::Server).await
    }

    /// Opens a fresh store, and serves it when `at` is [`IdemAt::Server`].
    pub async fn open(at: IdemAt) -> anyhow::Result<DurableIdem> {
        let dir = std::env::temp_dir().join(unique_name("idem-s2"));
        let store =
            idem_store::Store::open(idem_store::StoreConfig { data_dir: Some(dir.clone()), ..Default::default() })
                .with_context(|| format!("opening the embedded idem store in {}", dir.display()))?;
        let server = match at {
            IdemAt::Embedded => None,
            IdemAt::Server => {
                let config = idem_server::ServerConfig {
                    bind: "127.0.0.1:0".parse().expect("a loopback address"),
                    shutdown_grace_ms: 2_000,
                    ..Default::default()
                };
                let server = idem_server::Server::bind(config).await.context("binding the in-process idem server")?;
                let url = format!("redis://{}", server.local_addr());
                let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
                let backend: Arc<dyn idem_core::Backend> = store.clone();
                let task = tokio::spawn(server.run(backend, async move {
                    let _ = stopped.await;
                }));
                Some(InProcessServer { url, shutdown, task })
            }
        };
        Ok(DurableIdem { store, dir, server })
    }

    /// How the adapter reaches the store.
    pub fn at(&self) -> IdemAt {
        match self.server {
            Some(_) => IdemAt::Server,
            None => IdemAt::Embedded,
        }
    }

    /// `redis://127.0.0.1:PORT` of the server; `None` when there is none.
    pub fn url(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.url.as_str())
    }

    /// The store, to call directly.
    pub fn store(&self) -> Arc<dyn idem_core::Backend> {
        self.store.clone()
    }

    /// Stops the server, flushes the store and removes its data.
    pub async fn stop(self) {
        if let Some(server) = self.server {
            let _ = server.shutdown.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), server.task).await;
        } else {
            // A server flushes its store when it stops; without one, this does.
            idem_core::Backend::shutdown(&*self.store).await;
        }
        drop(self.store);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
