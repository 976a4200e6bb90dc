//! Races through real sockets against the embedded store: each client its
//! own connection, all released at once.

mod common;

use std::sync::Arc;

use common::TestServer;
use idem_server::ServerConfig;
use redis::Value;
use tokio::sync::Barrier;

async fn connections(srv: &TestServer, n: usize) -> Vec<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{}/", srv.addr)).unwrap();
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(client.get_multiplexed_async_connection().await.expect("connect"));
    }
    v
}

/// Runs `cmd` on every connection at once; returns the replies.
async fn race(conns: Vec<redis::aio::MultiplexedConnection>, cmd: redis::Cmd) -> Vec<Value> {
    let barrier = Arc::new(Barrier::new(conns.len()));
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut con)| {
            let barrier = barrier.clone();
            let mut cmd = cmd.clone();
            // `{i}` in an argument becomes the client's number.
            let args: Vec<Vec<u8>> = cmd
                .args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => String::from_utf8_lossy(b).replace("{i}", &i.to_string()).into_bytes(),
                    redis::Arg::Cursor => Vec::new(),
                })
                .collect();
            cmd = redis::Cmd::new();
            for a in args {
                cmd.arg(a);
            }
            tokio::spawn(async move {
                barrier.wait().await;
                cmd.query_async::<Value>(&mut con).await.expect("reply")
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn word(v: &Value) -> String {
    match v {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("no status word: {other:?}"),
        },
        other => panic!("not an array: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_race_one_idempotency_key() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let conns = connections(&srv, 50).await;
    let mut cmd = redis::cmd("IDEM.BEGIN");
    cmd.arg("charge:99").arg("LEASE").arg(60_000);
    let replies = race(conns, cmd).await;
    let started = replies.iter().filter(|r| word(r) == "started").count();
    let running = replies.iter().filter(|r| word(r) == "running").count();
    assert_eq!(started, 1, "{replies:?}");
    assert_eq!(running, 49, "{replies:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bookers_race_for_the_same_slots() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let conns = connections(&srv, 20).await;
    let mut cmd = redis::cmd("SLOTS.RESERVE");
    cmd.arg("room:17:2026-12-01").arg(18).arg(21).arg("guest-{i}").arg("SIZE").arg(48);
    let replies = race(conns, cmd).await;
    let reserved: Vec<_> = replies.iter().filter(|r| word(r) == "reserved").collect();
    assert_eq!(reserved.len(), 1, "{replies:?}");
    assert!(replies.iter().all(|r| matches!(word(r).as_str(), "reserved" | "conflict")), "{replies:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_decrements_against_ten_in_stock() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut conns = connections(&srv, 40).await;
    let first: Value = redis::cmd("COUNTER.ADD").arg("stock:sku1").arg(10).query_async(&mut conns[0]).await.unwrap();
    assert_eq!(word(&first), "ok");
    let mut cmd = redis::cmd("COUNTER.ADD");
    cmd.arg("stock:sku1").arg(-1).arg("MIN").arg(0);
    let replies = race(conns, cmd).await;
    let mut ok = 0;
    for r in &replies {
        let Value::Array(items) = r else { panic!("{r:?}") };
        let Value::Int(v) = items[1] else { panic!("{r:?}") };
        assert!(v >= 0, "the counter went below 0: {r:?}");
        match word(r).as_str() {
            "ok" => ok += 1,
            "refused" => assert_eq!(v, 0, "refused only at the floor: {r:?}"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 10, "{replies:?}");
    let mut con = connections(&srv, 1).await.pop().unwrap();
    let left: i64 = redis::cmd("COUNTER.GET").arg("stock:sku1").query_async(&mut con).await.unwrap();
    assert_eq!(left, 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_connections() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let n = 2000;
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (addr, barrier) = (srv.addr, barrier.clone());
            tokio::spawn(async move {
                let mut c = common::Raw::connect(addr).await;
                barrier.wait().await;
                let key = format!("conn:{i}");
                let r = c.cmd(&["CLAIM", &key, "me"]).await;
                assert_eq!(r, common::V::Array(vec![common::V::bulk("claimed")]));
                assert_eq!(c.cmd(&["PING"]).await, common::V::Simple("PONG".into()));
                c
            })
        })
        .collect();
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    let mut c = common::Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["DBSIZE"]).await, common::V::Int(n as i64));
    drop(conns);
    srv.stop().await;
}

/// Clients spread over `event_loops` loops (0: the caller's runtime) on a
/// durable store: every command is answered, and after a restart the store
/// holds exactly the claims that were acknowledged.
async fn durable_claims_survive_a_restart(event_loops: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store_config = || idem_store::StoreConfig {
        data_dir: Some(dir.path().to_path_buf()),
        fsync: idem_store::FsyncMode::Always,
        ..Default::default()
    };
    let (clients, per_client) = (24, 40);
    {
        let store = idem_store::Store::open(store_config()).expect("open store");
        let srv = TestServer::start(ServerConfig { event_loops, ..Default::default() }, store).await;
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let addr = srv.addr;
                tokio::spawn(async move {
                    let mut raw = common::Raw::connect(addr).await;
                    // Half one at a time, half in one pipeline.
                    for i in 0..per_client / 2 {
                        let key = format!("c{c}:{i}");
                        assert_eq!(
                            raw.cmd(&["CLAIM", &key, "me"]).await,
                            common::V::Array(vec![common::V::bulk("claimed")])
                        );
                    }
                    let mut pipeline = Vec::new();
                    for i in per_client / 2..per_client {
                        pipeline.extend(common::encode_cmd(&[b"CLAIM", format!("c{c}:{i}").as_bytes(), b"me"]));
                    }
                    raw.send(&pipeline).await;
                    for _ in per_client / 2..per_client {
                        assert_eq!(raw.read().await, Some(common::V::Array(vec![common::V::bulk("claimed")])));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        srv.stop().await;
    }
    let store = idem_store::Store::open(store_config()).expect("reopen store");
    let srv = TestServer::start(ServerConfig { event_loops, ..Default::default() }, store).await;
    let mut c = common::Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["DBSIZE"]).await, common::V::Int(clients * per_client));
    assert_eq!(c.cmd(&["CLAIM", "c3:7", "other"]).await.as_array()[0], common::V::bulk("held"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_claims_on_three_event_loops_survive_a_restart() {
    durable_claims_survive_a_restart(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_claims_on_the_callers_runtime_survive_a_restart() {
    durable_claims_survive_a_restart(0).await;
}
