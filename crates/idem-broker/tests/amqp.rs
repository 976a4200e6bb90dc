//! The adapter and the PostgreSQL inbox on a real RabbitMQ (127.0.0.1:5672),
//! one uniquely named queue (and its dead-letter and delay queues) per test,
//! deleted at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use idem_broker::amqp::{consume, declare_queue, delete_queue};
use idem_broker::{Adapter, Failure, KeySource, Message, PgHandler, PostgresInbox, Settings, Stats, StatsSnapshot};
use idem_client::testing::TestServer;
use idem_client::{BeginOptions, Client, Config};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use parking_lot::Mutex;
use tokio::sync::oneshot;

const TIERS_MS: [u64; 2] = [100, 1_000];

struct Rabbit {
    conn: Connection,
    ch: lapin::Channel,
    queue: String,
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

impl Rabbit {
    async fn new(test: &str) -> Rabbit {
        let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", ConnectionProperties::default())
            .await
            .expect("RabbitMQ at :5672");
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let queue = format!("ib_{test}_{}_{:08x}", std::process::id(), rand_u32());
        declare_queue(&ch, &queue).await.unwrap();
        Rabbit { conn, ch, queue }
    }

    async fn publish(&self, message_id: Option<&str>, body: &str) {
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        let confirm =
            self.ch.basic_publish("", &self.queue, BasicPublishOptions::default(), body.as_bytes(), props).await;
        confirm.unwrap().await.unwrap();
    }

    async fn dead_letters(&self) -> u32 {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = self.ch.queue_declare(&format!("{}.dlq", self.queue), passive, FieldTable::default()).await.unwrap();
        q.message_count()
    }

    async fn consume_until<P: idem_broker::Process>(
        &self,
        settings: Settings,
        process: Arc<P>,
        until: impl Fn(&StatsSnapshot) -> bool + Send + 'static,
    ) -> StatsSnapshot {
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
        let snap = consume(&self.conn, &self.queue, &TIERS_MS, settings, process, stats, shutdown).await.unwrap();
        watcher.await.unwrap();
        snap
    }

    async fn delete(self) {
        delete_queue(&self.ch, &self.queue, &TIERS_MS).await.unwrap();
        self.conn.close(200, "done").await.unwrap();
    }
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
                _ => Ok(Bytes::from(format!("done {key}"))),
            }
        })
    }
}

#[tokio::test]
async fn duplicates_run_once_and_retries_go_through_the_delay_queue_to_the_dlx() {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    let rabbit = Rabbit::new("dups").await;
    for (k, body) in [(Some("a"), "1"), (Some("a"), "1 again"), (Some("b"), "2"), (Some("poison"), "3"), (None, "x")] {
        rabbit.publish(k, body).await;
    }
    let calls: Calls = Arc::default();
    let settings = Settings::new("orders", KeySource::amqp_message_id()).deliveries_max(3).backoff_ms(20, 100);
    let snap = rabbit
        .consume_until(settings, Adapter::new(client, counting_handler(calls.clone())), |s| {
            s.applied == 2 && s.duplicates == 1 && s.dead_lettered == 2
        })
        .await;
    assert_eq!((snap.applied, snap.duplicates, snap.dead_lettered, snap.retried), (2, 1, 2, 2), "{snap:?}");
    let calls = calls.lock().clone();
    assert_eq!((calls.get("a"), calls.get("b")), (Some(&1), Some(&1)));
    assert_eq!(calls.get("poison"), Some(&3), "three deliveries, two of them through the delay queue");
    // Rejected messages reach the DLQ through the dead-letter exchange.
    let mut dead = 0;
    for _ in 0..20 {
        dead = rabbit.dead_letters().await;
        if dead == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 2);
    rabbit.delete().await;
}

#[tokio::test]
async fn a_key_in_flight_elsewhere_is_delayed_until_its_lease_ends() {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    let rabbit = Rabbit::new("busy").await;
    client.begin("orders:x", &BeginOptions::new().lease_ms(500)).await.unwrap();
    rabbit.publish(Some("x"), "1").await;
    let calls: Calls = Arc::default();
    let settings = Settings::new("orders", KeySource::amqp_message_id());
    let snap =
        rabbit.consume_until(settings, Adapter::new(client, counting_handler(calls.clone())), |s| s.applied == 1).await;
    assert!(snap.busy >= 1, "{snap:?}");
    assert_eq!(calls.lock().get("x"), Some(&1));
    rabbit.delete().await;
}

struct InsertRow {
    table: String,
}

impl PgHandler for InsertRow {
    fn handle<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Bytes, Failure>> {
        Box::pin(async move {
            let key = String::from_utf8_lossy(msg.key()).into_owned();
            tx.execute(&format!("INSERT INTO {} (k) VALUES ($1)", self.table), &[&key])
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            if key == "poison" {
                return Err(Failure::Permanent("fails after writing".into()));
            }
            Ok(Bytes::from_static(b"ok"))
        })
    }
}

#[tokio::test]
async fn postgres_inbox_with_a_json_key_writes_each_effect_once() {
    let pg = "postgres://postgres@127.0.0.1:5432/test";
    idem_backends::postgres::migrate(pg).await.unwrap();
    let config: tokio_postgres::Config = pg.parse().unwrap();
    let mgr = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(mgr).max_size(4).build().unwrap();
    let table = format!("ib_inbox_{}_{:08x}", std::process::id(), rand_u32());
    pool.get().await.unwrap().batch_execute(&format!("CREATE TABLE {table} (k text NOT NULL)")).await.unwrap();
    let rabbit = Rabbit::new("pginbox").await;
    for k in ["a", "a", "b", "poison", "b"] {
        rabbit.publish(None, &format!(r#"{{"order":{{"id":"{k}"}}}}"#)).await;
    }
    let settings = Settings::new(table.clone(), KeySource::JsonField("/order/id".into()));
    let inbox = PostgresInbox::new(pool.clone(), InsertRow { table: table.clone() });
    let snap =
        rabbit.consume_until(settings, inbox, |s| s.applied == 2 && s.duplicates == 2 && s.dead_lettered == 1).await;
    assert_eq!((snap.applied, snap.duplicates, snap.dead_lettered), (2, 2, 1), "{snap:?}");
    let conn = pool.get().await.unwrap();
    let rows = conn.query(&format!("SELECT k, count(*) FROM {table} GROUP BY k ORDER BY k"), &[]).await.unwrap();
    let rows: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
    conn.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
    rabbit.delete().await;
}
