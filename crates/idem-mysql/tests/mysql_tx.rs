//! The in-transaction API (`mysql::tx`) against a real MariaDB / MySQL:
//! claims and idempotency records commit or roll back with the caller's
//! business rows, and concurrent REPEATABLE READ transactions on one key
//! serialise on it (no silent duplicate, no duplicate-key error).
//!
//! Needs MariaDB 10.6+ or MySQL 8.0+ at `IDEM_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`).

use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, Command, Reply};
use idem_mysql::tx::{self, Begin, Claimed, Counted};
use idem_mysql::{self as mysql, MySqlBackend};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, IsolationLevel, Pool, TxOpts};

fn url() -> String {
    std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn prefix() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// Transactions at InnoDB's default level, where a plain SELECT reads a
/// snapshot (the trap of docs/scenarios.md S3).
fn repeatable_read() -> TxOpts {
    let mut o = TxOpts::default();
    o.with_isolation_level(IsolationLevel::RepeatableRead);
    o
}

/// A business table of this test's own (dropped at the end).
struct Products {
    pool: Pool,
    table: String,
}

impl Products {
    async fn create() -> Self {
        mysql::migrate(&url()).await.expect("migrate");
        let pool = Pool::new(url().as_str());
        let table = format!("idem_test_products_{}", prefix());
        let mut c = pool.get_conn().await.unwrap();
        c.query_drop(format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARBINARY(512) NOT NULL)"
        ))
        .await
        .unwrap();
        Products { pool, table }
    }

    async fn conn(&self) -> Conn {
        self.pool.get_conn().await.unwrap()
    }

    async fn insert(&self, t: &mut mysql_async::Transaction<'_>, name: &str) {
        t.exec_drop(format!("INSERT INTO {} (name) VALUES (?)", self.table), (name,)).await.unwrap();
    }

    async fn count(&self, name: &str) -> i64 {
        let mut c = self.conn().await;
        c.exec_first(format!("SELECT COUNT(*) FROM {} WHERE name = ?", self.table), (name,)).await.unwrap().unwrap()
    }

    async fn drop(self) {
        let mut c = self.conn().await;
        c.query_drop(format!("DROP TABLE {}", self.table)).await.unwrap();
        drop(c);
        self.pool.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_undoes_claim_and_row_commit_keeps_both() {
    let products = Products::create().await;
    let key = format!("{}:user:openid-1", prefix());
    let mut c = products.conn().await;

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    assert_eq!(tx::claim(&mut t, key.as_bytes(), b"req-1", None).await.unwrap(), Claimed::Claimed);
    products.insert(&mut t, &key).await;
    t.rollback().await.unwrap();
    assert_eq!(products.count(&key).await, 0);
    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    assert_eq!(tx::owner(&mut t, key.as_bytes()).await.unwrap(), None, "the claim rolled back with the row");
    t.commit().await.unwrap();

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    assert_eq!(tx::claim(&mut t, key.as_bytes(), b"req-2", None).await.unwrap(), Claimed::Claimed);
    products.insert(&mut t, &key).await;
    t.commit().await.unwrap();
    assert_eq!(products.count(&key).await, 1);

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let held = tx::claim(&mut t, key.as_bytes(), b"req-3", None).await.unwrap();
    assert_eq!(held, Claimed::Held { owner: Bytes::from_static(b"req-2") });
    t.rollback().await.unwrap();
    assert_eq!(products.count(&key).await, 1);

    // Logical delete releases in the same transaction; the key can come back.
    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    assert!(tx::release(&mut t, key.as_bytes(), b"req-2").await.unwrap());
    assert!(!tx::release(&mut t, key.as_bytes(), b"req-2").await.unwrap());
    t.commit().await.unwrap();
    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    assert_eq!(tx::claim(&mut t, key.as_bytes(), b"req-4", None).await.unwrap(), Claimed::Claimed);
    t.commit().await.unwrap();

    drop(c);
    products.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeatable_read_transactions_one_claim_wins() {
    mysql::migrate(&url()).await.unwrap();
    let pool = Pool::new(url().as_str());
    for winner_commits in [true, false] {
        let key = format!("{}:k", prefix());
        let mut c1 = pool.get_conn().await.unwrap();
        // The second transaction takes its snapshot before the first claims:
        // a plain SELECT in it would never see the first claim.
        let mut t2 = pool.start_transaction(repeatable_read()).await.unwrap();
        let _: Option<i64> = t2.query_first("SELECT COUNT(*) FROM idem_claims").await.unwrap();
        let mut t1 = c1.start_transaction(repeatable_read()).await.unwrap();
        assert_eq!(tx::claim(&mut t1, key.as_bytes(), b"first", None).await.unwrap(), Claimed::Claimed);
        let key2 = key.clone();
        let second = tokio::spawn(async move {
            // Blocks on the first transaction's row until it ends.
            let r = tx::claim(&mut t2, key2.as_bytes(), b"second", None).await;
            t2.commit().await.unwrap();
            r
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "the second claim waits for the first transaction");
        if winner_commits {
            t1.commit().await.unwrap();
            let r = second.await.unwrap().expect("no duplicate-key error");
            assert_eq!(r, Claimed::Held { owner: Bytes::from_static(b"first") });
        } else {
            t1.rollback().await.unwrap();
            assert_eq!(second.await.unwrap().unwrap(), Claimed::Claimed);
        }
        let owner: Option<Vec<u8>> =
            c1.exec_first("SELECT owner FROM idem_claims WHERE `key` = ?", (key.as_bytes(),)).await.unwrap();
        assert_eq!(owner.as_deref(), Some(if winner_commits { &b"first"[..] } else { &b"second"[..] }));
    }
    pool.disconnect().await.unwrap();
}

/// Many REPEATABLE READ transactions claim one key at once: exactly one
/// wins, every other one is told who holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_burst_in_transactions_exactly_one_row() {
    let products = Products::create().await;
    let key = format!("{}:openid", prefix());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (pool, key, table) = (products.pool.clone(), key.clone(), products.table.clone());
            tokio::spawn(async move {
                let mut c = pool.get_conn().await.unwrap();
                for _ in 0..5 {
                    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
                    match tx::claim(&mut t, key.as_bytes(), format!("req-{i}").as_bytes(), None).await {
                        Ok(Claimed::Claimed) => {
                            t.exec_drop(format!("INSERT INTO {table} (name) VALUES (?)"), (key.as_str(),))
                                .await
                                .unwrap();
                            t.commit().await.unwrap();
                            return true;
                        }
                        Ok(Claimed::Held { .. }) => {
                            t.rollback().await.unwrap();
                            return false;
                        }
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => panic!("claim failed: {e}"),
                    }
                }
                panic!("too many deadlocks")
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(products.count(&key).await, 1);
    products.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_record_commits_with_the_business_row() {
    let products = Products::create().await;
    let key = format!("{}:grant:user-7:gold", prefix());
    let mut c = products.conn().await;

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let Begin::Started { fence, attempt } = tx::idem_begin(&mut t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap()
    else {
        panic!("expected started")
    };
    assert_eq!(attempt, 1);
    products.insert(&mut t, &key).await;
    tx::idem_commit(&mut t, key.as_bytes(), fence, b"granted #1", 60_000).await.unwrap();
    t.rollback().await.unwrap();
    assert_eq!(products.count(&key).await, 0);

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let Begin::Started { fence: f2, attempt } =
        tx::idem_begin(&mut t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap()
    else {
        panic!("expected started after the rollback")
    };
    assert_eq!(attempt, 1);
    assert!(f2 > fence, "fences are never reused, even after a rollback");
    products.insert(&mut t, &key).await;
    tx::idem_commit(&mut t, key.as_bytes(), f2, b"granted #2", 60_000).await.unwrap();
    t.commit().await.unwrap();
    assert_eq!(products.count(&key).await, 1);

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let replay = tx::idem_begin(&mut t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap();
    assert_eq!(replay, Begin::Done { result: Bytes::from_static(b"granted #2") });
    assert!(matches!(tx::idem_begin(&mut t, key.as_bytes(), Some(b"other"), 30_000).await, Err(tx::Error::Mismatch)));
    t.rollback().await.unwrap();
    let backend = MySqlBackend::connect(&url()).await.unwrap();
    let got = backend.execute(Command::IdemGet { key: Bytes::from(key.clone()) }).await.unwrap();
    assert_eq!(got, Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"granted #2"))]));

    let key = format!("{}:abort", prefix());
    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let Begin::Started { fence, .. } = tx::idem_begin(&mut t, key.as_bytes(), None, 30_000).await.unwrap() else {
        panic!()
    };
    assert!(matches!(tx::idem_commit(&mut t, key.as_bytes(), fence + 1, b"x", 1000).await, Err(tx::Error::Stale(_))));
    t.commit().await.unwrap();
    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    assert!(matches!(tx::idem_begin(&mut t, key.as_bytes(), None, 30_000).await.unwrap(), Begin::Running { .. }));
    tx::idem_renew(&mut t, key.as_bytes(), fence, 30_000).await.unwrap();
    assert!(matches!(tx::idem_renew(&mut t, key.as_bytes(), fence + 1, 30_000).await, Err(tx::Error::Stale(_))));
    tx::idem_abort(&mut t, key.as_bytes(), fence).await.unwrap();
    assert!(matches!(tx::idem_renew(&mut t, key.as_bytes(), fence, 30_000).await, Err(tx::Error::Stale(_))));
    assert!(matches!(tx::idem_begin(&mut t, key.as_bytes(), None, 30_000).await.unwrap(), Begin::Started { .. }));
    t.commit().await.unwrap();

    drop(c);
    products.drop().await;
}

/// S3: identical grant requests, each in a REPEATABLE READ transaction that
/// outlives any lock: exactly one grant, no duplicate-key error anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_in_tx_begins_grant_once() {
    let products = Products::create().await;
    let key = format!("{}:grant", prefix());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (pool, key, table) = (products.pool.clone(), key.clone(), products.table.clone());
            tokio::spawn(async move {
                let mut c = pool.get_conn().await.unwrap();
                let mut t = c.start_transaction(repeatable_read()).await.unwrap();
                let r = tx::idem_begin(&mut t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap();
                if let Begin::Started { fence, .. } = r {
                    t.exec_drop(format!("INSERT INTO {table} (name) VALUES (?)"), (key.as_str(),)).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tx::idem_commit(&mut t, key.as_bytes(), fence, b"granted", 60_000).await.unwrap();
                }
                t.commit().await.unwrap();
                r
            })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Begin::Started { .. } => started += 1,
            Begin::Done { result } => assert_eq!(&result[..], b"granted"),
            Begin::Running { .. } => panic!("a waiting transaction sees the committed record, not a running one"),
        }
    }
    assert_eq!(started, 1);
    assert_eq!(products.count(&key).await, 1);
    products.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_deduction_applies_once_and_rolls_back() {
    mysql::migrate(&url()).await.unwrap();
    let pool = Pool::new(url().as_str());
    let mut c = pool.get_conn().await.unwrap();
    let key = format!("{}:points", prefix());
    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    assert_eq!(tx::counter_add(&mut t, key.as_bytes(), 10, None, None, None, 1000).await.unwrap(), Counted::Ok(10));
    t.commit().await.unwrap();

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let r = tx::counter_add(&mut t, key.as_bytes(), -4, Some(0), None, Some(b"op1"), 60_000).await.unwrap();
    assert_eq!(r, Counted::Ok(6));
    t.rollback().await.unwrap();

    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let r = tx::counter_add(&mut t, key.as_bytes(), -4, Some(0), None, Some(b"op1"), 60_000).await.unwrap();
    assert_eq!(r, Counted::Ok(6));
    let r = tx::counter_add(&mut t, key.as_bytes(), -4, Some(0), None, Some(b"op1"), 60_000).await.unwrap();
    assert_eq!(r, Counted::Replayed(6));
    let r = tx::counter_add(&mut t, key.as_bytes(), -7, Some(0), None, None, 1000).await.unwrap();
    assert_eq!(r, Counted::Refused(6));
    t.commit().await.unwrap();
    drop(c);
    pool.disconnect().await.unwrap();
}

/// A backend IDEM.BEGIN of a key that a caller's transaction has begun but
/// not committed waits for it (on the key's row, having drawn its fence
/// after the transaction's); when that transaction rolls back, its grant
/// never happened and the backend's is above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_begin_after_a_rolled_back_in_tx_grant_gets_a_larger_fence() {
    let backend = std::sync::Arc::new(MySqlBackend::connect(&url()).await.unwrap());
    let pool = Pool::new(url().as_str());
    let mut c = pool.get_conn().await.unwrap();
    let key = format!("{}:rolled-back", prefix());
    let mut t = c.start_transaction(repeatable_read()).await.unwrap();
    let Begin::Started { fence: f1, .. } = tx::idem_begin(&mut t, key.as_bytes(), None, 30_000).await.unwrap() else {
        panic!("expected started")
    };
    let cmd = Command::IdemBegin { key: Bytes::from(key.clone()), fingerprint: None, lease_ms: 30_000, wait_ms: 0 };
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.execute(cmd).await })
    };
    // Let the backend's statement reach the lock it waits on (the assertion
    // holds whichever of the two comes first).
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.rollback().await.unwrap();
    let got = waiting.await.unwrap().unwrap();
    let Reply::Array(items) = &got else { panic!("{got:?}") };
    assert_eq!(items.first(), Some(&Reply::Word("started")), "{got:?}");
    let Some(Reply::Int(f2)) = items.get(1) else { panic!("{got:?}") };
    assert!(u64::try_from(*f2).unwrap() > f1, "fence {f2} after the rolled-back grant's {f1}");
    drop(c);
    pool.disconnect().await.unwrap();
}
