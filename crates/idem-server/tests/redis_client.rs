//! The `redis` crate (redis-rs) drives idem through its generic command
//! call, against the embedded store: reply shapes, error codes, pipelining,
//! RESP3, AUTH.

mod common;

use common::TestServer;
use idem_server::ServerConfig;
use redis::aio::MultiplexedConnection;
use redis::Value;

async fn connect(srv: &TestServer, query: &str) -> MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{}/{query}", srv.addr)).expect("client");
    client.get_multiplexed_async_connection().await.expect("connect")
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_round_trip_shapes() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut con = connect(&srv, "").await;

    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");

    let v: Value = redis::cmd("IDEM.BEGIN").arg("order:1").arg("LEASE").arg(5000).query_async(&mut con).await.unwrap();
    let Value::Array(items) = &v else { panic!("{v:?}") };
    assert_eq!(items[0], bulk("started"), "{v:?}");
    let Value::Int(fence) = items[1] else { panic!("{v:?}") };
    assert_eq!(items[2], Value::Int(1), "first attempt");

    // Typed, as an application would read it.
    let (word, f2, left): (String, u64, i64) =
        redis::cmd("IDEM.BEGIN").arg("order:1").query_async(&mut con).await.unwrap();
    assert_eq!((word.as_str(), f2), ("running", fence as u64));
    assert!(left > 0);

    let ok: Vec<String> =
        redis::cmd("IDEM.COMMIT").arg("order:1").arg(fence).arg("receipt-7").query_async(&mut con).await.unwrap();
    assert_eq!(ok, vec!["ok"]);
    let done: (String, String) = redis::cmd("IDEM.BEGIN").arg("order:1").query_async(&mut con).await.unwrap();
    assert_eq!(done, ("done".into(), "receipt-7".into()));
    let got: Value = redis::cmd("IDEM.GET").arg("order:1").query_async(&mut con).await.unwrap();
    assert_eq!(got, Value::Array(vec![bulk("done"), bulk("receipt-7")]));
    let absent: Value = redis::cmd("IDEM.GET").arg("nope").query_async(&mut con).await.unwrap();
    assert_eq!(absent, Value::Array(vec![bulk("absent")]));
    let deleted: i64 = redis::cmd("IDEM.DEL").arg("order:1").query_async(&mut con).await.unwrap();
    assert_eq!(deleted, 1);

    let owner: Value = redis::cmd("OWNER").arg("email:a@b").query_async(&mut con).await.unwrap();
    assert_eq!(owner, Value::Nil);
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert!(n >= 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_carry_their_code() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut con = connect(&srv, "").await;
    let v: Value = redis::cmd("IDEM.BEGIN").arg("k").query_async(&mut con).await.unwrap();
    let Value::Array(items) = v else { panic!() };
    let Value::Int(fence) = items[1] else { panic!() };

    let e =
        redis::cmd("IDEM.COMMIT").arg("k").arg(fence + 1000).arg("r").query_async::<Value>(&mut con).await.unwrap_err();
    assert_eq!(e.code(), Some("STALE"), "{e:?}");
    let e = redis::cmd("IDEM.BEGIN").arg("fp").arg("FP").arg("a").query_async::<Value>(&mut con).await.unwrap();
    let _ = e;
    let e = redis::cmd("IDEM.BEGIN").arg("fp").arg("FP").arg("b").query_async::<Value>(&mut con).await.unwrap_err();
    assert_eq!(e.code(), Some("MISMATCH"), "{e:?}");
    let e =
        redis::cmd("IDEM.BEGIN").arg("k").arg("LEASE").arg("soon").query_async::<Value>(&mut con).await.unwrap_err();
    assert_eq!(e.code(), Some("ERR"), "{e:?}");
    let e = redis::cmd("NOSUCH").query_async::<Value>(&mut con).await.unwrap_err();
    assert_eq!(e.code(), Some("ERR"), "{e:?}");
    let e = redis::cmd("VALUE.SET")
        .arg("k")
        .arg(vec![0u8; 1024 * 1024 + 1])
        .query_async::<Value>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("LIMIT"), "{e:?}");
    // A value of exactly value_bytes_max round-trips.
    let max = vec![7u8; 1024 * 1024];
    let set: Value = redis::cmd("VALUE.SET").arg("big").arg(&max[..]).query_async(&mut con).await.unwrap();
    assert_eq!(set, Value::Array(vec![bulk("ok"), Value::Int(1)]));
    let (got, version): (Vec<u8>, i64) = redis::cmd("VALUE.GET").arg("big").query_async(&mut con).await.unwrap();
    assert_eq!((got == max, version), (true, 1));
    // The connection survives every error.
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut con = connect(&srv, "").await;
    let replies: Vec<Value> = redis::pipe()
        .cmd("COUNTER.ADD")
        .arg("stock")
        .arg(5)
        .cmd("PING")
        .cmd("COUNTER.ADD")
        .arg("stock")
        .arg(-2)
        .arg("MIN")
        .arg(0)
        .cmd("COUNTER.ADD")
        .arg("stock")
        .arg(-9)
        .arg("MIN")
        .arg(0)
        .cmd("COUNTER.GET")
        .arg("stock")
        .cmd("VALUE.SET")
        .arg("cfg")
        .arg("v1")
        .arg("IFVERSION")
        .arg(0)
        .cmd("VALUE.GET")
        .arg("cfg")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        replies,
        vec![
            Value::Array(vec![bulk("ok"), Value::Int(5)]),
            Value::SimpleString("PONG".into()),
            Value::Array(vec![bulk("ok"), Value::Int(3)]),
            Value::Array(vec![bulk("refused"), Value::Int(3)]),
            Value::Int(3),
            Value::Array(vec![bulk("ok"), Value::Int(1)]),
            Value::Array(vec![bulk("v1"), Value::Int(1)]),
        ]
    );
    // A pipeline with an error in the middle: the client reports it, and
    // the commands around it still ran.
    let r: redis::RedisResult<Vec<Value>> = redis::pipe()
        .cmd("FSM.MOVE")
        .arg("o")
        .arg("paid")
        .arg("FROM")
        .arg("none")
        .cmd("IDEM.ABORT")
        .arg("missing")
        .arg(12345)
        .cmd("FSM.MOVE")
        .arg("o")
        .arg("shipped")
        .arg("FROM")
        .arg("paid")
        .query_async(&mut con)
        .await;
    assert_eq!(r.unwrap_err().code(), Some("STALE"));
    let state: String = redis::cmd("FSM.GET").arg("o").query_async(&mut con).await.unwrap();
    assert_eq!(state, "shipped");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_connection() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut con = connect(&srv, "?protocol=resp3").await;
    let v: Value = redis::cmd("IDEM.BEGIN").arg("r3").query_async(&mut con).await.unwrap();
    let Value::Array(items) = &v else { panic!("arrays stay arrays in RESP3: {v:?}") };
    assert_eq!(items[0], bulk("started"));
    let owner: Value = redis::cmd("OWNER").arg("nobody").query_async(&mut con).await.unwrap();
    assert_eq!(owner, Value::Nil);
    let hello: Value = redis::cmd("HELLO").arg(3).query_async(&mut con).await.unwrap();
    let Value::Map(pairs) = hello else { panic!("HELLO 3 is a map: {hello:?}") };
    assert!(pairs.contains(&(bulk("server"), bulk("idem"))));
    let slots: Value = redis::cmd("SLOTS.GET").arg("room").query_async(&mut con).await.unwrap();
    assert!(matches!(slots, Value::Array(_) | Value::Nil), "{slots:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_via_url() {
    let config = ServerConfig { password: Some("hunter2".into()), ..ServerConfig::default() };
    let srv = TestServer::with_store(config).await;
    let mut con = connect(&srv, "").await;
    let e = redis::cmd("IDEM.GET").arg("k").query_async::<Value>(&mut con).await.unwrap_err();
    assert_eq!(e.code(), Some("NOAUTH"), "{e:?}");
    let client = redis::Client::open(format!("redis://:hunter2@{}/", srv.addr)).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.expect("authenticated connect");
    let v: Value = redis::cmd("IDEM.GET").arg("k").query_async(&mut con).await.unwrap();
    assert_eq!(v, Value::Array(vec![bulk("absent")]));
    let client = redis::Client::open(format!("redis://:wrong@{}/", srv.addr)).unwrap();
    assert!(client.get_multiplexed_async_connection().await.is_err());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_wait_is_answered_when_the_attempt_ends() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut worker = connect(&srv, "").await;
    let mut waiter = connect(&srv, "").await;
    let v: Value = redis::cmd("IDEM.BEGIN").arg("w").arg("LEASE").arg(60_000).query_async(&mut worker).await.unwrap();
    let Value::Array(items) = v else { panic!() };
    let Value::Int(fence) = items[1] else { panic!() };
    let parked = tokio::spawn(async move {
        redis::cmd("IDEM.BEGIN").arg("w").arg("WAIT").arg(60_000).query_async::<Value>(&mut waiter).await.unwrap()
    });
    // Give the waiter a moment to park. Not a timing assertion: if it
    // arrives after the commit instead, the reply is the same `done`.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let ok: Vec<String> =
        redis::cmd("IDEM.COMMIT").arg("w").arg(fence).arg("R").query_async(&mut worker).await.unwrap();
    assert_eq!(ok, vec!["ok"]);
    let got = tokio::time::timeout(common::PATIENCE, parked).await.expect("waiter answered").unwrap();
    assert_eq!(got, Value::Array(vec![bulk("done"), bulk("R")]));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_a_wait_does_not_block_the_server() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut holder = connect(&srv, "").await;
    let v: Value =
        redis::cmd("LOCK").arg("l").arg("a").arg("LEASE").arg(60_000).query_async(&mut holder).await.unwrap();
    assert_eq!(v, Value::Array(vec![bulk("acquired"), v.as_sequence().unwrap()[1].clone()]));
    // A raw client parks on the lock, then disconnects.
    let mut gone = common::Raw::connect(srv.addr).await;
    gone.send(&common::encode_cmd(&[b"LOCK", b"l", b"b", b"LEASE", b"1000", b"WAIT", b"60000"])).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(gone);
    // The server keeps serving, and the lock still works for others.
    let pong: String = redis::cmd("PING").query_async(&mut holder).await.unwrap();
    assert_eq!(pong, "PONG");
    let n: i64 = redis::cmd("UNLOCK").arg("l").arg("a").query_async(&mut holder).await.unwrap();
    assert_eq!(n, 1);
    // The departed waiter was dropped with its connection: the lock is
    // free, not handed to nobody for a lease.
    let info: Value = redis::cmd("LOCK.INFO").arg("l").query_async(&mut holder).await.unwrap();
    assert_eq!(info, Value::Array(vec![bulk("free")]));
    let mut next = connect(&srv, "").await;
    let v: Value = redis::cmd("LOCK")
        .arg("l")
        .arg("c")
        .arg("LEASE")
        .arg(1000)
        .arg("WAIT")
        .arg(30_000)
        .query_async(&mut next)
        .await
        .unwrap();
    let Value::Array(items) = v else { panic!() };
    assert_eq!(items[0], bulk("acquired"), "the departed waiter does not keep the lock");
    srv.stop().await;
}
