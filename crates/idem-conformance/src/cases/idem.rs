//! Section 1: idempotency keys (IDEM.BEGIN / COMMIT / ABORT / RENEW / GET / DEL).

use bytes::Bytes;
use idem_core::{Backend, ErrorCode, Reply};

use crate::{bulk_at, err_code, exec_bytes, expect, int, int_at, ok, show, sleep_ms, status, Ctx};

/// Starts an attempt and returns its `(fence, attempt)`.
async fn start(b: &dyn Backend, args: &[&str]) -> (u64, i64) {
    let r = expect(b, args, "started").await;
    let fence = int_at(&r, 1);
    let attempt = int_at(&r, 2);
    assert!(fence > 0, "{args:?}: fence must be positive, got {}", show(&r));
    assert!(attempt >= 1, "{args:?}: attempt must be at least 1, got {}", show(&r));
    (fence as u64, attempt)
}

/// BEGIN → started; a second BEGIN sees `running` with the same fence; COMMIT;
/// then BEGIN and GET replay the result.
pub async fn idem_begin_commit_replay(b: &dyn Backend, c: &Ctx) {
    let k = c.key("order-1");
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent");
    let (fence, attempt) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    assert_eq!(attempt, 1, "the first attempt is attempt 1");

    let r = expect(b, &["IDEM.BEGIN", &k, "LEASE", "10000"], "running").await;
    assert_eq!(int_at(&r, 1) as u64, fence, "running reports the live attempt's fence: {}", show(&r));
    let left = int_at(&r, 2);
    assert!(left > 0 && left <= 10_000, "left_ms within the lease, got {}", show(&r));

    let r = expect(b, &["IDEM.GET", &k], "running").await;
    assert_eq!(int_at(&r, 1) as u64, fence, "GET reports the fence: {}", show(&r));
    let left = int_at(&r, 2);
    assert!(left > 0 && left <= 10_000, "GET left_ms within the lease, got {}", show(&r));

    let f = fence.to_string();
    let r = ok(b, &["IDEM.COMMIT", &k, &f, "charge-42"]).await;
    assert_eq!(r, Reply::status("ok"), "COMMIT replies [ok], got {}", show(&r));

    let r = expect(b, &["IDEM.BEGIN", &k], "done").await;
    assert_eq!(bulk_at(&r, 1), "charge-42", "BEGIN replays the result: {}", show(&r));
    assert_eq!(crate::items(&r).len(), 2, "done is [done, result]: {}", show(&r));
    let r = expect(b, &["IDEM.GET", &k], "done").await;
    assert_eq!(bulk_at(&r, 1), "charge-42", "GET replays the result: {}", show(&r));
}

/// Same key, different fingerprint → MISMATCH, while running and once done.
pub async fn idem_fingerprint_mismatch(b: &dyn Backend, c: &Ctx) {
    let k = c.key("pay");
    let (fence, _) = start(b, &["IDEM.BEGIN", &k, "FP", "body-a", "LEASE", "10000"]).await;
    err_code(b, &["IDEM.BEGIN", &k, "FP", "body-b"], ErrorCode::Mismatch).await;
    expect(b, &["IDEM.BEGIN", &k, "FP", "body-a"], "running").await;
    ok(b, &["IDEM.COMMIT", &k, &fence.to_string(), "paid"]).await;
    err_code(b, &["IDEM.BEGIN", &k, "FP", "body-b"], ErrorCode::Mismatch).await;
    let r = expect(b, &["IDEM.BEGIN", &k, "FP", "body-a"], "done").await;
    assert_eq!(bulk_at(&r, 1), "paid");
}

/// COMMIT/ABORT with a fence that is not the current one → STALE and nothing changes.
pub async fn idem_stale_fence(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    err_code(b, &["IDEM.COMMIT", &k, "1", "x"], ErrorCode::Stale).await;
    err_code(b, &["IDEM.ABORT", &k, "1"], ErrorCode::Stale).await;
    let (fence, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    let wrong = (fence + 1).to_string();
    err_code(b, &["IDEM.COMMIT", &k, &wrong, "x"], ErrorCode::Stale).await;
    err_code(b, &["IDEM.ABORT", &k, &wrong], ErrorCode::Stale).await;
    err_code(b, &["IDEM.COMMIT", &k, &(fence - 1).to_string(), "x"], ErrorCode::Stale).await;
    // The refused requests changed nothing: still running under `fence`.
    let r = expect(b, &["IDEM.GET", &k], "running").await;
    assert_eq!(int_at(&r, 1) as u64, fence);
    ok(b, &["IDEM.COMMIT", &k, &fence.to_string(), "first"]).await;
    // A done record is no longer in flight: no fence can change it.
    err_code(b, &["IDEM.COMMIT", &k, &fence.to_string(), "second"], ErrorCode::Stale).await;
    err_code(b, &["IDEM.ABORT", &k, &fence.to_string()], ErrorCode::Stale).await;
    let r = expect(b, &["IDEM.GET", &k], "done").await;
    assert_eq!(bulk_at(&r, 1), "first", "a refused COMMIT must not change the result");
}

/// ABORT removes the record; the next BEGIN starts again with a larger fence
/// and the old fence is STALE.
pub async fn idem_abort_frees_key(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f1, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    let r = ok(b, &["IDEM.ABORT", &k, &f1.to_string()]).await;
    assert_eq!(r, Reply::status("ok"), "ABORT replies [ok], got {}", show(&r));
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent");
    let (f2, attempt) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    assert!(f2 > f1, "fences only grow: {f2} after {f1}");
    assert_eq!(attempt, 1, "an abort removes the record: the next attempt is 1 again");
    err_code(b, &["IDEM.COMMIT", &k, &f1.to_string(), "x"], ErrorCode::Stale).await;
    ok(b, &["IDEM.COMMIT", &k, &f2.to_string(), "x"]).await;
}

/// A lease that runs out makes the key available: the next BEGIN gets a
/// larger fence and attempt number, and the old fence is STALE.
pub async fn idem_lease_expiry_takeover(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f1, a1) = start(b, &["IDEM.BEGIN", &k, "LEASE", "150"]).await;
    sleep_ms(400).await;
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent", "an expired lease is not running");
    let (f2, a2) = start(b, &["IDEM.BEGIN", &k, "LEASE", "150"]).await;
    assert!(f2 > f1, "takeover fence {f2} must exceed {f1}");
    assert!(a2 > a1, "takeover attempt {a2} must exceed {a1}");
    err_code(b, &["IDEM.COMMIT", &k, &f1.to_string(), "late"], ErrorCode::Stale).await;
    err_code(b, &["IDEM.ABORT", &k, &f1.to_string()], ErrorCode::Stale).await;
    sleep_ms(400).await;
    let (f3, a3) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    assert!(f3 > f2 && a3 > a2, "second takeover: fence {f3} > {f2}, attempt {a3} > {a2}");
    err_code(b, &["IDEM.COMMIT", &k, &f2.to_string(), "late"], ErrorCode::Stale).await;
    ok(b, &["IDEM.COMMIT", &k, &f3.to_string(), "r3"]).await;
    let r = expect(b, &["IDEM.BEGIN", &k], "done").await;
    assert_eq!(bulk_at(&r, 1), "r3");
}

/// IDEM.DEL replies 1 when it removed a record, 0 otherwise; fences keep
/// growing for a deleted-and-recreated key.
pub async fn idem_del(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    assert_eq!(int(&ok(b, &["IDEM.DEL", &k]).await), 0);
    let (f1, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    assert_eq!(int(&ok(b, &["IDEM.DEL", &k]).await), 1, "DEL of a running record");
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent");
    err_code(b, &["IDEM.COMMIT", &k, &f1.to_string(), "x"], ErrorCode::Stale).await;
    let (f2, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    assert!(f2 > f1, "fence after DEL {f2} must exceed {f1}");
    ok(b, &["IDEM.COMMIT", &k, &f2.to_string(), "x"]).await;
    assert_eq!(int(&ok(b, &["IDEM.DEL", &k]).await), 1, "DEL of a done record");
    assert_eq!(int(&ok(b, &["IDEM.DEL", &k]).await), 0);
    let (f3, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    assert!(f3 > f2, "fence after DEL {f3} must exceed {f2}");
}

/// A done record is forgotten after KEEP.
pub async fn idem_keep_expires(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f, _) = start(b, &["IDEM.BEGIN", &k]).await;
    ok(b, &["IDEM.COMMIT", &k, &f.to_string(), "r", "KEEP", "150"]).await;
    expect(b, &["IDEM.GET", &k], "done").await;
    sleep_ms(450).await;
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent", "KEEP ran out");
    let (f2, _) = start(b, &["IDEM.BEGIN", &k]).await;
    assert!(f2 > f, "fence after KEEP ran out {f2} must exceed {f}");
}

/// Results are binary-safe and may be empty.
pub async fn idem_binary_and_empty_result(b: &dyn Backend, c: &Ctx) {
    let k1 = c.key("bin");
    let (f, _) = start(b, &["IDEM.BEGIN", &k1]).await;
    let result = Bytes::from_static(b"\x00\xff\r\n{\"a\":1}\x00");
    let args =
        [&b"IDEM.COMMIT"[..], k1.as_bytes(), f.to_string().as_bytes(), &result].map(Bytes::copy_from_slice).to_vec();
    exec_bytes(b, &args).await.expect("COMMIT of a binary result");
    let r = expect(b, &["IDEM.BEGIN", &k1], "done").await;
    assert_eq!(bulk_at(&r, 1), result, "binary result replayed byte for byte");

    let k2 = c.key("empty");
    let (f, _) = start(b, &["IDEM.BEGIN", &k2]).await;
    ok(b, &["IDEM.COMMIT", &k2, &f.to_string(), ""]).await;
    let r = expect(b, &["IDEM.GET", &k2], "done").await;
    assert_eq!(bulk_at(&r, 1), "", "empty result replayed");

    // Binary keys and fingerprints.
    let k3 = Bytes::from([c.key("bin-key").as_bytes(), b"\x00\xfe"].concat());
    let begin = |fp: &'static [u8]| {
        vec![Bytes::from_static(b"IDEM.BEGIN"), k3.clone(), Bytes::from_static(b"FP"), Bytes::from_static(fp)]
    };
    let r = exec_bytes(b, &begin(b"\x01\x02")).await.expect("BEGIN with a binary key");
    assert_eq!(status(&r), "started");
    let e = exec_bytes(b, &begin(b"\x01\x03")).await.expect_err("a different binary fingerprint");
    assert_eq!(e.code, ErrorCode::Mismatch, "got '{e}'");
}

/// A WAIT parks the caller until the running attempt commits: it gets `done`.
pub async fn idem_wait_commit_wakes_done(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "20000"]).await;
    let waiter = async {
        let r = ok(b, &["IDEM.BEGIN", &k, "WAIT", "20000"]).await;
        assert_eq!(status(&r), "done", "woken by COMMIT: {}", show(&r));
        assert_eq!(bulk_at(&r, 1), "result-1");
    };
    let worker = async {
        sleep_ms(200).await;
        ok(b, &["IDEM.COMMIT", &k, &f.to_string(), "result-1"]).await;
    };
    futures::join!(waiter, worker);
}

/// A WAIT parks the caller until the running attempt aborts: it is handed
/// the key (`started`, larger fence).
pub async fn idem_wait_abort_hands_over(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f1, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "20000"]).await;
    let waiter = async {
        let r = ok(b, &["IDEM.BEGIN", &k, "LEASE", "20000", "WAIT", "20000"]).await;
        assert_eq!(status(&r), "started", "handed over on ABORT: {}", show(&r));
        let f2 = int_at(&r, 1) as u64;
        assert!(f2 > f1, "handover fence {f2} must exceed {f1}");
        f2
    };
    let worker = async {
        sleep_ms(200).await;
        ok(b, &["IDEM.ABORT", &k, &f1.to_string()]).await;
    };
    let (f2, ()) = futures::join!(waiter, worker);
    ok(b, &["IDEM.COMMIT", &k, &f2.to_string(), "by-waiter"]).await;
    let r = expect(b, &["IDEM.GET", &k], "done").await;
    assert_eq!(bulk_at(&r, 1), "by-waiter");
}

/// A WAIT parks the caller until the running attempt's lease runs out: it
/// takes over with a larger fence and attempt; the old fence is STALE.
pub async fn idem_wait_lease_expiry_takes_over(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f1, a1) = start(b, &["IDEM.BEGIN", &k, "LEASE", "250"]).await;
    let r = ok(b, &["IDEM.BEGIN", &k, "LEASE", "20000", "WAIT", "20000"]).await;
    assert_eq!(status(&r), "started", "takeover after the lease ran out: {}", show(&r));
    let (f2, a2) = (int_at(&r, 1) as u64, int_at(&r, 2));
    assert!(f2 > f1 && a2 > a1, "takeover: fence {f2} > {f1}, attempt {a2} > {a1}");
    err_code(b, &["IDEM.COMMIT", &k, &f1.to_string(), "late"], ErrorCode::Stale).await;
    ok(b, &["IDEM.COMMIT", &k, &f2.to_string(), "ok"]).await;
}

/// A WAIT that passes replies `running` with the live attempt's fence.
pub async fn idem_wait_times_out(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "20000"]).await;
    let r = ok(b, &["IDEM.BEGIN", &k, "WAIT", "200"]).await;
    assert_eq!(status(&r), "running", "WAIT passed: {}", show(&r));
    assert_eq!(int_at(&r, 1) as u64, f);
    // The attempt still holds the key and can finish.
    ok(b, &["IDEM.COMMIT", &k, &f.to_string(), "r"]).await;
}

/// Waiters are served first come, first served: ABORT hands the key to the
/// first waiter only; the others keep waiting and see its result.
pub async fn idem_wait_fifo(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f0, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await;
    let begin = ["IDEM.BEGIN", &k, "LEASE", "30000", "WAIT", "30000"];
    // Each waiter is spawned in turn, with a pause so its request reaches the
    // engine before the next one's.
    let w1 = ok(b, &begin);
    tokio::pin!(w1);
    let w2 = ok(b, &begin);
    tokio::pin!(w2);
    let w3 = ok(b, &begin);
    tokio::pin!(w3);
    // Drive the waiters while time passes, without letting any finish yet.
    let settle = |ms| sleep_ms(ms);
    tokio::select! { r = &mut w1 => panic!("waiter 1 returned early: {}", show(&r)), _ = settle(150) => {} }
    tokio::select! {
        r = &mut w1 => panic!("waiter 1 returned early: {}", show(&r)),
        r = &mut w2 => panic!("waiter 2 returned early: {}", show(&r)),
        _ = settle(150) => {}
    }
    tokio::select! {
        r = &mut w1 => panic!("waiter 1 returned early: {}", show(&r)),
        r = &mut w2 => panic!("waiter 2 returned early: {}", show(&r)),
        r = &mut w3 => panic!("waiter 3 returned early: {}", show(&r)),
        _ = settle(150) => {}
    }
    ok(b, &["IDEM.ABORT", &k, &f0.to_string()]).await;
    // Waiter 1 is served first; 2 and 3 keep waiting.
    let r1 = tokio::select! {
        r = &mut w1 => r,
        r = &mut w2 => panic!("waiter 2 served before waiter 1: {}", show(&r)),
        r = &mut w3 => panic!("waiter 3 served before waiter 1: {}", show(&r)),
    };
    assert_eq!(status(&r1), "started", "first waiter gets the key: {}", show(&r1));
    let f1 = int_at(&r1, 1) as u64;
    assert!(f1 > f0);
    tokio::select! {
        r = &mut w2 => panic!("waiter 2 returned while waiter 1 holds the key: {}", show(&r)),
        r = &mut w3 => panic!("waiter 3 returned while waiter 1 holds the key: {}", show(&r)),
        _ = settle(200) => {}
    }
    ok(b, &["IDEM.ABORT", &k, &f1.to_string()]).await;
    let r2 = tokio::select! {
        r = &mut w2 => r,
        r = &mut w3 => panic!("waiter 3 served before waiter 2: {}", show(&r)),
    };
    assert_eq!(status(&r2), "started", "second waiter gets the key: {}", show(&r2));
    let f2 = int_at(&r2, 1) as u64;
    assert!(f2 > f1);
    ok(b, &["IDEM.COMMIT", &k, &f2.to_string(), "by-2"]).await;
    let r3 = w3.await;
    assert_eq!(status(&r3), "done", "third waiter sees the result: {}", show(&r3));
    assert_eq!(bulk_at(&r3, 1), "by-2");
}

/// A parked BEGIN whose caller goes away is forgotten: after ABORT the key is
/// free, not handed to the departed caller.
pub async fn idem_wait_cancelled(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await;
    let gone = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        ok(b, &["IDEM.BEGIN", &k, "LEASE", "30000", "WAIT", "30000"]),
    )
    .await;
    assert!(gone.is_err(), "the waiter was still parked when its caller left");
    sleep_ms(300).await;
    ok(b, &["IDEM.ABORT", &k, &f.to_string()]).await;
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent", "nobody was handed the key");
    let (f2, attempt) = start(b, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await;
    assert!(f2 > f);
    assert_eq!(attempt, 1);
}

/// WAIT never parks a caller that can be answered now: a done key replays at
/// once, a different fingerprint is MISMATCH at once.
pub async fn idem_wait_answers_at_once(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let (f, _) = start(b, &["IDEM.BEGIN", &k, "FP", "a", "LEASE", "30000"]).await;
    // Bounded well below the WAIT: a parked caller would hit this timeout.
    let quick = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokio::time::timeout(std::time::Duration::from_secs(10), crate::exec(b, &args))
            .await
            .unwrap_or_else(|_| panic!("{args:?} parked instead of answering"))
    };
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let e = quick(owned(&["IDEM.BEGIN", &k, "FP", "b", "WAIT", "60000"])).await.expect_err("MISMATCH");
    assert_eq!(e.code, ErrorCode::Mismatch, "got '{e}'");
    ok(b, &["IDEM.COMMIT", &k, &f.to_string(), "r"]).await;
    let r = quick(owned(&["IDEM.BEGIN", &k, "FP", "a", "WAIT", "60000"])).await.expect("done");
    assert_eq!(status(&r), "done");
    let e = quick(owned(&["IDEM.BEGIN", &k, "FP", "b", "WAIT", "60000"])).await.expect_err("MISMATCH");
    assert_eq!(e.code, ErrorCode::Mismatch, "got '{e}'");
}

/// IDEM.RENEW by the holder moves its lease to LEASE from now, past the
/// lease BEGIN gave it, and replies `[renewed, fence]`; the record stays the
/// same attempt and the holder can still COMMIT.
pub async fn idem_renew_keeps_the_attempt(b: &dyn Backend, c: &Ctx) {
    let k = c.key("job");
    let (fence, attempt) = start(b, &["IDEM.BEGIN", &k, "LEASE", "1000"]).await;
    assert_eq!(attempt, 1);
    let f = fence.to_string();
    let r = ok(b, &["IDEM.RENEW", &k, &f, "LEASE", "60000"]).await;
    assert_eq!(r, Reply::status_with("renewed", [Reply::uint(fence)]), "RENEW replies [renewed, fence]: {}", show(&r));
    let r = expect(b, &["IDEM.GET", &k], "running").await;
    assert_eq!(int_at(&r, 1) as u64, fence, "the same attempt: {}", show(&r));
    // Only the renewal can leave more than BEGIN's 1,000 ms.
    let left = int_at(&r, 2);
    assert!(left > 1000 && left <= 60_000, "the lease is the renewed one: {}", show(&r));
    let r = expect(b, &["IDEM.BEGIN", &k, "LEASE", "1000"], "running").await;
    assert_eq!(int_at(&r, 1) as u64, fence, "another caller still sees the holder: {}", show(&r));
    ok(b, &["IDEM.COMMIT", &k, &f, "r"]).await;
    let r = expect(b, &["IDEM.BEGIN", &k], "done").await;
    assert_eq!(bulk_at(&r, 1), "r");
}

/// IDEM.RENEW is STALE, and changes nothing, for a missing record, a fence
/// that is not the current one, a lease that ran out (also once another
/// attempt took over) and a done record.
pub async fn idem_renew_refused(b: &dyn Backend, c: &Ctx) {
    let k = c.key("job");
    err_code(b, &["IDEM.RENEW", &k, "1", "LEASE", "10000"], ErrorCode::Stale).await;
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent", "a refused RENEW creates nothing");
    let (f1, a1) = start(b, &["IDEM.BEGIN", &k, "LEASE", "150"]).await;
    err_code(b, &["IDEM.RENEW", &k, &(f1 + 1).to_string(), "LEASE", "10000"], ErrorCode::Stale).await;
    err_code(b, &["IDEM.RENEW", &k, &(f1 - 1).to_string(), "LEASE", "10000"], ErrorCode::Stale).await;
    sleep_ms(400).await;
    err_code(b, &["IDEM.RENEW", &k, &f1.to_string(), "LEASE", "10000"], ErrorCode::Stale).await;
    assert_eq!(status(&ok(b, &["IDEM.GET", &k]).await), "absent", "a late RENEW does not revive the lease");
    let (f2, a2) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    assert!(f2 > f1 && a2 > a1, "a takeover: fence {f2} > {f1}, attempt {a2} > {a1}");
    err_code(b, &["IDEM.RENEW", &k, &f1.to_string(), "LEASE", "10000"], ErrorCode::Stale).await;
    let r = expect(b, &["IDEM.GET", &k], "running").await;
    assert_eq!(int_at(&r, 1) as u64, f2, "the old holder's RENEW left the new attempt alone: {}", show(&r));
    ok(b, &["IDEM.COMMIT", &k, &f2.to_string(), "r"]).await;
    err_code(b, &["IDEM.RENEW", &k, &f2.to_string(), "LEASE", "10000"], ErrorCode::Stale).await;
    let r = expect(b, &["IDEM.GET", &k], "done").await;
    assert_eq!(bulk_at(&r, 1), "r", "a RENEW of a done record changes nothing");
}

/// IDEM.RENEW with bad arguments is refused (ERR, or LIMIT for a LEASE over
/// the bound) and changes nothing.
pub async fn idem_renew_bad_arguments(b: &dyn Backend, c: &Ctx) {
    let k = c.key("job");
    let (fence, _) = start(b, &["IDEM.BEGIN", &k, "LEASE", "10000"]).await;
    let f = fence.to_string();
    let over = (idem_core::Limits::default().duration_ms_max + 1).to_string();
    let cases: [(&[&str], ErrorCode); 8] = [
        (&["IDEM.RENEW", &k, &f, "LEASE", "0"], ErrorCode::Err),
        (&["IDEM.RENEW", &k, &f, "LEASE", &over], ErrorCode::Limit),
        (&["IDEM.RENEW", &k, &f, "LEASE", "-5"], ErrorCode::Err),
        (&["IDEM.RENEW", &k, "x", "LEASE", "60000"], ErrorCode::Err),
        (&["IDEM.RENEW", &k, &f, "TTL", "60000"], ErrorCode::Err),
        (&["IDEM.RENEW", &k, &f, "LEASE"], ErrorCode::Err),
        (&["IDEM.RENEW", &k, &f, "LEASE", "60000", "WAIT", "5"], ErrorCode::Err),
        (&["IDEM.RENEW", "", &f, "LEASE", "60000"], ErrorCode::Err),
    ];
    for (args, code) in cases {
        let e = exec_bytes(b, &crate::to_bytes(args)).await.expect_err("bad arguments are refused");
        assert_eq!(e.code, code, "{args:?}: expected {}, got '{e}'", code.as_str());
    }
    let r = expect(b, &["IDEM.GET", &k], "running").await;
    assert_eq!(int_at(&r, 1) as u64, fence);
    assert!(int_at(&r, 2) <= 10_000, "no refused RENEW moved the lease: {}", show(&r));
}
