//! A key's fences grow although MariaDB's one-statement IDEM.BEGIN draws its
//! fence before it looks the key up: ABORT and IDEM.DEL leave tombstones,
//! and cleanup forgets a record only a grace after its time (the argument is
//! in `src/schema.rs`).
//!
//! Needs MariaDB 10.6+ or MySQL 8.0+ at `IDEM_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, Command, Reply};
use idem_mysql::tx::{self, Begin};
use idem_mysql::{self as mysql, MySqlBackend};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, TxOpts};

fn url() -> String {
    std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn prefix() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

fn begin(key: &str) -> Command {
    Command::IdemBegin { key: Bytes::from(key.to_string()), fingerprint: None, lease_ms: 30_000, wait_ms: 0 }
}

/// The fence of a `started` reply, None for `running`; anything else fails.
fn started_fence(reply: &Reply) -> Option<u64> {
    let Reply::Array(items) = reply else { panic!("{reply:?}") };
    match (items.first(), items.get(1)) {
        (Some(Reply::Word("started")), Some(Reply::Int(f))) => Some(u64::try_from(*f).unwrap()),
        (Some(Reply::Word("running")), _) => None,
        _ => panic!("unexpected reply {reply:?}"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Removal {
    Abort,
    Del,
}

/// Removes the record of `key` (fence `fence`) inside `t`, leaving its row
/// locked until `t` ends.
async fn remove_in_tx(t: &mut mysql_async::Transaction<'_>, how: Removal, key: &str, fence: u64) {
    match how {
        Removal::Abort => tx::idem_abort(t, key.as_bytes(), fence).await.unwrap(),
        Removal::Del => {
            let n: Option<i64> = t.exec_first("CALL idem_del(?)", (key.as_bytes(),)).await.unwrap();
            assert_eq!(n, Some(1), "the running record was removed");
        }
    }
}

/// The interleaving a stripe lock used to prevent, made deterministic: a
/// backend IDEM.BEGIN draws its fence and waits on the key's row, which a
/// caller's transaction has locked by removing the record; that
/// transaction then begins the key again (a larger fence), removes it
/// again and commits. The waiting statement must not insert its older,
/// smaller fence: it finds the tombstone, and the key is granted above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_drawn_before_a_removed_grant_gets_a_larger_fence() {
    let backend = Arc::new(MySqlBackend::connect(&url()).await.unwrap());
    let pool = Pool::new(url().as_str());
    for how in [Removal::Abort, Removal::Del] {
        let key = format!("{}:{how:?}", prefix());
        let f0 = started_fence(&backend.execute(begin(&key)).await.unwrap()).expect("a fresh key starts");
        let mut c = pool.get_conn().await.unwrap();
        let mut t = c.start_transaction(TxOpts::default()).await.unwrap();
        remove_in_tx(&mut t, how, &key, f0).await;
        let waiting = {
            let (backend, key) = (backend.clone(), key.clone());
            tokio::spawn(async move { backend.execute(begin(&key)).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "{how:?}: the backend's BEGIN waits for the removing transaction");
        let Begin::Started { fence: f2, attempt } = tx::idem_begin(&mut t, key.as_bytes(), None, 30_000).await.unwrap()
        else {
            panic!("{how:?}: a removed record starts again")
        };
        assert_eq!(attempt, 1, "{how:?}: a removed record starts at attempt 1");
        assert!(f2 > f0, "{how:?}: fence {f2} after {f0}");
        remove_in_tx(&mut t, how, &key, f2).await;
        t.commit().await.unwrap();
        let f3 = started_fence(&waiting.await.unwrap().unwrap()).expect("the key was free");
        assert!(f3 > f2, "{how:?}: the waiting BEGIN got fence {f3}, below the removed grant's {f2}");
        let get = backend.execute(Command::IdemGet { key: Bytes::from(key.clone()) }).await.unwrap();
        assert_eq!(started_fence(&get), None, "{how:?}: IDEM.GET sees the running grant");
    }
    pool.disconnect().await.unwrap();
}

/// Tasks race BEGIN, ABORT and IDEM.DEL on a few keys through the backend:
/// every grant's fence is above every fence granted (and answered) before
/// its request was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_begins_aborts_and_dels_keep_each_keys_fences_growing() {
    const KEYS: usize = 2;
    const TASKS: usize = 8;
    const GRANTS_PER_TASK: usize = 25;
    let backend = Arc::new(MySqlBackend::connect(&url()).await.unwrap());
    let p = prefix();
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("{p}:race:{i}")).collect());
    let highest: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (backend, keys, highest) = (backend.clone(), keys.clone(), highest.clone());
            tokio::spawn(async move {
                let mut grants = 0;
                let mut round = 0usize;
                while grants < GRANTS_PER_TASK {
                    round += 1;
                    assert!(round < 100 * GRANTS_PER_TASK, "task {task} made no progress");
                    let i = (task + round) % KEYS;
                    let floor = highest[i].load(Ordering::SeqCst);
                    let reply = match backend.execute(begin(&keys[i])).await {
                        Ok(r) => r,
                        // A deadlock retried too often: nothing changed.
                        Err(e) if e.code == idem_core::ErrorCode::Busy => continue,
                        Err(e) => panic!("{e:?}"),
                    };
                    let Some(fence) = started_fence(&reply) else { continue };
                    assert!(fence > floor, "key {i}: fence {fence} granted after {floor}");
                    highest[i].fetch_max(fence, Ordering::SeqCst);
                    grants += 1;
                    let key = Bytes::from(keys[i].clone());
                    let removed = if round.is_multiple_of(2) {
                        backend.execute(Command::IdemAbort { key, fence }).await.unwrap()
                    } else {
                        backend.execute(Command::IdemDel { key }).await.unwrap()
                    };
                    assert!(matches!(removed, Reply::Array(_) | Reply::Int(1)), "{removed:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Cleanup forgets a done record and a tombstone only the grace after
/// their time (run in a database of its own: cleanup by a clock set ahead
/// would delete other tests' rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_waits_the_grace_before_it_forgets_a_record() {
    let base = url();
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    let db = format!("idem_test_{}", prefix());
    let mut root = Conn::new(mysql_async::Opts::from_url(&base).unwrap()).await.unwrap();
    root.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
    let own = format!("{server}/{db}");
    mysql::migrate(&own).await.unwrap();
    let backend = MySqlBackend::connect(&own).await.unwrap();

    let aborted = Bytes::from_static(b"aborted");
    let f = started_fence(&backend.execute(begin("aborted")).await.unwrap()).unwrap();
    backend.execute(Command::IdemAbort { key: aborted, fence: f }).await.unwrap();
    let done = Bytes::from_static(b"done");
    let f = started_fence(&backend.execute(begin("done")).await.unwrap()).unwrap();
    let commit = Command::IdemCommit { key: done, fence: f, result: Bytes::from_static(b"r"), keep_ms: 1 };
    backend.execute(commit).await.unwrap();

    let mut c = Conn::new(mysql_async::Opts::from_url(&own).unwrap()).await.unwrap();
    let now: i64 = c
        .query_first("SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000")
        .await
        .unwrap()
        .unwrap();
    let grace = i64::try_from(mysql::FORGET_GRACE_MS).unwrap();
    for (ahead_ms, left) in [(60_000, 2), (grace - 60_000, 2), (grace + 60_000, 0)] {
        c.query_drop(format!("SET @idem_test_now_ms = {}", now + ahead_ms)).await.unwrap();
        let _: Option<i64> = c.query_first("CALL idem_cleanup(1000)").await.unwrap();
        let rows: Option<i64> = c.query_first("SELECT COUNT(*) FROM idem_records").await.unwrap();
        assert_eq!(rows, Some(left), "{ahead_ms} ms later");
    }
    c.disconnect().await.unwrap();
    backend.shutdown().await;
    root.query_drop(format!("DROP DATABASE {db}")).await.unwrap();
    root.disconnect().await.unwrap();
}
