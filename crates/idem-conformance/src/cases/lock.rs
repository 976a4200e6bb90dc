//! Section 3: leases (LOCK, RENEW, UNLOCK, LOCK.INFO) with fencing.

use idem_core::{Backend, Reply};

use crate::{expect, int, int_at, items, ok, show, sleep_ms, status, text_at, Ctx};

async fn acquire(b: &dyn Backend, args: &[&str]) -> u64 {
    let r = expect(b, args, "acquired").await;
    assert_eq!(items(&r).len(), 2, "acquired is [acquired, fence]: {}", show(&r));
    let f = int_at(&r, 1);
    assert!(f > 0, "fence must be positive: {}", show(&r));
    f as u64
}

/// LOCK / re-LOCK / RENEW / UNLOCK / LOCK.INFO reply shapes and fences.
pub async fn lock_basic(b: &dyn Backend, c: &Ctx) {
    let n = c.key("job");
    let r = ok(b, &["LOCK.INFO", &n]).await;
    assert_eq!(r, Reply::status("free"), "got {}", show(&r));
    let f1 = acquire(b, &["LOCK", &n, "w1", "LEASE", "10000"]).await;
    let r = expect(b, &["LOCK.INFO", &n], "held").await;
    assert_eq!(text_at(&r, 1), "w1", "{}", show(&r));
    assert_eq!(int_at(&r, 2) as u64, f1, "{}", show(&r));
    let left = int_at(&r, 3);
    assert!(left > 0 && left <= 10_000, "left_ms within the lease: {}", show(&r));
    assert_eq!(int_at(&r, 4), 0, "no waiters: {}", show(&r));

    let r = expect(b, &["LOCK", &n, "w2", "LEASE", "10000"], "busy").await;
    assert_eq!(text_at(&r, 1), "w1", "busy names the holder: {}", show(&r));
    let left = int_at(&r, 2);
    assert!(left > 0 && left <= 10_000, "busy left_ms within the lease: {}", show(&r));

    let again = acquire(b, &["LOCK", &n, "w1", "LEASE", "20000"]).await;
    assert_eq!(again, f1, "a re-LOCK by the holder keeps the fence");
    let r = expect(b, &["LOCK.INFO", &n], "held").await;
    assert!(int_at(&r, 3) > 10_000, "the re-LOCK extended the lease: {}", show(&r));

    let r = expect(b, &["RENEW", &n, "w1", "LEASE", "10000"], "renewed").await;
    assert_eq!(int_at(&r, 1) as u64, f1, "RENEW keeps the fence: {}", show(&r));
    let r = ok(b, &["RENEW", &n, "w2", "LEASE", "10000"]).await;
    assert_eq!(r, Reply::status("lost"), "RENEW by a non-holder: {}", show(&r));

    assert_eq!(int(&ok(b, &["UNLOCK", &n, "w2"]).await), 0, "UNLOCK by a non-holder");
    expect(b, &["LOCK.INFO", &n], "held").await;
    assert_eq!(int(&ok(b, &["UNLOCK", &n, "w1"]).await), 1);
    assert_eq!(ok(b, &["LOCK.INFO", &n]).await, Reply::status("free"));
    assert_eq!(int(&ok(b, &["UNLOCK", &n, "w1"]).await), 0, "second UNLOCK");
    assert_eq!(ok(b, &["RENEW", &n, "w1", "LEASE", "1000"]).await, Reply::status("lost"));

    let f2 = acquire(b, &["LOCK", &n, "w2", "LEASE", "10000"]).await;
    assert!(f2 > f1, "a new grant has a larger fence: {f2} after {f1}");
}

/// A lease that runs out frees the lock: RENEW is `lost`, the next LOCK
/// gets a larger fence, and the old holder's UNLOCK does nothing.
pub async fn lock_expiry(b: &dyn Backend, c: &Ctx) {
    let n = c.key("job");
    let f1 = acquire(b, &["LOCK", &n, "w1", "LEASE", "150"]).await;
    sleep_ms(450).await;
    assert_eq!(ok(b, &["LOCK.INFO", &n]).await, Reply::status("free"), "the lease ran out");
    assert_eq!(ok(b, &["RENEW", &n, "w1", "LEASE", "1000"]).await, Reply::status("lost"));
    let f2 = acquire(b, &["LOCK", &n, "w2", "LEASE", "10000"]).await;
    assert!(f2 > f1, "fence after expiry {f2} must exceed {f1}");
    assert_eq!(int(&ok(b, &["UNLOCK", &n, "w1"]).await), 0, "the expired holder cannot UNLOCK");
    let r = expect(b, &["LOCK.INFO", &n], "held").await;
    assert_eq!(text_at(&r, 1), "w2");
    // The same owner coming back after its lease ran out gets a new, larger fence.
    let f3 = acquire(b, &["LOCK", &n, "w2", "LEASE", "10000"]).await;
    assert_eq!(f3, f2, "re-LOCK while still held keeps the fence");
    assert_eq!(int(&ok(b, &["UNLOCK", &n, "w2"]).await), 1);
    let f4 = acquire(b, &["LOCK", &n, "w2", "LEASE", "10000"]).await;
    assert!(f4 > f2, "a fresh grant to the same owner has a larger fence");
}

/// Waiters are served first come, first served on UNLOCK; LOCK.INFO counts them.
pub async fn lock_wait_fifo_unlock(b: &dyn Backend, c: &Ctx) {
    let n = c.key("job");
    let f1 = acquire(b, &["LOCK", &n, "w1", "LEASE", "30000"]).await;
    let (lock2, lock3, info) = (
        ["LOCK", &n, "w2", "LEASE", "30000", "WAIT", "30000"],
        ["LOCK", &n, "w3", "LEASE", "30000", "WAIT", "30000"],
        ["LOCK.INFO", &n],
    );
    let w2 = ok(b, &lock2);
    tokio::pin!(w2);
    let w3 = ok(b, &lock3);
    tokio::pin!(w3);
    tokio::select! { r = &mut w2 => panic!("w2 returned early: {}", show(&r)), _ = sleep_ms(150) => {} }
    tokio::select! {
        r = &mut w2 => panic!("w2 returned early: {}", show(&r)),
        r = &mut w3 => panic!("w3 returned early: {}", show(&r)),
        _ = sleep_ms(150) => {}
    }
    let info = tokio::select! {
        r = &mut w2 => panic!("w2 returned early: {}", show(&r)),
        r = &mut w3 => panic!("w3 returned early: {}", show(&r)),
        r = ok(b, &info) => r,
    };
    assert_eq!(status(&info), "held");
    assert_eq!(int_at(&info, 4), 2, "two parked waiters: {}", show(&info));
    let unlock = async {
        assert_eq!(int(&ok(b, &["UNLOCK", &n, "w1"]).await), 1);
        std::future::pending::<Reply>().await
    };
    let r2 = tokio::select! {
        r = &mut w2 => r,
        r = &mut w3 => panic!("w3 served before w2: {}", show(&r)),
        r = unlock => r,
    };
    assert_eq!(status(&r2), "acquired", "w2 is first: {}", show(&r2));
    let f2 = int_at(&r2, 1) as u64;
    assert!(f2 > f1);
    let r = expect(b, &["LOCK.INFO", &n], "held").await;
    assert_eq!(text_at(&r, 1), "w2");
    tokio::select! { r = &mut w3 => panic!("w3 returned while w2 holds: {}", show(&r)), _ = sleep_ms(200) => {} }
    let unlock = async {
        assert_eq!(int(&ok(b, &["UNLOCK", &n, "w2"]).await), 1);
        std::future::pending::<Reply>().await
    };
    let r3 = tokio::select! { r = &mut w3 => r, r = unlock => r };
    assert_eq!(status(&r3), "acquired", "w3 is next: {}", show(&r3));
    let f3 = int_at(&r3, 1) as u64;
    assert!(f3 > f2);
    let r = expect(b, &["LOCK.INFO", &n], "held").await;
    assert_eq!(text_at(&r, 1), "w3");
    assert_eq!(int_at(&r, 4), 0, "no waiters left: {}", show(&r));
}

/// A waiter gets the lock when the holder's lease runs out, with a larger fence.
pub async fn lock_wait_lease_expiry(b: &dyn Backend, c: &Ctx) {
    let n = c.key("job");
    let f1 = acquire(b, &["LOCK", &n, "w1", "LEASE", "250"]).await;
    let f2 = acquire(b, &["LOCK", &n, "w2", "LEASE", "10000", "WAIT", "20000"]).await;
    assert!(f2 > f1, "fence after takeover {f2} must exceed {f1}");
    assert_eq!(ok(b, &["RENEW", &n, "w1", "LEASE", "1000"]).await, Reply::status("lost"));
}

/// A WAIT that passes replies `busy` with the holder.
pub async fn lock_wait_times_out(b: &dyn Backend, c: &Ctx) {
    let n = c.key("job");
    acquire(b, &["LOCK", &n, "w1", "LEASE", "20000"]).await;
    let r = expect(b, &["LOCK", &n, "w2", "LEASE", "1000", "WAIT", "200"], "busy").await;
    assert_eq!(text_at(&r, 1), "w1");
    let r = expect(b, &["LOCK.INFO", &n], "held").await;
    assert_eq!(text_at(&r, 1), "w1");
    assert_eq!(int_at(&r, 4), 0, "a waiter that gave up is not counted: {}", show(&r));
}

/// A parked LOCK whose caller goes away is forgotten: it is not counted and
/// is not handed the lock on UNLOCK.
pub async fn lock_wait_cancelled(b: &dyn Backend, c: &Ctx) {
    let n = c.key("job");
    acquire(b, &["LOCK", &n, "w1", "LEASE", "30000"]).await;
    let gone = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        ok(b, &["LOCK", &n, "w2", "LEASE", "30000", "WAIT", "30000"]),
    )
    .await;
    assert!(gone.is_err(), "the waiter was still parked when its caller left");
    // Forgetting may happen in the background; give it a moment (well under
    // any staleness timeout an engine might also use).
    sleep_ms(300).await;
    let r = expect(b, &["LOCK.INFO", &n], "held").await;
    assert_eq!(int_at(&r, 4), 0, "a caller that left is not a waiter: {}", show(&r));
    assert_eq!(int(&ok(b, &["UNLOCK", &n, "w1"]).await), 1);
    assert_eq!(ok(b, &["LOCK.INFO", &n]).await, Reply::status("free"), "nobody was handed the lock");
}

/// When the holder's lease runs out, waiters are served in arrival order.
pub async fn lock_wait_fifo_expiry(b: &dyn Backend, c: &Ctx) {
    let n = c.key("job");
    let f1 = acquire(b, &["LOCK", &n, "w1", "LEASE", "400"]).await;
    let (lock2, lock3) =
        (["LOCK", &n, "w2", "LEASE", "30000", "WAIT", "30000"], ["LOCK", &n, "w3", "LEASE", "30000", "WAIT", "30000"]);
    let w2 = ok(b, &lock2);
    tokio::pin!(w2);
    let w3 = ok(b, &lock3);
    tokio::pin!(w3);
    let r2 = tokio::select! { r = &mut w2 => r, _ = sleep_ms(100) => {
        tokio::select! { r = &mut w2 => r, r = &mut w3 => panic!("w3 served before w2: {}", show(&r)) }
    } };
    assert_eq!(status(&r2), "acquired", "w2 first after the lease ran out: {}", show(&r2));
    let f2 = int_at(&r2, 1) as u64;
    assert!(f2 > f1);
    tokio::select! { r = &mut w3 => panic!("w3 returned while w2 holds: {}", show(&r)), _ = sleep_ms(200) => {} }
    assert_eq!(int(&ok(b, &["UNLOCK", &n, "w2"]).await), 1);
    let r3 = w3.await;
    assert_eq!(status(&r3), "acquired", "{}", show(&r3));
    assert!(int_at(&r3, 1) as u64 > f2);
}
