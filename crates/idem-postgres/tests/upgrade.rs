//! A database that version 5 of idem's schema set up, with records in it,
//! upgraded in place by this build: the records stay, the running records'
//! lease-end index goes, and cleanup still deletes the running records
//! abandoned for the grace period, a bounded batch of keys per call.
//!
//! Needs PostgreSQL at `IDEM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); works in a database of its own.

use idem_core::{Backend, Command};
use idem_postgres::{self as postgres, PgBackend};
use tokio_postgres::Client;

mod support;
use support::{connect, url};

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_5_database_is_upgraded_in_place_and_cleaned_up() {
    let admin = connect(&url()).await;
    let db = format!("idem_upgrade_{:016x}", rand::random::<u64>());
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let base = url();
    let db_url = format!("{}/{db}", &base[..base.rfind('/').expect("URL with a database")]);
    let c = connect(&db_url).await;
    c.batch_execute(include_str!("fixtures/schema_v5.sql")).await.expect("version 5 schema");
    assert_eq!(count(&c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'idem_records_running_exp'").await, 1);
    // Keys in order k1..k7: five running records abandoned long ago (lease
    // end 0, far past the grace), one live running record, one done record
    // still retained.
    c.batch_execute(
        "INSERT INTO idem_records (key, state, fence, attempt, expires_at_ms)
         SELECT convert_to('k' || i, 'UTF8'), 'running', nextval('idem_fence_seq'), 1, 0 FROM generate_series(1, 5) i;
         INSERT INTO idem_records (key, state, fence, attempt, expires_at_ms)
         VALUES ('k6', 'running', nextval('idem_fence_seq'), 1, idem_now_ms() + 3600000);
         INSERT INTO idem_records (key, state, fence, attempt, expires_at_ms, result)
         VALUES ('k7', 'done', nextval('idem_fence_seq'), 1, idem_now_ms() + 3600000, 'r');",
    )
    .await
    .unwrap();

    postgres::migrate(&db_url).await.expect("upgrade from version 5");
    assert_eq!(count(&c, "SELECT version::bigint FROM idem_schema_version WHERE id = 1").await, 6);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'idem_records_running_exp'").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM idem_records").await, 7, "the upgrade keeps every record");

    // Batches of 2 keys: k1-k2, k3-k4, k5-k6, then k7 (a short batch: the
    // sweep starts over). Each call deletes only within its own batch.
    let mut deleted = Vec::new();
    for _ in 0..4 {
        deleted.push(count(&c, "SELECT idem_cleanup(2)").await);
    }
    assert_eq!(deleted, [2, 2, 1, 0]);
    let left: Vec<Vec<u8>> =
        c.query("SELECT key FROM idem_records ORDER BY key", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(left, [b"k6".to_vec(), b"k7".to_vec()], "the live and the retained records stay");
    assert!(
        c.query_one("SELECT running_after FROM idem_cleanup_cursor", &[])
            .await
            .unwrap()
            .get::<_, Option<Vec<u8>>>(0)
            .is_none(),
        "the sweep starts over after the last key"
    );

    {
        let b = PgBackend::connect(&db_url).await.expect("connect after the upgrade");
        let begin =
            |key: &'static str| Command::IdemBegin { key: key.into(), fingerprint: None, lease_ms: 30_000, wait_ms: 0 };
        assert_eq!(b.execute(begin("k8")).await.unwrap().word(), Some("started"));
        assert_eq!(b.execute(begin("k8")).await.unwrap().word(), Some("running"));
        assert_eq!(b.execute(begin("k6")).await.unwrap().word(), Some("running"), "k6 is still live");
        b.shutdown().await;
    }
    drop(c);
    admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
}
