//! The MySQL / MariaDB backend's setup against a real server: migrations,
//! the URL's settings, an unreachable engine. The contract itself is checked
//! by idem-conformance on every store.
//!
//! Needs MariaDB 10.6+ or MySQL 8.0+ at `IDEM_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`).

use std::sync::Arc;

use idem_backends::mysql::{self, MySqlBackend};
use idem_core::{Backend, Command, Reply};
use mysql_async::prelude::Queryable;

fn url() -> String {
    std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn with_query(url: &str, query: &str) -> String {
    format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' })
}

/// `pool_size`, `pool_wait_ms` and `lock_timeout_ms` are read from the URL
/// (and not passed to the driver); a bad value is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_settings_are_read_and_checked() {
    let b: Arc<dyn Backend> = Arc::new(
        MySqlBackend::connect(&with_query(&url(), "pool_size=2&pool_wait_ms=2000&lock_timeout_ms=1500"))
            .await
            .expect("connect with settings"),
    );
    let key = format!("t{:016x}:settings", rand::random::<u64>());
    let claim = Command::Claim { key: key.into(), owner: "o".into(), ttl_ms: None };
    assert_eq!(b.execute(claim).await, Ok(Reply::status("claimed")));
    for bad in ["pool_size=0", "pool_wait_ms=x", "lock_timeout_ms=600001"] {
        let e = MySqlBackend::connect(&with_query(&url(), bad)).await.err().expect("a bad setting is an error");
        let name = bad.split('=').next().unwrap();
        assert!(e.to_string().contains(name), "{bad}: {e}");
    }
}

/// On MariaDB the fences come from a sequence that the migration starts
/// above every id the older fence table handed out, so fences keep growing
/// across the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_sequence_starts_above_the_old_fence_table() {
    let mut admin = mysql_async::Conn::from_url(url()).await.unwrap();
    let version: String = admin.query_first("SELECT VERSION()").await.unwrap().unwrap();
    if !version.contains("MariaDB") {
        return; // MySQL keeps the fence table.
    }
    let db = format!("idem_fresh_{:016x}", rand::random::<u64>());
    admin.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
    let base = url();
    let fresh_url = format!("{}/{db}", &base[..base.rfind('/').expect("URL with a database")]);
    let old_last: u64 = 777_777_777;
    admin
        .query_drop(format!(
            "CREATE TABLE {db}.idem_fences (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY) ENGINE = InnoDB \
             AUTO_INCREMENT = {old_last}"
        ))
        .await
        .unwrap();
    {
        let b = MySqlBackend::connect(&fresh_url).await.expect("migrate and connect");
        let begin = Command::IdemBegin { key: "k".into(), fingerprint: None, lease_ms: 10_000, wait_ms: 0 };
        let r = b.execute(begin).await.unwrap();
        let Reply::Array(items) = &r else { panic!("{r:?}") };
        let Some(Reply::Int(fence)) = items.get(1) else { panic!("{r:?}") };
        assert!(u64::try_from(*fence).unwrap() > old_last, "fence {fence} after the table's {old_last}");
        b.shutdown().await;
    }
    admin.query_drop(format!("DROP DATABASE {db}")).await.unwrap();
}

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
