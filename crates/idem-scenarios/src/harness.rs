//! What every scenario needs: a unique run id for table names, MariaDB pools,
//! the idem server (in-process or external), latency histograms, and cleanup.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use mysql_async::prelude::*;

use crate::pg::PgPool;
use crate::{Scenario, ScenarioOpts};

/// How long one idem call may take in a scenario (its WAIT excluded).
const IDEM_COMMAND_TIMEOUT_MS: u64 = 60_000;

/// Upper bound on MariaDB connections one pool of a scenario may open. The
/// local server allows 151 in total and other test suites share it.
pub(crate) const MYSQL_CONNS_MAX: usize = 32;

/// One scenario run's context.
pub(crate) struct Ctx {
    pub opts: ScenarioOpts,
    /// Lowercase alphanumeric, unique per run: suffix of every table, key,
    /// stream and subject the run creates.
    pub run_id: String,
    /// Where idem listens (`redis://127.0.0.1:port`).
    pub idem_url: String,
    embedded: Mutex<Option<EmbeddedIdem>>,
    /// MariaDB tables to drop at the end.
    tables: Mutex<Vec<String>>,
    /// PostgreSQL tables to drop at the end.
    pg_tables: Mutex<Vec<String>>,
}

impl Ctx {
    pub async fn start(scenario: Scenario, opts: ScenarioOpts) -> anyhow::Result<Ctx> {
        tracing::info!(%scenario, "starting scenario");
        let run_id = new_run_id();
        let (idem_url, embedded) = match &opts.idem_url {
            Some(url) => (url.clone(), None),
            None => {
                let e = EmbeddedIdem::start(&run_id).await?;
                (e.url.clone(), Some(e))
            }
        };
        Ok(Ctx {
            opts,
            run_id,
            idem_url,
            embedded: Mutex::new(embedded),
            tables: Mutex::new(Vec::new()),
            pg_tables: Mutex::new(Vec::new()),
        })
    }

    /// The load size, or `default`.
    pub fn size(&self, default: usize) -> usize {
        self.opts.size.unwrap_or(default).max(1)
    }

    /// A name `<base>_<run id>` for a MariaDB table, dropped at the end.
    pub fn table(&self, base: &str) -> String {
        let name = format!("{base}_{}", self.run_id);
        self.tables.lock().expect("tables mutex").push(name.clone());
        name
    }

    /// A name `<base>_<run id>` for a PostgreSQL table, dropped at the end.
    pub fn pg_table(&self, base: &str) -> String {
        let name = format!("{base}_{}", self.run_id);
        self.pg_tables.lock().expect("tables mutex").push(name.clone());
        name
    }

    /// A PostgreSQL pool of at most `max_conns` connections.
    pub fn pg(&self, max_conns: usize) -> PgPool {
        PgPool::new(&self.opts.pg_url, max_conns)
    }

    /// A MariaDB pool of at most `max_conns` connections.
    pub fn mysql(&self, max_conns: usize) -> anyhow::Result<mysql_async::Pool> {
        mysql_pool(&self.opts.mysql_url, max_conns)
    }

    /// An idem client with at most `max_conns` connections. Its command
    /// timeout is generous: scenarios count anomalies under load, and a
    /// client giving up early would only add errors the engines did not cause.
    pub fn idem(&self, max_conns: usize) -> anyhow::Result<idem_client::Client> {
        let config =
            idem_client::Config::new(&self.idem_url).pool_size(max_conns).command_timeout_ms(IDEM_COMMAND_TIMEOUT_MS);
        Ok(idem_client::Client::new(config)?)
    }

    /// Drops the run's tables and stops the in-process idem server. Errors are
    /// logged, not returned: cleanup must not hide the scenario's own result.
    pub async fn finish(self) {
        let tables = std::mem::take(&mut *self.tables.lock().expect("tables mutex"));
        if !tables.is_empty() {
            if let Ok(pool) = self.mysql(1) {
                if let Ok(mut conn) = pool.get_conn().await {
                    for t in tables {
                        if let Err(e) = conn.query_drop(format!("DROP TABLE IF EXISTS {t}")).await {
                            tracing::warn!("dropping {t}: {e}");
                        }
                    }
                }
                let _ = pool.disconnect().await;
            }
        }
        let pg_tables = std::mem::take(&mut *self.pg_tables.lock().expect("tables mutex"));
        if !pg_tables.is_empty() {
            let pool = self.pg(1);
            for t in pg_tables {
                if let Err(e) = pool.exec(&format!("DROP TABLE IF EXISTS {t}")).await {
                    tracing::warn!("dropping {t}: {e:#}");
                }
            }
        }
        let embedded = self.embedded.lock().expect("embedded mutex").take();
        if let Some(e) = embedded {
            e.stop().await;
        }
    }
}

/// A MariaDB pool of at most `max_conns` connections (capped at
/// [`MYSQL_CONNS_MAX`]).
pub(crate) fn mysql_pool(url: &str, max_conns: usize) -> anyhow::Result<mysql_async::Pool> {
    let opts = mysql_async::Opts::from_url(url).with_context(|| format!("mysql url {url}"))?;
    let max = max_conns.clamp(1, MYSQL_CONNS_MAX);
    let constraints = mysql_async::PoolConstraints::new(0, max).expect("0 <= max");
    // Idle connections are kept (up to `max`, for a minute): with the
    // default zero TTL and `min` 0 the pool would close every returned
    // connection and each statement would pay a new connect and handshake.
    // No COM_RESET_CONNECTION on return either: scenario code always ends
    // its transactions and sets no session state.
    let pool_opts = mysql_async::PoolOpts::default()
        .with_constraints(constraints)
        .with_inactive_connection_ttl(Duration::from_secs(60))
        .with_reset_connection(false);
    Ok(mysql_async::Pool::new(mysql_async::OptsBuilder::from_opts(opts).pool_opts(pool_opts)))
}

/// A run id: process id, clock and randomness, so that parallel runs (even in
/// one process) never share tables.
fn new_run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let r: u32 = rand::random();
    format!("{:x}{:x}{:04x}", std::process::id() & 0xffff, (nanos / 1000) & 0xff_ffff, r & 0xffff)
}

/// An idem server started in this process: the embedded durable store in a
/// temporary directory behind the RESP front end on a free loopback port.
struct EmbeddedIdem {
    url: String,
    dir: PathBuf,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddedIdem {
    async fn start(run_id: &str) -> anyhow::Result<EmbeddedIdem> {
        let dir = std::env::temp_dir().join(format!("idem-scenario-{run_id}"));
        let store =
            idem_store::Store::open(idem_store::StoreConfig { data_dir: Some(dir.clone()), ..Default::default() })
                .with_context(|| format!("opening the embedded idem store in {}", dir.display()))?;
        let config = idem_server::ServerConfig {
            bind: "127.0.0.1:0".parse().expect("valid address"),
            // Scenario clients are gone by the time the server stops.
            shutdown_grace_ms: 2_000,
            ..Default::default()
        };
        let server = idem_server::Server::bind(config).await.context("binding the in-process idem server")?;
        let url = format!("redis://{}", server.local_addr());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let backend: std::sync::Arc<dyn idem_core::Backend> = store;
        let task = tokio::spawn(server.run(backend, async move {
            let _ = stopped.await;
        }));
        Ok(EmbeddedIdem { url, dir, shutdown, task })
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A latency histogram in microseconds (1 µs .. 60 s, 3 significant digits).
pub(crate) struct Latency(hdrhistogram::Histogram<u64>);

impl Latency {
    pub fn new() -> Self {
        Latency(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.0.record(us).expect("value within bounds");
    }
    /// The `q` quantile (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }
    pub fn max_us(&self) -> u64 {
        self.0.max()
    }
}

/// Operations per second.
pub(crate) fn rate(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// FNV-1a, 64 bits, as 16 hex digits: a stable fingerprint of a request body
/// (std's hasher is not guaranteed stable across releases).
pub(crate) fn fingerprint(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The MariaDB error code of an error, if it came from the server.
pub(crate) fn mysql_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// `ER_DUP_ENTRY`: what Java surfaces as DuplicateKeyException.
pub(crate) const ER_DUP_ENTRY: u16 = 1062;
/// `ER_LOCK_DEADLOCK`: the transaction was rolled back; retrying is correct.
pub(crate) const ER_LOCK_DEADLOCK: u16 = 1213;

/// One integer from a query that returns one row and one column.
pub(crate) async fn count(pool: &mysql_async::Pool, sql: &str) -> anyhow::Result<u64> {
    let mut conn = pool.get_conn().await?;
    let v: Option<Option<i64>> = conn.query_first(sql).await.with_context(|| sql.to_string())?;
    Ok(v.flatten().unwrap_or(0).max(0) as u64)
}

/// Runs one statement (DDL in particular).
pub(crate) async fn exec(pool: &mysql_async::Pool, sql: &str) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    conn.query_drop(sql).await.with_context(|| sql.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_table_safe_and_distinct() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(a.len() <= 16);
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(fingerprint(b""), "cbf29ce484222325");
        assert_eq!(fingerprint(b"a"), "af63dc4c8601ec8c");
    }
}

/// The two sides of a scenario that has no extra variants.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The approach of the original write-up.
    Naive,
    /// The same work through idem.
    Idem,
}

impl Variant {
    /// The name used in report lines.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::Naive => "naive",
            Variant::Idem => "idem",
        }
    }
}
