//! The conformance suite against the real MySQL / MariaDB at
//! `mysql://root@127.0.0.1:3306/test` (override with
//! `IDEM_TEST_MYSQL_URL`), one test per case. Every case uses its own
//! random key prefix, so runs may share the database with anything else.

use std::sync::Arc;

use idem_conformance::Backend;

fn url() -> String {
    std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

async fn backend() -> Arc<dyn Backend> {
    let url = url();
    Arc::new(
        idem_backends::mysql::MySqlBackend::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to {url} (is MariaDB running?): {e}")),
    )
}

idem_conformance::conformance_tests!(backend());

/// Two idem servers, each with its own MySQL backend on the same
/// database, raced by clients of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_one_mysql() {
    let report = idem_conformance::servers::run_two_server_races(backend().await, backend().await).await;
    println!("{report}");
    report.assert_ok();
}
