//! The adapter (records on an idem server, or on the embedded store in this
//! process) and the MySQL inbox on a real NATS JetStream (127.0.0.1:4222),
//! one uniquely named stream per test, deleted at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use idem_broker::jetstream::{consume, DEAD_LETTER_REASON_HEADER};
use idem_broker::{Adapter, Failure, KeySource, Message, MysqlHandler, MysqlInbox, PipelineLimits, Settings, Stats};
use idem_client::testing::TestServer;
use idem_client::{BeginOptions, Client, Config, IdemState};
use idem_core::{Backend, Command, Reply};
use mysql_async::prelude::Queryable;
use parking_lot::Mutex;
use tokio::sync::oneshot;

struct Js {
    js: jetstream::Context,
    name: String,
}

impl Js {
    async fn new(test: &str) -> Js {
        let js = jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS at :4222"));
        let name = format!("ib_{test}_{}_{:08x}", std::process::id(), rand_u32());
        let s = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.work"), format!("{name}.dlq")],
                ..Default::default()
            })
            .await
            .expect("create stream");
        s.create_consumer(pull::Config {
            durable_name: Some("c".into()),
            filter_subject: format!("{name}.work"),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(2),
            max_deliver: 50,
            ..Default::default()
        })
        .await
        .expect("create consumer");
        Js { js, name }
    }

    async fn publish(&self, key: Option<&str>, body: &str) {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert("Order-Id", k);
        }
        let subject = format!("{}.work", self.name);
        self.js.publish_with_headers(subject, h, Bytes::from(body.to_string())).await.unwrap().await.unwrap();
    }

    async fn consumer(&self) -> jetstream::consumer::Consumer<pull::Config> {
        self.js.get_stream(&self.name).await.unwrap().get_consumer("c").await.unwrap()
    }

    /// The dead letters' reasons.
    async fn dead_letters(&self) -> Vec<String> {
        let s = self.js.get_stream(&self.name).await.unwrap();
        let c = s
            .create_consumer(pull::Config {
                filter_subject: format!("{}.dlq", self.name),
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = c.fetch().max_messages(100).expires(Duration::from_millis(500)).messages().await.unwrap();
        let mut out = Vec::new();
        while let Some(Ok(m)) = msgs.next().await {
            let reason = m.headers.as_ref().and_then(|h| h.get(DEAD_LETTER_REASON_HEADER)).map(|v| v.to_string());
            out.push(reason.unwrap_or_default());
        }
        out
    }

    async fn delete(self) {
        self.js.delete_stream(&self.name).await.unwrap();
    }
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// Runs `consume` until `until` holds for the stats (or 20 s pass), then
/// shuts it down.
async fn consume_until<P: idem_broker::Process>(
    js: &Js,
    settings: Settings,
    process: Arc<P>,
    until: impl Fn(&idem_broker::StatsSnapshot) -> bool + Send + 'static,
) -> idem_broker::StatsSnapshot {
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let watched = stats.clone();
    let watcher = tokio::spawn(async move {
        for _ in 0..400 {
            if until(&watched.snapshot()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(());
    });
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    let dlq = format!("{}.dlq", js.name);
    let snap = consume(js.js.clone(), js.consumer().await, dlq, settings, process, stats, shutdown).await.unwrap();
    watcher.await.unwrap();
    snap
}

type Calls = Arc<Mutex<HashMap<String, u32>>>;

fn counting_handler(calls: Calls) -> impl Fn(Message) -> BoxFuture<'static, Result<Bytes, Failure>> + Send + Sync {
    move |m: Message| {
        let calls = calls.clone();
        Box::pin(async move {
            let key = String::from_utf8_lossy(m.key()).into_owned();
            *calls.lock().entry(key.clone()).or_default() += 1;
            match key.as_str() {
                "poison" => Err(Failure::Retry("always fails".into())),
                "fatal" => Err(Failure::Permanent("malformed order".into())),
                _ => Ok(Bytes::from(format!("done {key}"))),
            }
        })
    }
}

#[tokio::test]
async fn duplicates_run_once_and_failures_end_in_the_dead_letter_queue() {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    let js = Js::new("dups").await;
    for (k, body) in [(Some("a"), "1"), (Some("a"), "1 again"), (Some("b"), "2"), (Some("poison"), "3")] {
        js.publish(k, body).await;
    }
    js.publish(Some("fatal"), "4").await;
    js.publish(None, "no key").await;
    let calls: Calls = Arc::default();
    let settings = Settings::new("orders", KeySource::Header("Order-Id".into())).deliveries_max(2).backoff_ms(20, 100);
    let snap = consume_until(&js, settings, Adapter::new(client.clone(), counting_handler(calls.clone())), |s| {
        s.applied == 2 && s.duplicates == 1 && s.dead_lettered == 3
    })
    .await;
    assert_eq!((snap.applied, snap.duplicates, snap.dead_lettered), (2, 1, 3), "{snap:?}");
    let calls = calls.lock().clone();
    assert_eq!(calls.get("a"), Some(&1));
    assert_eq!(calls.get("b"), Some(&1));
    assert_eq!(calls.get("poison"), Some(&2), "retried up to the delivery limit");
    assert_eq!(calls.get("fatal"), Some(&1), "a permanent failure is not retried");
    let mut reasons = js.dead_letters().await;
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("malformed order")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("Order-Id")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("2 deliveries")), "{reasons:?}");
    // The results are on the server, and a failed key's record was aborted.
    assert_eq!(client.idem_get("orders:a").await.unwrap(), IdemState::Done(Bytes::from("done a")));
    assert_eq!(client.idem_get("orders:poison").await.unwrap(), IdemState::Absent);
    js.delete().await;
}

#[tokio::test]
async fn a_key_in_flight_elsewhere_is_redelivered_after_its_lease() {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    let js = Js::new("busy").await;
    // Another consumer holds the key, then dies: its lease runs out.
    client.begin("orders:x", &BeginOptions::new().lease_ms(600)).await.unwrap();
    js.publish(Some("x"), "1").await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let handler = move |m: Message| {
        seen.lock().push(m.attempt());
        Box::pin(async { Ok(Bytes::new()) }) as BoxFuture<'static, Result<Bytes, Failure>>
    };
    let settings = Settings::new("orders", KeySource::Header("Order-Id".into()));
    let snap = consume_until(&js, settings, Adapter::new(client, handler), |s| s.applied == 1).await;
    assert!(snap.busy >= 1, "{snap:?}");
    assert_eq!(*attempts.lock(), vec![2], "ran once, as the second attempt");
    js.delete().await;
}

#[tokio::test]
async fn a_handler_longer_than_its_lease_keeps_the_claim() {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    let js = Js::new("renew").await;
    js.publish(Some("long"), "1").await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let probe = client.clone();
    let handler = move |m: Message| {
        seen.lock().push(m.attempt());
        let probe = probe.clone();
        Box::pin(async move {
            // Four leases long; meanwhile a duplicate still finds it running.
            tokio::time::sleep(Duration::from_millis(900)).await;
            let again = probe.begin("orders:long", &BeginOptions::new()).await.unwrap();
            assert!(matches!(again, idem_client::Begin::Running { .. }), "{again:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Bytes::new())
        }) as BoxFuture<'static, Result<Bytes, Failure>>
    };
    let settings = Settings::new("orders", KeySource::Header("Order-Id".into())).lease_ms(300);
    let snap = consume_until(&js, settings, Adapter::new(client, handler), |s| s.applied == 1).await;
    assert_eq!((snap.applied, snap.retried), (1, 0), "{snap:?}");
    assert_eq!(*attempts.lock(), vec![1], "one run, never taken over");
    js.delete().await;
}

/// A fresh embedded durable store (fsync before every reply) in a
/// temporary directory, as a consumer process would open it.
fn open_store(dir: &std::path::Path) -> Arc<idem_store::Store> {
    idem_store::Store::open(idem_store::StoreConfig { data_dir: Some(dir.to_path_buf()), ..Default::default() })
        .expect("open the embedded store")
}

/// `IDEM.GET key` on `store`, as its reply words.
async fn idem_get(store: &idem_store::Store, key: &str) -> Reply {
    store.execute(Command::IdemGet { key: Bytes::from(key.to_string()) }).await.unwrap()
}

#[tokio::test]
async fn on_the_embedded_store_duplicates_run_once_and_acked_records_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("ib_embedded_{}_{:08x}", std::process::id(), rand_u32()));
    let store = open_store(&dir);
    let js = Js::new("embedded").await;
    for (k, body) in [(Some("a"), "1"), (Some("a"), "1 again"), (Some("b"), "2"), (Some("poison"), "3")] {
        js.publish(k, body).await;
    }
    let calls: Calls = Arc::default();
    let settings = Settings::new("orders", KeySource::Header("Order-Id".into())).deliveries_max(2).backoff_ms(20, 100);
    let adapter = Adapter::over(store.clone(), counting_handler(calls.clone()), PipelineLimits::default());
    let snap =
        consume_until(&js, settings, adapter, |s| s.applied == 2 && s.duplicates == 1 && s.dead_lettered == 1).await;
    assert_eq!((snap.applied, snap.duplicates, snap.dead_lettered), (2, 1, 1), "{snap:?}");
    let calls = calls.lock().clone();
    assert_eq!(calls.get("a"), Some(&1));
    assert_eq!(calls.get("b"), Some(&1));
    assert_eq!(calls.get("poison"), Some(&2), "retried up to the delivery limit");
    js.delete().await;
    // The adapter's pipeline task lets go of the store once the adapter is
    // gone; then the store closes (its log is flushed and unlocked).
    for _ in 0..1_000 {
        if Arc::strong_count(&store) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(Arc::strong_count(&store), 1, "nothing else holds the store");
    drop(store);
    // Every acked message's record was durable before its ack: a process
    // that opens the directory again finds them done, and the failed key's
    // record aborted.
    let store = open_store(&dir);
    let done = |r: &str| Reply::Array(vec![Reply::Word("done"), Reply::Bulk(Bytes::from(r.to_string()))]);
    assert_eq!(idem_get(&store, "orders:a").await, done("done a"));
    assert_eq!(idem_get(&store, "orders:b").await, done("done b"));
    assert_eq!(idem_get(&store, "orders:poison").await, Reply::Array(vec![Reply::Word("absent")]));
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn on_the_embedded_store_a_handler_longer_than_its_lease_keeps_the_claim() {
    let dir = std::env::temp_dir().join(format!("ib_embedded_renew_{}_{:08x}", std::process::id(), rand_u32()));
    let store = open_store(&dir);
    let js = Js::new("embedded_renew").await;
    js.publish(Some("long"), "1").await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let probe = store.clone();
    let handler = move |m: Message| {
        seen.lock().push(m.attempt());
        let probe = probe.clone();
        Box::pin(async move {
            // Four leases long; meanwhile a duplicate still finds it running.
            tokio::time::sleep(Duration::from_millis(900)).await;
            let again = probe
                .execute(Command::IdemBegin { key: "orders:long".into(), fingerprint: None, lease_ms: 300, wait_ms: 0 })
                .await
                .unwrap();
            let again = idem_client::Begin::from_reply(again).unwrap();
            assert!(matches!(again, idem_client::Begin::Running { .. }), "{again:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Bytes::new())
        }) as BoxFuture<'static, Result<Bytes, Failure>>
    };
    let settings = Settings::new("orders", KeySource::Header("Order-Id".into())).lease_ms(300);
    let adapter = Adapter::over(store.clone(), handler, PipelineLimits::default());
    let snap = consume_until(&js, settings, adapter, |s| s.applied == 1).await;
    assert_eq!((snap.applied, snap.retried), (1, 0), "{snap:?}");
    assert_eq!(*attempts.lock(), vec![1], "one run, never taken over");
    js.delete().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn one_order_key_runs_one_message_at_a_time_in_order() {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    let js = Js::new("order").await;
    for i in 0..12 {
        js.publish(Some(&format!("m{i}")), &format!(r#"{{"account":"acc-{}","seq":{i}}}"#, i % 2)).await;
    }
    let running: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let order: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let (r, o) = (running.clone(), order.clone());
    let handler = move |m: Message| {
        let (r, o) = (r.clone(), o.clone());
        Box::pin(async move {
            let v: serde_json::Value = serde_json::from_slice(m.payload()).unwrap();
            let acc = v["account"].as_str().unwrap().to_string();
            let now = {
                let mut g = r.lock();
                let n = g.entry(acc.clone()).or_default();
                *n += 1;
                *n
            };
            assert_eq!(now, 1, "two messages of {acc} at once");
            tokio::time::sleep(Duration::from_millis(15)).await;
            o.lock().push((acc.clone(), v["seq"].as_u64().unwrap()));
            *r.lock().get_mut(&acc).unwrap() -= 1;
            Ok(Bytes::new())
        }) as BoxFuture<'static, Result<Bytes, Failure>>
    };
    let settings = Settings::new("ledger", KeySource::Header("Order-Id".into()))
        .order_key(KeySource::JsonField("/account".into()))
        .concurrency(8);
    let snap = consume_until(&js, settings, Adapter::new(client, handler), |s| s.applied == 12).await;
    assert_eq!(snap.applied, 12);
    for acc in ["acc-0", "acc-1"] {
        let seqs: Vec<u64> = order.lock().iter().filter(|(a, _)| a == acc).map(|(_, s)| *s).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{acc} out of order");
        assert_eq!(seqs.len(), 6);
    }
    js.delete().await;
}

#[tokio::test]
async fn shutdown_releases_a_handler_that_outlives_the_drain() {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    let js = Js::new("drain").await;
    js.publish(Some("slow"), "1").await;
    let started = Arc::new(tokio::sync::Notify::new());
    let s2 = started.clone();
    let handler = move |_m: Message| {
        s2.notify_one();
        Box::pin(futures::future::pending()) as BoxFuture<'static, Result<Bytes, Failure>>
    };
    let settings = Settings::new("orders", KeySource::Header("Order-Id".into())).drain_ms(200);
    let stats = Arc::new(Stats::default());
    let dlq = format!("{}.dlq", js.name);
    let snap = consume(
        js.js.clone(),
        js.consumer().await,
        dlq,
        settings,
        Adapter::new(client.clone(), handler),
        stats,
        async move {
            started.notified().await;
        },
    )
    .await
    .unwrap();
    assert_eq!(snap.released, 1, "{snap:?}");
    // Released: the record was aborted, so the next consumer runs it at once.
    assert_eq!(client.idem_get("orders:slow").await.unwrap(), IdemState::Absent);
    js.delete().await;
}

struct InsertRow {
    table: String,
}

impl MysqlHandler for InsertRow {
    fn handle<'a>(
        &'a self,
        tx: &'a mut mysql_async::Transaction<'static>,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Bytes, Failure>> {
        Box::pin(async move {
            let key = String::from_utf8_lossy(msg.key()).into_owned();
            tx.exec_drop(format!("INSERT INTO {} (k) VALUES (?)", self.table), (key.clone(),))
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            if key == "poison" {
                // The insert above is rolled back with the record.
                return Err(Failure::Retry("fails after writing".into()));
            }
            Ok(Bytes::from_static(b"ok"))
        })
    }
}

#[tokio::test]
async fn mysql_inbox_writes_each_effect_once_and_rolls_back_failures() {
    let url = "mysql://root@127.0.0.1:3306/test";
    idem_backends::mysql::migrate(url).await.unwrap();
    let pool = mysql_async::Pool::new(url);
    let table = format!("ib_inbox_{}_{:08x}", std::process::id(), rand_u32());
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop(format!("CREATE TABLE {table} (k VARCHAR(64) NOT NULL)")).await.unwrap();
    let js = Js::new("myinbox").await;
    for k in ["a", "a", "b", "poison", "a"] {
        js.publish(Some(k), "{}").await;
    }
    let settings =
        Settings::new(table.clone(), KeySource::Header("Order-Id".into())).deliveries_max(2).backoff_ms(20, 100);
    let inbox = MysqlInbox::new(pool.clone(), InsertRow { table: table.clone() });
    let snap =
        consume_until(&js, settings, inbox, |s| s.applied == 2 && s.duplicates == 2 && s.dead_lettered == 1).await;
    assert_eq!((snap.applied, snap.duplicates, snap.dead_lettered), (2, 2, 1), "{snap:?}");
    let rows: Vec<(String, i64)> =
        conn.query(format!("SELECT k, COUNT(*) FROM {table} GROUP BY k ORDER BY k")).await.unwrap();
    assert_eq!(rows, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
    conn.query_drop(format!("DROP TABLE {table}")).await.unwrap();
    drop(conn);
    pool.disconnect().await.unwrap();
    js.delete().await;
}
