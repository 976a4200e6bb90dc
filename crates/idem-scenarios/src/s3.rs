//! S3 — prize grant with a lock and a transaction (seed 002).
//!
//! `sendPrize(user, prize)` became `@Transactional`: the transaction starts on
//! entry, reads (which fixes its REPEATABLE READ snapshot in MariaDB), takes a
//! Redisson-style Redis lock (`tryLock(wait 1000 ms, lease 500 ms)`), checks
//! the grant record with a plain SELECT, grants (record row + the user's prize
//! row), unlocks — and only then commits. A deliberate pause between unlock
//! and commit makes the window deterministic. Load per (user, prize): a burst
//! of identical requests at once, then a slow repeat; and for some pairs the
//! first grant takes longer than the lock's lease (a transaction that outlives
//! its lease).
//!
//! Variants:
//! - naive: no unique key → double grants;
//! - naive-uk: the unique key `(user_id, prize_type)` present → the losers get
//!   a raw duplicate-key error (the write-up's DuplicateKeyException);
//! - idem-server: no Redis lock; `IDEM.BEGIN prize:user:type` on the idem
//!   server decides who grants; concurrent and slow repeats wait for (or
//!   find) the first grant's result; the grant transaction commits before
//!   `IDEM.COMMIT` stores its result; a later attempt (after a lease ran out)
//!   first looks for the earlier attempt's committed grant with a locking
//!   read. The lease is longer than any grant transaction here. The unique
//!   key stays as the last line of defence.
//! - idem: no Redis lock; `idem_begin("prize:user:type")` from
//!   `idem_backends::mysql::tx` inside the grant's own transaction, the grant,
//!   `idem_commit` with the result, commit — the record and the grant commit
//!   or roll back together. A duplicate waits on the uncommitted record's row
//!   and then gets the first grant's result back (`already`). The lease
//!   (500 ms) is shorter than the long grant (700 ms) on purpose: the
//!   transaction that outlives it gets `STALE` from `idem_commit`, rolls its
//!   grant back and is retried by its caller (`stale_rollbacks`), so an
//!   expired attempt can never commit beside a newer one.
//!
//! Anomalies = (user, prize) pairs granted more than once (from the table) +
//! raw duplicate-key errors that reached a caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use mysql_async::prelude::*;

use crate::harness::{count, exec, fingerprint, mysql_code, rate, Ctx, ER_DUP_ENTRY, ER_LOCK_DEADLOCK};
use idem_backends::mysql::tx::{self, Begin};

use crate::report::{summary, VariantReport};
use crate::Scenario;
use idem_client::{Error as IdemError, IdempotentError, IdempotentOptions, OnRunning, Outcome as IdemOutcome};

/// (user, prize) pairs by default.
pub const PAIRS_DEFAULT: usize = 40;
/// Identical requests sent at once per pair.
const BURST: usize = 4;
/// One more identical request this long after the burst (a slow repeat).
const SLOW_REPEAT_AFTER: Duration = Duration::from_millis(300);
/// Redisson `tryLock(waitTime, leaseTime)` of the write-up.
const LOCK_WAIT: Duration = Duration::from_millis(1_000);
const LOCK_LEASE_MS: u64 = 500;
const LOCK_RETRY: Duration = Duration::from_millis(5);
/// The pause between unlocking and committing (the method returns, then the
/// transaction proxy commits).
const UNLOCK_TO_COMMIT_PAUSE: Duration = Duration::from_millis(100);
/// Every this many pairs, the first grant takes longer than the lease.
const LONG_GRANT_EVERY: usize = 5;
const LONG_GRANT: Duration = Duration::from_millis(700);
/// idem lease of a grant attempt (longer than any grant here), and how long
/// a concurrent duplicate waits for the first grant's result.
const IDEM_LEASE_MS: u64 = 10_000;
const IDEM_WAIT_MS: u64 = 5_000;
/// The in-transaction record's lease: shorter than the long grant on
/// purpose, to show that a transaction outliving its lease is still safe
/// (the record is uncommitted, so nobody else can see it expire).
const IN_TX_LEASE_MS: u64 = 500;
/// How long a granted result is kept for replays (a day).
const IDEM_KEEP_MS: u64 = 86_400_000;
/// Pairs in flight at once (each holds BURST + 1 connections at most).
const PAIRS_IN_FLIGHT: usize = 6;
/// Transactions retried after a deadlock, at most.
const TX_RETRIES_MAX: usize = 5;

const UNLOCK_LUA: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Naive,
    NaiveUk,
    /// `IDEM.BEGIN` on the idem server around the MariaDB transaction.
    IdemServer,
    /// `idem_begin` / `idem_commit` inside the MariaDB transaction.
    Idem,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Naive => "naive",
            Variant::NaiveUk => "naive-uk",
            Variant::IdemServer => "idem-server",
            Variant::Idem => "idem",
        }
    }
}

/// What a caller of `sendPrize` saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Granted,
    /// Already granted (by the check, or the stored result replayed by idem).
    Already,
    /// The lock could not be had within its wait.
    Busy,
    /// A raw duplicate-key error reached the caller.
    DuplicateKey,
    Error(String),
}

struct Svc {
    variant: Variant,
    /// In-transaction grants rolled back because their lease ran out.
    stale_rollbacks: AtomicU64,
    idem: Option<idem_client::Client>,
    pool: mysql_async::Pool,
    record: String,
    user_prize: String,
    redis: redis::aio::MultiplexedConnection,
    key_prefix: String,
}

pub(crate) async fn run(ctx: &Ctx) -> anyhow::Result<Vec<VariantReport>> {
    let pairs = ctx.size(PAIRS_DEFAULT);
    let naive = run_variant(ctx, Variant::Naive, pairs).await?;
    let uk = run_variant(ctx, Variant::NaiveUk, pairs).await?;
    let server = run_variant(ctx, Variant::IdemServer, pairs).await?;
    let idem = run_variant(ctx, Variant::Idem, pairs).await?;
    let get = |r: &VariantReport, k: &str| r.field(k).unwrap_or("na").to_string();
    let extra = vec![
        ("naive_double_grants".to_string(), get(&naive, "double_grants")),
        ("naive_uk_duplicate_key_errors".to_string(), get(&uk, "duplicate_key_errors")),
        ("idem_double_grants".to_string(), get(&idem, "double_grants")),
        ("idem_duplicate_key_errors".to_string(), get(&idem, "duplicate_key_errors")),
        ("idem_server_anomalies".to_string(), get(&server, "anomalies")),
        ("idem_stale_rollbacks".to_string(), get(&idem, "stale_rollbacks")),
        ("pairs".to_string(), pairs.to_string()),
        ("lease_outliving_pairs".to_string(), pairs.div_ceil(LONG_GRANT_EVERY).to_string()),
    ];
    let s = summary(Scenario::S3, &naive, &idem, extra);
    Ok(vec![naive, uk, server, idem, s])
}

async fn run_variant(ctx: &Ctx, variant: Variant, pairs: usize) -> anyhow::Result<VariantReport> {
    let v = variant.name().replace('-', "_");
    let record = ctx.table(&format!("s3_prize_record_{v}"));
    let user_prize = ctx.table(&format!("s3_user_prize_{v}"));
    let pool = ctx.mysql(PAIRS_IN_FLIGHT * (BURST + 1) + 2)?;
    let uk = match variant {
        Variant::Naive => "",
        Variant::NaiveUk | Variant::IdemServer | Variant::Idem => {
            ", UNIQUE KEY uk_user_id_prize_type (user_id, prize_type)"
        }
    };
    exec(
        &pool,
        &format!(
            "CREATE TABLE {record} (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL, \
             prize_type INT NOT NULL, num INT NOT NULL, created_at TIMESTAMP(6) NOT NULL \
             DEFAULT CURRENT_TIMESTAMP(6), KEY idx_user (user_id){uk}) ENGINE=InnoDB"
        ),
    )
    .await?;
    exec(
        &pool,
        &format!(
            "CREATE TABLE {user_prize} (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL, \
             prize_type INT NOT NULL, num INT NOT NULL, KEY idx_user (user_id)) ENGINE=InnoDB"
        ),
    )
    .await?;
    if variant == Variant::Idem {
        idem_backends::mysql::migrate(&ctx.opts.mysql_url).await.context("installing idem's schema in MariaDB")?;
    }
    let client = redis::Client::open(ctx.opts.redis_url.as_str())?;
    let redis = client.get_multiplexed_async_connection().await.context("connecting to Redis")?;
    let svc = Svc {
        variant,
        stale_rollbacks: AtomicU64::new(0),
        idem: match variant {
            Variant::IdemServer => Some(ctx.idem(PAIRS_IN_FLIGHT * (BURST + 1))?),
            _ => None,
        },
        pool: pool.clone(),
        record: record.clone(),
        user_prize: user_prize.clone(),
        redis,
        key_prefix: format!("s3:{}:", ctx.run_id),
    };

    let started = Instant::now();
    let outcomes: Vec<Vec<Outcome>> = futures::stream::iter(0..pairs)
        .map(|i| {
            let svc = &svc;
            async move {
                let user = 1000 + i as u64;
                let prize = 1 + (i % 3) as u32;
                let long_first = i % LONG_GRANT_EVERY == 0;
                let burst = (0..BURST).map(|k| svc.send_prize(user, prize, long_first && k == 0));
                let slow = async {
                    tokio::time::sleep(SLOW_REPEAT_AFTER).await;
                    svc.send_prize(user, prize, false).await
                };
                let (mut out, last) = tokio::join!(futures::future::join_all(burst), slow);
                out.push(last);
                out
            }
        })
        .buffer_unordered(PAIRS_IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let all: Vec<&Outcome> = outcomes.iter().flatten().collect();
    let n = |f: &dyn Fn(&Outcome) -> bool| all.iter().filter(|o| f(o)).count() as u64;
    let granted = n(&|o| *o == Outcome::Granted);
    let already = n(&|o| *o == Outcome::Already);
    let busy = n(&|o| *o == Outcome::Busy);
    let dup_errors = n(&|o| *o == Outcome::DuplicateKey);
    let other_errors = n(&|o| matches!(o, Outcome::Error(_)));
    let first_error = all.iter().find_map(|o| match o {
        Outcome::Error(e) => Some(e.clone()),
        _ => None,
    });

    let double_grants = count(
        &pool,
        &format!("SELECT COUNT(*) FROM (SELECT user_id, prize_type FROM {record} GROUP BY user_id, prize_type HAVING COUNT(*) > 1) d"),
    )
    .await?;
    let double_prize_rows = count(
        &pool,
        &format!("SELECT COUNT(*) FROM (SELECT user_id, prize_type FROM {user_prize} GROUP BY user_id, prize_type HAVING COUNT(*) > 1) d"),
    )
    .await?;
    let granted_pairs =
        count(&pool, &format!("SELECT COUNT(*) FROM (SELECT DISTINCT user_id, prize_type FROM {record}) g")).await?;
    pool.disconnect().await?;

    let requests = all.len() as u64;
    Ok(VariantReport::new(Scenario::S3, variant.name())
        .with("requests", requests)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(requests, elapsed))
        .with("anomalies", double_grants.max(double_prize_rows) + dup_errors)
        .with("double_grants", double_grants)
        .with("double_prize_rows", double_prize_rows)
        .with("duplicate_key_errors", dup_errors)
        .with("pairs_granted", granted_pairs)
        .with("pairs_never_granted", (pairs as u64).saturating_sub(granted_pairs))
        .with("replies_granted", granted)
        .with("replies_already", already)
        .with("replies_busy", busy)
        .with("other_errors", other_errors)
        .with("stale_rollbacks", svc.stale_rollbacks.load(Ordering::Relaxed))
        .with("first_error", first_error.unwrap_or_else(|| "none".into())))
}

impl Svc {
    async fn send_prize(&self, user: u64, prize: u32, long_grant: bool) -> Outcome {
        let mut attempt = 0;
        let mut long_grant = long_grant;
        loop {
            attempt += 1;
            let r = match self.variant {
                Variant::Naive | Variant::NaiveUk => self.send_prize_locked(user, prize, long_grant).await,
                Variant::IdemServer => self.send_prize_idem_server(user, prize, long_grant).await,
                Variant::Idem => self.send_prize_idem(user, prize, long_grant).await,
            };
            match r {
                Ok(o) => return o,
                // The transaction outlived its idem lease: idem_commit refused
                // the stale fence, so the grant was rolled back. The caller
                // retries (the slowness was a one-off); the retry finds the
                // grant a duplicate made meanwhile, or makes it.
                Err(e)
                    if matches!(e.downcast_ref::<tx::Error>(), Some(tx::Error::Stale(_)))
                        && attempt < TX_RETRIES_MAX =>
                {
                    self.stale_rollbacks.fetch_add(1, Ordering::Relaxed);
                    long_grant = false;
                    continue;
                }
                Err(e) => {
                    let code = match e.downcast_ref::<tx::Error>() {
                        Some(tx::Error::Db(db)) => mysql_code(db),
                        _ => e.downcast_ref::<mysql_async::Error>().and_then(mysql_code),
                    };
                    match code {
                        Some(ER_DUP_ENTRY) => return Outcome::DuplicateKey,
                        // A deadlock rolled the transaction back: the whole
                        // method may run again.
                        Some(ER_LOCK_DEADLOCK) if attempt < TX_RETRIES_MAX => continue,
                        _ => return Outcome::Error(format!("{e:#}")),
                    }
                }
            }
        }
    }

    /// The write-up's `@Transactional sendPrize` with the Redis lock inside.
    async fn send_prize_locked(&self, user: u64, prize: u32, long_grant: bool) -> anyhow::Result<Outcome> {
        let mut conn = self.pool.get_conn().await?;
        let mut tx = conn.start_transaction(mysql_async::TxOpts::default()).await?;
        // The method's first read fixes the REPEATABLE READ snapshot.
        let _owned: Option<i64> =
            tx.exec_first(format!("SELECT COUNT(*) FROM {} WHERE user_id = ?", self.user_prize), (user,)).await?;
        let lock_key = format!("{}lock:prize:{user}:{prize}", self.key_prefix);
        let token = format!("{:032x}", rand::random::<u128>());
        if !self.try_lock(&lock_key, &token).await? {
            tx.rollback().await?;
            return Ok(Outcome::Busy);
        }
        let result = async {
            let record: Option<u64> = tx
                .exec_first(
                    format!("SELECT id FROM {} WHERE user_id = ? AND prize_type = ?", self.record),
                    (user, prize),
                )
                .await?;
            if record.is_some() {
                return Ok(false);
            }
            if long_grant {
                // The grant outlives the lock's lease.
                tokio::time::sleep(LONG_GRANT).await;
            }
            self.grant_rows(&mut tx, user, prize).await?;
            anyhow::Ok(true)
        }
        .await;
        // finally { lock.unlock() } — before the transaction commits.
        self.unlock(&lock_key, &token).await;
        match result {
            Ok(true) => {
                tokio::time::sleep(UNLOCK_TO_COMMIT_PAUSE).await;
                tx.commit().await?;
                Ok(Outcome::Granted)
            }
            Ok(false) => {
                tx.rollback().await?;
                Ok(Outcome::Already)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// idem on the server: `IDEM.BEGIN` decides who grants; the others wait
    /// for the first grant and get its result. The lease is longer than any
    /// grant transaction here; a transaction that could outlive it needs the
    /// record inside the transaction (the `idem` variant).
    async fn send_prize_idem_server(&self, user: u64, prize: u32, long_grant: bool) -> anyhow::Result<Outcome> {
        let idem = self.idem.as_ref().expect("idem-server variant has an idem pool");
        let key = format!("{}prize:{user}:{prize}", self.key_prefix);
        let fp = fingerprint(format!("{user}|{prize}|1").as_bytes());
        let opts = IdempotentOptions::new()
            .fingerprint(&fp)
            .lease_ms(IDEM_LEASE_MS)
            .on_running(OnRunning::Wait { wait_ms: IDEM_WAIT_MS });
        let granted = idem
            .idempotent(&key, &opts, |attempt| async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(mysql_async::TxOpts::default()).await?;
                let _owned: Option<i64> = tx
                    .exec_first(format!("SELECT COUNT(*) FROM {} WHERE user_id = ?", self.user_prize), (user,))
                    .await?;
                // A later attempt first looks for the grant of an attempt
                // whose lease ran out (a locking read sees committed rows).
                if attempt.number > 1 {
                    let found: Option<u64> = tx
                        .exec_first(
                            format!("SELECT id FROM {} WHERE user_id = ? AND prize_type = ? FOR UPDATE", self.record),
                            (user, prize),
                        )
                        .await?;
                    if let Some(id) = found {
                        tx.rollback().await?;
                        return anyhow::Ok(serde_json::json!({"granted": true, "record_id": id}));
                    }
                }
                if long_grant {
                    tokio::time::sleep(LONG_GRANT).await;
                }
                let id = self.grant_rows(&mut tx, user, prize).await?;
                tokio::time::sleep(UNLOCK_TO_COMMIT_PAUSE).await;
                tx.commit().await?;
                Ok(serde_json::json!({"granted": true, "record_id": id}))
            })
            .await;
        match granted {
            Ok(IdemOutcome::Fresh(_)) => Ok(Outcome::Granted),
            Ok(IdemOutcome::Replayed(_)) => Ok(Outcome::Already),
            Err(IdempotentError::Idem(IdemError::InFlight { .. })) => Ok(Outcome::Busy),
            Err(IdempotentError::Idem(IdemError::Mismatch(_))) => Ok(Outcome::Error("MISMATCH".into())),
            // The grant committed, but our lease ran out before the record
            // did: a later attempt finds the grant (`attempt > 1` above).
            Err(IdempotentError::Idem(IdemError::Stale(_))) => Ok(Outcome::Granted),
            Err(IdempotentError::Idem(e)) => Err(e.into()),
            // Nothing committed: the record was aborted, so a retry runs.
            Err(IdempotentError::Failed(e)) => Err(e),
        }
    }

    /// idem in the transaction: `idem_begin` writes (or finds) the record
    /// with locking reads in the grant's own transaction, so a concurrent
    /// duplicate waits on the record's row until this transaction ends —
    /// however long it runs, lease or no lease — and then sees `done`.
    async fn send_prize_idem(&self, user: u64, prize: u32, long_grant: bool) -> anyhow::Result<Outcome> {
        let mut conn = self.pool.get_conn().await?;
        let mut t = conn.start_transaction(mysql_async::TxOpts::default()).await?;
        // The same first read as the naive method: the snapshot is fixed
        // here, and idem's locking reads do not depend on it.
        let _owned: Option<i64> =
            t.exec_first(format!("SELECT COUNT(*) FROM {} WHERE user_id = ?", self.user_prize), (user,)).await?;
        let key = format!("{}prize:{user}:{prize}", self.key_prefix);
        let fp = fingerprint(format!("{user}|{prize}|1").as_bytes());
        match tx::idem_begin(&mut t, key.as_bytes(), Some(fp.as_bytes()), IN_TX_LEASE_MS).await? {
            Begin::Started { fence, .. } => {
                if long_grant {
                    tokio::time::sleep(LONG_GRANT).await;
                }
                let record_id = self.grant_rows(&mut t, user, prize).await?;
                let result = serde_json::json!({"granted": true, "record_id": record_id}).to_string();
                if let Err(e) = tx::idem_commit(&mut t, key.as_bytes(), fence, result.as_bytes(), IDEM_KEEP_MS).await {
                    // Never commit a grant whose record could not be committed.
                    let _ = t.rollback().await;
                    return Err(e.into());
                }
                // The same pause before commit as the naive method.
                tokio::time::sleep(UNLOCK_TO_COMMIT_PAUSE).await;
                t.commit().await?;
                Ok(Outcome::Granted)
            }
            Begin::Done { .. } => {
                t.rollback().await?;
                Ok(Outcome::Already)
            }
            Begin::Running { .. } => {
                t.rollback().await?;
                Ok(Outcome::Busy)
            }
        }
    }

    /// The grant: the record row and the user's prize row. Returns the record id.
    async fn grant_rows(&self, tx: &mut mysql_async::Transaction<'_>, user: u64, prize: u32) -> anyhow::Result<u64> {
        tx.exec_drop(format!("INSERT INTO {} (user_id, prize_type, num) VALUES (?, ?, 1)", self.record), (user, prize))
            .await?;
        let id = tx.last_insert_id().unwrap_or(0);
        tx.exec_drop(
            format!("INSERT INTO {} (user_id, prize_type, num) VALUES (?, ?, 1)", self.user_prize),
            (user, prize),
        )
        .await?;
        Ok(id)
    }

    /// `tryLock(wait, lease)`: `SET key token NX PX lease`, retried until `wait`.
    async fn try_lock(&self, key: &str, token: &str) -> anyhow::Result<bool> {
        let mut redis = self.redis.clone();
        let t = Instant::now();
        loop {
            let ok: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_LEASE_MS)
                .query_async(&mut redis)
                .await?;
            if ok.is_some() {
                return Ok(true);
            }
            if t.elapsed() >= LOCK_WAIT {
                return Ok(false);
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    /// Owner-checked unlock; a lock whose lease ran out is not ours any more.
    async fn unlock(&self, key: &str, token: &str) {
        let mut redis = self.redis.clone();
        let r: redis::RedisResult<i64> =
            redis::Script::new(UNLOCK_LUA).key(key).arg(token).invoke_async(&mut redis).await;
        if let Err(e) = r {
            tracing::warn!("unlock {key}: {e}");
        }
    }
}
