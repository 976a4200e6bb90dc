//! Private `redis-server` processes for this crate's tests, never the shared
//! one: a Redis Cluster of masters on free loopback ports, and the test
//! clock shim (`tests/clock_shim/clock_shim.c`) that makes a server's wall
//! clock the test's. Every process is killed and reaped on drop, also when a
//! test panics.
//!
//! Included by more than one test file (`#[path]`), each of which uses only
//! part of it.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a cluster may take to start and agree (`cluster_state:ok`).
pub const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A clocked cluster's node timeout: far longer than any run's time steps
/// (the differential runs step the clock by up to 24 h at once). A step
/// longer than the node timeout would make every node mark the others as
/// failing (their pongs would look days old), and a cluster without
/// replicas then stops answering.
const CLOCKED_NODE_TIMEOUT_MS: u64 = 10_000_000_000_000;

/// The node timeout of a cluster on the real clock.
const NODE_TIMEOUT_MS: u64 = 5_000;

/// The wall clock of the servers started with it: the shim, built from its
/// source with `cc`, reads the time from a file that [`ShimClock::set`]
/// rewrites in place (the servers map it).
pub struct ShimClock {
    shim: PathBuf,
    path: PathBuf,
    file: File,
    now_ms: AtomicU64,
}

impl ShimClock {
    /// Builds the shim in `dir` and starts its clock at `now_ms`.
    pub fn new(dir: &Path, now_ms: u64) -> ShimClock {
        let shim = dir.join("clock_shim.so");
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clock_shim/clock_shim.c");
        let cc = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&shim)
            .arg(source)
            .output()
            .expect("run cc (a C compiler builds the clock shim)");
        assert!(cc.status.success(), "cc failed: {}", String::from_utf8_lossy(&cc.stderr));
        let path = dir.join("clock");
        std::fs::write(&path, now_ms.to_ne_bytes()).expect("write the clock file");
        let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open the clock file");
        ShimClock { shim, path, file, now_ms: AtomicU64::new(now_ms) }
    }

    /// Moves the servers' wall clock to `now_ms`, which must not be earlier
    /// than the time now (the servers' deadlines are absolute times).
    pub fn set(&self, now_ms: u64) {
        let before = self.now_ms.swap(now_ms, Ordering::SeqCst);
        assert!(now_ms >= before, "the shim clock never goes back ({before} -> {now_ms})");
        // In place: the servers map the file, so it is never truncated.
        self.file.write_all_at(&now_ms.to_ne_bytes(), 0).expect("write the clock file");
    }

    /// The servers' wall clock now.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// Makes `cmd` (a `redis-server`) read this clock.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", &self.shim).env("IDEM_CLOCK_FILE", &self.path);
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

/// Runs `redis-cli` against a node; its output and errors as text.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A Redis Cluster of masters without replicas.
pub struct Cluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    clock: Option<ShimClock>,
    /// Where a shim clock started.
    clock_start_ms: u64,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    /// Starts `masters` nodes on the real clock, creates the cluster and
    /// waits until every node says `cluster_state:ok`.
    pub fn start(masters: usize) -> Cluster {
        Cluster::start_inner(masters, None)
    }

    /// The same on a shim clock that starts at `start_ms`. While the cluster
    /// forms, the clock follows the real time from there (a node turns
    /// `cluster_state:ok` only after two seconds of its wall clock); once it
    /// has formed, the clock stands still until [`Cluster::set_clock`].
    pub fn start_clocked(masters: usize, start_ms: u64) -> Cluster {
        Cluster::start_inner(masters, Some(start_ms))
    }

    fn start_inner(masters: usize, clock_start_ms: Option<u64>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = clock_start_ms.map(|ms| ShimClock::new(dir.path(), ms));
        let mut cluster = Cluster {
            ports: Vec::new(),
            children: Vec::new(),
            clock,
            clock_start_ms: clock_start_ms.unwrap_or(0),
            dir,
        };
        let began = Instant::now();
        for _ in 0..masters {
            let port = free_port_pair(&cluster.ports);
            let child = cluster.spawn_node(port);
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for &p in &cluster.ports.clone() {
            cluster.wait_until(began, &format!("redis-server on :{p}"), || redis_cli(p, &["PING"]).contains("PONG"));
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
        for &p in &cluster.ports.clone() {
            cluster.wait_until(began, &format!("cluster_state:ok on :{p}"), || {
                redis_cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        cluster
    }

    fn spawn_node(&self, port: u16) -> Child {
        let timeout_ms = if self.clock.is_some() { CLOCKED_NODE_TIMEOUT_MS } else { NODE_TIMEOUT_MS };
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &timeout_ms.to_string()])
            .args(["--dir", self.dir.path().to_str().expect("utf-8 temp dir")])
            .args(["--logfile", &format!("redis-{port}.log")])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(clock) = &self.clock {
            clock.apply(&mut cmd);
        }
        cmd.spawn().expect("start redis-server (is it installed?)")
    }

    /// Polls `ok` until it holds; a shim clock follows the real time meanwhile.
    fn wait_until(&self, began: Instant, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if let Some(clock) = &self.clock {
                clock.set(clock.now_ms().max(self.clock_start_ms + began.elapsed().as_millis() as u64));
            }
            if ok() {
                return;
            }
            assert!(start.elapsed() < CLUSTER_START_TIMEOUT, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL of [`idem_redis::RedisBackend::connect_cluster`].
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// Keys held by each master.
    pub fn dbsizes(&self) -> Vec<u64> {
        self.ports.iter().map(|&p| redis_cli(p, &["DBSIZE"]).trim().parse().unwrap_or(0)).collect()
    }

    /// The nodes' wall clock now (clocked clusters only).
    pub fn clock_ms(&self) -> u64 {
        self.clock.as_ref().expect("a clocked cluster").now_ms()
    }

    /// Moves every node's wall clock to `now_ms` (clocked clusters only).
    pub fn set_clock(&self, now_ms: u64) {
        self.clock.as_ref().expect("a clocked cluster").set(now_ms);
    }
}
