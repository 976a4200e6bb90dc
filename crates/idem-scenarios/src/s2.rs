//! S2 — batch product copy through a multi-worker MQ consumer (seed 001).
//!
//! An upstream job sends copy requests ("copy the default brand's products to
//! brand B") in a batch of 20, each request twice in a tight loop (its
//! duplicate request records). The requests go through a real broker (NATS
//! JetStream) to a consumer running many worker tasks, which copies every
//! product of the default brand into a MariaDB products table (MySQL in the
//! write-up). The table uses logical delete (`delete_status`), so there is no
//! unique index. Variants, with identical messages and work:
//! - naive: per product `SELECT id ... WHERE hash = ? AND delete_status = 0`,
//!   then `INSERT` if absent;
//! - redis-lock: the same, inside a Redis lock per product (`SET key token NX
//!   PX ttl`, retried until acquired; owner-checked unlock by a Lua script),
//!   as the write-up tried;
//! - idem-per-item: per product one MariaDB transaction that claims
//!   `product:<brand>:<name>:<model>` with idem's in-transaction claim and
//!   inserts the product; a claim held by another owner returns the existing
//!   product's id instead;
//! - idem: the same claims, but one transaction per copy request: every
//!   product's claim (in a fixed order) and one insert of the claimed
//!   products, committed together — the batch a lock per item cannot give;
//! - idem-pg: the batched idem variant on PostgreSQL (`postgres::tx`, claims
//!   pipelined on the connection), to show the same design on the other
//!   engine.
//!
//! In both idem variants a logical delete releases the claim in the same
//! transaction, so delete → recreate → delete → recreate works (shown with
//! concurrent duplicate recreations).
//!
//! Also shown: a unique index that includes `delete_status` (the write-up's
//! rejected idea) fails on the second delete.
//!
//! Anomaly = a live product (same brand, name, model) present more than once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::StreamExt;
use tokio_postgres::error::SqlState;

use idem_backends::mysql::tx as mytx;
use idem_backends::postgres::tx::{self as pgtx, Claimed};
use mysql_async::prelude::*;

use crate::broker::WorkQueue;
use crate::harness::{exec, fingerprint, mysql_code, rate, Ctx, ER_DUP_ENTRY, ER_LOCK_DEADLOCK};
use crate::pg::PgPool;
use crate::report::{summary, VariantReport};
use crate::Scenario;

/// Products of the default brand copied by each request.
pub const PRODUCTS_DEFAULT: usize = 50;
/// Requests in one upstream batch (the mall's job took 20 records at a time).
pub const REQUESTS: usize = 20;
/// Times each request is sent (the duplicated request records).
pub const COPIES_PER_REQUEST: usize = 2;
/// Consumer worker tasks (RocketMQ's consumer ran up to 64 threads).
pub const WORKERS: usize = 32;
/// The gap between a product's existence check and its insert (building the
/// copied row).
const CHECK_TO_INSERT_PAUSE: Duration = Duration::from_millis(1);
/// Redis lock: lease, retry period while busy, and the most time spent trying.
const LOCK_LEASE_MS: u64 = 5_000;
const LOCK_RETRY: Duration = Duration::from_millis(5);
const LOCK_WAIT_MAX: Duration = Duration::from_secs(10);
/// Transactions retried after a deadlock, at most.
const TX_RETRIES_MAX: usize = 5;
/// Delete/recreate demonstration: products, cycles, concurrent recreations.
const RECREATE_PRODUCTS: usize = 5;
const RECREATE_CYCLES: usize = 3;
const RECREATE_DUPLICATES: usize = 4;
/// Bound on one variant's consumption.
const DEADLINE: Duration = Duration::from_secs(600);

const UNLOCK_LUA: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Naive,
    RedisLock,
    /// One transaction per product: claim + insert.
    IdemPerItem,
    /// One transaction per copy request: every product's claim and the
    /// inserts of the claimed ones, committed together.
    Idem,
    /// `Idem` on PostgreSQL.
    IdemPg,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Naive => "naive",
            Variant::RedisLock => "redis-lock",
            Variant::IdemPerItem => "idem-per-item",
            Variant::Idem => "idem",
            Variant::IdemPg => "idem-pg",
        }
    }

    fn is_idem(self) -> bool {
        matches!(self, Variant::Idem | Variant::IdemPerItem | Variant::IdemPg)
    }

    fn is_batch(self) -> bool {
        matches!(self, Variant::Idem | Variant::IdemPg)
    }
}

/// Where a variant keeps its products.
enum Db {
    My(mysql_async::Pool),
    Pg(PgPool),
}

impl Db {
    async fn count(&self, sql: &str) -> anyhow::Result<u64> {
        match self {
            Db::My(pool) => crate::harness::count(pool, sql).await,
            Db::Pg(pool) => pool.count(sql).await,
        }
    }
}

/// A product of the default brand.
#[derive(Clone, Debug)]
struct Product {
    name: String,
    model: String,
}

/// What a copy of one product returned to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copied {
    Created(u64),
    Existing(u64),
}

impl Shared {
    fn count(&self, c: Copied) {
        match c {
            Copied::Created(_) => self.created.fetch_add(1, Ordering::Relaxed),
            Copied::Existing(0) => {
                self.existing.fetch_add(1, Ordering::Relaxed);
                self.existing_id_missing.fetch_add(1, Ordering::Relaxed)
            }
            Copied::Existing(_) => self.existing.fetch_add(1, Ordering::Relaxed),
        };
    }
}

struct Shared {
    variant: Variant,
    db: Db,
    table: String,
    products: Vec<Product>,
    redis: Option<redis::aio::MultiplexedConnection>,
    key_prefix: String,
    created: AtomicU64,
    existing: AtomicU64,
    existing_id_missing: AtomicU64,
    errors: AtomicU64,
    done_messages: AtomicU64,
}

pub(crate) async fn run(ctx: &Ctx) -> anyhow::Result<Vec<VariantReport>> {
    let n = ctx.size(PRODUCTS_DEFAULT);
    let products: Vec<Product> =
        (0..n).map(|i| Product { name: format!("product-{i}"), model: format!("m{}", i % 7) }).collect();
    let naive = run_variant(ctx, Variant::Naive, &products).await?;
    let lock = run_variant(ctx, Variant::RedisLock, &products).await?;
    let per_item = run_variant(ctx, Variant::IdemPerItem, &products).await?;
    let idem = run_variant(ctx, Variant::Idem, &products).await?;
    let idem_pg = run_variant(ctx, Variant::IdemPg, &products).await?;
    let uk = unique_with_delete_status(ctx).await?;
    let get = |r: &VariantReport, k: &str| r.field(k).unwrap_or("na").to_string();
    let lock_rate = lock.f64("ops_per_s").unwrap_or(0.0);
    let idem_rate = idem.f64("ops_per_s").unwrap_or(0.0);
    let extra = vec![
        ("redis_lock_anomalies".to_string(), get(&lock, "anomalies")),
        ("redis_lock_ops_per_s".to_string(), get(&lock, "ops_per_s")),
        ("idem_per_item_anomalies".to_string(), get(&per_item, "anomalies")),
        ("idem_per_item_ops_per_s".to_string(), get(&per_item, "ops_per_s")),
        ("idem_pg_anomalies".to_string(), get(&idem_pg, "anomalies")),
        ("idem_pg_ops_per_s".to_string(), get(&idem_pg, "ops_per_s")),
        ("idem_vs_redis_lock".to_string(), format!("{:.1}", idem_rate / lock_rate.max(1e-9))),
        ("idem_recreate_ok".to_string(), get(&idem, "recreate_ok")),
        ("idem_existing_ids_returned".to_string(), get(&idem, "existing_ids_returned")),
        ("uk_with_delete_status_second_delete".to_string(), uk),
        ("products_per_request".to_string(), n.to_string()),
        ("messages".to_string(), (REQUESTS * COPIES_PER_REQUEST).to_string()),
    ];
    let s = summary(Scenario::S2, &naive, &idem, extra);
    Ok(vec![naive, lock, per_item, idem, idem_pg, s])
}

async fn run_variant(ctx: &Ctx, variant: Variant, products: &[Product]) -> anyhow::Result<VariantReport> {
    let base = format!("s2_products_{}", variant.name().replace('-', "_"));
    // Logical delete: no unique index is possible on (brand, name, model).
    let (db, table) = if variant == Variant::IdemPg {
        let table = ctx.pg_table(&base);
        let pool = ctx.pg(WORKERS + 4);
        pool.exec(&format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, brand_id INT NOT NULL, name TEXT NOT NULL, \
             model TEXT NOT NULL, hash TEXT NOT NULL, delete_status SMALLINT NOT NULL DEFAULT 0, \
             claim_owner TEXT NULL); CREATE INDEX ON {table} (hash, delete_status); \
             CREATE INDEX ON {table} (claim_owner)"
        ))
        .await?;
        idem_backends::postgres::migrate(&ctx.opts.pg_url).await.context("installing idem's schema in PostgreSQL")?;
        (Db::Pg(pool), table)
    } else {
        let table = ctx.table(&base);
        let pool = ctx.mysql(WORKERS + 4)?;
        exec(
            &pool,
            &format!(
                "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, brand_id INT NOT NULL, \
                 name VARCHAR(64) NOT NULL, model VARCHAR(32) NOT NULL, hash CHAR(16) NOT NULL, \
                 delete_status TINYINT NOT NULL DEFAULT 0, claim_owner VARCHAR(64) NULL, \
                 KEY idx_hash (hash, delete_status), KEY idx_owner (claim_owner)) ENGINE=InnoDB"
            ),
        )
        .await?;
        if variant.is_idem() {
            idem_backends::mysql::migrate(&ctx.opts.mysql_url).await.context("installing idem's schema in MariaDB")?;
        }
        (Db::My(pool), table)
    };
    let redis = match variant {
        Variant::RedisLock => {
            let client = redis::Client::open(ctx.opts.redis_url.as_str())?;
            Some(client.get_multiplexed_async_connection().await.context("connecting to Redis")?)
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        variant,
        db,
        table: table.clone(),
        products: products.to_vec(),
        redis,
        key_prefix: format!("s2:{}:{}:", ctx.run_id, variant.name()),
        created: AtomicU64::new(0),
        existing: AtomicU64::new(0),
        existing_id_missing: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        done_messages: AtomicU64::new(0),
    });

    // The upstream batch: every request twice, back to back.
    let queue = WorkQueue::create(
        &ctx.opts.nats_url,
        &format!("s2copy_{}_{}", variant.name().replace('-', "_"), ctx.run_id),
        Duration::from_secs(60),
    )
    .await?;
    let messages = REQUESTS * COPIES_PER_REQUEST;
    let payloads = (0..REQUESTS).flat_map(|r| {
        let brand = r + 1;
        (0..COPIES_PER_REQUEST).map(move |_| Bytes::from(brand.to_string()))
    });
    queue.publish_all(payloads).await?;

    let started = Instant::now();
    let consumer = tokio::spawn(consume(queue.consumer(), shared.clone()));
    while shared.done_messages.load(Ordering::Relaxed) < messages as u64 && started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    consumer.abort();
    queue.delete().await;
    let item_ops = (messages * products.len()) as u64;

    let recreate_ok = match variant.is_idem() {
        true => Some(delete_recreate(&shared).await?),
        false => None,
    };

    let pool = &shared.db;
    let dup_products = pool
        .count(&format!(
            "SELECT COUNT(*) FROM (SELECT brand_id, name, model FROM {table} WHERE delete_status = 0 \
             GROUP BY brand_id, name, model HAVING COUNT(*) > 1) d"
        ))
        .await?;
    let live = pool.count(&format!("SELECT COUNT(*) FROM {table} WHERE delete_status = 0")).await?;
    let distinct = pool
        .count(&format!(
            "SELECT COUNT(*) FROM (SELECT DISTINCT brand_id, name, model FROM {table} WHERE delete_status = 0) x"
        ))
        .await?;

    let mut r = VariantReport::new(Scenario::S2, variant.name())
        .with("messages", messages)
        .with("product_copies", item_ops)
        .with("workers", WORKERS)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(item_ops, elapsed))
        .with("anomalies", dup_products)
        .with("live_rows", live)
        .with("extra_live_rows", live.saturating_sub(distinct))
        .with("missing_products", (REQUESTS * products.len()) as u64 - distinct.min((REQUESTS * products.len()) as u64))
        .with("created", shared.created.load(Ordering::Relaxed))
        .with("existing_ids_returned", shared.existing.load(Ordering::Relaxed))
        .with("existing_id_missing", shared.existing_id_missing.load(Ordering::Relaxed))
        .with("errors", shared.errors.load(Ordering::Relaxed));
    if let Some(ok) = recreate_ok {
        r.push("recreate_ok", format!("{ok}/{RECREATE_PRODUCTS}"));
        r.push("recreate_cycles", RECREATE_CYCLES);
    }
    Ok(r)
}

/// The consumer: pulls copy requests and runs up to [`WORKERS`] at once.
async fn consume(
    consumer: async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let messages = consumer.messages().await.context("pulling")?;
    messages
        .for_each_concurrent(WORKERS, |m| {
            let shared = shared.clone();
            async move {
                let Ok(msg) = m else { return };
                let brand: u32 = std::str::from_utf8(&msg.payload).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                if shared.variant.is_batch() {
                    match copy_batch(&shared, brand).await {
                        Ok(copied) => {
                            for c in copied {
                                shared.count(c);
                            }
                        }
                        Err(e) => {
                            tracing::warn!("copy batch {brand}: {e:#}");
                            shared.errors.fetch_add(shared.products.len() as u64, Ordering::Relaxed);
                        }
                    }
                    let _ = msg.ack().await;
                    shared.done_messages.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                for p in &shared.products {
                    match copy_product(&shared, brand, p).await {
                        Ok(c) => shared.count(c),
                        Err(e) => {
                            tracing::warn!("copy {brand}/{}: {e:#}", p.name);
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let _ = msg.ack().await;
                shared.done_messages.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    Ok(())
}

fn product_hash(brand: u32, p: &Product) -> String {
    fingerprint(format!("{brand}|{}|{}", p.name, p.model).as_bytes())
}

async fn copy_product(shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<Copied> {
    match shared.variant {
        Variant::Naive => check_then_insert(shared, brand, p).await,
        Variant::RedisLock => {
            let mut redis = shared.redis.clone().expect("redis-lock variant has a Redis connection");
            let key = format!("{}lock:{}", shared.key_prefix, product_hash(brand, p));
            let token = format!("{:032x}", rand::random::<u128>());
            let t = Instant::now();
            loop {
                let ok: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_LEASE_MS)
                    .query_async(&mut redis)
                    .await?;
                if ok.is_some() {
                    break;
                }
                if t.elapsed() > LOCK_WAIT_MAX {
                    bail!("lock {key} busy for {LOCK_WAIT_MAX:?}");
                }
                tokio::time::sleep(LOCK_RETRY).await;
            }
            let r = check_then_insert(shared, brand, p).await;
            let _: i64 = redis::Script::new(UNLOCK_LUA).key(&key).arg(&token).invoke_async(&mut redis).await?;
            r
        }
        Variant::Idem | Variant::IdemPerItem | Variant::IdemPg => {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match claim_and_insert(shared, brand, p).await {
                    Err(e) if attempt < TX_RETRIES_MAX && is_retryable(&e) => continue,
                    r => return r,
                }
            }
        }
    }
}

/// A deadlock or serialization failure: the whole transaction may run again.
fn is_retryable(e: &anyhow::Error) -> bool {
    if let Some(e) = e.downcast_ref::<pgtx::Error>() {
        return e.is_retryable();
    }
    if let Some(e) = e.downcast_ref::<mytx::Error>() {
        return e.is_retryable();
    }
    if e.downcast_ref::<mysql_async::Error>().and_then(mysql_code) == Some(ER_LOCK_DEADLOCK) {
        return true;
    }
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// The original: query by hash, insert when absent.
async fn pg_check_then_insert(pool: &PgPool, shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<Copied> {
    let hash = product_hash(brand, p);
    let conn = pool.get().await?;
    let found = conn
        .query_opt(&format!("SELECT id FROM {} WHERE hash = $1 AND delete_status = 0 LIMIT 1", shared.table), &[&hash])
        .await?;
    if let Some(row) = found {
        return Ok(Copied::Existing(row.get::<_, i64>(0) as u64));
    }
    tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
    let row = conn
        .query_one(
            &format!("INSERT INTO {} (brand_id, name, model, hash) VALUES ($1, $2, $3, $4) RETURNING id", shared.table),
            &[&(brand as i32), &p.name, &p.model, &hash],
        )
        .await?;
    Ok(Copied::Created(row.get::<_, i64>(0) as u64))
}

fn claim_key(shared: &Shared, brand: u32, p: &Product) -> String {
    format!("{}product:{brand}:{}:{}", shared.key_prefix, p.name, p.model)
}

/// idem: claim the product's key and insert it in one transaction. A key
/// held by another owner means the product exists: return its id.
async fn pg_claim_and_insert(pool: &PgPool, shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<Copied> {
    let hash = product_hash(brand, p);
    let key = claim_key(shared, brand, p);
    let owner = format!("{:032x}", rand::random::<u128>());
    let mut conn = pool.get().await?;
    let t = conn.transaction().await?;
    // A concurrent claimer of the same key waits here until this
    // transaction ends, then sees `Held` (or `Claimed` if it rolled back).
    match pgtx::claim(&t, key.as_bytes(), owner.as_bytes(), None).await? {
        Claimed::Claimed => {
            tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
            let row = t
                .query_one(
                    &format!(
                        "INSERT INTO {} (brand_id, name, model, hash, claim_owner) VALUES ($1, $2, $3, $4, $5) \
                         RETURNING id",
                        shared.table
                    ),
                    &[&(brand as i32), &p.name, &p.model, &hash, &owner],
                )
                .await?;
            t.commit().await?;
            Ok(Copied::Created(row.get::<_, i64>(0) as u64))
        }
        Claimed::Held { owner: holder } => {
            t.rollback().await?;
            // The holder committed its claim and its product together.
            let holder = String::from_utf8_lossy(&holder).into_owned();
            let row = conn
                .query_opt(
                    &format!("SELECT id FROM {} WHERE claim_owner = $1 AND delete_status = 0", shared.table),
                    &[&holder],
                )
                .await?;
            Ok(Copied::Existing(row.map(|r| r.get::<_, i64>(0) as u64).unwrap_or(0)))
        }
    }
}

/// idem, batched: one transaction claims every product of the request and
/// inserts the claimed ones; products claimed by others are answered with
/// their existing ids. Claims are sent pipelined, in one fixed order, so two
/// duplicate requests queue on the first key instead of deadlocking.
async fn copy_batch(shared: &Shared, brand: u32) -> anyhow::Result<Vec<Copied>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match copy_batch_once(shared, brand).await {
            Err(e) if attempt < TX_RETRIES_MAX && is_retryable(&e) => continue,
            r => return r,
        }
    }
}

async fn pg_copy_batch(pool: &PgPool, shared: &Shared, brand: u32) -> anyhow::Result<Vec<Copied>> {
    let token = format!("{:032x}", rand::random::<u128>());
    let items: Vec<(&Product, String, String)> = shared
        .products
        .iter()
        .enumerate()
        .map(|(i, p)| (p, claim_key(shared, brand, p), format!("{token}-{i}")))
        .collect();
    let mut conn = pool.get().await?;
    let t = conn.transaction().await?;
    let claims = futures::future::try_join_all(
        items.iter().map(|(_, key, owner)| pgtx::claim(&t, key.as_bytes(), owner.as_bytes(), None)),
    )
    .await?;
    let mut to_insert = Vec::new();
    let mut held = Vec::new();
    for ((p, _, owner), c) in items.iter().zip(claims) {
        match c {
            Claimed::Claimed => to_insert.push((*p, owner)),
            Claimed::Held { owner: holder } => held.push(String::from_utf8_lossy(&holder).into_owned()),
        }
    }
    let mut out = Vec::with_capacity(items.len());
    if !to_insert.is_empty() {
        tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
        let brands: Vec<i32> = vec![brand as i32; to_insert.len()];
        let names: Vec<&str> = to_insert.iter().map(|(p, _)| p.name.as_str()).collect();
        let models: Vec<&str> = to_insert.iter().map(|(p, _)| p.model.as_str()).collect();
        let hashes: Vec<String> = to_insert.iter().map(|(p, _)| product_hash(brand, p)).collect();
        let owners: Vec<&str> = to_insert.iter().map(|(_, o)| o.as_str()).collect();
        let rows = t
            .query(
                &format!(
                    "INSERT INTO {} (brand_id, name, model, hash, claim_owner) \
                     SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[]) RETURNING id",
                    shared.table
                ),
                &[&brands, &names, &models, &hashes, &owners],
            )
            .await?;
        out.extend(rows.iter().map(|r| Copied::Created(r.get::<_, i64>(0) as u64)));
    }
    t.commit().await?;
    if !held.is_empty() {
        // The holders committed their claims and products together.
        let rows = conn
            .query(
                &format!("SELECT id FROM {} WHERE claim_owner = ANY($1) AND delete_status = 0", shared.table),
                &[&held],
            )
            .await?;
        let found = rows.len();
        out.extend(rows.iter().map(|r| Copied::Existing(r.get::<_, i64>(0) as u64)));
        out.extend((found..held.len()).map(|_| Copied::Existing(0)));
    }
    Ok(out)
}

/// idem: logical delete, releasing the claim in the same transaction.
async fn pg_logical_delete(pool: &PgPool, shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<bool> {
    let mut conn = pool.get().await?;
    let t = conn.transaction().await?;
    let row = t
        .query_opt(
            &format!(
                "SELECT id, claim_owner FROM {} WHERE brand_id = $1 AND name = $2 AND model = $3 \
                 AND delete_status = 0 FOR UPDATE",
                shared.table
            ),
            &[&(brand as i32), &p.name, &p.model],
        )
        .await?;
    let Some(row) = row else {
        t.rollback().await?;
        return Ok(false);
    };
    let (id, owner): (i64, Option<String>) = (row.get(0), row.get(1));
    t.execute(&format!("UPDATE {} SET delete_status = 1 WHERE id = $1", shared.table), &[&id]).await?;
    if let Some(owner) = owner {
        pgtx::release(&t, claim_key(shared, brand, p).as_bytes(), owner.as_bytes()).await?;
    }
    t.commit().await?;
    Ok(true)
}

/// delete → recreate (by several concurrent duplicates) → delete → ...: each
/// cycle must leave exactly one live row and one more deleted row.
async fn delete_recreate(shared: &Shared) -> anyhow::Result<usize> {
    let brand = 1;
    let mut ok = 0;
    for p in shared.products.iter().take(RECREATE_PRODUCTS) {
        let mut good = true;
        for _ in 0..RECREATE_CYCLES {
            good &= logical_delete(shared, brand, p).await?;
            let copies =
                futures::future::join_all((0..RECREATE_DUPLICATES).map(|_| copy_product(shared, brand, p))).await;
            let created = copies.iter().filter(|c| matches!(c, Ok(Copied::Created(_)))).count();
            let existing = copies.iter().filter(|c| matches!(c, Ok(Copied::Existing(id)) if *id != 0)).count();
            good &= created == 1 && existing == RECREATE_DUPLICATES - 1;
        }
        let filter =
            format!("FROM {} WHERE brand_id = {brand} AND name = '{}' AND model = '{}'", shared.table, p.name, p.model);
        let live = shared.db.count(&format!("SELECT COUNT(*) {filter} AND delete_status = 0")).await?;
        let all = shared.db.count(&format!("SELECT COUNT(*) {filter}")).await?;
        good &= live == 1 && all == 1 + RECREATE_CYCLES as u64;
        ok += usize::from(good);
    }
    Ok(ok)
}

/// The write-up's rejected idea: `UNIQUE (hash, delete_status)`. The first
/// delete works; recreate works; the second delete collides with the first
/// deleted row. Returns what the second delete did.
async fn unique_with_delete_status(ctx: &Ctx) -> anyhow::Result<String> {
    let table = ctx.table("s2_uk_delete_status");
    let pool = ctx.mysql(1)?;
    exec(
        &pool,
        &format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, hash CHAR(16) NOT NULL, \
             delete_status TINYINT NOT NULL DEFAULT 0, UNIQUE KEY uk (hash, delete_status)) ENGINE=InnoDB"
        ),
    )
    .await?;
    let mut conn = pool.get_conn().await?;
    let mut outcome = "ok".to_string();
    for step in 1..=2 {
        conn.exec_drop(format!("INSERT INTO {table} (hash) VALUES ('p')"), ()).await?;
        let id = conn.last_insert_id().unwrap_or(0);
        if let Err(e) = conn.exec_drop(format!("UPDATE {table} SET delete_status = 1 WHERE id = ?"), (id,)).await {
            outcome = match mysql_code(&e) {
                Some(ER_DUP_ENTRY) => format!("duplicate_key_error_on_delete_{step}"),
                _ => format!("error_{e}"),
            };
            break;
        }
    }
    drop(conn);
    pool.disconnect().await?;
    Ok(outcome)
}

// ------------------------------------------------- engine dispatch, MariaDB

async fn check_then_insert(shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<Copied> {
    match &shared.db {
        Db::My(pool) => my_check_then_insert(pool, shared, brand, p).await,
        Db::Pg(pool) => pg_check_then_insert(pool, shared, brand, p).await,
    }
}

async fn claim_and_insert(shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<Copied> {
    match &shared.db {
        Db::My(pool) => my_claim_and_insert(pool, shared, brand, p).await,
        Db::Pg(pool) => pg_claim_and_insert(pool, shared, brand, p).await,
    }
}

async fn copy_batch_once(shared: &Shared, brand: u32) -> anyhow::Result<Vec<Copied>> {
    match &shared.db {
        Db::My(pool) => my_copy_batch(pool, shared, brand).await,
        Db::Pg(pool) => pg_copy_batch(pool, shared, brand).await,
    }
}

async fn logical_delete(shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<bool> {
    match &shared.db {
        Db::My(pool) => my_logical_delete(pool, shared, brand, p).await,
        Db::Pg(pool) => pg_logical_delete(pool, shared, brand, p).await,
    }
}

/// The original: query by hash, insert when absent.
async fn my_check_then_insert(
    pool: &mysql_async::Pool,
    shared: &Shared,
    brand: u32,
    p: &Product,
) -> anyhow::Result<Copied> {
    let hash = product_hash(brand, p);
    let mut conn = pool.get_conn().await?;
    let found: Option<u64> = conn
        .exec_first(format!("SELECT id FROM {} WHERE hash = ? AND delete_status = 0 LIMIT 1", shared.table), (&hash,))
        .await?;
    if let Some(id) = found {
        return Ok(Copied::Existing(id));
    }
    tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
    conn.exec_drop(
        format!("INSERT INTO {} (brand_id, name, model, hash) VALUES (?, ?, ?, ?)", shared.table),
        (brand, &p.name, &p.model, &hash),
    )
    .await?;
    Ok(Copied::Created(conn.last_insert_id().unwrap_or(0)))
}

/// idem: claim the product's key and insert it in one transaction. A key
/// held by another owner means the product exists: return its id.
async fn my_claim_and_insert(
    pool: &mysql_async::Pool,
    shared: &Shared,
    brand: u32,
    p: &Product,
) -> anyhow::Result<Copied> {
    let hash = product_hash(brand, p);
    let key = claim_key(shared, brand, p);
    let owner = format!("{:032x}", rand::random::<u128>());
    let mut conn = pool.get_conn().await?;
    let mut t = conn.start_transaction(mysql_async::TxOpts::default()).await?;
    // A concurrent claimer of the same key waits on the claim's row until
    // this transaction ends, then sees `Held` (or `Claimed` after a rollback).
    match mytx::claim(&mut t, key.as_bytes(), owner.as_bytes(), None).await? {
        Claimed::Claimed => {
            tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
            t.exec_drop(
                format!(
                    "INSERT INTO {} (brand_id, name, model, hash, claim_owner) VALUES (?, ?, ?, ?, ?)",
                    shared.table
                ),
                (brand, &p.name, &p.model, &hash, &owner),
            )
            .await?;
            let id = t.last_insert_id().unwrap_or(0);
            t.commit().await?;
            Ok(Copied::Created(id))
        }
        Claimed::Held { owner: holder } => {
            t.rollback().await?;
            // The holder committed its claim and its product together.
            let id: Option<u64> = conn
                .exec_first(
                    format!("SELECT id FROM {} WHERE claim_owner = ? AND delete_status = 0", shared.table),
                    (holder.to_vec(),),
                )
                .await?;
            Ok(Copied::Existing(id.unwrap_or(0)))
        }
    }
}

/// idem, batched on MariaDB: the claims one after another in a fixed order
/// (mysql_async does not pipeline), then one multi-row insert, one commit.
async fn my_copy_batch(pool: &mysql_async::Pool, shared: &Shared, brand: u32) -> anyhow::Result<Vec<Copied>> {
    let token = format!("{:032x}", rand::random::<u128>());
    let mut conn = pool.get_conn().await?;
    let mut t = conn.start_transaction(mysql_async::TxOpts::default()).await?;
    let mut to_insert = Vec::new();
    let mut held: Vec<Vec<u8>> = Vec::new();
    for (i, p) in shared.products.iter().enumerate() {
        let owner = format!("{token}-{i}");
        match mytx::claim(&mut t, claim_key(shared, brand, p).as_bytes(), owner.as_bytes(), None).await? {
            Claimed::Claimed => to_insert.push((p, owner)),
            Claimed::Held { owner: holder } => held.push(holder.to_vec()),
        }
    }
    let mut out = Vec::with_capacity(shared.products.len());
    if !to_insert.is_empty() {
        tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
        let rows = vec!["(?, ?, ?, ?, ?)"; to_insert.len()].join(", ");
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(5 * to_insert.len());
        for (p, owner) in &to_insert {
            params.push(brand.into());
            params.push(p.name.as_str().into());
            params.push(p.model.as_str().into());
            params.push(product_hash(brand, p).into());
            params.push(owner.as_str().into());
        }
        t.exec_drop(
            format!("INSERT INTO {} (brand_id, name, model, hash, claim_owner) VALUES {rows}", shared.table),
            params,
        )
        .await?;
        out.extend(to_insert.iter().map(|_| Copied::Created(1)));
    }
    t.commit().await?;
    if !held.is_empty() {
        // The holders committed their claims and products together.
        let marks = vec!["?"; held.len()].join(", ");
        let ids: Vec<u64> = conn
            .exec(
                format!("SELECT id FROM {} WHERE claim_owner IN ({marks}) AND delete_status = 0", shared.table),
                held.clone(),
            )
            .await?;
        let found = ids.len();
        out.extend(ids.into_iter().map(Copied::Existing));
        out.extend((found..held.len()).map(|_| Copied::Existing(0)));
    }
    Ok(out)
}

/// idem: logical delete, releasing the claim in the same transaction.
async fn my_logical_delete(pool: &mysql_async::Pool, shared: &Shared, brand: u32, p: &Product) -> anyhow::Result<bool> {
    let mut conn = pool.get_conn().await?;
    let mut t = conn.start_transaction(mysql_async::TxOpts::default()).await?;
    let row: Option<(u64, Option<String>)> = t
        .exec_first(
            format!(
                "SELECT id, claim_owner FROM {} WHERE brand_id = ? AND name = ? AND model = ? AND delete_status = 0 \
                 FOR UPDATE",
                shared.table
            ),
            (brand, &p.name, &p.model),
        )
        .await?;
    let Some((id, owner)) = row else {
        t.rollback().await?;
        return Ok(false);
    };
    t.exec_drop(format!("UPDATE {} SET delete_status = 1 WHERE id = ?", shared.table), (id,)).await?;
    if let Some(owner) = owner {
        mytx::release(&mut t, claim_key(shared, brand, p).as_bytes(), owner.as_bytes()).await?;
    }
    t.commit().await?;
    Ok(true)
}
