//! Races through two idem servers that share one external store.
//!
//! [`TwoServers`] starts two in-process idem servers (crate `idem-server`) on
//! free loopback ports, each with its own backend instance; both instances
//! talk to the same external engine (one Redis, one PostgreSQL, ...). Clients
//! of both servers then race through the `redis` crate, as applications on
//! two hosts would. Only the engine can serialise them, so these cases check
//! what the per-process tests cannot: that every guarantee holds across
//! instances, including WAIT wake-ups caused by the other instance.
//!
//! ```ignore
//! let report = idem_conformance::servers::run_two_server_races(backend_a, backend_b).await;
//! report.assert_ok();
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use idem_core::Backend;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Ctx, Report, CASE_TIMEOUT};

/// Two running idem servers; stopped on [`TwoServers::stop`] or drop.
pub struct TwoServers {
    addrs: [SocketAddr; 2],
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl TwoServers {
    /// Binds two servers on `127.0.0.1:0` and serves `a` and `b` on them.
    pub async fn start(a: Arc<dyn Backend>, b: Arc<dyn Backend>) -> TwoServers {
        let mut addrs = Vec::new();
        let (mut stops, mut tasks) = (Vec::new(), Vec::new());
        for backend in [a, b] {
            let config = idem_server::ServerConfig {
                bind: "127.0.0.1:0".parse().expect("loopback address"),
                shutdown_grace_ms: 1000,
                ..idem_server::ServerConfig::default()
            };
            let server = idem_server::Server::bind(config).await.expect("bind an idem server on a free port");
            addrs.push(server.local_addr());
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            tasks.push(tokio::spawn(server.run(backend, async move {
                let _ = rx.await;
            })));
        }
        TwoServers { addrs: [addrs[0], addrs[1]], stops, tasks }
    }

    /// The servers' RESP addresses.
    pub fn addrs(&self) -> [SocketAddr; 2] {
        self.addrs
    }

    /// A new connection to server `i` (0 or 1).
    pub async fn client(&self, i: usize) -> MultiplexedConnection {
        let url = format!("redis://{}", self.addrs[i % 2]);
        let client = redis::Client::open(url.as_str()).expect("a valid URL");
        client.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }

    /// Stops both servers and waits for them to finish.
    pub async fn stop(mut self) {
        for tx in self.stops.drain(..) {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for TwoServers {
    fn drop(&mut self) {
        for tx in self.stops.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// Sends one command (strings, as the contract spells it) over RESP.
pub async fn call(conn: &mut MultiplexedConnection, args: &[&str]) -> Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async::<Value>(conn).await {
        Ok(v) => v,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

/// The status word of a RESP reply (first element of an array).
pub fn word(v: &Value) -> String {
    match v {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => panic!("no status word in {v:?}"),
        },
        other => panic!("expected an array reply, got {other:?}"),
    }
}

/// Element `i` of an array reply as an integer.
pub fn int_at(v: &Value, i: usize) -> i64 {
    match v {
        Value::Array(items) => match items.get(i) {
            Some(Value::Int(n)) => *n,
            other => panic!("expected an integer at {i} of {v:?}, got {other:?}"),
        },
        other => panic!("expected an array reply, got {other:?}"),
    }
}

/// Element `i` of an array reply as text.
pub fn text_at(v: &Value, i: usize) -> String {
    match v {
        Value::Array(items) => match items.get(i) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            other => panic!("expected a string at {i} of {v:?}, got {other:?}"),
        },
        other => panic!("expected an array reply, got {other:?}"),
    }
}

/// Runs `n` clients at once, client `i` on its own connection to server `i % 2`.
async fn race<F, Fut>(s: &TwoServers, n: usize, f: F) -> Vec<Value>
where
    F: Fn(usize, MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let conns = futures::future::join_all((0..n).map(|i| s.client(i))).await;
    futures::future::join_all(conns.into_iter().enumerate().map(|(i, c)| f(i, c))).await
}

fn count(v: &[Value], w: &str) -> usize {
    v.iter().filter(|r| word(r) == w).count()
}

/// 50 clients on two servers race IDEM.BEGIN on one key: exactly one started.
pub async fn two_servers_idem_begin(s: &TwoServers, c: &Ctx) {
    let k = c.key("k");
    let v = race(s, 50, |_, mut conn| {
        let k = k.clone();
        async move { call(&mut conn, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await }
    })
    .await;
    assert_eq!(count(&v, "started"), 1, "exactly one started across two servers: {v:?}");
    assert_eq!(count(&v, "running"), 49);
}

/// 40 `COUNTER.ADD k -1 MIN 0` against 10 through two servers: exactly 10 ok.
pub async fn two_servers_counter_min(s: &TwoServers, c: &Ctx) {
    let k = c.key("stock");
    let mut conn = s.client(0).await;
    assert_eq!(word(&call(&mut conn, &["COUNTER.ADD", &k, "10"]).await), "ok");
    let v = race(s, 40, |_, mut conn| {
        let k = k.clone();
        async move { call(&mut conn, &["COUNTER.ADD", &k, "-1", "MIN", "0"]).await }
    })
    .await;
    assert_eq!(count(&v, "ok"), 10, "exactly 10 decrements: {v:?}");
    assert!(v.iter().all(|r| int_at(r, 1) >= 0), "never below 0: {v:?}");
    let mut conn = s.client(1).await;
    assert_eq!(redis::cmd("COUNTER.GET").arg(&k).query_async::<i64>(&mut conn).await.expect("COUNTER.GET"), 0);
}

/// 20 holders on two servers race SLOTS.RESERVE on overlapping ranges: one wins.
pub async fn two_servers_slots(s: &TwoServers, c: &Ctx) {
    let r = c.key("room");
    let v = race(s, 20, |i, mut conn| {
        let r = r.clone();
        async move {
            let (first, last, holder) = (i.to_string(), (i + 20).to_string(), format!("h{i}"));
            call(&mut conn, &["SLOTS.RESERVE", &r, &first, &last, &holder, "SIZE", "48"]).await
        }
    })
    .await;
    assert_eq!(count(&v, "reserved"), 1, "exactly one reserved: {v:?}");
}

/// 30 owners on two servers race CLAIM: exactly one claimed.
pub async fn two_servers_claim(s: &TwoServers, c: &Ctx) {
    let k = c.key("email");
    let v = race(s, 30, |i, mut conn| {
        let k = k.clone();
        async move { call(&mut conn, &["CLAIM", &k, &format!("o{i}")]).await }
    })
    .await;
    assert_eq!(count(&v, "claimed"), 1, "exactly one claimed: {v:?}");
}

/// A LOCK parked on one server is handed the lock when its holder unlocks
/// through the other server, and waiters on both are served in order.
pub async fn two_servers_lock_handover(s: &TwoServers, c: &Ctx) {
    let n = c.key("job");
    let (mut a, mut b, mut b2) = (s.client(0).await, s.client(1).await, s.client(1).await);
    let r = call(&mut a, &["LOCK", &n, "w1", "LEASE", "30000"]).await;
    assert_eq!(word(&r), "acquired");
    let f1 = int_at(&r, 1);
    let n2 = n.clone();
    let waiter =
        tokio::spawn(async move { call(&mut b, &["LOCK", &n2, "w2", "LEASE", "30000", "WAIT", "20000"]).await });
    // Let the waiter park, then check it is counted through the other server.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let info = call(&mut b2, &["LOCK.INFO", &n]).await;
    assert_eq!(int_at(&info, 4), 1, "one waiter parked: {info:?}");
    let unlocked = redis::cmd("UNLOCK").arg(&n).arg("w1").query_async::<i64>(&mut a).await.expect("UNLOCK");
    assert_eq!(unlocked, 1);
    let r = waiter.await.expect("waiter task");
    assert_eq!(word(&r), "acquired", "woken across servers: {r:?}");
    assert!(int_at(&r, 1) > f1, "larger fence after handover: {r:?}");
}

/// An IDEM.BEGIN parked on one server sees the result committed through the other.
pub async fn two_servers_idem_wait(s: &TwoServers, c: &Ctx) {
    let k = c.key("order");
    let (mut a, mut b) = (s.client(0).await, s.client(1).await);
    let r = call(&mut a, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await;
    assert_eq!(word(&r), "started");
    let fence = int_at(&r, 1).to_string();
    let k2 = k.clone();
    let waiter = tokio::spawn(async move { call(&mut b, &["IDEM.BEGIN", &k2, "WAIT", "20000"]).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(word(&call(&mut a, &["IDEM.COMMIT", &k, &fence, "result-7"]).await), "ok");
    let r = waiter.await.expect("waiter task");
    assert_eq!(word(&r), "done", "woken across servers: {r:?}");
    assert_eq!(text_at(&r, 1), "result-7");
}

/// A two-server case.
pub type ServerCaseFn = for<'a> fn(&'a TwoServers, &'a Ctx) -> BoxFuture<'a, ()>;

/// Every two-server case, by name.
pub const SERVER_CASES: &[(&str, ServerCaseFn)] = &[
    ("two_servers_idem_begin", |s, c| Box::pin(two_servers_idem_begin(s, c))),
    ("two_servers_counter_min", |s, c| Box::pin(two_servers_counter_min(s, c))),
    ("two_servers_slots", |s, c| Box::pin(two_servers_slots(s, c))),
    ("two_servers_claim", |s, c| Box::pin(two_servers_claim(s, c))),
    ("two_servers_lock_handover", |s, c| Box::pin(two_servers_lock_handover(s, c))),
    ("two_servers_idem_wait", |s, c| Box::pin(two_servers_idem_wait(s, c))),
];

/// Starts two servers on `a` and `b` (two backend instances on one external
/// store), runs every two-server case in turn, stops the servers and reports.
pub async fn run_two_server_races(a: Arc<dyn Backend>, b: Arc<dyn Backend>) -> Report {
    let mut report = Report { backend: format!("two servers on {}", a.name()), ..Report::default() };
    let servers = Arc::new(TwoServers::start(a, b).await);
    for &(name, run) in SERVER_CASES {
        let s = servers.clone();
        let task = tokio::spawn(async move {
            let ctx = Ctx::new();
            run(&s, &ctx).await;
        });
        match tokio::time::timeout(CASE_TIMEOUT, task).await {
            Ok(Ok(())) => report.passed.push(name),
            Ok(Err(e)) if e.is_panic() => report.failed.push((name, crate::panic_message(e.into_panic()))),
            Ok(Err(e)) => report.failed.push((name, format!("task failed: {e}"))),
            Err(_) => report.failed.push((name, format!("timed out after {CASE_TIMEOUT:?}"))),
        }
    }
    if let Ok(s) = Arc::try_unwrap(servers) {
        s.stop().await;
    }
    report
}
