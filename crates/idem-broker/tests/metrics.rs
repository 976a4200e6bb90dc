//! The consumer's metrics (`idem_metrics::broker`): a message published
//! twice through the adapter on a real NATS JetStream (127.0.0.1:4222) moves
//! `idem_broker_duplicates_absorbed_total` by one and counts one processed
//! and one duplicate message. The recorder is this file's own (the global
//! one, so this binary holds a single test).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use idem_broker::{Adapter, Failure, KeySource, Message, Settings, Stats};
use idem_client::testing::TestServer;
use idem_client::{Client, Config};
use idem_metrics::broker as names;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Counters by their name and sorted labels; histograms count their samples.
#[derive(Default)]
struct Recorded {
    series: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

fn series_id(key: &Key) -> String {
    let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorded {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        self.series.lock().entry(series_id(key)).or_default().clone()
    }
    fn get(&self, id: &str) -> u64 {
        self.series.lock().get(id).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

struct SampleCount(Arc<AtomicU64>);

impl metrics::HistogramFn for SampleCount {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

struct TestRecorder(&'static Recorded);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.cell(key))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(SampleCount(self.0.cell(key))))
    }
}

fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<&'static Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let r: &'static Recorded = Box::leak(Box::default());
        metrics::set_global_recorder(TestRecorder(r)).expect("the only recorder of this test binary");
        r
    })
}

#[tokio::test]
async fn a_duplicate_through_the_adapter_moves_the_duplicates_counter() {
    let rec = recorded();
    let server = TestServer::start().await;
    let js = jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS at :4222"));
    let name = format!("ib_metrics_{}", std::process::id());
    let _ = js.delete_stream(&name).await;
    let s = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.work"), format!("{name}.dlq")],
            ..Default::default()
        })
        .await
        .expect("create stream");
    let consumer = s
        .create_consumer(pull::Config {
            durable_name: Some("c".into()),
            filter_subject: format!("{name}.work"),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    // The same order twice, without Nats-Msg-Id: JetStream stores both, as
    // it does for a duplicate from upstream.
    for _ in 0..2 {
        js.publish(format!("{name}.work"), Bytes::from_static(br#"{"id":"o-1"}"#)).await.unwrap().await.unwrap();
    }

    let runs = Arc::new(AtomicU64::new(0));
    let handler = {
        let runs = runs.clone();
        move |_m: Message| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Failure>(Bytes::from_static(b"ok"))
            }
        }
    };
    let client = Client::connect(Config::new(server.url())).await.unwrap();
    // One handler. The second delivery is claimed on arrival, which may be
    // while the first still runs: it is then `busy` and redelivered after at
    // most the longest backoff, here 200 ms (the default would wait out the
    // lease, past the watcher's 10 s). Either way it ends as a duplicate
    // whose record is done, and the handler runs once.
    let settings =
        Settings::new("metrics", KeySource::JsonField("/id".into())).concurrency(1).prefetch(1).backoff_ms(200, 200);
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let watched = stats.clone();
    let watcher = tokio::spawn(async move {
        for _ in 0..400 {
            let s = watched.snapshot();
            if s.applied + s.duplicates >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = stop_tx.send(());
    });
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    let snap = idem_broker::jetstream::consume(
        js.clone(),
        consumer,
        format!("{name}.dlq"),
        settings,
        Adapter::new(client, handler),
        stats,
        shutdown,
    )
    .await
    .unwrap();
    watcher.await.unwrap();
    js.delete_stream(&name).await.unwrap();
    server.stop().await;

    assert_eq!((snap.applied, snap.duplicates), (1, 1), "{snap:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let nats = names::brokers::NATS;
    assert_eq!(rec.get(&format!("{}{{broker={nats}}}", names::DUPLICATES_ABSORBED_TOTAL)), 1);
    let messages = |o: &str| rec.get(&format!("{}{{broker={nats},outcome={o}}}", names::MESSAGES_TOTAL));
    assert_eq!(messages(names::outcome::PROCESSED), 1);
    assert_eq!(messages(names::outcome::DUPLICATE), 1);
    assert_eq!(messages(names::outcome::FAILED), 0);
    let samples = |o: &str| rec.get(&format!("{}{{broker={nats},outcome={o}}}", names::HANDLE_SECONDS));
    assert_eq!(samples(names::outcome::PROCESSED) + samples(names::outcome::DUPLICATE), 2);
}
