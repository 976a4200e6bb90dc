//! The typed client against a real idem server (in-process, embedded store):
//! every primitive, the pool under a parked WAIT, reconnects,
//! `idempotent()` and the `Lock` guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_client::testing::TestServer;
use idem_client::*;

/// Upper bound on any single wait, so a bug fails the test instead of
/// hanging it. Never an assertion on speed.
const PATIENCE: Duration = Duration::from_secs(30);

async fn setup() -> (TestServer, Client) {
    let server = TestServer::start().await;
    let client = Client::connect(Config::new(server.url()).pool_size(32)).await.expect("connect");
    (server, client)
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn idempotency_keys() {
    let (_s, c) = setup().await;
    let opts = BeginOptions::new().fingerprint("fp1").lease_ms(10_000);
    let Begin::Started { fence, attempt: 1 } = c.begin("k", &opts).await.unwrap() else { panic!("first begin starts") };
    assert!(matches!(c.begin("k", &opts).await.unwrap(), Begin::Running { fence: f, .. } if f == fence));
    assert!(matches!(c.idem_get("k").await.unwrap(), IdemState::Running { fence: f, .. } if f == fence));
    let e = c.begin("k", &BeginOptions::new().fingerprint("fp2")).await.unwrap_err();
    assert!(matches!(e, Error::Mismatch(_)), "{e}");
    assert!(matches!(c.commit("k", fence + 1, "r").await.unwrap_err(), Error::Stale(_)));
    c.commit("k", fence, b"result\0bin").await.unwrap();
    assert_eq!(c.begin("k", &opts).await.unwrap(), Begin::Done(Bytes::from_static(b"result\0bin")));
    assert_eq!(c.idem_get("k").await.unwrap(), IdemState::Done(Bytes::from_static(b"result\0bin")));
    assert!(c.idem_del("k").await.unwrap());
    assert!(!c.idem_del("k").await.unwrap());
    assert_eq!(c.idem_get("k").await.unwrap(), IdemState::Absent);

    let Begin::Started { fence, .. } = c.begin("a", &BeginOptions::new()).await.unwrap() else { panic!() };
    c.abort("a", fence).await.unwrap();
    assert!(matches!(c.abort("a", fence).await.unwrap_err(), Error::Stale(_)));
    assert!(matches!(c.begin("a", &BeginOptions::new()).await.unwrap(), Begin::Started { attempt: 1, .. }));
    let e = c.begin("", &BeginOptions::new()).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "empty key: {e}");
    let e = c.begin("x".repeat(600), &BeginOptions::new()).await.unwrap_err();
    assert!(matches!(e, Error::LimitExceeded(_)), "long key: {e}");
}

#[tokio::test]
async fn claims() {
    let (_s, c) = setup().await;
    assert_eq!(c.claim("email", "u1", None).await.unwrap(), Claim::Claimed);
    assert_eq!(c.claim("email", "u1", Some(60_000)).await.unwrap(), Claim::Claimed);
    assert_eq!(c.claim("email", "u2", None).await.unwrap(), Claim::Held { owner: bytes("u1") });
    assert_eq!(c.owner("email").await.unwrap(), Some(bytes("u1")));
    let all = c.claim_all("u2", &["{t}a", "{t}email", "{t}b"]).await.unwrap();
    assert_eq!(all, ClaimAll::Claimed);
    let all = c.claim_all("u3", &["{t}a", "{t}c", "{t}b"]).await.unwrap();
    assert_eq!(
        all,
        ClaimAll::Held(vec![
            Held { key: bytes("{t}a"), owner: bytes("u2") },
            Held { key: bytes("{t}b"), owner: bytes("u2") }
        ])
    );
    assert_eq!(c.owner("{t}c").await.unwrap(), None, "all or nothing");
    assert!(!c.release("email", "u2").await.unwrap());
    assert!(c.release("email", "u1").await.unwrap());
    assert_eq!(c.owner("email").await.unwrap(), None);
}

#[tokio::test]
async fn locks() {
    let (_s, c) = setup().await;
    let LockReply::Acquired { fence } = c.lock("n", "o1", 10_000, 0).await.unwrap() else { panic!() };
    assert!(matches!(c.lock("n", "o2", 10_000, 0).await.unwrap(), LockReply::Busy { holder, .. } if holder == "o1"));
    assert_eq!(c.renew("n", "o1", 10_000).await.unwrap(), Renew::Renewed { fence });
    assert_eq!(c.renew("n", "o2", 10_000).await.unwrap(), Renew::Lost);
    assert!(
        matches!(c.lock_info("n").await.unwrap(), LockInfo::Held { owner, fence: f, waiters: 0, .. } if owner == "o1" && f == fence)
    );
    assert!(!c.unlock("n", "o2").await.unwrap());
    assert!(c.unlock("n", "o1").await.unwrap());
    assert_eq!(c.lock_info("n").await.unwrap(), LockInfo::Free);
    let LockReply::Acquired { fence: f2 } = c.lock("n", "o2", 10_000, 0).await.unwrap() else { panic!() };
    assert!(f2 > fence, "fences only grow");
}

#[tokio::test]
async fn tokens_counters_values_fsm_slots() {
    let (_s, c) = setup().await;
    let t = c.token_new("reset", 60_000).await.unwrap();
    assert_eq!(t.len(), 32);
    assert!(c.token_use("reset", &t).await.unwrap());
    assert!(!c.token_use("reset", &t).await.unwrap());

    let bounded = CounterOptions::new().min(0).max(10);
    assert_eq!(c.counter_add("stock", 10, &bounded).await.unwrap(), CounterAdd::Applied(10));
    assert_eq!(c.counter_add("stock", 1, &bounded).await.unwrap(), CounterAdd::Refused(10));
    let once = CounterOptions::new().min(0).op("order-1");
    assert_eq!(c.counter_add("stock", -3, &once).await.unwrap(), CounterAdd::Applied(7));
    assert_eq!(c.counter_add("stock", -3, &once).await.unwrap(), CounterAdd::Replayed(7));
    assert_eq!(c.counter_get("stock").await.unwrap(), 7);
    assert_eq!(c.counter_get("none").await.unwrap(), 0);
    let e = c.counter_add("stock", 1, &CounterOptions::new().min(5).max(1)).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");

    assert_eq!(c.value_get("v").await.unwrap(), None);
    assert_eq!(c.value_set("v", "a", Some(0)).await.unwrap(), ValueSet::Stored { version: 1 });
    assert_eq!(c.value_set("v", "b", Some(0)).await.unwrap(), ValueSet::Conflict { version: 1 });
    assert_eq!(c.value_set("v", "b", None).await.unwrap(), ValueSet::Stored { version: 2 });
    assert_eq!(c.value_get("v").await.unwrap(), Some(Versioned { value: bytes("b"), version: 2 }));

    assert_eq!(c.fsm_move("o", "paid", &["new"]).await.unwrap(), FsmMove::Refused { current: None });
    assert_eq!(c.fsm_move("o", "new", &["none"]).await.unwrap(), FsmMove::Moved(bytes("new")));
    assert_eq!(c.fsm_move("o", "new", &["none"]).await.unwrap(), FsmMove::Already(bytes("new")));
    assert_eq!(c.fsm_move("o", "shipped", &["paid"]).await.unwrap(), FsmMove::Refused { current: Some(bytes("new")) });
    assert_eq!(c.fsm_get("o").await.unwrap(), Some(bytes("new")));

    assert_eq!(c.slots_reserve("room", 2, 4, "h1", Some(8)).await.unwrap(), Reserve::Reserved);
    assert_eq!(
        c.slots_reserve("room", 0, 3, "h2", None).await.unwrap(),
        Reserve::Conflict(vec![SlotHeld { slot: 2, holder: bytes("h1") }, SlotHeld { slot: 3, holder: bytes("h1") }])
    );
    let slots = c.slots_get("room").await.unwrap();
    assert_eq!(slots.len(), 8);
    assert_eq!(slots[2], Some(bytes("h1")));
    assert_eq!(slots[0], None);
    assert_eq!(c.slots_release("room", 0, 7, "h2").await.unwrap(), 0);
    assert_eq!(c.slots_release("room", 0, 7, "h1").await.unwrap(), 3);
    assert!(c.slots_get("room").await.unwrap().is_empty());
}

/// A call parked in WAIT holds its own connection: other calls go on.
#[tokio::test]
async fn a_parked_wait_does_not_block_other_calls() {
    let s = TestServer::start().await;
    // Two connections: the waiter parks on one, every other call uses the other.
    let c = Client::new(Config::new(s.url()).pool_size(2)).unwrap();
    let Begin::Started { fence, .. } = c.begin("w", &BeginOptions::new()).await.unwrap() else { panic!() };
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.begin("w", &BeginOptions::new().wait_ms(60_000)).await })
    };
    for i in 0..20 {
        assert_eq!(c.counter_add("n", 1, &CounterOptions::new()).await.unwrap(), CounterAdd::Applied(i + 1));
    }
    assert!(!waiter.is_finished(), "the waiter is still parked");
    c.commit("w", fence, "done").await.unwrap();
    let got = tokio::time::timeout(PATIENCE, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Begin::Done(bytes("done")));
}

/// The server's count of open connections, through a connection of its own.
async fn connected_clients(info: &mut redis::aio::MultiplexedConnection) -> u64 {
    let text: String = redis::cmd("INFO").query_async(info).await.expect("INFO");
    let line = text.lines().find_map(|l| l.strip_prefix("connected_clients:")).expect("connected_clients in INFO");
    line.trim().parse().expect("a count")
}

/// Ten calls parked in WAIT through a pool of three: three connections
/// exist, the other calls queue for them, and every call is answered once
/// the work is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_bounds_connections_and_queues_calls() {
    let s = TestServer::start().await;
    let mut info = redis::Client::open(s.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let starter = Client::new(Config::new(s.url()).pool_size(1)).unwrap();
    let Begin::Started { fence, .. } = starter.begin("w", &BeginOptions::new()).await.unwrap() else { panic!() };
    let before = connected_clients(&mut info).await; // INFO's own and the starter's
    let c = Client::new(Config::new(s.url()).pool_size(3)).unwrap();
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.begin("w", &BeginOptions::new().wait_ms(60_000)).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while connected_clients(&mut info).await < before + 3 {
        assert!(tokio::time::Instant::now() < deadline, "three waiters never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give the other seven every chance to (wrongly) open connections.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connected_clients(&mut info).await, before + 3, "the pool opens at most three");
    assert!(waiters.iter().all(|w| !w.is_finished()));
    starter.commit("w", fence, "r").await.unwrap();
    for w in waiters {
        let got = tokio::time::timeout(PATIENCE, w).await.unwrap().unwrap().unwrap();
        assert_eq!(got, Begin::Done(bytes("r")));
    }
}

/// After the server goes away and comes back on the same address, the
/// client reconnects on its own; the calls in between fail with a transport
/// error, not a made-up reply.
#[tokio::test]
async fn reconnects_after_a_server_restart() {
    let s = TestServer::start().await;
    let addr = s.addr();
    let c = Client::new(Config::new(s.url()).pool_size(4).connect_timeout_ms(2_000)).unwrap();
    assert_eq!(c.counter_add("n", 1, &CounterOptions::new()).await.unwrap(), CounterAdd::Applied(1));
    s.stop().await;
    let e = c.counter_get("n").await.unwrap_err();
    assert!(matches!(e, Error::Transport(_) | Error::Timeout { .. }), "{e}");
    let _s2 = TestServer::start_at(addr).await;
    // A fresh in-memory store: the counter starts again from 0.
    assert_eq!(c.counter_get("n").await.unwrap(), 0);
}

#[tokio::test]
async fn bad_config_is_refused() {
    for cfg in [
        Config::new("redis://127.0.0.1:1").pool_size(0),
        Config::new("redis://127.0.0.1:1").pool_size(POOL_SIZE_MAX + 1),
        Config::new("redis://127.0.0.1:1").command_timeout_ms(0),
        Config::new("redis://127.0.0.1:1").connect_timeout_ms(CONNECT_TIMEOUT_MS_MAX + 1),
        Config::new("not a url"),
    ] {
        assert!(matches!(Client::new(cfg.clone()), Err(Error::Config(_))), "{cfg:?}");
    }
}

// ---- idempotent() ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_runs_once_under_concurrent_duplicates() {
    let (_s, c) = setup().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let opts = IdempotentOptions::new().fingerprint("same-body");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, runs, opts) = (c.clone(), runs.clone(), opts.clone());
            tokio::spawn(async move {
                c.idempotent("order-7", &opts, |attempt| async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Long enough that the duplicates arrive while it runs.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, std::io::Error>((attempt.number, "charged".to_string()))
                })
                .await
            })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        match tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap().unwrap() {
            Outcome::Fresh(v) => {
                fresh += 1;
                assert_eq!(v, (1, "charged".to_string()));
            }
            Outcome::Replayed(v) => assert_eq!(v, (1, "charged".to_string())),
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once");
    assert_eq!(fresh, 1, "exactly one caller ran it");
}

#[tokio::test]
async fn idempotent_error_aborts_and_the_retry_runs() {
    let (_s, c) = setup().await;
    let opts = IdempotentOptions::new();
    let r: Result<Outcome<u32>, _> = c.idempotent("k", &opts, |_| async { Err("card declined") }).await;
    assert!(matches!(r, Err(IdempotentError::Failed("card declined"))));
    assert_eq!(c.idem_get("k").await.unwrap(), IdemState::Absent, "aborted, not kept");
    let r = c.idempotent("k", &opts, |a| async move { Ok::<_, &str>(a.number) }).await.unwrap();
    assert_eq!(r, Outcome::Fresh(1), "the retry runs, as attempt 1 again");
    let r = c.idempotent("k", &opts, |_| async { Ok::<u64, &str>(99) }).await.unwrap();
    assert!(r.is_replay());
    assert_eq!(r.into_inner(), 1);
}

/// A later attempt that fails keeps its record until the lease runs out, so
/// the next caller is still told to look for an earlier attempt's half-done
/// work (attempt 3, not a fresh attempt 1).
#[tokio::test]
async fn idempotent_failed_later_attempt_keeps_the_warning() {
    let (_s, c) = setup().await;
    let short = BeginOptions::new().lease_ms(100);
    assert!(matches!(c.begin("k", &short).await.unwrap(), Begin::Started { attempt: 1, .. }));
    tokio::time::sleep(Duration::from_millis(250)).await; // attempt 1 "crashed": its lease runs out
                                                          // Long enough that the check below comes well within it.
    let opts = IdempotentOptions::new().lease_ms(1_000).on_running(OnRunning::Fail);
    let r = c.idempotent("k", &opts, |a| async move { Err::<u8, _>(a.number) }).await;
    assert!(matches!(r, Err(IdempotentError::Failed(2))), "{r:?}");
    assert!(matches!(c.idem_get("k").await.unwrap(), IdemState::Running { .. }), "not aborted");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let r = c.idempotent("k", &opts, |a| async move { Ok::<_, ()>(a.number) }).await.unwrap();
    assert_eq!(r, Outcome::Fresh(3));
}

#[tokio::test]
async fn idempotent_in_flight_fails_or_waits_as_asked() {
    let (_s, c) = setup().await;
    let Begin::Started { fence, .. } = c.begin("k", &BeginOptions::new()).await.unwrap() else { panic!() };
    let fail = IdempotentOptions::new().on_running(OnRunning::Fail);
    let r = c.idempotent("k", &fail, |_| async { Ok::<u8, ()>(1) }).await;
    assert!(matches!(r, Err(IdempotentError::Idem(Error::InFlight { fence: f, .. })) if f == fence));
    let short = IdempotentOptions::new().on_running(OnRunning::Wait { wait_ms: 50 });
    let r = c.idempotent("k", &short, |_| async { Ok::<u8, ()>(1) }).await;
    assert!(matches!(r, Err(IdempotentError::Idem(Error::InFlight { .. }))), "still running after the wait");
    // The running attempt aborts: a waiter takes over and runs the work.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            let opts = IdempotentOptions::new().on_running(OnRunning::Wait { wait_ms: 60_000 });
            c.idempotent("k", &opts, |_| async { Ok::<u8, ()>(2) }).await
        })
    };
    c.abort("k", fence).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Outcome::Fresh(2));
}

#[tokio::test]
async fn idem_renew_extends_the_holders_lease_only() {
    let (_s, c) = setup().await;
    let Begin::Started { fence, .. } = c.begin("k", &BeginOptions::new().lease_ms(1_000)).await.unwrap() else {
        panic!("first begin starts")
    };
    assert_eq!(c.idem_renew("k", fence, 60_000).await.unwrap(), fence);
    let IdemState::Running { fence: f, left_ms } = c.idem_get("k").await.unwrap() else { panic!("running") };
    assert!(f == fence && left_ms > 1_000, "the renewed lease: {left_ms} ms left");
    assert!(matches!(c.idem_renew("k", fence + 1, 60_000).await.unwrap_err(), Error::Stale(_)));
    c.commit("k", fence, "r").await.unwrap();
    assert!(matches!(c.idem_renew("k", fence, 60_000).await.unwrap_err(), Error::Stale(_)), "done");
    let e = c.idem_renew("k", fence, 0).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "LEASE 0: {e}");
}

/// `idempotent()` renews its lease while the work runs: a duplicate that
/// arrives after several leases still finds the first attempt running, and
/// the first attempt's commit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_renews_a_short_lease_while_the_work_runs() {
    let (_s, c) = setup().await;
    // A lease short enough to run out several times over during the work,
    // long enough that a loaded test machine does not stall a renewal past it.
    let opts = IdempotentOptions::new().lease_ms(600).on_running(OnRunning::Fail);
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let (c, opts) = (c.clone(), opts.clone());
        tokio::spawn(async move {
            c.idempotent("slow", &opts, |a| async move {
                hold.await.expect("released");
                Ok::<_, ()>(a.fence)
            })
            .await
        })
    };
    let fence = loop {
        if let IdemState::Running { fence, .. } = c.idem_get("slow").await.unwrap() {
            break fence;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(2_400)).await;
    let r = c.idempotent("slow", &opts, |_| async { Ok::<u64, ()>(0) }).await;
    assert!(matches!(r, Err(IdempotentError::Idem(Error::InFlight { fence: f, .. })) if f == fence), "{r:?}");
    release.send(()).unwrap();
    let got = tokio::time::timeout(PATIENCE, first).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Outcome::Fresh(fence), "the renewed attempt committed");
    assert_eq!(c.idempotent("slow", &opts, |_| async { Ok::<u64, ()>(0) }).await.unwrap(), Outcome::Replayed(fence));
}

#[tokio::test]
async fn idempotent_fingerprint_and_type_errors() {
    let (_s, c) = setup().await;
    let a = IdempotentOptions::new().fingerprint("a");
    c.idempotent("k", &a, |_| async { Ok::<_, ()>("text".to_string()) }).await.unwrap();
    let b = IdempotentOptions::new().fingerprint("b");
    let r = c.idempotent("k", &b, |_| async { Ok::<_, ()>("text".to_string()) }).await;
    assert!(matches!(r, Err(IdempotentError::Idem(Error::Mismatch(_)))));
    // The stored result is a string; read back as a number it is an error, not a guess.
    let r = c.idempotent("k", &a, |_| async { Ok::<u32, ()>(5) }).await;
    assert!(matches!(r, Err(IdempotentError::Idem(Error::Serde(_)))));
}

// ---- Lock ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_watchdog_keeps_a_short_lease_alive() {
    let (_s, c) = setup().await;
    // A lease short enough to run out several times over during the work,
    // long enough that a loaded test machine does not stall a renewal past it.
    let lock = Lock::acquire(&c, "job", LockOptions::new(600)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_400)).await;
    assert!(lock.held());
    let info = c.lock_info("job").await.unwrap();
    assert!(
        matches!(&info, LockInfo::Held { owner, fence, .. } if owner == lock.owner() && *fence == lock.fence()),
        "{info:?}"
    );
    let e = Lock::acquire(&c, "job", LockOptions::new(600)).await.err().expect("busy");
    assert!(matches!(e, Error::LockBusy { .. }), "{e}");
    assert!(lock.release().await.unwrap());
    assert_eq!(c.lock_info("job").await.unwrap(), LockInfo::Free);
}

#[tokio::test]
async fn lock_lost_fires_when_renew_says_lost() {
    let (_s, c) = setup().await;
    let lock = Lock::acquire(&c, "job", LockOptions::new(300)).await.unwrap();
    let lost = lock.lost();
    // Someone unlocks it behind the guard's back (as an expiry during a
    // pause would): the next RENEW replies `lost`.
    assert!(c.unlock("job", lock.owner()).await.unwrap());
    tokio::time::timeout(PATIENCE, lost).await.expect("lost() fires");
    assert!(!lock.held());
    let other = Lock::acquire(&c, "job", LockOptions::new(300)).await.unwrap();
    assert!(other.fence() > lock.fence());
    assert!(!lock.held(), "never held again");
    assert!(!lock.release().await.unwrap(), "the old guard's UNLOCK changes nothing");
    assert!(other.held());
}

#[tokio::test]
async fn lock_lost_fires_when_the_server_is_gone() {
    let s = TestServer::start().await;
    let c = Client::new(Config::new(s.url()).connect_timeout_ms(2_000).command_timeout_ms(2_000)).unwrap();
    let lock = Lock::acquire(&c, "job", LockOptions::new(300)).await.unwrap();
    assert!(lock.held());
    s.stop().await;
    tokio::time::timeout(PATIENCE, lock.lost()).await.expect("lost() fires once the lease passes unrenewed");
    assert!(!lock.held());
}

#[tokio::test]
async fn lock_drop_releases_and_wait_hands_over() {
    let (_s, c) = setup().await;
    let first = Lock::acquire(&c, "job", LockOptions::new(30_000)).await.unwrap();
    let fence = first.fence();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { Lock::acquire(&c, "job", LockOptions::new(30_000).wait_ms(20_000)).await })
    };
    tokio::task::yield_now().await;
    // Dropped, not released: the guard's spawned UNLOCK hands the lock to
    // the waiter long before the 30 s lease could run out.
    drop(first);
    let second = tokio::time::timeout(PATIENCE, waiter).await.unwrap().unwrap().unwrap();
    assert!(second.fence() > fence);
    assert!(second.held());
    drop(second);
    let third = Lock::acquire(&c, "job", LockOptions::new(30_000).wait_ms(20_000)).await.unwrap();
    assert!(third.held());
}
