//! Two `idem serve --store URL` processes share one external store: clients
//! racing through both servers see one contract, as if there were one server.
//! Runs against the machine's real PostgreSQL, MariaDB and Redis.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

/// A child `idem serve` killed when the test ends, even on panic.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(store: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["serve", "--port", &port.to_string(), "--http-port", "0", "--log", "warn", "--store", store])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn idem");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) {
            if let Ok(mut con) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return server;
                }
            }
        }
        assert!(Instant::now() < deadline, "idem serve --store {store} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn word(v: &Value) -> String {
    match v {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            other => panic!("no status word: {other:?}"),
        },
        other => panic!("not an array: {other:?}"),
    }
}

async fn race_through_two_processes(store: &str) {
    let a = start(store);
    let b = start(store);
    let prefix = format!("two-proc:{}:{}", std::process::id(), rand_suffix());
    let key = format!("{prefix}:begin");
    let counter = format!("{prefix}:stock");

    let mut tasks = Vec::new();
    for i in 0..40 {
        let port = if i % 2 == 0 { a.port } else { b.port };
        let (key, counter) = (key.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let begin: Value =
                redis::cmd("IDEM.BEGIN").arg(&key).arg("LEASE").arg(60_000).query_async(&mut con).await.unwrap();
            let take: Value = redis::cmd("COUNTER.ADD")
                .arg(&counter)
                .arg(-1)
                .arg("MIN")
                .arg(-10)
                .query_async(&mut con)
                .await
                .unwrap();
            (word(&begin), word(&take))
        }));
    }
    let mut started = 0;
    let mut taken = 0;
    for t in tasks {
        let (begin, take) = t.await.unwrap();
        match begin.as_str() {
            "started" => started += 1,
            "running" => {}
            other => panic!("unexpected IDEM.BEGIN reply {other}"),
        }
        match take.as_str() {
            "ok" => taken += 1,
            "refused" => {}
            other => panic!("unexpected COUNTER.ADD reply {other}"),
        }
    }
    assert_eq!(started, 1, "one started across both servers on {store}");
    assert_eq!(taken, 10, "exactly 10 of 40 deductions fit above MIN -10 on {store}");

    // What one server committed, the other replays.
    let mut con_a = redis::Client::open(format!("redis://127.0.0.1:{}", a.port)).unwrap().get_connection().unwrap();
    let mut con_b = redis::Client::open(format!("redis://127.0.0.1:{}", b.port)).unwrap().get_connection().unwrap();
    let fresh = format!("{prefix}:replay");
    let begun: Value = redis::cmd("IDEM.BEGIN").arg(&fresh).query(&mut con_a).unwrap();
    let Value::Array(items) = &begun else { panic!("{begun:?}") };
    let Value::Int(fence) = items[1] else { panic!("{begun:?}") };
    let ok: Value = redis::cmd("IDEM.COMMIT").arg(&fresh).arg(fence).arg("receipt-7").query(&mut con_a).unwrap();
    assert_eq!(word(&ok), "ok");
    let replay: Value = redis::cmd("IDEM.BEGIN").arg(&fresh).query(&mut con_b).unwrap();
    assert_eq!(
        replay,
        Value::Array(vec![Value::BulkString(b"done".to_vec()), Value::BulkString(b"receipt-7".to_vec())])
    );
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_postgres() {
    race_through_two_processes("postgres://postgres@127.0.0.1:5432/test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_mariadb() {
    race_through_two_processes("mysql://root@127.0.0.1:3306/test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_redis() {
    race_through_two_processes("redis://127.0.0.1:6379").await;
}
