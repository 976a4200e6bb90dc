//! The conformance suite against the real Redis at 127.0.0.1:6379 (override
//! with `IDEM_TEST_REDIS_URL`), one test per case. Every case uses its own
//! random key prefix, so runs may share the server with anything else.

use std::sync::Arc;

use idem_conformance::Backend;

fn url() -> String {
    std::env::var("IDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn backend() -> Arc<dyn Backend> {
    let url = url();
    Arc::new(
        idem_backends::redis::RedisBackend::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to {url} (is redis-server running?): {e}")),
    )
}

idem_conformance::conformance_tests!(backend());

/// Two idem servers, each with its own Redis backend on the same Redis,
/// raced by clients of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_one_redis() {
    let report = idem_conformance::servers::run_two_server_races(backend().await, backend().await).await;
    println!("{report}");
    report.assert_ok();
}

/// Redis-specific checks that look at the Redis keys themselves.
mod layout {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use idem_conformance::{err, expect, int_at, ok, text_or_nil, Ctx};
    use idem_core::ErrorCode;
    use redis::aio::MultiplexedConnection;

    async fn raw() -> MultiplexedConnection {
        let client = redis::Client::open(super::url().as_str()).expect("URL");
        client.get_multiplexed_async_connection().await.expect("connect to Redis")
    }

    async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query_async(conn).await.expect("PTTL")
    }

    async fn del(conn: &mut MultiplexedConnection, key: &str) {
        let _: i64 = redis::cmd("DEL").arg(key).query_async(conn).await.expect("DEL");
    }

    /// After a record and its fence counter are gone (as after expiry), the
    /// next fence is seeded from the server's clock and still larger.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fences_grow_after_the_counter_is_gone() {
        let (b, mut conn, c) = (super::backend().await, raw().await, Ctx::new());
        let k = c.key("k");
        let f1 = int_at(&expect(&*b, &["IDEM.BEGIN", &k], "started").await, 1);
        assert_eq!(idem_conformance::int(&ok(&*b, &["IDEM.DEL", &k]).await), 1);
        assert!(pttl(&mut conn, &format!("idem:idem-fence:{{{k}}}")).await > 0, "the counter has an expiry");
        del(&mut conn, &format!("idem:idem-fence:{{{k}}}")).await;
        let f2 = int_at(&expect(&*b, &["IDEM.BEGIN", &k], "started").await, 1);
        assert!(f2 > f1, "{f2} > {f1}");

        let n = c.key("lock");
        let f1 = int_at(&expect(&*b, &["LOCK", &n, "a", "LEASE", "10000"], "acquired").await, 1);
        ok(&*b, &["UNLOCK", &n, "a"]).await;
        del(&mut conn, &format!("idem:lock-fence:{{{n}}}")).await;
        let f2 = int_at(&expect(&*b, &["LOCK", &n, "b", "LEASE", "10000"], "acquired").await, 1);
        assert!(f2 > f1, "{f2} > {f1}");
    }

    /// Records that end carry a Redis expiry, so Redis reclaims them itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ending_records_carry_a_redis_expiry() {
        let (b, mut conn, c) = (super::backend().await, raw().await, Ctx::new());
        let k = c.key("k");
        expect(&*b, &["CLAIM", &k, "o", "TTL", "60000"], "claimed").await;
        let t = pttl(&mut conn, &format!("idem:claim:{{{k}}}")).await;
        assert!(t > 0 && t <= 60_000, "claim PTTL {t}");
        expect(&*b, &["LOCK", &k, "o", "LEASE", "60000"], "acquired").await;
        let t = pttl(&mut conn, &format!("idem:lock:{{{k}}}")).await;
        assert!(t > 0 && t <= 60_000, "lock PTTL {t}");
        let f = int_at(&expect(&*b, &["IDEM.BEGIN", &k], "started").await, 1);
        ok(&*b, &["IDEM.COMMIT", &k, &f.to_string(), "r", "KEEP", "60000"]).await;
        let t = pttl(&mut conn, &format!("idem:idem:{{{k}}}")).await;
        assert!(t > 0 && t <= 60_000, "done record PTTL {t}");
        expect(&*b, &["COUNTER.ADD", &k, "1", "OP", "op1", "KEEP", "60000"], "ok").await;
        let t = pttl(&mut conn, &format!("idem:counter-op:{{{k}}}|op1")).await;
        assert!(t > 0 && t <= 60_000, "op PTTL {t}");
        let token = text_or_nil(&ok(&*b, &["TOKEN.NEW", &k, "TTL", "60000"]).await).expect("token");
        let t = pttl(&mut conn, &format!("idem:token:{{{k}}}|{token}")).await;
        assert!(t > 0 && t <= 60_000, "token PTTL {t}");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    }

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start_redis(port: u16) -> Server {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server(child)
    }

    /// When Redis goes away requests fail with BUSY (nothing is retried
    /// blindly); when it is back the backend reconnects by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_after_redis_restarts() {
        let port = free_port();
        let server = start_redis(port);
        let url = format!("redis://127.0.0.1:{port}");
        let b = idem_backends::redis::RedisBackend::connect(&url).await.expect("connect");
        let c = Ctx::new();
        let k = c.key("k");
        expect(&b, &["CLAIM", &k, "o"], "claimed").await;
        drop(server);
        let e = err(&b, &["CLAIM", &k, "o"]).await;
        assert_eq!(e.code, ErrorCode::Busy, "got '{e}'");
        let _server = tokio::task::spawn_blocking(move || start_redis(port)).await.expect("restart");
        let start = Instant::now();
        loop {
            match idem_conformance::exec(&b, &["CLAIM", &k, "o2"]).await {
                Ok(r) => {
                    // A fresh, empty Redis: the claim is new.
                    assert_eq!(idem_conformance::status(&r), "claimed");
                    break;
                }
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::Busy, "got '{e}'");
                    assert!(start.elapsed() < Duration::from_secs(20), "did not reconnect: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
