//! S5 — concurrency mishaps in a Go/Python backend (seed 004), three parts.
//!
//! (a) Points. Each user holds 100 points; several deductions of 30 arrive at
//! once, and the client resends a request whose reply it lost (same request
//! id). naive: `SELECT balance`, then `UPDATE balance = balance - x` and a
//! ledger row (check-then-subtract). idem: `COUNTER.ADD user -x MIN 0 OP
//! <request id>`, then the ledger row when it applied. Anomalies: users whose
//! balance went negative, and request ids applied more than once (ledger).
//!
//! (b) Red-envelope budget. Many tasks add wins to one budget with a cap.
//! naive: one MariaDB transaction per add, `UPDATE budget SET total = total +
//! ? WHERE id = 1 AND total + ? <= cap` (the hot row). idem: `COUNTER.ADD
//! budget x MAX cap`. Anomalies: a total over the cap, or a total that is not
//! the sum of the acknowledged adds. This part gives the scenario's
//! `ops_per_s` (hot row against counter).
//!
//! (c) Callbacks. A producer re-reads outbox rows not yet marked done and
//! publishes them again (the write-up's bug) into a JetStream work queue; the
//! receiver is killed mid-stream and restarted, so unacked messages are
//! redelivered. naive: apply every delivery. idem: `IDEM.BEGIN cb:<id>` →
//! apply → `IDEM.COMMIT`. Anomalies: callbacks applied more than once, or
//! never.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use futures::StreamExt;
use mysql_async::prelude::*;
use rand::{Rng, SeedableRng};

use crate::broker::{Publisher, WorkQueue};
use crate::harness::{count, exec, rate, Ctx, Variant};
use crate::report::VariantReport;
use crate::Scenario;
use idem_client::{CounterAdd, CounterOptions, Error as IdemError, IdempotentError, IdempotentOptions, OnRunning};

/// Default size: wins in (b); (c) sends half as many callbacks and (a) has
/// one user per 40.
pub const SIZE_DEFAULT: usize = 2_000;
/// MariaDB connections of each part's service.
const SERVICE_CONNS: usize = 32;

/// (a) Starting balance, deduction, and concurrent deductions per user.
const POINTS_START: i64 = 100;
const POINTS_DEDUCT: i64 = 30;
const POINTS_REQUESTS_PER_USER: usize = 6;
/// (a) Share of requests the client resends because its reply is late: the
/// client's timeout is shorter than the service's latency, so the resend
/// arrives while the first send is still being served.
const POINTS_RESEND_SHARE: f64 = 0.3;
const POINTS_CLIENT_TIMEOUT: Duration = Duration::from_millis(2);
/// (a) The gap between reading the balance and subtracting.
const POINTS_CHECK_TO_SUBTRACT_PAUSE: Duration = Duration::from_millis(5);

/// (b) Tasks granting wins at once, and the cap as a share of all requested amounts.
const BUDGET_TASKS: usize = 64;
const BUDGET_CAP_SHARE: f64 = 0.6;

/// (c) Receiver concurrency, redelivery delay, the callback's own latency,
/// the producer's re-scan period, and when (share of callbacks applied) the
/// receiver is killed.
const CB_WORKERS: usize = 16;
const CB_ACK_WAIT: Duration = Duration::from_millis(1_000);
const CB_CALL_LATENCY: Duration = Duration::from_millis(5);
/// The producer offers at most CB_PAGE rows per period (1,000 a second), about
/// half what the receiver handles on an idle machine: rows still in flight at
/// a scan are sent again, without the backlog running away. (At a rate above
/// the receiver's, the naive side collapses: re-sent duplicates crowd out
/// rows never sent, and the run ends at CB_DEADLINE with callbacks never
/// applied.)
const CB_RESCAN_PERIOD: Duration = Duration::from_millis(200);
/// (c) Pending rows the producer takes per scan (a page, oldest first).
const CB_PAGE: usize = 200;
const CB_KILL_AT_SHARE: f64 = 0.4;
/// (c) idem lease of one callback attempt and how long a redelivered
/// duplicate waits for a running attempt.
const CB_LEASE_MS: u64 = 2_000;
const CB_WAIT_MS: u64 = 500;
/// (c) Bound on one run of the queue.
const CB_DEADLINE: Duration = Duration::from_secs(90);

pub(crate) async fn run(ctx: &Ctx) -> anyhow::Result<Vec<VariantReport>> {
    let size = ctx.size(SIZE_DEFAULT);
    let users = (size / 40).max(4);
    let wins = size.max(10);
    let callbacks = (size / 2).max(20);
    let seed: u64 = rand::random();

    let mut out = Vec::new();
    let pn = points(ctx, Variant::Naive, users, seed).await?;
    let pi = points(ctx, Variant::Idem, users, seed).await?;
    let bn = budget(ctx, Variant::Naive, wins, seed).await?;
    let bi = budget(ctx, Variant::Idem, wins, seed).await?;
    let cn = callbacks_run(ctx, Variant::Naive, callbacks).await?;
    let ci = callbacks_run(ctx, Variant::Idem, callbacks).await?;

    let a = |r: &VariantReport| r.u64("anomalies").unwrap_or(0);
    let naive_anomalies = a(&pn) + a(&bn) + a(&cn);
    let idem_anomalies = a(&pi) + a(&bi) + a(&ci);
    let bn_rate = bn.f64("ops_per_s").unwrap_or(0.0);
    let bi_rate = bi.f64("ops_per_s").unwrap_or(0.0);
    let get = |r: &VariantReport, k: &str| r.field(k).unwrap_or("na").to_string();
    let s = VariantReport::new(Scenario::S5, VariantReport::SUMMARY)
        .with("naive_anomalies", naive_anomalies)
        .with("idem_anomalies", idem_anomalies)
        .with_rate("naive_ops_per_s", bn_rate)
        .with_rate("idem_ops_per_s", bi_rate)
        .with("budget_throughput_ratio", format!("{:.1}", bi_rate / bn_rate.max(1e-9)))
        .with("points_naive_anomalies", get(&pn, "anomalies"))
        .with("points_idem_anomalies", get(&pi, "anomalies"))
        .with("points_naive_negative_balances", get(&pn, "negative_balances"))
        .with("points_naive_double_applied", get(&pn, "double_applied"))
        .with("budget_naive_anomalies", get(&bn, "anomalies"))
        .with("budget_idem_anomalies", get(&bi, "anomalies"))
        .with("callbacks_naive_anomalies", get(&cn, "anomalies"))
        .with("callbacks_idem_anomalies", get(&ci, "anomalies"))
        .with("callbacks_naive_redelivered", get(&cn, "redelivered"));
    out.extend([pn, pi, bn, bi, cn, ci, s]);
    Ok(out)
}

// ---------------------------------------------------------------- (a) points

async fn points(ctx: &Ctx, variant: Variant, users: usize, seed: u64) -> anyhow::Result<VariantReport> {
    let v = variant.name();
    let balances = ctx.table(&format!("s5_points_{v}"));
    let ledger = ctx.table(&format!("s5_points_ledger_{v}"));
    let pool = ctx.mysql(SERVICE_CONNS)?;
    exec(&pool, &format!("CREATE TABLE {balances} (user_id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB"))
        .await?;
    // No unique key on request_id: the ledger records every application.
    exec(
        &pool,
        &format!(
            "CREATE TABLE {ledger} (id BIGINT AUTO_INCREMENT PRIMARY KEY, request_id VARCHAR(64) NOT NULL, \
             user_id INT NOT NULL, amount BIGINT NOT NULL, KEY (request_id), KEY (user_id)) ENGINE=InnoDB"
        ),
    )
    .await?;
    let values: Vec<String> = (0..users).map(|u| format!("({u}, {POINTS_START})")).collect();
    exec(&pool, &format!("INSERT INTO {balances} (user_id, balance) VALUES {}", values.join(", "))).await?;
    let idem = match variant {
        Variant::Naive => None,
        Variant::Idem => {
            let idem = ctx.idem(SERVICE_CONNS)?;
            for u in 0..users {
                let key = points_key(ctx, u);
                idem.counter_add(&key, POINTS_START, &CounterOptions::new().op(format!("init-{key}"))).await?;
            }
            Some(idem)
        }
    };

    // Every request, and whether the client loses its reply and resends it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let requests: Vec<(usize, String, bool)> = (0..users)
        .flat_map(|u| (0..POINTS_REQUESTS_PER_USER).map(move |k| (u, format!("req-{u}-{k}"))))
        .map(|(u, id)| (u, id, rng.gen_bool(POINTS_RESEND_SHARE)))
        .collect();
    let sends = requests.iter().map(|r| 1 + u64::from(r.2)).sum::<u64>();

    let applied = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let started = Instant::now();
    futures::stream::iter(requests.iter())
        .for_each_concurrent(users * POINTS_REQUESTS_PER_USER, |(u, id, resend)| {
            let (pool, balances, ledger, idem, applied, refused, errors) =
                (&pool, &balances, &ledger, idem.as_ref(), &applied, &refused, &errors);
            async move {
                let send = |delay: Duration| async move {
                    tokio::time::sleep(delay).await;
                    let r = match idem {
                        None => deduct_naive(pool, balances, ledger, *u, id).await,
                        Some(idem) => deduct_idem(pool, ledger, idem, &points_key(ctx, *u), *u, id).await,
                    };
                    match r {
                        Ok(true) => applied.fetch_add(1, Ordering::Relaxed),
                        Ok(false) => refused.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                };
                if *resend {
                    tokio::join!(send(Duration::ZERO), send(POINTS_CLIENT_TIMEOUT));
                } else {
                    send(Duration::ZERO).await;
                }
            }
        })
        .await;
    let elapsed = started.elapsed();

    let double_applied = count(
        &pool,
        &format!("SELECT COUNT(*) FROM (SELECT request_id FROM {ledger} GROUP BY request_id HAVING COUNT(*) > 1) d"),
    )
    .await?;
    // naive: the balance column itself; idem: the balance lives in idem, so
    // the ledger is the table that must never take more than the start.
    let negative = match variant {
        Variant::Naive => count(&pool, &format!("SELECT COUNT(*) FROM {balances} WHERE balance < 0")).await?,
        Variant::Idem => {
            count(
                &pool,
                &format!(
                    "SELECT COUNT(*) FROM (SELECT user_id FROM {ledger} GROUP BY user_id \
                     HAVING SUM(amount) > {POINTS_START}) n"
                ),
            )
            .await?
        }
    };
    // idem: the counters must equal start minus what the ledger took.
    let mut counter_mismatch = 0u64;
    if let Some(idem) = &idem {
        let mut conn = pool.get_conn().await?;
        let sums: Vec<(i64, i64)> =
            conn.query(format!("SELECT user_id, CAST(SUM(amount) AS SIGNED) FROM {ledger} GROUP BY user_id")).await?;
        let taken: std::collections::HashMap<i64, i64> = sums.into_iter().collect();
        for u in 0..users {
            let v = idem.counter_get(&points_key(ctx, u)).await?;
            if v < 0 || v != POINTS_START - taken.get(&(u as i64)).copied().unwrap_or(0) {
                counter_mismatch += 1;
            }
        }
    }
    pool.disconnect().await?;
    Ok(VariantReport::new(Scenario::S5, v)
        .with("part", "points")
        .with("users", users)
        .with("sends", sends)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(sends, elapsed))
        .with("anomalies", negative + double_applied + counter_mismatch)
        .with("negative_balances", negative)
        .with("double_applied", double_applied)
        .with("counter_mismatch", counter_mismatch)
        .with("replies_applied", applied.into_inner())
        .with("replies_refused", refused.into_inner())
        .with("errors", errors.into_inner()))
}

fn points_key(ctx: &Ctx, user: usize) -> String {
    format!("s5:{}:points:{user}", ctx.run_id)
}

/// Check the balance, then subtract: the write-up's points deduction.
async fn deduct_naive(
    pool: &mysql_async::Pool,
    balances: &str,
    ledger: &str,
    user: usize,
    request_id: &str,
) -> anyhow::Result<bool> {
    let mut conn = pool.get_conn().await?;
    let balance: Option<i64> =
        conn.exec_first(format!("SELECT balance FROM {balances} WHERE user_id = ?"), (user,)).await?;
    if balance.unwrap_or(0) < POINTS_DEDUCT {
        return Ok(false);
    }
    tokio::time::sleep(POINTS_CHECK_TO_SUBTRACT_PAUSE).await;
    conn.exec_drop(format!("UPDATE {balances} SET balance = balance - ? WHERE user_id = ?"), (POINTS_DEDUCT, user))
        .await?;
    conn.exec_drop(
        format!("INSERT INTO {ledger} (request_id, user_id, amount) VALUES (?, ?, ?)"),
        (request_id, user, POINTS_DEDUCT),
    )
    .await?;
    Ok(true)
}

/// `COUNTER.ADD ... MIN 0 OP <request id>`: refused below zero, applied once
/// per request id however often the client resends.
async fn deduct_idem(
    pool: &mysql_async::Pool,
    ledger: &str,
    idem: &idem_client::Client,
    key: &str,
    user: usize,
    request_id: &str,
) -> anyhow::Result<bool> {
    match idem.counter_add(key, -POINTS_DEDUCT, &CounterOptions::new().min(0).op(request_id)).await? {
        CounterAdd::Applied(_) => {
            let mut conn = pool.get_conn().await?;
            conn.exec_drop(
                format!("INSERT INTO {ledger} (request_id, user_id, amount) VALUES (?, ?, ?)"),
                (request_id, user, POINTS_DEDUCT),
            )
            .await?;
            Ok(true)
        }
        // Applied by the earlier send: the client gets the same success.
        CounterAdd::Replayed(_) => Ok(true),
        CounterAdd::Refused(_) => Ok(false),
    }
}

// ---------------------------------------------------------------- (b) budget

async fn budget(ctx: &Ctx, variant: Variant, wins: usize, seed: u64) -> anyhow::Result<VariantReport> {
    let v = variant.name();
    let budget_t = ctx.table(&format!("s5_budget_{v}"));
    let pool = ctx.mysql(SERVICE_CONNS)?;
    exec(&pool, &format!("CREATE TABLE {budget_t} (id INT PRIMARY KEY, total BIGINT NOT NULL) ENGINE=InnoDB")).await?;
    exec(&pool, &format!("INSERT INTO {budget_t} (id, total) VALUES (1, 0)")).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xb0d6e7);
    let amounts: Vec<i64> = (0..wins).map(|_| rng.gen_range(1..=10)).collect();
    let cap = (amounts.iter().sum::<i64>() as f64 * BUDGET_CAP_SHARE) as i64;
    let key = format!("s5:{}:budget", ctx.run_id);
    let idem = match variant {
        Variant::Naive => None,
        Variant::Idem => Some(ctx.idem(BUDGET_TASKS)?),
    };

    let granted = AtomicU64::new(0);
    let granted_sum = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let started = Instant::now();
    futures::stream::iter(amounts.iter())
        .for_each_concurrent(BUDGET_TASKS, |amount| {
            let (pool, budget_t, idem, key) = (&pool, &budget_t, idem.as_ref(), &key);
            let (granted, granted_sum, refused, errors) = (&granted, &granted_sum, &refused, &errors);
            async move {
                let r = match idem {
                    None => add_naive(pool, budget_t, *amount, cap).await,
                    Some(idem) => add_idem(idem, key, *amount, cap).await,
                };
                match r {
                    Ok(true) => {
                        granted.fetch_add(1, Ordering::Relaxed);
                        granted_sum.fetch_add(*amount as u64, Ordering::Relaxed);
                    }
                    Ok(false) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!("budget add: {e:#}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    let elapsed = started.elapsed();

    // The total as the store holds it: the hot row, or idem's counter.
    let total = match &idem {
        None => count(&pool, &format!("SELECT total FROM {budget_t} WHERE id = 1")).await? as i64,
        Some(idem) => idem.counter_get(&key).await?,
    };
    let acknowledged = granted_sum.into_inner() as i64;
    let over_cap = u64::from(total > cap);
    // Every acknowledged grant is in the total, and nothing else is.
    let mismatch = u64::from(total != acknowledged);
    pool.disconnect().await?;
    Ok(VariantReport::new(Scenario::S5, v)
        .with("part", "budget")
        .with("adds", wins)
        .with("tasks", BUDGET_TASKS)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(wins as u64, elapsed))
        .with("anomalies", over_cap + mismatch)
        .with("cap", cap)
        .with("total", total)
        .with("acknowledged_sum", acknowledged)
        .with("over_cap", over_cap)
        .with("total_vs_acknowledged_mismatch", mismatch)
        .with("granted", granted.into_inner())
        .with("refused", refused.into_inner())
        .with("errors", errors.into_inner()))
}

/// The hot row: one transaction per add, the cap checked by the UPDATE.
async fn add_naive(pool: &mysql_async::Pool, budget_t: &str, amount: i64, cap: i64) -> anyhow::Result<bool> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(mysql_async::TxOpts::default()).await?;
    tx.exec_drop(
        format!("UPDATE {budget_t} SET total = total + ? WHERE id = 1 AND total + ? <= ?"),
        (amount, amount, cap),
    )
    .await?;
    let applied = tx.affected_rows() == 1;
    tx.commit().await?;
    Ok(applied)
}

/// The bounded counter: refused rather than over the cap.
async fn add_idem(idem: &idem_client::Client, key: &str, amount: i64, cap: i64) -> anyhow::Result<bool> {
    match idem.counter_add(key, amount, &CounterOptions::new().max(cap)).await? {
        CounterAdd::Applied(_) | CounterAdd::Replayed(_) => Ok(true),
        CounterAdd::Refused(_) => Ok(false),
    }
}

// ------------------------------------------------------------- (c) callbacks

struct CbShared {
    pool: mysql_async::Pool,
    outbox: String,
    applied: String,
    idem: Option<idem_client::Client>,
    key_prefix: String,
    deliveries: AtomicU64,
    redelivered: AtomicU64,
}

async fn callbacks_run(ctx: &Ctx, variant: Variant, callbacks: usize) -> anyhow::Result<VariantReport> {
    let v = variant.name();
    let outbox = ctx.table(&format!("s5_outbox_{v}"));
    let applied = ctx.table(&format!("s5_applied_{v}"));
    let pool = ctx.mysql(SERVICE_CONNS)?;
    exec(
        &pool,
        &format!("CREATE TABLE {outbox} (cb_id INT PRIMARY KEY, status TINYINT NOT NULL DEFAULT 0) ENGINE=InnoDB"),
    )
    .await?;
    // What a callback does to the receiver: one row per application.
    exec(
        &pool,
        &format!(
            "CREATE TABLE {applied} (id BIGINT AUTO_INCREMENT PRIMARY KEY, cb_id INT NOT NULL, KEY (cb_id)) \
             ENGINE=InnoDB"
        ),
    )
    .await?;
    let values: Vec<String> = (0..callbacks).map(|i| format!("({i})")).collect();
    exec(&pool, &format!("INSERT INTO {outbox} (cb_id) VALUES {}", values.join(", "))).await?;

    let queue = WorkQueue::create(&ctx.opts.nats_url, &format!("s5cb_{v}_{}", ctx.run_id), CB_ACK_WAIT).await?;
    let shared = Arc::new(CbShared {
        pool: pool.clone(),
        outbox: outbox.clone(),
        applied: applied.clone(),
        idem: match variant {
            Variant::Naive => None,
            Variant::Idem => Some(ctx.idem(CB_WORKERS * 2)?),
        },
        key_prefix: format!("s5:{}:cb:", ctx.run_id),
        deliveries: AtomicU64::new(0),
        redelivered: AtomicU64::new(0),
    });

    let started = Instant::now();
    let result = async {
        let producer = tokio::spawn(produce(pool.clone(), outbox.clone(), queue.publisher()));
        // First receiver: killed once a share of the callbacks is applied.
        let first = tokio::spawn(receive(queue.consumer(), shared.clone()));
        let kill_at = ((callbacks as f64) * CB_KILL_AT_SHARE) as u64;
        loop {
            let n = count(&pool, &format!("SELECT COUNT(*) FROM {applied}")).await?;
            if n >= kill_at || started.elapsed() > CB_DEADLINE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.abort();
        let _ = first.await;
        // Restarted receiver: gets what is left, and what the killed one
        // had received but not acked (after ack_wait).
        let second = tokio::spawn(receive(queue.consumer(), shared.clone()));
        let mut drained = false;
        while started.elapsed() < CB_DEADLINE {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let pending = count(&pool, &format!("SELECT COUNT(*) FROM {outbox} WHERE status = 0")).await?;
            let (undelivered, unacked) = queue.backlog().await?;
            if pending == 0 && undelivered == 0 && unacked == 0 && producer.is_finished() {
                drained = true;
                break;
            }
        }
        second.abort();
        producer.abort();
        anyhow::Ok(drained)
    }
    .await;
    let elapsed = started.elapsed();
    queue.delete().await;
    let drained = result?;

    let dup = count(
        &pool,
        &format!("SELECT COUNT(*) FROM (SELECT cb_id FROM {applied} GROUP BY cb_id HAVING COUNT(*) > 1) d"),
    )
    .await?;
    let distinct = count(&pool, &format!("SELECT COUNT(DISTINCT cb_id) FROM {applied}")).await?;
    let rows = count(&pool, &format!("SELECT COUNT(*) FROM {applied}")).await?;
    let missing = (callbacks as u64).saturating_sub(distinct);
    pool.disconnect().await?;
    Ok(VariantReport::new(Scenario::S5, v)
        .with("part", "callbacks")
        .with("callbacks", callbacks)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(callbacks as u64, elapsed))
        .with("anomalies", dup + missing)
        .with("applied_more_than_once", dup)
        .with("never_applied", missing)
        .with("applied_rows", rows)
        .with("deliveries", shared.deliveries.load(Ordering::Relaxed))
        .with("redelivered", shared.redelivered.load(Ordering::Relaxed))
        .with("drained", drained))
}

/// The write-up's producer: every period, read a page of the rows not yet
/// done and enqueue them, even those enqueued before (the bug that sends
/// callbacks twice). Stops when nothing is pending.
async fn produce(pool: mysql_async::Pool, outbox: String, publisher: Publisher) -> anyhow::Result<()> {
    loop {
        let ids: Vec<i64> = {
            let mut conn = pool.get_conn().await?;
            conn.query(format!("SELECT cb_id FROM {outbox} WHERE status = 0 ORDER BY cb_id LIMIT {CB_PAGE}")).await?
        };
        if ids.is_empty() {
            return Ok(());
        }
        publisher.publish_all(ids.into_iter().map(|id| Bytes::from(id.to_string()))).await?;
        tokio::time::sleep(CB_RESCAN_PERIOD).await;
    }
}

/// A receiver process: pulls from the durable consumer and handles up to
/// `CB_WORKERS` callbacks at once. Aborting its task is the "kill".
async fn receive(
    consumer: async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    shared: Arc<CbShared>,
) -> anyhow::Result<()> {
    let messages = consumer.messages().await.context("pulling")?;
    messages
        .for_each_concurrent(CB_WORKERS, |m| {
            let shared = shared.clone();
            async move {
                let Ok(msg) = m else { return };
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                if msg.info().map(|i| i.delivered > 1).unwrap_or(false) {
                    shared.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                let id: i64 = match std::str::from_utf8(&msg.payload).ok().and_then(|s| s.parse().ok()) {
                    Some(id) => id,
                    None => {
                        let _ = msg.ack_with(AckKind::Term).await;
                        return;
                    }
                };
                let handled = match &shared.idem {
                    None => handle_naive(&shared, id).await,
                    Some(idem) => handle_idem(&shared, idem, id).await,
                };
                match handled {
                    Ok(true) => {
                        let _ = msg.ack().await;
                    }
                    // Not now (another attempt runs it): come back later.
                    Ok(false) => {
                        let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_millis(200)))).await;
                    }
                    Err(e) => {
                        tracing::warn!("callback {id}: {e:#}");
                        let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_millis(200)))).await;
                    }
                }
            }
        })
        .await;
    Ok(())
}

/// Apply the callback, then mark the outbox row done.
async fn apply_callback(shared: &CbShared, id: i64) -> anyhow::Result<()> {
    let mut conn = shared.pool.get_conn().await?;
    conn.exec_drop(format!("INSERT INTO {} (cb_id) VALUES (?)", shared.applied), (id,)).await?;
    Ok(())
}

async fn mark_done(shared: &CbShared, id: i64) -> anyhow::Result<()> {
    let mut conn = shared.pool.get_conn().await?;
    conn.exec_drop(format!("UPDATE {} SET status = 1 WHERE cb_id = ?", shared.outbox), (id,)).await?;
    Ok(())
}

async fn handle_naive(shared: &CbShared, id: i64) -> anyhow::Result<bool> {
    apply_callback(shared, id).await?;
    // The callback's remote call: a kill here leaves it applied but unacked.
    tokio::time::sleep(CB_CALL_LATENCY).await;
    mark_done(shared, id).await?;
    Ok(true)
}

async fn handle_idem(shared: &CbShared, idem: &idem_client::Client, id: i64) -> anyhow::Result<bool> {
    let key = format!("{}{id}", shared.key_prefix);
    let opts = IdempotentOptions::new().lease_ms(CB_LEASE_MS).on_running(OnRunning::Wait { wait_ms: CB_WAIT_MS });
    let applied = idem
        .idempotent(&key, &opts, |attempt| async move {
            // A later attempt first looks for the half-done work of the
            // attempt whose lease ran out (killed after applying).
            let already = attempt.number > 1
                && count(&shared.pool, &format!("SELECT COUNT(*) FROM {} WHERE cb_id = {id}", shared.applied)).await?
                    > 0;
            if !already {
                apply_callback(shared, id).await?;
            }
            // The callback's remote call: a kill here leaves it applied but
            // unacked, with the record running until its lease runs out.
            tokio::time::sleep(CB_CALL_LATENCY).await;
            anyhow::Ok("applied".to_string())
        })
        .await;
    match applied {
        // Applied now or by an earlier delivery: mark the outbox row done.
        // Marking comes after the commit, so a failure here is retried as a
        // replay and never applies the callback twice.
        Ok(_) => {}
        // Our lease ran out meanwhile; the current attempt finds our work.
        Err(IdempotentError::Idem(IdemError::Stale(_))) => {}
        // Another attempt still runs it: come back later.
        Err(IdempotentError::Idem(IdemError::InFlight { .. })) => return Ok(false),
        Err(IdempotentError::Idem(e)) => return Err(e.into()),
        // The check or the insert failed: a first attempt's record was
        // aborted; a later one's runs out its lease, so the next attempt
        // still looks for the half-done work.
        Err(IdempotentError::Failed(e)) => return Err(e),
    }
    mark_done(shared, id).await?;
    Ok(true)
}
