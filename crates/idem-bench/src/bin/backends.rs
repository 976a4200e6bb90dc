//! Each idem backend against the raw statement it replaces, as ratios.
//!
//! For every engine, the same workload runs two ways (three for IDEM.BEGIN)
//! in the same process, in rounds where each side goes first in turn, and
//! the median over rounds is reported:
//! - **raw**: the statement an application would write instead of idem,
//!   through the same client library, the same kind of connection pool and
//!   the same number of connections:
//!   PostgreSQL `INSERT … ON CONFLICT DO NOTHING` (tokio-postgres, a pool of
//!   `min(concurrency, 16)` connections, like idem's deadpool), MySQL/MariaDB
//!   `INSERT IGNORE` (a mysql_async pool capped at 16, like idem's), Redis
//!   `SET k owner NX` / `SET k 1 NX PX 30000` (one multiplexed connection,
//!   like idem's);
//! - **fair raw** (IDEM.BEGIN only): the least a lease with a fence costs
//!   on the engine, through the same client: PostgreSQL and MariaDB one
//!   insert carrying a fence from a sequence and a lease end on the
//!   engine's clock that returns the holder's fence and lease on a
//!   duplicate (a CTE on PostgreSQL, `ON DUPLICATE KEY UPDATE … RETURNING`
//!   on MariaDB); Redis a minimal script, `TIME` then `SET k fence NX GET
//!   PX 30000` (and `PTTL` on a duplicate);
//! - **idem**: `CLAIM k owner` / `IDEM.BEGIN k LEASE 30000` through
//!   `Backend::execute` of the backend `idem_backends::connect` opens, as
//!   the typed `idem_core::Command` the server's front end hands a backend
//!   (built per request; the RESP parsing before it is not the backend's
//!   work, and the raw side has none);
//! - **mysql-tx** (an extra engine): idem's MariaDB procedures through
//!   `idem_backends::mysql::tx` (START TRANSACTION; CALL; COMMIT) on a pool
//!   that keeps its connections: the backend's per-command statements
//!   without its pool.
//!
//! Besides ops/s and p50/p99 (hdrhistogram), each measurement reads the
//! engine's own counters before and after (WAL bytes and writing transactions
//! on PostgreSQL; statements, new connections, COMMITs, redo on MariaDB;
//! commands run on Redis) and the engine's CPU time (PostgreSQL: utime +
//! stime of every `postgres` process plus what the postmaster collected
//! from exited ones, from /proc; MariaDB: `mariadbd`'s utime + stime from
//! /proc; Redis: `INFO cpu`), and reports them per request. The /proc
//! figures need the engine on this machine; otherwise they are left out.
//!
//! Workloads: `claim` and `begin` on fresh random keys; `claim-dup` and
//! `begin-dup` with 50% duplicates (every second request repeats the key of
//! the request before it, from another owner: `held` / `running` for idem,
//! no row inserted for raw).
//!
//! Keys are `ibb:<run>:<measurement>:<32 random hex>`; the rows and Redis keys
//! of each round are deleted after the round (by key range / SCAN), the raw
//! table is dropped at the end. Every reply is checked against the expected
//! outcome; unexpected replies and errors are counted and printed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use idem_core::{Backend, Command, Reply};
use mysql_async::prelude::Queryable;

/// Connections idem's SQL backends open at most (`POOL_SIZE_MAX`); the raw
/// side uses the same cap so both run on the same number of connections.
const SQL_POOL_MAX: usize = 16;
/// Lease of IDEM.BEGIN and PX of the raw Redis `SET … NX PX`.
const LEASE_MS: u64 = 30_000;
/// The prefix of every key this tool writes.
const KEY_PREFIX: &str = "ibb:";
/// The raw side's table on the SQL engines.
const RAW_TABLE: &str = "bench_backends_claim";
/// The fair raw BEGIN's table and fence sequence on the SQL engines.
const FAIR_TABLE: &str = "bench_backends_begin";
const FAIR_SEQ: &str = "bench_backends_fence";
/// The fair raw BEGIN on Redis: a fence from the server's clock (µs) and a
/// lease, set only if the key is free; a duplicate gets the holder's fence
/// and the lease time left.
const FAIR_REDIS_SCRIPT: &str = "local t = redis.call('TIME')
local fence = t[1] .. string.format('%06d', tonumber(t[2]))
local cur = redis.call('SET', KEYS[1], fence, 'NX', 'GET', 'PX', ARGV[1])
if cur then return { cur, redis.call('PTTL', KEYS[1]) } end
return { fence }";

#[derive(Parser, Debug)]
#[command(
    about = "idem backends against the raw statement each replaces (INSERT ON CONFLICT / INSERT IGNORE / SET NX)"
)]
struct Args {
    /// Engines to measure, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pg,mysql,redis")]
    engines: Vec<Engine>,
    /// Seconds per measurement (one side of one round).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Concurrent tasks (a comma-separated list runs each).
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    /// Rounds per workload; each round measures every side.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Workloads to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "claim,claim-dup,begin,begin-dup")]
    workloads: Vec<Workload>,
    /// Seconds of unmeasured warm-up per side, per engine and concurrency.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Give the raw MySQL side a pool that closes every connection it gets
    /// back (mysql_async with min 0 and inactive_connection_ttl 0), to show
    /// what a connection per request costs.
    #[arg(long)]
    mysql_raw_reconnect: bool,
    #[arg(long, env = "IDEM_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pg_url: String,
    #[arg(long, env = "IDEM_BENCH_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306/test")]
    mysql_url: String,
    #[arg(long, env = "IDEM_BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// PostgreSQL through idem's backend.
    Pg,
    /// MariaDB/MySQL through idem's backend.
    Mysql,
    /// MariaDB/MySQL, idem's procedures through `idem_backends::mysql::tx`
    /// (START TRANSACTION; CALL idem_x; COMMIT) on a pool that keeps its
    /// connections: the backend's per-command path without its pool.
    MysqlTx,
    /// Redis through idem's backend.
    Redis,
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::Pg => "PostgreSQL",
            Engine::Mysql => "MariaDB/MySQL",
            Engine::MysqlTx => "MariaDB/MySQL, mysql::tx",
            Engine::Redis => "Redis",
        }
    }

    fn raw_label(self, w: Workload) -> &'static str {
        match (self, w.begin()) {
            (Engine::Pg, _) => "INSERT … ON CONFLICT DO NOTHING",
            (Engine::Mysql | Engine::MysqlTx, _) => "INSERT IGNORE",
            (Engine::Redis, false) => "SET k owner NX",
            (Engine::Redis, true) => "SET k 1 NX PX 30000",
        }
    }

    fn fair_label(self) -> &'static str {
        match self {
            Engine::Pg => "INSERT … nextval, lease ON CONFLICT DO NOTHING RETURNING, holder on dup",
            Engine::Mysql | Engine::MysqlTx => "INSERT … NEXT VALUE, lease ODKU RETURNING",
            Engine::Redis => "script: TIME, SET NX GET PX (+PTTL)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// CLAIM on fresh random keys.
    Claim,
    /// CLAIM, every second request repeats the previous key from another owner.
    ClaimDup,
    /// IDEM.BEGIN on fresh random keys.
    Begin,
    /// IDEM.BEGIN, every second request repeats the previous key.
    BeginDup,
}

impl Workload {
    fn begin(self) -> bool {
        matches!(self, Workload::Begin | Workload::BeginDup)
    }

    fn dup(self) -> bool {
        matches!(self, Workload::ClaimDup | Workload::BeginDup)
    }

    fn label(self) -> &'static str {
        match self {
            Workload::Claim => "CLAIM, fresh keys",
            Workload::ClaimDup => "CLAIM, 50% duplicates",
            Workload::Begin => "IDEM.BEGIN, fresh keys",
            Workload::BeginDup => "IDEM.BEGIN, 50% duplicates",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Raw,
    /// The fair raw BEGIN (begin workloads only).
    Fair,
    Idem,
}

// ---------------------------------------------------------------- raw side

/// A minimal tokio-postgres pool: `n` connections, each with the insert
/// statement prepared, handed out by a semaphore (as deadpool does for idem).
struct PgRaw {
    conns: std::sync::Mutex<Vec<PgConn>>,
    permits: tokio::sync::Semaphore,
}

struct PgConn {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    fair: tokio_postgres::Statement,
}

/// The fair raw BEGIN on PostgreSQL: (fence, inserted).
fn pg_fair_sql() -> String {
    format!(
        "WITH ins AS (INSERT INTO {FAIR_TABLE} (k, fence, expires_at_ms)
             VALUES ($1, nextval('{FAIR_SEQ}'), floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + {LEASE_MS})
             ON CONFLICT DO NOTHING RETURNING fence, expires_at_ms)
         SELECT fence, expires_at_ms, true FROM ins
         UNION ALL
         SELECT fence, expires_at_ms, false FROM {FAIR_TABLE} WHERE NOT EXISTS (SELECT 1 FROM ins) AND k = $1"
    )
}

/// The fair raw BEGIN on MariaDB: (fence, expires_at_ms, the fence drawn).
fn mysql_fair_sql() -> String {
    format!(
        "INSERT INTO {FAIR_TABLE} (k, fence, expires_at_ms)
         VALUES (?, NEXT VALUE FOR {FAIR_SEQ},
                 TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 + {LEASE_MS})
         ON DUPLICATE KEY UPDATE k = k
         RETURNING fence, expires_at_ms, PREVIOUS VALUE FOR {FAIR_SEQ}"
    )
}

/// The raw statement's client for one engine.
enum Raw {
    Pg(PgRaw),
    Mysql(mysql_async::Pool),
    Redis(redis::aio::MultiplexedConnection, redis::Script),
}

impl Raw {
    async fn connect(engine: Engine, args: &Args, concurrency: usize) -> Result<Raw> {
        Ok(match engine {
            Engine::Pg => {
                let n = concurrency.clamp(1, SQL_POOL_MAX);
                let mut conns = Vec::with_capacity(n);
                for _ in 0..n {
                    let (client, conn) = tokio_postgres::connect(&args.pg_url, tokio_postgres::NoTls).await?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let insert = client
                        .prepare(&format!("INSERT INTO {RAW_TABLE} (k, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING"))
                        .await?;
                    let fair = client.prepare(&pg_fair_sql()).await?;
                    conns.push(PgConn { client, insert, fair });
                }
                Raw::Pg(PgRaw { conns: std::sync::Mutex::new(conns), permits: tokio::sync::Semaphore::new(n) })
            }
            // The same session settings as idem's pool.
            Engine::Mysql | Engine::MysqlTx => Raw::Mysql(mysql_pool(args, !args.mysql_raw_reconnect, mysql_init())?),
            Engine::Redis => Raw::Redis(
                redis::Client::open(args.redis_url.as_str())?.get_multiplexed_async_connection().await?,
                redis::Script::new(FAIR_REDIS_SCRIPT),
            ),
        })
    }

    /// Runs the raw statement; true when it inserted (set) the key.
    async fn insert(&self, begin: bool, key: &[u8], owner: &[u8]) -> Result<bool> {
        match self {
            Raw::Pg(p) => {
                let _permit = p.permits.acquire().await?;
                let c = p.conns.lock().expect("pool lock").pop().ok_or_else(|| anyhow!("pool empty"))?;
                let r = c.client.execute(&c.insert, &[&key, &owner]).await;
                p.conns.lock().expect("pool lock").push(c);
                Ok(r? == 1)
            }
            Raw::Mysql(pool) => {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(format!("INSERT IGNORE INTO {RAW_TABLE} (k, owner) VALUES (?, ?)"), (key, owner))
                    .await?;
                Ok(conn.affected_rows() == 1)
            }
            Raw::Redis(c, _) => {
                let mut c = c.clone();
                let mut cmd = redis::cmd("SET");
                if begin {
                    cmd.arg(key).arg("1").arg("NX").arg("PX").arg(LEASE_MS);
                } else {
                    cmd.arg(key).arg(owner).arg("NX");
                }
                let r: Option<String> = cmd.query_async(&mut c).await?;
                Ok(r.is_some())
            }
        }
    }
}

impl Raw {
    /// Runs the fair raw BEGIN; true when it granted a fresh lease.
    async fn fair(&self, key: &[u8]) -> Result<bool> {
        match self {
            Raw::Pg(p) => {
                let _permit = p.permits.acquire().await?;
                let c = p.conns.lock().expect("pool lock").pop().ok_or_else(|| anyhow!("pool empty"))?;
                let r = c.client.query_one(&c.fair, &[&key]).await;
                p.conns.lock().expect("pool lock").push(c);
                Ok(r?.try_get::<_, bool>(2)?)
            }
            Raw::Mysql(pool) => {
                let mut conn = pool.get_conn().await?;
                let row: Option<(i64, i64, i64)> = conn.exec_first(mysql_fair_sql(), (key,)).await?;
                let (fence, _, drawn) = row.ok_or_else(|| anyhow!("fair insert returned no row"))?;
                Ok(fence == drawn)
            }
            Raw::Redis(c, script) => {
                let mut c = c.clone();
                let r: Vec<redis::Value> = script.key(key).arg(LEASE_MS).invoke_async(&mut c).await?;
                Ok(r.len() == 1)
            }
        }
    }
}

/// idem's MariaDB session settings (the backend's pool has the same).
fn mysql_init() -> Vec<String> {
    vec![
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_string(),
        "SET SESSION innodb_lock_wait_timeout = 5".to_string(),
    ]
}

/// A mysql_async pool capped at [`SQL_POOL_MAX`] connections, like idem's.
/// `keep`: keep idle connections (up to the cap) for a minute. Without it the
/// pool has mysql_async's default inactive_connection_ttl of 0, with which it
/// keeps only `min` (here 0) idle connections and closes every other one when
/// it is returned: a new connection per request (what --mysql-raw-reconnect
/// measures).
fn mysql_pool(args: &Args, keep: bool, init: Vec<String>) -> Result<mysql_async::Pool> {
    let opts = mysql_async::Opts::from_url(&args.mysql_url)?;
    let constraints = mysql_async::PoolConstraints::new(0, SQL_POOL_MAX).ok_or_else(|| anyhow!("bad pool bounds"))?;
    let ttl = if keep { Duration::from_secs(60) } else { Duration::ZERO };
    let pool_opts = mysql_async::PoolOpts::default()
        .with_constraints(constraints)
        .with_inactive_connection_ttl(ttl)
        .with_reset_connection(false);
    let opts = mysql_async::OptsBuilder::from_opts(opts).pool_opts(pool_opts).stmt_cache_size(64).init(init);
    Ok(mysql_async::Pool::new(opts))
}

/// IDEM.BEGIN or CLAIM through `idem_backends::mysql::tx` in its own
/// transaction; returns the status word.
async fn mysql_tx(pool: &mysql_async::Pool, begin: bool, key: &[u8], owner: &[u8]) -> Result<&'static str> {
    use idem_backends::mysql::tx;
    let mut conn = pool.get_conn().await?;
    let mut t = conn.start_transaction(mysql_async::TxOpts::default()).await?;
    let word = if begin {
        match tx::idem_begin(&mut t, key, None, LEASE_MS).await.map_err(|e| anyhow!("{e}"))? {
            tx::Begin::Started { .. } => "started",
            tx::Begin::Running { .. } => "running",
            tx::Begin::Done { .. } => "done",
        }
    } else {
        match tx::claim(&mut t, key, owner, None).await.map_err(|e| anyhow!("{e}"))? {
            tx::Claimed::Claimed => "claimed",
            tx::Claimed::Held { .. } => "held",
        }
    };
    t.commit().await?;
    Ok(word)
}

// ---------------------------------------------------------------- setup and cleanup

/// Everything one engine's measurements need.
struct Ctx {
    engine: Engine,
    idem: Arc<dyn Backend>,
    raw: Raw,
    /// A plain connection for DDL and cleanup.
    admin: tokio::sync::Mutex<Admin>,
    /// [`Engine::MysqlTx`]: the pool idem's procedures run on, with the
    /// backend's session settings.
    tx_pool: Option<mysql_async::Pool>,
}

enum Admin {
    Pg(tokio_postgres::Client),
    Mysql(mysql_async::Conn),
    Redis(redis::aio::MultiplexedConnection),
}

impl Admin {
    async fn connect(engine: Engine, args: &Args) -> Result<Admin> {
        Ok(match engine {
            Engine::Pg => {
                let (client, conn) = tokio_postgres::connect(&args.pg_url, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
                    .batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {RAW_TABLE} (k bytea PRIMARY KEY, owner bytea NOT NULL);
                         CREATE TABLE IF NOT EXISTS {FAIR_TABLE} (k bytea PRIMARY KEY, fence bigint NOT NULL,
                             expires_at_ms bigint NOT NULL);
                         CREATE SEQUENCE IF NOT EXISTS {FAIR_SEQ}"
                    ))
                    .await?;
                Admin::Pg(client)
            }
            Engine::Mysql | Engine::MysqlTx => {
                let mut conn = mysql_async::Conn::from_url(&args.mysql_url).await?;
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {RAW_TABLE} (k VARBINARY(512) NOT NULL PRIMARY KEY, \
                     owner VARBINARY(512) NOT NULL) ENGINE = InnoDB"
                ))
                .await?;
                // A MariaDB sequence; on MySQL (none) the fair raw side fails and is reported.
                let _ = conn.query_drop(format!("CREATE SEQUENCE IF NOT EXISTS {FAIR_SEQ} CACHE 1000")).await;
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {FAIR_TABLE} (k VARBINARY(512) NOT NULL PRIMARY KEY, \
                     fence BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL) ENGINE = InnoDB"
                ))
                .await?;
                Admin::Mysql(conn)
            }
            Engine::Redis => {
                Admin::Redis(redis::Client::open(args.redis_url.as_str())?.get_multiplexed_async_connection().await?)
            }
        })
    }

    /// Deletes every raw row and idem record whose key starts with `prefix`
    /// (which ends in ':'), on the raw table and idem's claim and record tables.
    async fn delete_prefix(&mut self, prefix: &str) -> Result<u64> {
        let lo = prefix.as_bytes().to_vec();
        let mut hi = lo.clone();
        *hi.last_mut().expect("non-empty prefix") += 1;
        let mut n = 0;
        match self {
            Admin::Pg(c) => {
                for (table, col) in
                    [(RAW_TABLE, "k"), (FAIR_TABLE, "k"), ("idem_claims", "key"), ("idem_records", "key")]
                {
                    n += c
                        .execute(&format!("DELETE FROM {table} WHERE {col} >= $1 AND {col} < $2"), &[&lo, &hi])
                        .await?;
                }
            }
            Admin::Mysql(c) => {
                for (table, col) in
                    [(RAW_TABLE, "k"), (FAIR_TABLE, "k"), ("idem_claims", "`key`"), ("idem_records", "`key`")]
                {
                    c.exec_drop(format!("DELETE FROM {table} WHERE {col} >= ? AND {col} < ?"), (&lo, &hi)).await?;
                    n += c.affected_rows();
                }
            }
            Admin::Redis(c) => {
                // Raw keys are the keys themselves; idem's are idem:<kind>:{<key>}…
                for pattern in [format!("{prefix}*"), format!("idem:*:{{{prefix}*")] {
                    let mut cursor: u64 = 0;
                    loop {
                        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(5000)
                            .query_async(c)
                            .await?;
                        if !keys.is_empty() {
                            let removed: u64 = redis::cmd("UNLINK").arg(&keys).query_async(c).await?;
                            n += removed;
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
        }
        Ok(n)
    }

    /// A snapshot of the engine's own counters (cumulative, engine-wide):
    /// what a request costs the engine, independent of the client's view.
    /// PostgreSQL: WAL position and next transaction id; MariaDB: global
    /// status; Redis: INFO commandstats.
    async fn counters(&mut self) -> Result<Counters> {
        let mut c = Counters::new();
        match self {
            Admin::Pg(cl) => {
                // Both read live state, not the statistics collector (which a
                // busy backend flushes up to 10 s late): WAL position, and the
                // next transaction id (ids go only to transactions that write,
                // and each of those waits for its WAL flush at commit).
                let r = cl
                    .query_one(
                        "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8,
                                pg_snapshot_xmax(pg_current_snapshot())::text::float8",
                        &[],
                    )
                    .await?;
                c.insert("wal_bytes".to_string(), r.get::<_, f64>(0));
                c.insert("xids".to_string(), r.get::<_, f64>(1));
                if let Some(us) = proc_cpu_us(&["postgres"]) {
                    c.insert("cpu_us".to_string(), us);
                }
            }
            Admin::Mysql(conn) => {
                let rows: Vec<(String, String)> = conn
                    .query(
                        "SHOW GLOBAL STATUS WHERE Variable_name IN \
                         ('Questions', 'Connections', 'Com_commit', 'Innodb_os_log_written', 'Innodb_log_writes')",
                    )
                    .await?;
                for (name, v) in rows {
                    c.insert(name.to_lowercase(), v.parse().unwrap_or(0.0));
                }
                if let Some(us) = proc_cpu_us(&["mariadbd", "mysqld"]) {
                    c.insert("cpu_us".to_string(), us);
                }
            }
            Admin::Redis(conn) => {
                let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
                // cmdstat_set:calls=1,usec=2,usec_per_call=2.00,...
                let mut all_calls = 0.0;
                for line in info.lines() {
                    let Some(rest) = line.strip_prefix("cmdstat_") else { continue };
                    let Some((cmd, fields)) = rest.split_once(':') else { continue };
                    let field = |f: &str| {
                        fields
                            .split(',')
                            .find_map(|kv| kv.strip_prefix(f).and_then(|v| v.strip_prefix('=')))
                            .and_then(|v| v.parse::<f64>().ok())
                            .unwrap_or(0.0)
                    };
                    all_calls += field("calls");
                    if cmd == "set" || cmd == "evalsha" {
                        c.insert(format!("{cmd}_calls"), field("calls"));
                        c.insert(format!("{cmd}_usec"), field("usec"));
                    }
                }
                c.insert("commands".to_string(), all_calls);
                // used_cpu_sys:1.23 / used_cpu_user:4.56 (seconds, the whole server)
                let cpu: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
                let secs: f64 = cpu
                    .lines()
                    .filter_map(|l| l.strip_prefix("used_cpu_sys:").or_else(|| l.strip_prefix("used_cpu_user:")))
                    .filter_map(|v| v.trim().parse::<f64>().ok())
                    .sum();
                c.insert("cpu_us".to_string(), secs * 1e6);
            }
        }
        Ok(c)
    }

    async fn drop_raw_table(&mut self) -> Result<()> {
        match self {
            Admin::Pg(c) => {
                c.batch_execute(&format!(
                    "DROP TABLE IF EXISTS {RAW_TABLE}; DROP TABLE IF EXISTS {FAIR_TABLE}; DROP SEQUENCE IF EXISTS {FAIR_SEQ}"
                ))
                .await?
            }
            Admin::Mysql(c) => {
                c.query_drop(format!("DROP TABLE IF EXISTS {RAW_TABLE}, {FAIR_TABLE}")).await?;
                c.query_drop(format!("DROP SEQUENCE IF EXISTS {FAIR_SEQ}")).await?;
            }
            Admin::Redis(_) => {}
        }
        Ok(())
    }
}

impl Engine {
    fn url(self, args: &Args) -> &str {
        match self {
            Engine::Pg => &args.pg_url,
            Engine::Mysql | Engine::MysqlTx => &args.mysql_url,
            Engine::Redis => &args.redis_url,
        }
    }
}

async fn setup(engine: Engine, args: &Args, concurrency: usize) -> Result<Ctx> {
    let url = engine.url(args);
    idem_backends::migrate(url).await.with_context(|| format!("migrate {url}"))?;
    let idem = idem_backends::connect(url).await.with_context(|| format!("connect idem to {url}"))?;
    let admin = Admin::connect(engine, args).await.with_context(|| format!("admin connection to {url}"))?;
    let raw = Raw::connect(engine, args, concurrency).await.with_context(|| format!("raw client for {url}"))?;
    let tx_pool = match engine {
        Engine::MysqlTx => Some(mysql_pool(
            args,
            true,
            vec![
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_string(),
                "SET SESSION innodb_lock_wait_timeout = 5".to_string(),
            ],
        )?),
        _ => None,
    };
    Ok(Ctx { engine, idem, raw, admin: tokio::sync::Mutex::new(admin), tx_pool })
}

// ---------------------------------------------------------------- engine counters

/// CPU time (µs) of every process of this machine named one of `names`:
/// utime + stime, plus cutime + cstime (what a parent collected from its
/// exited children: the postmaster's ended backends). `None` when no such
/// process is visible (a remote engine).
fn proc_cpu_us(names: &[&str]) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ... ; comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if !names.contains(&&stat[open + 1..close]) {
            continue;
        }
        // After ')': state is field 3; utime..cstime are fields 14..17.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let t: f64 = fields.get(11..15).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
        total += t;
        found = true;
    }
    found.then(|| total / ticks * 1e6)
}

type Counters = std::collections::BTreeMap<String, f64>;

/// The engine's work per request during one measurement, as (label, value)
/// pairs, from counter snapshots before and after it. Engine-wide counters:
/// other clients of the same engine add to them.
fn per_op(engine: Engine, before: &Counters, after: &Counters, ops: u64) -> Vec<(&'static str, f64)> {
    let d = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let n = ops.max(1) as f64;
    let cpu = if after.contains_key("cpu_us") { d("cpu_us") / n } else { f64::NAN };
    match engine {
        Engine::Pg => {
            vec![("engine CPU µs/op", cpu), ("writing xacts/op", d("xids") / n), ("WAL bytes/op", d("wal_bytes") / n)]
        }
        Engine::Mysql | Engine::MysqlTx => vec![
            ("engine CPU µs/op", cpu),
            ("statements/op", d("questions") / n),
            ("new connections/op", d("connections") / n),
            ("COMMITs/op", d("com_commit") / n),
            ("redo bytes/op", d("innodb_os_log_written") / n),
            ("redo writes/op", d("innodb_log_writes") / n),
        ],
        Engine::Redis => vec![("engine CPU µs/op", cpu), ("commands run/op", d("commands") / n)],
    }
}

// ---------------------------------------------------------------- one measurement

/// splitmix64: fresh random keys without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What one side of one round measured.
#[derive(Clone, Debug)]
struct Sample {
    ops_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    ops: u64,
    errors: u64,
    unexpected: u64,
    first_problem: Option<String>,
    /// The engine's work per request (see [`per_op`]).
    engine_work: Vec<(&'static str, f64)>,
}

struct TaskOut {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    unexpected: u64,
    first_problem: Option<String>,
}

/// The status word of an idem reply (`["claimed"]`, `["held", owner]`, ...).
fn status_word(r: &Reply) -> Option<&'static str> {
    match r {
        Reply::Array(v) => match v.first() {
            Some(Reply::Word(w)) => Some(w),
            _ => None,
        },
        _ => None,
    }
}

/// Runs `concurrency` tasks for `secs` seconds on one side of `workload`,
/// on keys starting with `prefix`.
async fn measure(
    ctx: &Arc<Ctx>,
    side: Side,
    workload: Workload,
    concurrency: usize,
    secs: f64,
    prefix: &str,
) -> Result<Sample> {
    static SEED: AtomicU64 = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut handles = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let ctx = ctx.clone();
        let prefix = prefix.to_string();
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ SEED.fetch_add(0x1234_5678_9abc_def1, Ordering::Relaxed);
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(seed);
            let owner = Bytes::from(format!("owner-{t}"));
            let other = Bytes::from(format!("other-{t}"));
            let mut out = TaskOut {
                hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
                ops: 0,
                errors: 0,
                unexpected: 0,
                first_problem: None,
            };
            let mut key = Bytes::new();
            let mut i: u64 = 0;
            while Instant::now() < deadline {
                // In a dup workload every odd request repeats the previous key
                // from the other owner; otherwise the key is fresh.
                let repeat = workload.dup() && i % 2 == 1;
                if !repeat {
                    key = Bytes::from(format!("{prefix}{:016x}{:016x}", rng.next(), rng.next()));
                }
                let who = if repeat { &other } else { &owner };
                let t0 = Instant::now();
                let outcome: Result<bool> = match side {
                    Side::Raw => ctx.raw.insert(workload.begin(), &key, who).await.map(|inserted| inserted != repeat),
                    Side::Fair => ctx.raw.fair(&key).await.map(|granted| granted != repeat),
                    Side::Idem => {
                        // The typed command, as the server's front end hands it to
                        // the backend: parsing RESP arguments is not the backend's
                        // work, and the raw side does none.
                        let cmd = if workload.begin() {
                            Command::IdemBegin { key: key.clone(), fingerprint: None, lease_ms: LEASE_MS, wait_ms: 0 }
                        } else {
                            Command::Claim { key: key.clone(), owner: who.clone(), ttl_ms: None }
                        };
                        let want = match (workload.begin(), repeat) {
                            (false, false) => "claimed",
                            (false, true) => "held",
                            (true, false) => "started",
                            (true, true) => "running",
                        };
                        let got = match &ctx.tx_pool {
                            Some(pool) => mysql_tx(pool, workload.begin(), &key, who).await.map(|w| (Some(w), None)),
                            None => match ctx.idem.execute(cmd).await {
                                Err(e) => Err(anyhow!("{e}")),
                                Ok(reply) => Ok((status_word(&reply), Some(reply))),
                            },
                        };
                        got.map(|(word, reply)| {
                            let ok = word == Some(want);
                            if !ok && out.first_problem.is_none() {
                                out.first_problem = Some(format!("expected {want}, got {word:?} {reply:?}"));
                            }
                            ok
                        })
                    }
                };
                let us = t0.elapsed().as_micros().max(1) as u64;
                i += 1;
                match outcome {
                    Ok(as_expected) => {
                        out.ops += 1;
                        out.hist.saturating_record(us);
                        if !as_expected {
                            out.unexpected += 1;
                            if out.first_problem.is_none() {
                                out.first_problem = Some("raw statement: unexpected insert count".to_string());
                            }
                        }
                    }
                    Err(e) => {
                        out.errors += 1;
                        if out.first_problem.is_none() {
                            out.first_problem = Some(e.to_string());
                        }
                        // A failing engine must not turn into a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ops, mut errors, mut unexpected, mut first_problem) = (0, 0, 0, None);
    for h in handles {
        let o = h.await?;
        hist.add(&o.hist)?;
        ops += o.ops;
        errors += o.errors;
        unexpected += o.unexpected;
        if first_problem.is_none() {
            first_problem = o.first_problem;
        }
    }
    // The last request started before the deadline; count until it finished.
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Sample {
        ops_per_s: ops as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        ops,
        errors,
        unexpected,
        first_problem,
        engine_work: Vec::new(),
    })
}

// ---------------------------------------------------------------- summary

struct Row {
    engine: Engine,
    workload: Workload,
    concurrency: usize,
    raw: Vec<Sample>,
    /// Empty for CLAIM workloads.
    fair: Vec<Sample>,
    idem: Vec<Sample>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn print_table(rows: &[Row], args: &Args) {
    println!(
        "\nMedian of {} rounds of {} s per side; a ratio is the median of the per-round ratios.\n",
        args.rounds, args.seconds
    );
    println!(
        "| engine | workload | tasks | raw statement | raw ops/s | fair raw ops/s | idem ops/s | idem p50 / p99 ms | **idem/raw** | idem/fair raw | errors / unexpected |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|");
    let ratio = |a: &[Sample], b: &[Sample]| -> String {
        if a.is_empty() {
            return "–".to_string();
        }
        format!("{:.2}", median(a.iter().zip(b).map(|(a, b)| b.ops_per_s / a.ops_per_s).collect()))
    };
    let med = |s: &[Sample], f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
    for r in rows {
        let all = || r.raw.iter().chain(&r.fair).chain(&r.idem);
        let errs: u64 = all().map(|s| s.errors).sum();
        let unexp: u64 = all().map(|s| s.unexpected).sum();
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {:.0} | {} / {} | **{}** | {} | {} |",
            r.engine.label(),
            r.workload.label(),
            r.concurrency,
            r.engine.raw_label(r.workload),
            med(&r.raw, &|s| s.ops_per_s),
            if r.fair.is_empty() { "–".to_string() } else { format!("{:.0}", med(&r.fair, &|s| s.ops_per_s)) },
            med(&r.idem, &|s| s.ops_per_s),
            ms(med(&r.idem, &|s| s.p50_us as f64)),
            ms(med(&r.idem, &|s| s.p99_us as f64)),
            ratio(&r.raw, &r.idem),
            ratio(&r.fair, &r.idem),
            if errs + unexp == 0 { "0".to_string() } else { format!("{errs} / {unexp}") },
        );
    }
    if let Some(r) = rows.iter().find(|r| !r.fair.is_empty()) {
        println!("\nFair raw BEGIN on {}: {}.", r.engine.label(), r.engine.fair_label());
    }
    println!(
        "\nWhat the engine did per request (engine-wide counters over each measurement, median over rounds; \
         other clients of the same engine add to them):\n"
    );
    println!("| engine | workload | tasks | raw | fair raw | idem |");
    println!("|---|---|---:|---|---|---|");
    for r in rows {
        let med_work = |s: &[Sample]| -> Vec<(&'static str, f64)> {
            let Some(first) = s.first() else { return Vec::new() };
            first
                .engine_work
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (*k, median(s.iter().filter_map(|x| x.engine_work.get(i).map(|w| w.1)).collect())))
                .collect()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.engine.label(),
            r.workload.label(),
            r.concurrency,
            work_text(&med_work(&r.raw)),
            if r.fair.is_empty() { "–".to_string() } else { work_text(&med_work(&r.fair)) },
            work_text(&med_work(&r.idem)),
        );
    }
}

// ---------------------------------------------------------------- main

async fn run_engine(engine: Engine, args: &Args, run: &str, m: &mut u64, rows: &mut Vec<Row>) -> Result<()> {
    for &concurrency in &args.concurrency {
        let ctx = Arc::new(setup(engine, args, concurrency).await?);
        let result = run_concurrency(&ctx, args, run, m, concurrency, rows).await;
        // Clean up this run's keys whatever happened.
        let cleanup = async {
            let mut admin = ctx.admin.lock().await;
            admin.delete_prefix(&format!("{KEY_PREFIX}{run}:")).await?;
            admin.drop_raw_table().await?;
            ctx.idem.shutdown().await;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        result?;
        cleanup?;
    }
    Ok(())
}

async fn run_concurrency(
    ctx: &Arc<Ctx>,
    args: &Args,
    run: &str,
    m: &mut u64,
    concurrency: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let engine = ctx.engine;
    let mut next_prefix = || {
        *m += 1;
        format!("{KEY_PREFIX}{run}:{:05}:", *m)
    };
    if args.warmup > 0 {
        for side in [Side::Raw, Side::Idem] {
            let prefix = next_prefix();
            let s = measure(ctx, side, Workload::Claim, concurrency, args.warmup as f64, &prefix).await?;
            if s.errors > 0 && s.ops == 0 {
                bail!("{} {side:?} warm-up failed: {}", engine.label(), s.first_problem.unwrap_or_default());
            }
            clean(ctx, &prefix).await?;
        }
    }
    for &workload in &args.workloads {
        let mut row = Row { engine, workload, concurrency, raw: Vec::new(), fair: Vec::new(), idem: Vec::new() };
        let sides: &[Side] =
            if workload.begin() { &[Side::Raw, Side::Fair, Side::Idem] } else { &[Side::Raw, Side::Idem] };
        for round in 0..args.rounds {
            // Each side goes first in turn.
            let mut order = sides.to_vec();
            order.rotate_left(round % sides.len());
            let mut prefixes = Vec::new();
            let mut before = snapshot(ctx).await?;
            for side in order {
                let prefix = next_prefix();
                let mut s = measure(ctx, side, workload, concurrency, args.seconds as f64, &prefix).await?;
                let after = snapshot(ctx).await?;
                s.engine_work = per_op(engine, &before, &after, s.ops);
                before = after;
                eprintln!(
                    "{:<13} {:<27} c={:<3} round {} {:<4} {:>9.0} ops/s  p50 {:>7} ms  p99 {:>7} ms  errors {} unexpected {}  [{}]{}",
                    engine.label(),
                    workload.label(),
                    concurrency,
                    round + 1,
                    format!("{side:?}").to_lowercase(),
                    s.ops_per_s,
                    ms(s.p50_us as f64),
                    ms(s.p99_us as f64),
                    s.errors,
                    s.unexpected,
                    work_text(&s.engine_work),
                    s.first_problem.as_deref().map(|p| format!("  first: {p}")).unwrap_or_default(),
                );
                match side {
                    Side::Raw => row.raw.push(s),
                    Side::Fair => row.fair.push(s),
                    Side::Idem => row.idem.push(s),
                }
                prefixes.push(prefix);
            }
            // Both sides start every round on tables of the same size.
            for p in prefixes {
                clean(ctx, &p).await?;
            }
        }
        rows.push(row);
    }
    Ok(())
}

/// The engine's counters.
async fn snapshot(ctx: &Ctx) -> Result<Counters> {
    ctx.admin.lock().await.counters().await
}

fn work_text(work: &[(&str, f64)]) -> String {
    work.iter()
        .map(|(k, v)| if *v >= 100.0 { format!("{k} {v:.0}") } else { format!("{k} {v:.2}") })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deletes the keys under `prefix` (rows of the raw table, idem records, Redis keys).
async fn clean(ctx: &Ctx, prefix: &str) -> Result<()> {
    ctx.admin.lock().await.delete_prefix(prefix).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.concurrency.contains(&0) || args.rounds == 0 || args.seconds == 0 {
        bail!("--concurrency, --rounds and --seconds must be positive");
    }
    let run = format!("{:08x}", Rng(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64).next() as u32);
    eprintln!(
        "idem backends vs raw statements: engines {:?}, tasks {:?}, {} rounds x {} s per side, run {run}",
        args.engines, args.concurrency, args.rounds, args.seconds
    );
    let mut rows = Vec::new();
    let mut m = 0u64;
    let mut skipped = Vec::new();
    for &engine in &args.engines {
        if let Err(e) = run_engine(engine, &args, &run, &mut m, &mut rows).await {
            eprintln!("{}: skipped: {e:#}", engine.label());
            skipped.push(format!("{}: {e:#}", engine.label()));
        }
    }
    print_table(&rows, &args);
    for s in &skipped {
        println!("\nnot measured: {s}");
    }
    Ok(())
}
