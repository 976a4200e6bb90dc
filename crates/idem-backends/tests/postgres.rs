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

/// A fresh database gets every step and the functions; a second run is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_installs_a_fresh_database() {
    let (admin, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let db = format!("idem_fresh_{:016x}", rand::random::<u64>());
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    // The same server and user, another database (the URL ends in "/dbname").
    let base = url();
    let fresh_url = format!("{}/{db}", &base[..base.rfind('/').expect("URL with a database")]);
    postgres::migrate(&fresh_url).await.expect("fresh migrate");
    postgres::migrate(&fresh_url).await.expect("second migrate");
    {
        let b: Arc<dyn Backend> = Arc::new(PgBackend::connect(&fresh_url).await.unwrap());
        let r = b.execute(sql_cases::cmd(&["CLAIM", "k", "o"])).await.unwrap();
        assert_eq!(r, idem_core::Reply::status("claimed"));
        b.shutdown().await;
    }
    // Connections close asynchronously; FORCE ends any that linger.
    admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
}
