//! The conformance suite against a real Redis Cluster of 3 masters that this
//! test starts from `redis-server` processes on free loopback ports (in a
//! temporary directory), creates with `redis-cli --cluster create`, and tears
//! down afterwards, also on panic (a Drop guard kills the processes).
//!
//! Starting a cluster takes a few seconds, so all cases run inside one test
//! against one cluster ([`idem_conformance::run_all`] reports each failing
//! case by name). Under a test runner that runs each test in its own process
//! (nextest), one test per file is also the only way to share the fixture.

use std::sync::Arc;

use idem_backends::redis::RedisBackend;
use idem_conformance::{Backend, Ctx};

#[path = "support/redis_procs.rs"]
mod redis_procs;
use redis_procs::Cluster;

/// Masters in the test cluster.
const MASTERS: usize = 3;

async fn connect(url: &str) -> Arc<dyn Backend> {
    Arc::new(RedisBackend::connect_cluster(url).await.unwrap_or_else(|e| panic!("connect to {url}: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_three_master_cluster() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(MASTERS)).await.expect("start the cluster");
    let url = cluster.url();
    let backend = connect(&url).await;
    assert_eq!(backend.name(), "redis-cluster");

    let report = idem_conformance::run_all(backend.clone()).await;
    println!("{report}");

    // The run spread its keys over every master (random prefixes hash to
    // different slots), so the suite really exercised the cluster.
    let sizes = cluster.dbsizes();
    assert!(sizes.iter().all(|&n| n > 0), "every master holds keys: {sizes:?}");
    assert_eq!(backend.dbsize().await.expect("DBSIZE"), sizes.iter().sum::<u64>(), "DBSIZE sums the masters");

    // CLAIM.ALL over keys in different slots is refused with ERR and changes nothing.
    let c = Ctx::new();
    // Tags "foo" and "bar" hash to slots 12182 and 5061.
    let (a, b) = (format!("{{foo}}{}", c.prefix()), format!("{{bar}}{}", c.prefix()));
    let e = idem_conformance::err(&*backend, &["CLAIM.ALL", "o", &a, &b]).await;
    assert_eq!(e.code, idem_core::ErrorCode::Err, "got '{e}'");
    assert!(e.message.contains("hash tag"), "the error says what to do: '{e}'");
    assert_eq!(idem_conformance::ok(&*backend, &["OWNER", &a]).await, idem_core::Reply::Nil);

    // Two idem servers, each with its own cluster backend, raced by clients of both.
    let servers = idem_conformance::servers::run_two_server_races(connect(&url).await, connect(&url).await).await;
    println!("{servers}");

    report.assert_ok();
    servers.assert_ok();
    drop(cluster);
}
