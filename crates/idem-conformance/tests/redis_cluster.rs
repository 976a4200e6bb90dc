//! The conformance suite against a real Redis Cluster of 3 masters that this
//! test starts from `redis-server` processes on free loopback ports (in a
//! temporary directory), creates with `redis-cli --cluster create`, and tears
//! down afterwards, also on panic (a Drop guard kills the processes).
//!
//! Starting a cluster takes a few seconds, so all cases run inside one test
//! against one cluster ([`idem_conformance::run_all`] reports each failing
//! case by name). Under a test runner that runs each test in its own process
//! (nextest), one test per file is also the only way to share the fixture.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_backends::redis::RedisBackend;
use idem_conformance::{Backend, Ctx};

/// Masters in the test cluster.
const MASTERS: usize = 3;
/// How long the cluster may take to start and agree (`cluster_state:ok`).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Running `redis-server` processes; killed (and reaped) on drop.
struct Cluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port that is free now and whose cluster bus port (+10000) is free too.
fn free_port_pair(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let p = l.local_addr().expect("local addr").port();
        if p > 55_000 || taken.contains(&p) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < START_TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_node(dir: &Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", "5000"])
        .args(["--dir", dir.to_str().expect("utf-8 temp dir")])
        .args(["--logfile", &format!("redis-{port}.log")])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (is it installed?)")
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster { ports: Vec::new(), children: Vec::new(), _dir: dir };
        for _ in 0..MASTERS {
            let port = free_port_pair(&cluster.ports);
            cluster.children.push(spawn_node(cluster._dir.path(), port));
            cluster.ports.push(port);
        }
        for &p in &cluster.ports {
            wait_until(&format!("redis-server on :{p}"), || redis_cli(p, &["PING"]).contains("PONG"));
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        for &p in &cluster.ports {
            wait_until(&format!("cluster_state:ok on :{p}"), || {
                redis_cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        cluster
    }

    fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    fn dbsizes(&self) -> Vec<u64> {
        self.ports.iter().map(|&p| redis_cli(p, &["DBSIZE"]).trim().parse().unwrap_or(0)).collect()
    }
}

async fn connect(url: &str) -> Arc<dyn Backend> {
    Arc::new(RedisBackend::connect_cluster(url).await.unwrap_or_else(|e| panic!("connect to {url}: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_three_master_cluster() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.expect("start the cluster");
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
