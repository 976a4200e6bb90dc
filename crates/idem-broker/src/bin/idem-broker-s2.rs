//! Scenario S2 over a real broker with consumer processes killed and
//! restarted, and the adapter's throughput benchmark.
//!
//! `idem-broker-s2 run`: a producer publishes `--messages` orders (and again
//! every `--dup-every`-th one: the duplicated upstream records) on JetStream
//! or RabbitMQ; `--workers` consumer processes (this binary, `worker`) apply
//! each order by inserting a row into a PostgreSQL table that has no unique
//! index, so every duplicate effect stays visible. The driver SIGKILLs a
//! random worker every `--kill-every-ms` and restarts it. At the end the
//! table is counted: duplicate effects (rows beyond one per order) and lost
//! orders (published, no row). Variants: `naive` (no records), `adapter`
//! (records on an idem server, the insert outside them), `inbox` (records in
//! the insert's own transaction). `--crash-after-effect ID` makes the first
//! run of order ID abort its process between its insert and its record: the
//! adapter's one inexact window, which the inbox closes.
//!
//! `idem-broker-s2 bench`: one process consumes pre-published messages with
//! the `raw` consumer (no records) or the `adapter`, same broker, same
//! durable queue, same concurrency.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use futures::future::BoxFuture;
use futures::StreamExt;
use idem_broker::{
    amqp, jetstream as js_adapter, Adapter, Failure, KeySource, Message, PgHandler, PostgresInbox, Process, Settings,
    Stats, StatsSnapshot, Unguarded,
};
use idem_client::{Client, Config};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::Rng;
use tokio_postgres::NoTls;

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
/// PostgreSQL connections per worker process.
const PG_CONNS_PER_WORKER: usize = 8;
/// The idem connections per worker process.
const IDEM_POOL_SIZE: usize = 16;
/// After every order has its row and the broker holds nothing, the run
/// still waits this long for late redeliveries before counting.
const SETTLE_MS: u64 = 3_000;

#[derive(Parser)]
#[command(about = "Scenario S2 with killed consumer processes, and the broker adapter benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Broker {
    Jetstream,
    Rabbitmq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// No records: the at-least-once consumer (the benchmark's raw peer).
    Naive,
    /// Records on an idem server; the effect is a separate write.
    Adapter,
    /// Records in the effect's own PostgreSQL transaction.
    Inbox,
}

#[derive(clap::Args, Clone)]
struct Engines {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    #[arg(long, default_value = "host=127.0.0.1 port=5432 user=postgres dbname=test")]
    pg: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// The scenario: publish, kill and restart workers, count the table.
    Run {
        #[arg(long, value_enum)]
        broker: Broker,
        #[arg(long, value_enum)]
        variant: Variant,
        #[arg(long, default_value_t = 2_000)]
        messages: usize,
        /// Every N-th order is published twice (0: none).
        #[arg(long, default_value_t = 5)]
        dup_every: usize,
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// SIGKILL a random worker this often (0: never).
        #[arg(long, default_value_t = 300)]
        kill_every_ms: u64,
        /// Orders published per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long)]
        crash_after_effect: Option<String>,
        /// Handlers per worker process.
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        /// Give up waiting for the effects after this long.
        #[arg(long, default_value_t = 120)]
        deadline_s: u64,
        #[command(flatten)]
        engines: Engines,
    },
    /// One consumer process (started by `run`).
    Worker {
        #[arg(long, value_enum)]
        broker: Broker,
        #[arg(long, value_enum)]
        variant: Variant,
        #[arg(long)]
        name: String,
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
    },
    /// Messages per second through one consumer, `naive` (raw) or `adapter`.
    Bench {
        #[arg(long, value_enum)]
        broker: Broker,
        #[arg(long, value_enum)]
        variant: Variant,
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        /// The handler inserts a row into PostgreSQL (else it does nothing).
        #[arg(long)]
        pg_effect: bool,
        #[command(flatten)]
        engines: Engines,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run {
                broker,
                variant,
                messages,
                dup_every,
                workers,
                kill_every_ms,
                rate,
                crash_after_effect,
                concurrency,
                deadline_s,
                engines,
            } => {
                let plan = Plan {
                    broker,
                    variant,
                    messages,
                    dup_every,
                    workers,
                    kill_every_ms,
                    rate,
                    crash_after_effect,
                    concurrency,
                    deadline: Duration::from_secs(deadline_s),
                };
                run(plan, engines).await
            }
            Cmd::Worker {
                broker,
                variant,
                name,
                table,
                idem_url,
                crash_after_effect,
                crash_marker_dir,
                concurrency,
                engines,
            } => {
                let crash = crash_after_effect.zip(crash_marker_dir);
                let s = settings(&name, concurrency);
                worker(broker, variant, s, &name, &table, idem_url, crash, &engines).await
            }
            Cmd::Bench { broker, variant, messages, concurrency, pg_effect, engines } => {
                bench(broker, variant, messages, concurrency, pg_effect, &engines).await
            }
        }
    })
}

struct Plan {
    broker: Broker,
    variant: Variant,
    messages: usize,
    dup_every: usize,
    workers: usize,
    kill_every_ms: u64,
    rate: u64,
    crash_after_effect: Option<String>,
    concurrency: u32,
    deadline: Duration,
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
                        max_ack_pending: 10_000,
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

fn spawn_worker(
    plan: &Plan,
    e: &Engines,
    name: &str,
    table: &str,
    idem_url: &Option<String>,
    dir: &std::path::Path,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("worker")
        .args(["--broker", broker_name(plan.broker), "--variant", variant_name(plan.variant)])
        .args(["--name", name, "--table", table, "--concurrency", &plan.concurrency.to_string()])
        .args(["--nats-url", &e.nats_url, "--amqp-url", &e.amqp_url, "--pg", &e.pg])
        .stdin(Stdio::null());
    if let Some(u) = idem_url {
        cmd.args(["--idem-url", u]);
    }
    if let Some(id) = &plan.crash_after_effect {
        cmd.args(["--crash-after-effect", id]).arg("--crash-marker-dir").arg(dir);
    }
    Ok(cmd.spawn()?)
}

fn broker_name(b: Broker) -> &'static str {
    match b {
        Broker::Jetstream => "jetstream",
        Broker::Rabbitmq => "rabbitmq",
    }
}

fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Naive => "naive",
        Variant::Adapter => "adapter",
        Variant::Inbox => "inbox",
    }
}

async fn run(plan: Plan, e: Engines) -> anyhow::Result<()> {
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
    let server = match plan.variant {
        Variant::Adapter => Some(idem_client::testing::TestServer::start().await),
        _ => None,
    };
    let idem_url = server.as_ref().map(|s| s.url());
    let queue = Queue::create(plan.broker, &name, &e).await?;
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir)?;
    let result = drive(&plan, &e, &name, &table, &idem_url, &dir, &queue, &pool).await;
    queue.delete().await;
    let _ = pool.get().await?.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(s) = server {
        s.stop().await;
    }
    let line = result?;
    println!("{line}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    plan: &Plan,
    e: &Engines,
    name: &str,
    table: &str,
    idem_url: &Option<String>,
    dir: &std::path::Path,
    queue: &Queue,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut workers: Vec<Child> =
        (0..plan.workers).map(|_| spawn_worker(plan, e, name, table, idem_url, dir)).collect::<Result<_, _>>()?;
    let publisher = queue.publisher().await?;
    let ids: Vec<String> = (0..plan.messages).map(|i| format!("o-{i}")).collect();
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
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Restart any worker that died (killed, or crashed on purpose).
        for w in workers.iter_mut() {
            if w.try_wait()?.is_some() {
                *w = spawn_worker(plan, e, name, table, idem_url, dir)?;
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
            let done = count(distinct_sql.clone()).await? == plan.messages as u64 && queue.backlog().await? == 0;
            match (done, settled_since) {
                (true, None) => settled_since = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() >= Duration::from_millis(SETTLE_MS) => break,
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
    let duplicates = rows - distinct;
    let lost = plan.messages as u64 - distinct;
    Ok(format!(
        "scenario=s2-kill broker={} variant={} orders={} published={published} workers={} concurrency={} kills={kills} restarts={restarts} duplicate_effects={duplicates} lost={lost} dead_letters={dead} elapsed_s={:.1}",
        broker_name(plan.broker),
        variant_name(plan.variant),
        plan.messages,
        plan.workers,
        plan.concurrency,
        elapsed.as_secs_f64()
    ))
}

/// `host=... dbname=...` as a URL for idem's migration.
fn pg_url(pg: &str) -> String {
    let mut parts: HashMap<&str, &str> = HashMap::new();
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

#[allow(clippy::too_many_arguments)]
async fn worker(
    broker: Broker,
    variant: Variant,
    s: Settings,
    name: &str,
    table: &str,
    idem_url: Option<String>,
    crash: Option<(String, PathBuf)>,
    e: &Engines,
) -> anyhow::Result<()> {
    let pool = pg_pool(&e.pg, PG_CONNS_PER_WORKER).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        term.recv().await;
    };
    let snap = match variant {
        Variant::Naive => {
            let p = Unguarded::new(insert_handler(pool, table.to_string(), crash));
            consume_with(broker, name, e, s, p, Arc::default(), shutdown).await?
        }
        Variant::Adapter => {
            let Some(url) = idem_url else { bail!("the adapter variant needs --idem-url") };
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

async fn bench(
    broker: Broker,
    variant: Variant,
    messages: usize,
    concurrency: u32,
    pg_effect: bool,
    e: &Engines,
) -> anyhow::Result<()> {
    if variant == Variant::Inbox {
        bail!("bench compares naive (raw) and adapter");
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
    let server = (variant == Variant::Adapter).then_some(idem_client::testing::TestServer::start().await);
    let queue = Queue::create(broker, &name, e).await?;
    let result = async {
        let publisher = queue.publisher().await?;
        // Published up front (concurrently, in chunks) so that only
        // consumption is timed.
        for chunk in (0..messages).collect::<Vec<_>>().chunks(256) {
            let mut futs = Vec::new();
            for i in chunk {
                futs.push(publisher.publish_owned(format!("b-{i}")));
            }
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
        let s = settings(&name, concurrency).prefetch(concurrency * 2);
        let handler: Box<dyn Fn(Message) -> BoxFuture<'static, Result<Bytes, Failure>> + Send + Sync> = if pg_effect {
            Box::new(insert_handler(pool.clone(), table.clone(), None))
        } else {
            Box::new(|_m: Message| -> BoxFuture<'static, Result<Bytes, Failure>> { Box::pin(async { Ok(Bytes::new()) }) })
        };
        let started = Instant::now();
        let snap = match variant {
            Variant::Adapter => {
                let url = server.as_ref().expect("started above").url();
                // One idem connection per handler, so the pool is not the bound.
                let client = Client::connect(Config::new(url).pool_size(concurrency as usize)).await?;
                consume_with(broker, &name, e, s, Adapter::new(client, handler), stats, done).await?
            }
            _ => consume_with(broker, &name, e, s, Unguarded::new(handler), stats, done).await?,
        };
        let secs = started.elapsed().as_secs_f64();
        println!(
            "bench broker={} variant={} messages={messages} concurrency={concurrency} pg_effect={pg_effect} applied={} msgs_per_s={:.0}",
            broker_name(broker),
            variant_name(variant),
            snap.applied,
            snap.applied as f64 / secs
        );
        anyhow::Ok(())
    }
    .await;
    queue.delete().await;
    if pg_effect {
        let _ = pool.get().await?.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await;
    }
    if let Some(s) = server {
        s.stop().await;
    }
    result
}

impl Publisher {
    async fn publish_owned(&self, id: String) -> anyhow::Result<()> {
        self.publish(&id).await
    }
}
