//! The in-transaction API (`postgres::tx`) against a real PostgreSQL: claims
//! and idempotency records commit or roll back with the caller's business
//! rows, and concurrent transactions on one key serialise on it.
//!
//! Needs PostgreSQL at `IDEM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, Command, Reply};
use idem_postgres::tx::{self, Begin, Claimed, Counted};
use idem_postgres::{self as postgres, PgBackend};
use tokio_postgres::{Client, NoTls};

mod support;
use support::url;

async fn client() -> Client {
    let (client, conn) = tokio_postgres::connect(&url(), NoTls).await.expect("PostgreSQL reachable");
    tokio::spawn(conn);
    client
}

fn prefix() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// A business table of this test's own (dropped at the end).
struct Products {
    table: String,
}

impl Products {
    async fn create(c: &Client) -> Self {
        postgres::migrate(&url()).await.expect("migrate");
        let table = format!("idem_test_products_{}", prefix());
        c.batch_execute(&format!("CREATE TABLE {table} (id bigserial PRIMARY KEY, name text NOT NULL)")).await.unwrap();
        Products { table }
    }

    async fn insert(&self, t: &tokio_postgres::Transaction<'_>, name: &str) {
        t.execute(&format!("INSERT INTO {} (name) VALUES ($1)", self.table), &[&name]).await.unwrap();
    }

    async fn count(&self, c: &Client, name: &str) -> i64 {
        c.query_one(&format!("SELECT count(*) FROM {} WHERE name = $1", self.table), &[&name]).await.unwrap().get(0)
    }

    async fn drop(self, c: &Client) {
        c.batch_execute(&format!("DROP TABLE {}", self.table)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_undoes_claim_and_row_commit_keeps_both() {
    let mut c = client().await;
    let products = Products::create(&c).await;
    let key = format!("{}:product:acme:X1", prefix());

    let t = c.transaction().await.unwrap();
    assert_eq!(tx::claim(&t, key.as_bytes(), b"req-1", None).await.unwrap(), Claimed::Claimed);
    products.insert(&t, &key).await;
    t.rollback().await.unwrap();
    assert_eq!(products.count(&c, &key).await, 0);
    let t = c.transaction().await.unwrap();
    assert_eq!(tx::owner(&t, key.as_bytes()).await.unwrap(), None, "the claim rolled back with the row");
    t.commit().await.unwrap();

    let t = c.transaction().await.unwrap();
    assert_eq!(tx::claim(&t, key.as_bytes(), b"req-2", None).await.unwrap(), Claimed::Claimed);
    products.insert(&t, &key).await;
    t.commit().await.unwrap();
    assert_eq!(products.count(&c, &key).await, 1);

    // A duplicate request learns who holds the key; nothing is inserted.
    let t = c.transaction().await.unwrap();
    let held = tx::claim(&t, key.as_bytes(), b"req-3", None).await.unwrap();
    assert_eq!(held, Claimed::Held { owner: Bytes::from_static(b"req-2") });
    t.rollback().await.unwrap();
    assert_eq!(products.count(&c, &key).await, 1);

    // Logical delete: release in the same transaction as the business delete;
    // the key can then be created again.
    let t = c.transaction().await.unwrap();
    assert!(tx::release(&t, key.as_bytes(), b"req-2").await.unwrap());
    assert!(!tx::release(&t, key.as_bytes(), b"req-2").await.unwrap());
    t.commit().await.unwrap();
    let t = c.transaction().await.unwrap();
    assert_eq!(tx::claim(&t, key.as_bytes(), b"req-4", None).await.unwrap(), Claimed::Claimed);
    t.commit().await.unwrap();

    products.drop(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_one_claim_wins() {
    let c0 = client().await;
    postgres::migrate(&url()).await.unwrap();
    for winner_commits in [true, false] {
        let key = format!("{}:k", prefix());
        let mut c1 = client().await;
        let mut c2 = client().await;
        let t1 = c1.transaction().await.unwrap();
        assert_eq!(tx::claim(&t1, key.as_bytes(), b"first", None).await.unwrap(), Claimed::Claimed);
        let key2 = key.clone();
        let second = tokio::spawn(async move {
            let t2 = c2.transaction().await.unwrap();
            // Blocks on the first transaction's row until it ends.
            let r = tx::claim(&t2, key2.as_bytes(), b"second", None).await.unwrap();
            t2.commit().await.unwrap();
            r
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!second.is_finished(), "the second claim waits for the first transaction");
        if winner_commits {
            t1.commit().await.unwrap();
            assert_eq!(second.await.unwrap(), Claimed::Held { owner: Bytes::from_static(b"first") });
        } else {
            t1.rollback().await.unwrap();
            assert_eq!(second.await.unwrap(), Claimed::Claimed);
        }
        let owner: Option<Vec<u8>> = c0.query_one("SELECT idem_owner($1)", &[&key.as_bytes()]).await.unwrap().get(0);
        assert_eq!(owner.as_deref(), Some(if winner_commits { &b"first"[..] } else { &b"second"[..] }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_record_commits_with_the_business_row() {
    let mut c = client().await;
    let products = Products::create(&c).await;
    let key = format!("{}:grant:user-7:gold", prefix());

    // Attempt 1 rolls back: no record, no row; the next attempt starts afresh.
    let t = c.transaction().await.unwrap();
    let Begin::Started { fence, attempt } = tx::idem_begin(&t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap()
    else {
        panic!("expected started")
    };
    assert_eq!(attempt, 1);
    products.insert(&t, &key).await;
    tx::idem_commit(&t, key.as_bytes(), fence, b"granted #1", 60_000).await.unwrap();
    t.rollback().await.unwrap();
    assert_eq!(products.count(&c, &key).await, 0);

    let t = c.transaction().await.unwrap();
    let Begin::Started { fence: f2, attempt } = tx::idem_begin(&t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap()
    else {
        panic!("expected started after the rollback")
    };
    assert_eq!(attempt, 1);
    assert!(f2 > fence, "fences are never reused, even after a rollback");
    products.insert(&t, &key).await;
    tx::idem_commit(&t, key.as_bytes(), f2, b"granted #2", 60_000).await.unwrap();
    t.commit().await.unwrap();
    assert_eq!(products.count(&c, &key).await, 1);

    // Replays get the result, in a transaction and through the backend.
    let t = c.transaction().await.unwrap();
    let replay = tx::idem_begin(&t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap();
    assert_eq!(replay, Begin::Done { result: Bytes::from_static(b"granted #2") });
    assert!(matches!(tx::idem_begin(&t, key.as_bytes(), Some(b"other"), 30_000).await, Err(tx::Error::Mismatch)));
    t.rollback().await.unwrap();
    let backend = PgBackend::connect(&url()).await.unwrap();
    let got = backend.execute(Command::IdemGet { key: Bytes::from(key.clone()) }).await.unwrap();
    assert_eq!(got, Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"granted #2"))]));

    // A stale fence is refused, and an abort frees the key.
    let key = format!("{}:abort", prefix());
    let t = c.transaction().await.unwrap();
    let Begin::Started { fence, .. } = tx::idem_begin(&t, key.as_bytes(), None, 30_000).await.unwrap() else {
        panic!()
    };
    assert!(matches!(tx::idem_commit(&t, key.as_bytes(), fence + 1, b"x", 1000).await, Err(tx::Error::Stale(_))));
    t.commit().await.unwrap();
    let t = c.transaction().await.unwrap();
    assert!(matches!(tx::idem_begin(&t, key.as_bytes(), None, 30_000).await.unwrap(), Begin::Running { .. }));
    tx::idem_renew(&t, key.as_bytes(), fence, 30_000).await.unwrap();
    assert!(matches!(tx::idem_renew(&t, key.as_bytes(), fence + 1, 30_000).await, Err(tx::Error::Stale(_))));
    tx::idem_abort(&t, key.as_bytes(), fence).await.unwrap();
    assert!(matches!(tx::idem_renew(&t, key.as_bytes(), fence, 30_000).await, Err(tx::Error::Stale(_))));
    assert!(matches!(tx::idem_begin(&t, key.as_bytes(), None, 30_000).await.unwrap(), Begin::Started { .. }));
    t.commit().await.unwrap();

    products.drop(&c).await;
}

/// A backend IDEM.BEGIN of a key that a caller's transaction has begun but
/// not committed waits for it (on the key's fence lock, whichever of the
/// backend's paths runs); when that transaction rolls back, its grant never
/// happened, and the backend's starts afresh with a fence above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_begin_after_a_rolled_back_in_tx_grant_gets_a_larger_fence() {
    postgres::migrate(&url()).await.unwrap();
    let backend = std::sync::Arc::new(PgBackend::connect(&url()).await.unwrap());
    let mut c = client().await;
    let key = format!("{}:rolled-back", prefix());
    let t = c.transaction().await.unwrap();
    let Begin::Started { fence: f1, attempt } = tx::idem_begin(&t, key.as_bytes(), None, 30_000).await.unwrap() else {
        panic!("expected started")
    };
    assert_eq!(attempt, 1);
    let cmd = Command::IdemBegin { key: Bytes::from(key.clone()), fingerprint: None, lease_ms: 30_000, wait_ms: 0 };
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.execute(cmd).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the backend's BEGIN waits for the open transaction");
    t.rollback().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the backend's BEGIN ends once the transaction rolled back")
        .unwrap()
        .unwrap();
    let Reply::Array(items) = &got else { panic!("{got:?}") };
    assert_eq!(items.first(), Some(&Reply::Word("started")), "{got:?}");
    let (Some(Reply::Int(f2)), Some(Reply::Int(attempt))) = (items.get(1), items.get(2)) else { panic!("{got:?}") };
    assert!(u64::try_from(*f2).unwrap() > f1, "fence {f2} after the rolled-back grant's {f1}");
    assert_eq!(*attempt, 1, "the rolled-back grant left no attempt behind: {got:?}");
    backend.shutdown().await;
}

/// S3: a burst of identical grant requests, each in its own transaction that
/// outlives any lock: exactly one grant, no duplicate-key error anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_in_tx_begins_grant_once() {
    let c = client().await;
    let products = Products::create(&c).await;
    let key = format!("{}:grant", prefix());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (key, table) = (key.clone(), products.table.clone());
            tokio::spawn(async move {
                let mut c = client().await;
                let t = c.transaction().await.unwrap();
                let r = tx::idem_begin(&t, key.as_bytes(), Some(b"fp"), 30_000).await.unwrap();
                if let Begin::Started { fence, .. } = r {
                    t.execute(&format!("INSERT INTO {table} (name) VALUES ($1)"), &[&key]).await.unwrap();
                    // The transaction runs long; the others wait on its row.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tx::idem_commit(&t, key.as_bytes(), fence, b"granted", 60_000).await.unwrap();
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
    assert_eq!(products.count(&c, &key).await, 1);
    products.drop(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_deduction_applies_once_and_rolls_back() {
    let mut c = client().await;
    postgres::migrate(&url()).await.unwrap();
    let key = format!("{}:points", prefix());
    let t = c.transaction().await.unwrap();
    assert_eq!(tx::counter_add(&t, key.as_bytes(), 10, None, None, None, 1000).await.unwrap(), Counted::Ok(10));
    t.commit().await.unwrap();

    let t = c.transaction().await.unwrap();
    assert_eq!(
        tx::counter_add(&t, key.as_bytes(), -4, Some(0), None, Some(b"op1"), 60_000).await.unwrap(),
        Counted::Ok(6)
    );
    t.rollback().await.unwrap();

    let t = c.transaction().await.unwrap();
    assert_eq!(
        tx::counter_add(&t, key.as_bytes(), -4, Some(0), None, Some(b"op1"), 60_000).await.unwrap(),
        Counted::Ok(6)
    );
    assert_eq!(
        tx::counter_add(&t, key.as_bytes(), -4, Some(0), None, Some(b"op1"), 60_000).await.unwrap(),
        Counted::Replayed(6)
    );
    assert_eq!(tx::counter_add(&t, key.as_bytes(), -7, Some(0), None, None, 0).await.unwrap(), Counted::Refused(6));
    t.commit().await.unwrap();
}
