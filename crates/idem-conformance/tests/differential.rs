//! Differential conformance (`idem_conformance::diff`): random command
//! sequences with time steps through each backend and through the core
//! Machine, replies compared. One test per engine, each on its own test
//! clock (docs/backends.md, "A clock for tests"). `IDEM_DIFF_SEQUENCES`,
//! `IDEM_DIFF_STEPS` and `IDEM_DIFF_SEED` size and repeat a run;
//! scripts/diff-conformance.sh runs a long one.

use std::sync::Arc;

use idem_conformance::diff::{self, DiffTarget};
use idem_core::TestClock;

#[path = "support/redis_procs.rs"]
mod redis_procs;
use idem_testkit::RedisServer;
use redis_procs::{Cluster, ShimClock};

/// How far ahead of the real time the test clocks start: see
/// [`TestClock::ahead_of_real`] (real-time cleanup by other clients of a
/// shared engine never deletes a record that is live by the test's time).
const CLOCK_AHEAD_MS: u64 = 3_600_000;

async fn run(target: DiffTarget) {
    diff::run(&target, diff::seed_from_env(), diff::sequences_from_env(), diff::steps_from_env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_embedded() {
    let clock = TestClock::ahead_of_real(CLOCK_AHEAD_MS);
    let store = idem_store::Store::open_with_test_clock(idem_store::StoreConfig::default(), clock.clone())
        .expect("open the in-memory store");
    run(DiffTarget { backend: store, clock, on_time: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_postgres() {
    let url =
        std::env::var("IDEM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let clock = TestClock::ahead_of_real(CLOCK_AHEAD_MS);
    let backend = idem_postgres::PgBackend::connect_with_test_clock(&url, clock.clone())
        .await
        .unwrap_or_else(|e| panic!("connect to {url} (is PostgreSQL running?): {e}"));
    run(DiffTarget { backend: Arc::new(backend), clock, on_time: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_mysql() {
    let url = std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let clock = TestClock::ahead_of_real(CLOCK_AHEAD_MS);
    let backend = idem_mysql::MySqlBackend::connect_with_test_clock(&url, clock.clone())
        .await
        .unwrap_or_else(|e| panic!("connect to {url} (is MariaDB running?): {e}"));
    run(DiffTarget { backend: Arc::new(backend), clock, on_time: None }).await;
}

/// A private `redis-server` whose wall clock is the test's: it runs with
/// the clock shim preloaded (`support/redis_procs.rs`), so scripts' TIME and
/// Redis's own key expiry (PX) both follow it, and no other client sees it.
/// The server is killed on drop.
struct ClockedRedis {
    server: RedisServer,
    clock: ShimClock,
    _dir: tempfile::TempDir,
}

impl ClockedRedis {
    fn start(now_ms: u64) -> ClockedRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ShimClock::new(dir.path(), now_ms);
        let server = RedisServer::start_on(idem_testkit::free_port(), |cmd| {
            cmd.args(["--dir", dir.path().to_str().expect("utf-8 temp dir")]);
            clock.apply(cmd);
        });
        ClockedRedis { server, clock, _dir: dir }
    }
}

/// Redis keeps a key set with `PX ttl` alive while `now == set + ttl`,
/// where the contract and the Machine end it at the deadline: the scripts
/// compare the idempotency records' deadlines with `TIME` themselves, and
/// keys that Redis expires for the contract (claims, tokens, counter op
/// records) are set with one millisecond less, so steps onto a deadline
/// agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_redis() {
    let clock = TestClock::ahead_of_real(CLOCK_AHEAD_MS);
    let redis = Arc::new(ClockedRedis::start(clock.now_ms()));
    let url = redis.server.url();
    // The server accepts connections already (RedisServer::start_on waits).
    let backend =
        idem_redis::RedisBackend::connect(&url).await.unwrap_or_else(|e| panic!("private redis-server {url}: {e}"));
    // The shim works: the server's TIME is the test's.
    let mut conn =
        redis::Client::open(url.as_str()).expect("url").get_multiplexed_async_connection().await.expect("conn");
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.expect("TIME");
    assert_eq!(secs, clock.now_ms() / 1000, "the private redis-server reads the test clock");
    let on_time = {
        let redis = redis.clone();
        Arc::new(move |now_ms: u64| redis.clock.set(now_ms)) as Arc<dyn Fn(u64) + Send + Sync>
    };
    run(DiffTarget { backend: Arc::new(backend), clock, on_time: Some(on_time) }).await;
}

/// The same on a Redis Cluster of three masters, every node on one shim
/// clock (`support/redis_procs.rs`): each sequence's keys share a hash tag,
/// so its multi-key commands stay in one slot while sequences spread over
/// the masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_redis_cluster() {
    let clock = TestClock::ahead_of_real(CLOCK_AHEAD_MS);
    let start_ms = clock.now_ms();
    let cluster =
        Arc::new(tokio::task::spawn_blocking(move || Cluster::start_clocked(3, start_ms)).await.expect("start"));
    // The nodes' clock ran on while the cluster formed; the test's follows.
    clock.set(cluster.clock_ms());
    let url = cluster.url();
    let backend =
        idem_redis::RedisBackend::connect_cluster(&url).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    assert_eq!(idem_core::Backend::name(&backend), "redis-cluster");
    let on_time = {
        let cluster = cluster.clone();
        Arc::new(move |now_ms: u64| cluster.set_clock(now_ms)) as Arc<dyn Fn(u64) + Send + Sync>
    };
    run(DiffTarget { backend: Arc::new(backend), clock, on_time: Some(on_time) }).await;
}
