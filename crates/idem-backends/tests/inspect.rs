//! `Backend::inspect_idem` on each external engine (the inspector's
//! record, fence, lease left, attempt and waiters): a key's view through
//! absent, running with a parked waiter, done, and an expired lease.
//!
//! Needs the engines at `IDEM_TEST_POSTGRES_URL`, `IDEM_TEST_MYSQL_URL` and
//! `IDEM_TEST_REDIS_URL` (defaults: the local test services).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_core::machine::{IdemView, WaitersScope};
use idem_core::{Backend, Command, Limits, Reply};

/// Upper bound on waiting for a parked caller to show, so a bug fails the
/// test instead of hanging it. Never an assertion on speed.
const PATIENCE: Duration = Duration::from_secs(20);

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn cmd(line: &str) -> Command {
    let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    Command::parse(&args, &Limits::default()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// A key no earlier run used.
fn fresh_key(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("inspect:{tag}:{nanos}")
}

async fn view(b: &dyn Backend, key: &str) -> IdemView {
    b.inspect_idem(key.as_bytes()).await.expect("inspect").expect("external backends inspect")
}

async fn check(b: Arc<dyn Backend>, tag: &str, scope: WaitersScope) {
    let key = fresh_key(tag);
    assert_eq!(view(&*b, &key).await, IdemView::Absent { attempt: 0 });

    let started = b.execute(cmd(&format!("IDEM.BEGIN {key} LEASE 60000"))).await.expect("begin");
    let Reply::Array(items) = &started else { panic!("{started:?}") };
    let (Some("started"), Reply::Int(fence)) = (items[0].word(), &items[1]) else { panic!("{started:?}") };
    let fence = u64::try_from(*fence).unwrap();
    match view(&*b, &key).await {
        IdemView::Running { fence: f, attempt: 1, lease_left_ms, waiters: 0, waiters_scope } => {
            assert_eq!(f, fence);
            assert!(lease_left_ms > 0 && lease_left_ms <= 60_000, "{lease_left_ms}");
            assert_eq!(waiters_scope, scope);
        }
        other => panic!("{other:?}"),
    }

    // A duplicate parks with WAIT: the inspector counts it.
    let waiter = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move { b.execute(cmd(&format!("IDEM.BEGIN {key} WAIT 30000"))).await })
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match view(&*b, &key).await {
            IdemView::Running { waiters: 1, .. } => break,
            IdemView::Running { waiters: 0, .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => panic!("the parked caller never showed: {other:?}"),
        }
    }
    if scope == WaitersScope::ThisProcess {
        // INFO's parked_waiters (idem_parked_waiters) counts the same callers.
        let parked = b.info().into_iter().find(|(k, _)| k == "parked_waiters").map(|(_, v)| v);
        assert_eq!(parked.as_deref(), Some("1"));
    }
    b.execute(cmd(&format!("IDEM.COMMIT {key} {fence} paid KEEP 60000"))).await.expect("commit");
    let replayed = tokio::time::timeout(PATIENCE, waiter).await.expect("waiter answered").unwrap().expect("wait");
    assert_eq!(replayed.word(), Some("done"), "{replayed:?}");
    match view(&*b, &key).await {
        IdemView::Done { result_bytes: 4, keep_left_ms } => assert!(keep_left_ms > 0 && keep_left_ms <= 60_000),
        other => panic!("{other:?}"),
    }

    // A lease that runs out leaves an absent key that remembers its attempt.
    let key = fresh_key(tag);
    b.execute(cmd(&format!("IDEM.BEGIN {key} LEASE 1"))).await.expect("begin");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match view(&*b, &key).await {
            IdemView::Absent { attempt: 1 } => break,
            IdemView::Running { .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shows_the_record_and_this_servers_waiters() {
    let url = env("IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    let b = idem_backends::postgres::PgBackend::connect(&url).await.expect("PostgreSQL reachable");
    check(Arc::new(b), "pg", WaitersScope::ThisProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_shows_the_record_and_this_servers_waiters() {
    let url = env("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let b = idem_backends::mysql::MySqlBackend::connect(&url).await.expect("MySQL reachable");
    check(Arc::new(b), "mysql", WaitersScope::ThisProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_shows_the_record_and_every_servers_waiters() {
    let url = env("IDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let b = idem_backends::redis::RedisBackend::connect(&url).await.expect("Redis reachable");
    check(Arc::new(b), "redis", WaitersScope::Store).await;
}
