//! A database that version 5 of idem's schema set up (its tables, frozen
//! in `fixtures/schema_v5.sql`, dumped from a real version-5 database), with
//! records and claims in it, upgraded in place by this build: the rows stay,
//! the expiry indexes of records and claims go, and cleanup still deletes
//! the expired ones, by a sweep in key order, a bounded batch of keys per
//! call.
//!
//! Needs MariaDB 10.6+ or MySQL 8.0+ at `IDEM_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`); works in a database of its own.

use idem_core::{Backend, Command};
use idem_mysql::{self as mysql, MySqlBackend};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// One of `idem_cleanup_cursor`'s columns: NULL, the sweep starts over.
type Cursor = Option<Vec<u8>>;

fn url() -> String {
    std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

async fn count(c: &mut Conn, sql: &str) -> i64 {
    c.query_first(sql).await.unwrap().expect("one row")
}

async fn index_count(c: &mut Conn, index: &str) -> i64 {
    count(
        c,
        &format!(
            "SELECT COUNT(*) FROM information_schema.statistics
             WHERE table_schema = DATABASE() AND index_name = '{index}'"
        ),
    )
    .await
}

async fn keys(c: &mut Conn, table: &str) -> Vec<Vec<u8>> {
    c.query(format!("SELECT `key` FROM {table} ORDER BY `key`")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_5_database_is_upgraded_in_place_and_cleaned_up() {
    let base = url();
    let db = format!("idem_upgrade_{:016x}", rand::random::<u64>());
    let db_url = format!("{}/{db}", &base[..base.rfind('/').expect("URL with a database")]);
    let mut admin = Conn::from_url(&base).await.expect("MariaDB reachable");
    admin.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
    let mut c = Conn::from_url(&db_url).await.unwrap();
    for sql in include_str!("fixtures/schema_v5.sql").split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        c.query_drop(sql).await.unwrap_or_else(|e| panic!("version 5 schema: {e}: {sql}"));
    }
    assert_eq!(count(&mut c, "SELECT version FROM idem_schema_version WHERE id = 1").await, 5);
    assert_eq!(index_count(&mut c, "idem_records_exp").await, 2, "(state, expires_at_ms)");
    assert_eq!(index_count(&mut c, "idem_claims_exp").await, 1);
    // Records k1..k7: two running records abandoned long ago (lease end 0,
    // far past RUNNING_RETAIN_MS), a tombstone and a done record past the
    // grace, a live running record, a done record still retained, and a
    // tombstone still within the grace. Claims c1..c5: two that expired, one
    // until released, one live, one that expired.
    c.query_drop(
        "INSERT INTO idem_records (`key`, state, fence, attempt, expires_at_ms, result) VALUES
           ('k1', 'running', 1, 1, 0, NULL), ('k2', 'running', 2, 1, 0, NULL), ('k3', 'gone', 3, 1, 0, NULL),
           ('k4', 'done', 4, 1, 0, 'r'),
           ('k5', 'running', 5, 1, TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000 + 3600000, NULL),
           ('k6', 'done', 6, 1, TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000 + 3600000, 'r'),
           ('k7', 'gone', 7, 1, TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000, NULL);
         INSERT INTO idem_claims (`key`, owner, expires_at_ms) VALUES
           ('c1', 'o', 0), ('c2', 'o', 0), ('c3', 'o', NULL),
           ('c4', 'o', TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000 + 3600000), ('c5', 'o', 0)",
    )
    .await
    .unwrap();

    mysql::migrate(&db_url).await.expect("upgrade from version 5");
    assert_eq!(count(&mut c, "SELECT version FROM idem_schema_version WHERE id = 1").await, 6);
    assert_eq!(index_count(&mut c, "idem_records_exp").await, 0);
    assert_eq!(index_count(&mut c, "idem_claims_exp").await, 0);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM idem_records").await, 7, "the upgrade keeps every record");
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM idem_claims").await, 5, "and every claim");
    mysql::migrate(&db_url).await.expect("a second run changes nothing");

    // Batches of 3 keys per table: records k1-k3 with claims c1-c3, then
    // k4-k6 with c4-c5 (a short batch: the claims' sweep starts over), then
    // k7 (short: the records' sweep starts over) with c3-c4, then k5-k7 with
    // c3-c4 again. Each call deletes only within its own batches.
    let mut deleted = Vec::new();
    for _ in 0..4 {
        deleted.push(count(&mut c, "CALL idem_cleanup(3)").await);
    }
    assert_eq!(deleted, [3 + 2, 1 + 1, 0, 0]);
    assert_eq!(keys(&mut c, "idem_records").await, [b"k5".to_vec(), b"k6".to_vec(), b"k7".to_vec()]);
    assert_eq!(keys(&mut c, "idem_claims").await, [b"c3".to_vec(), b"c4".to_vec()]);
    let cursor: Option<(Cursor, Cursor)> =
        c.query_first("SELECT records_after, claims_after FROM idem_cleanup_cursor WHERE id = 1").await.unwrap();
    assert_eq!(cursor, Some((Some(b"k7".to_vec()), None)), "a full batch of records, a short one of claims");

    {
        let b = MySqlBackend::connect(&db_url).await.expect("connect after the upgrade");
        let begin =
            |key: &'static str| Command::IdemBegin { key: key.into(), fingerprint: None, lease_ms: 30_000, wait_ms: 0 };
        assert_eq!(b.execute(begin("k8")).await.unwrap().word(), Some("started"));
        assert_eq!(b.execute(begin("k8")).await.unwrap().word(), Some("running"));
        assert_eq!(b.execute(begin("k5")).await.unwrap().word(), Some("running"), "k5 is still live");
        assert_eq!(b.execute(begin("k7")).await.unwrap().word(), Some("started"), "a tombstone reads as absent");
        let claim = |key: &'static str| Command::Claim { key: key.into(), owner: "p".into(), ttl_ms: None };
        assert_eq!(b.execute(claim("c9")).await.unwrap().word(), Some("claimed"));
        assert_eq!(b.execute(claim("c4")).await.unwrap().word(), Some("held"), "c4 is still held");
        b.shutdown().await;
    }
    drop(c);
    admin.query_drop(format!("DROP DATABASE {db}")).await.unwrap();
}
