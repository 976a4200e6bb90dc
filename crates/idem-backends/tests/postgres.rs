//! The PostgreSQL backend against a real server: every primitive's reply
//! shapes, expiry, WAIT, and races from many connections and two backend
//! instances (standing for two idem processes).
//!
//! Needs PostgreSQL at `IDEM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::sync::Arc;

use idem_backends::postgres::{self, PgBackend};
use idem_core::Backend;

mod sql_cases;

fn url() -> String {
    std::env::var("IDEM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn connect() -> Arc<dyn Backend> {
    Arc::new(PgBackend::connect(&url()).await.expect("PostgreSQL reachable"))
}

sql_cases!(connect);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let runs: Vec<_> = (0..4).map(|_| tokio::spawn(async { postgres::migrate(&url()).await })).collect();
    for r in runs {
        r.await.unwrap().expect("migrate");
    }
    postgres::migrate(&url()).await.expect("migrate again");
    assert!(idem_backends::migrate(&url()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_engine_is_an_error_not_a_hang() {
    let r = PgBackend::connect("postgres://postgres@127.0.0.1:1/test").await;
    assert!(r.is_err());
}
