//! Crash loop: the real `idem` binary under concurrent load, killed with
//! SIGKILL at random moments and restarted on the same data directory. After
//! every restart:
//! - every acknowledged IDEM.COMMIT replays its result;
//! - every acknowledged CLAIM is still owned by its owner;
//! - every acknowledged LOCK is still held by its owner with its fence;
//! - counters hold exactly the sum of the acknowledged COUNTER.ADD deltas plus
//!   those of the ops whose reply was lost and which were applied; retrying a
//!   lost op with its op id says `replayed` exactly when it was applied, and
//!   afterwards the value is the sum of all deltas;
//! - fences handed out after the restart exceed every fence acknowledged before.
//!
//! `IDEM_CRASH_CYCLES` sets the number of kill/restart cycles (default 20);
//! `IDEM_CRASH_SEED` replays a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

const CLIENTS: usize = 4;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// A pipeline verifies this many items per round trip.
const VERIFY_BATCH: usize = 500;

/// A small deterministic PRNG (xorshift64*), so a failing run can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients were told, accumulated over all cycles.
#[derive(Default)]
struct Acked {
    /// IDEM key -> committed result.
    commits: BTreeMap<String, String>,
    /// CLAIM key -> owner.
    claims: BTreeMap<String, String>,
    /// LOCK name -> (owner, fence).
    locks: BTreeMap<String, (String, i64)>,
    /// counter key -> (op id -> delta) of acknowledged adds.
    counter_ops: BTreeMap<String, BTreeMap<String, i64>>,
    /// counter key -> (op id -> delta) of adds whose reply was lost.
    counter_unsure: BTreeMap<String, BTreeMap<String, i64>>,
    /// The highest fence any reply carried.
    fence_max: i64,
}

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, log_dir: &Path, cycle: usize) -> Server {
        for _attempt in 0..10 {
            let port = free_port();
            let log = log_dir.join(format!("server-{cycle}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_idem"))
                .args(["serve", "--port", &port.to_string(), "--http-port", "0", "--log", "warn", "--data"])
                // Snapshot often, so that kills also land during snapshots and
                // restarts recover from snapshot + log, not only from the log.
                .env("IDEM_SNAPSHOT_AFTER_BYTES", "65536")
                // Every other run preallocates log segments from the first
                // byte, so that kills also land while a segment is being
                // zero-filled, switched to, and written over.
                .env("IDEM_PREALLOC_AFTER_BYTES", if cycle.is_multiple_of(2) { "0" } else { "1048576" })
                .arg(data)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start idem");
            let mut server = Server { child, port, log };
            if server.wait_ready() {
                return server;
            }
            // The port was taken between probing and binding: try another.
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("idem did not start");
    }

    /// Waits until the server answers PING (recovery may take a while).
    fn wait_ready(&mut self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("idem exited with {status}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
                return false;
            }
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) {
                    if redis::cmd("PING").query::<Value>(&mut con).is_ok() {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown path runs, exactly like a crash of the process.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Int(i) => i.to_string(),
        Value::Nil => "nil".into(),
        other => format!("{other:?}"),
    }
}

fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => text(other).parse().unwrap_or_else(|_| panic!("not an integer: {other:?}")),
    }
}

async fn call(con: &mut redis::aio::MultiplexedConnection, args: &[String]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<Value>(con)).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::other("timed out"))),
    }
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// One client: random operations until the server goes away. Everything a
/// reply confirmed goes into `acked`.
async fn client(url: String, id: usize, cycle: usize, seed: u64, acked: Arc<Mutex<Acked>>) {
    let Ok(client) = redis::Client::open(url) else { return };
    let Ok(mut con) = client.get_multiplexed_async_connection().await else { return };
    let mut rng = Rng(seed | 1);
    let counter_key = format!("ctr:{id}");
    for n in 0.. {
        let tag = format!("{cycle}:{id}:{n}");
        match rng.below(4) {
            0 => {
                let key = format!("idem:{tag}");
                let Ok(r) = call(&mut con, &s(&["IDEM.BEGIN", &key, "LEASE", "3600000"])).await else { return };
                let r = items(&r);
                assert_eq!(text(&r[0]), "started", "fresh key {key}: {r:?}");
                let fence = int(&r[1]);
                {
                    let mut a = acked.lock().unwrap();
                    a.fence_max = a.fence_max.max(fence);
                }
                let result = format!("result-{tag}");
                let Ok(r) = call(&mut con, &s(&["IDEM.COMMIT", &key, &fence.to_string(), &result])).await else {
                    return;
                };
                assert_eq!(text(&items(&r)[0]), "ok", "commit {key}: {r:?}");
                acked.lock().unwrap().commits.insert(key, result);
            }
            1 => {
                let key = format!("claim:{tag}");
                let owner = format!("owner-{id}");
                let Ok(r) = call(&mut con, &s(&["CLAIM", &key, &owner])).await else { return };
                assert_eq!(text(&items(&r)[0]), "claimed", "claim {key}: {r:?}");
                acked.lock().unwrap().claims.insert(key, owner);
            }
            2 => {
                let op = format!("op:{tag}");
                let delta = (rng.below(1000) as i64) - 300;
                acked.lock().unwrap().counter_unsure.entry(counter_key.clone()).or_default().insert(op.clone(), delta);
                let r = call(&mut con, &s(&["COUNTER.ADD", &counter_key, &delta.to_string(), "OP", &op])).await;
                let Ok(r) = r else { return };
                assert_eq!(text(&items(&r)[0]), "ok", "add {op}: {r:?}");
                let mut a = acked.lock().unwrap();
                a.counter_unsure.get_mut(&counter_key).unwrap().remove(&op);
                a.counter_ops.entry(counter_key.clone()).or_default().insert(op, delta);
            }
            _ => {
                let name = format!("lock:{tag}");
                let owner = format!("holder-{tag}");
                let Ok(r) = call(&mut con, &s(&["LOCK", &name, &owner, "LEASE", "3600000"])).await else { return };
                let r = items(&r);
                assert_eq!(text(&r[0]), "acquired", "lock {name}: {r:?}");
                let fence = int(&r[1]);
                let mut a = acked.lock().unwrap();
                a.fence_max = a.fence_max.max(fence);
                a.locks.insert(name, (owner, fence));
            }
        }
    }
}

/// Sends `cmds` in pipelines and returns the replies in order.
fn pipelined(con: &mut redis::Connection, cmds: &[Vec<String>]) -> Vec<Value> {
    let mut out = Vec::with_capacity(cmds.len());
    for chunk in cmds.chunks(VERIFY_BATCH) {
        let mut pipe = redis::pipe();
        for c in chunk {
            let cmd = pipe.cmd(&c[0]);
            for a in &c[1..] {
                cmd.arg(a);
            }
        }
        let replies: Vec<Value> = pipe.query(con).expect("verification pipeline");
        out.extend(replies);
    }
    out
}

/// Checks everything acknowledged so far against the restarted server, then
/// settles the counter ops whose replies were lost.
fn verify(server: &Server, acked: &mut Acked, cycle: usize) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection_with_timeout(Duration::from_secs(10)).unwrap();
    con.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    let ctx = |what: &str| format!("cycle {cycle}: {what} (server log {})", server.log.display());

    let keys: Vec<&String> = acked.commits.keys().collect();
    let cmds: Vec<Vec<String>> = keys.iter().map(|k| s(&["IDEM.GET", k])).collect();
    for (k, r) in keys.iter().zip(pipelined(&mut con, &cmds)) {
        let r = items(&r);
        assert_eq!(
            (text(&r[0]), r.get(1).map(text)),
            ("done".to_string(), Some(acked.commits[*k].clone())),
            "{}",
            ctx(&format!("acknowledged commit {k} lost"))
        );
    }

    let keys: Vec<&String> = acked.claims.keys().collect();
    let cmds: Vec<Vec<String>> = keys.iter().map(|k| s(&["OWNER", k])).collect();
    for (k, r) in keys.iter().zip(pipelined(&mut con, &cmds)) {
        assert_eq!(text(&r), acked.claims[*k], "{}", ctx(&format!("acknowledged claim {k} lost")));
    }

    let names: Vec<&String> = acked.locks.keys().collect();
    let cmds: Vec<Vec<String>> = names.iter().map(|n| s(&["LOCK.INFO", n])).collect();
    for (n, r) in names.iter().zip(pipelined(&mut con, &cmds)) {
        let r = items(&r);
        let (owner, fence) = &acked.locks[*n];
        assert_eq!(text(&r[0]), "held", "{}", ctx(&format!("acknowledged lock {n} lost: {r:?}")));
        assert_eq!((&text(&r[1]), int(&r[2])), (owner, *fence), "{}", ctx(&format!("lock {n}")));
    }

    // Counters: value == acknowledged deltas + the lost-reply ops that were
    // applied; a retry with the same op id tells which those were.
    let counter_keys: Vec<String> = acked
        .counter_ops
        .keys()
        .chain(acked.counter_unsure.keys())
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for key in counter_keys {
        let value = int(&redis::cmd("COUNTER.GET").arg(&key).query::<Value>(&mut con).unwrap());
        let sure: i64 = acked.counter_ops.get(&key).map(|m| m.values().sum()).unwrap_or(0);
        let unsure = acked.counter_unsure.remove(&key).unwrap_or_default();
        let mut applied = 0;
        let mut last = value;
        for (op, delta) in &unsure {
            let r = items(
                &redis::cmd("COUNTER.ADD").arg(&key).arg(*delta).arg("OP").arg(op).query::<Value>(&mut con).unwrap(),
            );
            match text(&r[0]).as_str() {
                "replayed" => applied += delta,
                "ok" => {
                    last += delta;
                    assert_eq!(int(&r[1]), last, "{}", ctx(&format!("retry of {op}")));
                }
                other => panic!("{}", ctx(&format!("retry of {op} replied {other}: {r:?}"))),
            }
        }
        assert_eq!(value, sure + applied, "{}", ctx(&format!("counter {key} is not the sum of its applied ops")));
        let ops = acked.counter_ops.entry(key.clone()).or_default();
        ops.extend(unsure);
        let total: i64 = ops.values().sum();
        let after = int(&redis::cmd("COUNTER.GET").arg(&key).query::<Value>(&mut con).unwrap());
        assert_eq!(after, total, "{}", ctx(&format!("counter {key} after settling lost ops")));
        // An acknowledged op retried is never applied twice.
        if let Some((op, delta)) = ops.iter().next() {
            let r = items(
                &redis::cmd("COUNTER.ADD").arg(&key).arg(*delta).arg("OP").arg(op).query::<Value>(&mut con).unwrap(),
            );
            assert_eq!(text(&r[0]), "replayed", "{}", ctx(&format!("acknowledged op {op} retried")));
        }
    }

    // Fences keep growing across the crash.
    let r = items(
        &redis::cmd("LOCK")
            .arg(format!("fresh:{cycle}"))
            .arg("v")
            .arg("LEASE")
            .arg(3_600_000)
            .query::<Value>(&mut con)
            .unwrap(),
    );
    assert_eq!(text(&r[0]), "acquired");
    let fence = int(&r[1]);
    assert!(fence > acked.fence_max, "{}", ctx(&format!("fence {fence} after acknowledged fence {}", acked.fence_max)));
    acked.fence_max = fence;
    acked.locks.insert(format!("fresh:{cycle}"), ("v".into(), fence));
}

#[test]
fn acknowledged_writes_survive_kill_9_in_a_loop() {
    let cycles: usize = std::env::var("IDEM_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("IDEM_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash loop: {cycles} cycles, IDEM_CRASH_SEED={seed}");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut rng = Rng(seed | 1);
    let mut acked = Acked::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut server = Server::start(&data, tmp.path(), 0);
    for cycle in 0..cycles {
        let shared = Arc::new(Mutex::new(std::mem::take(&mut acked)));
        let tasks: Vec<_> =
            (0..CLIENTS).map(|id| rt.spawn(client(server.url(), id, cycle, rng.next(), shared.clone()))).collect();
        // Kill at a random moment under load.
        std::thread::sleep(Duration::from_millis(20 + rng.below(400)));
        server.kill();
        for t in tasks {
            rt.block_on(t).expect("client task panicked");
        }
        acked = Arc::into_inner(shared).unwrap().into_inner().unwrap();
        server = Server::start(&data, tmp.path(), cycle + 1);
        verify(&server, &mut acked, cycle);
    }
    let ops: usize = acked.counter_ops.values().map(|m| m.len()).sum();
    eprintln!(
        "crash loop: {cycles} cycles passed: {} commits, {} claims, {} locks, {ops} counter ops, fence max {}",
        acked.commits.len(),
        acked.claims.len(),
        acked.locks.len(),
        acked.fence_max
    );
    server.kill();
    let report = Command::new(env!("CARGO_BIN_EXE_idem")).arg("check").arg("--data").arg(&data).output().unwrap();
    assert!(report.status.success(), "idem check failed: {}", String::from_utf8_lossy(&report.stderr));
}
