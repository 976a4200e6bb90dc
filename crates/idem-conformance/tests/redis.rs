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
