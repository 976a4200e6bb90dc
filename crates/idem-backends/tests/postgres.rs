//! The PostgreSQL backend's setup against a real server: migrations, the
//! URL's settings, an unreachable engine. The contract itself is checked by
//! idem-conformance on every store.
//!
//! Needs PostgreSQL at `IDEM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::sync::Arc;

use idem_backends::postgres::{self, PgBackend};
use idem_core::Backend;

fn url() -> String {
    std::env::var("IDEM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn with_query(url: &str, query: &str) -> String {
    format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' })
}

/// `pool_size`, `pool_wait_ms` and `lock_timeout_ms` are read from the URL
/// (and not passed to the driver); a bad value is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_settings_are_read_and_checked() {
    let b: Arc<dyn Backend> = Arc::new(
        PgBackend::connect(&with_query(&url(), "pool_size=2&pool_wait_ms=2000&lock_timeout_ms=1500"))
            .await
            .expect("connect with settings"),
    );
    let info = b.info();
    let key = format!("t{:016x}:settings", rand::random::<u64>());
    let claim = idem_core::Command::Claim { key: key.into(), owner: "o".into(), ttl_ms: None };
    assert_eq!(b.execute(claim).await, Ok(idem_core::Reply::status("claimed")));
    assert!(
        info.iter().any(|(k, v)| k == "postgres_pool_size" && v.parse::<usize>().is_ok_and(|n| n <= 2)),
        "{info:?}"
    );
    for bad in ["pool_size=0", "pool_wait_ms=x", "lock_timeout_ms=600001"] {
        let e = PgBackend::connect(&with_query(&url(), bad)).await.err().expect("a bad setting is an error");
        let name = bad.split('=').next().unwrap();
        assert!(e.to_string().contains(name), "{bad}: {e}");
    }
}

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
        let r =
            b.execute(idem_core::Command::Claim { key: "k".into(), owner: "o".into(), ttl_ms: None }).await.unwrap();
        assert_eq!(r, idem_core::Reply::status("claimed"));
        b.shutdown().await;
    }
    // Connections close asynchronously; FORCE ends any that linger.
    admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
}
