//! The MySQL / MariaDB backend against a real server: every primitive's
//! reply shapes, expiry, WAIT, and races from many connections and two backend
//! instances (standing for two idem processes).
//!
//! Needs MariaDB 10.6+ or MySQL 8.0+ at `IDEM_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`).

use std::sync::Arc;

use idem_backends::mysql::{self, MySqlBackend};
use idem_core::Backend;

mod sql_cases;

fn url() -> String {
    std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

async fn connect() -> Arc<dyn Backend> {
    Arc::new(MySqlBackend::connect(&url()).await.expect("MySQL reachable"))
}

sql_cases!(connect);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let runs: Vec<_> = (0..4).map(|_| tokio::spawn(async { mysql::migrate(&url()).await })).collect();
    for r in runs {
        r.await.unwrap().expect("migrate");
    }
    mysql::migrate(&url()).await.expect("migrate again");
    let mariadb_url = url().replacen("mysql://", "mariadb://", 1);
    assert!(idem_backends::migrate(&mariadb_url).await.is_ok(), "mariadb:// is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_engine_is_an_error_not_a_hang() {
    assert!(MySqlBackend::connect("mysql://root@127.0.0.1:1/test").await.is_err());
}
