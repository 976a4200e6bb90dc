//! S4 — meeting-room rush (seed 003).
//!
//! 200 rooms × 30 days × 48 half-hour slots open at once; many bookers rush
//! in, each booking 1–4 consecutive slots, most of them aiming at the same few
//! popular rooms, days and morning hours. Both variants see the identical
//! sequence of booking requests (a seeded generator).
//!
//! - naive: select-then-insert on a MariaDB `bookings` table with no unique
//!   index: `SELECT COUNT(*) ... WHERE room=? AND day=? AND slot BETWEEN ..`,
//!   then one multi-row `INSERT` (all-or-nothing by itself).
//! - idem: `SLOTS.RESERVE room:R:day first last holder SIZE 48` (all or none,
//!   durable when it replies) answers the booker; a persistence job writes the
//!   booking rows to the same MariaDB table behind it, in batches, as the
//!   write-up's cache + persistence job did. The run waits for the job to
//!   drain before the table is checked.
//!
//! Anomaly = a (room, day, slot) booked by more than one row; also counted:
//! bookings whose rows are not all there (`partial_bookings`). Latency per
//! booking attempt, from request to answer, in an HDR histogram. Neither
//! table has a unique index: zero double-bookings on the idem side is idem's
//! doing, not a constraint's.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use mysql_async::prelude::*;
use rand::{Rng, SeedableRng};

use crate::harness::{count, exec, rate, Ctx, Latency, Variant};
use crate::report::{summary, VariantReport};
use crate::Scenario;
use idem_client::Reserve;

/// Booking attempts in one rush by default.
pub const BOOKINGS_DEFAULT: usize = 3_000;
/// The write-up's building: about 200 rooms.
pub const ROOMS: u32 = 200;
/// The next month's bookings open at once.
pub const DAYS: u32 = 30;
/// Half-hour slots per room per day.
pub const SLOTS: u32 = 48;
/// Bookers rushing at the same time.
const BOOKERS: usize = 64;
/// MariaDB connections of the booking service.
const SERVICE_CONNS: usize = 32;
/// The gap between a naive booking's check and its insert.
const CHECK_TO_INSERT_PAUSE: Duration = Duration::from_millis(2);
/// Bookings queued for the persistence job at most (bookers wait beyond it),
/// and bookings per batch insert.
const PERSIST_QUEUE_MAX: usize = 10_000;
const PERSIST_BATCH_MAX: usize = 200;
/// The share of requests that aim at the popular rooms/days/hours.
const POPULAR_SHARE: f64 = 0.6;
const POPULAR_ROOMS: u32 = 10;
const POPULAR_DAYS: u32 = 3;
/// Popular start slots: 09:00 to 12:00.
const POPULAR_FIRST_SLOTS: std::ops::RangeInclusive<u32> = 18..=24;

/// One booking request.
#[derive(Clone, Debug)]
struct Booking {
    id: String,
    room: u32,
    day: u32,
    first: u32,
    last: u32,
}

enum Outcome {
    Booked,
    Conflict,
    Error,
}

/// The rush: a deterministic mix of popular and uniform requests.
fn bookings(n: usize, seed: u64) -> Vec<Booking> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = rng.gen_range(1..=4);
            let (room, day, first) = if rng.gen_bool(POPULAR_SHARE) {
                (rng.gen_range(0..POPULAR_ROOMS), rng.gen_range(0..POPULAR_DAYS), rng.gen_range(POPULAR_FIRST_SLOTS))
            } else {
                (rng.gen_range(0..ROOMS), rng.gen_range(0..DAYS), rng.gen_range(0..=SLOTS - len))
            };
            Booking { id: format!("b{i}"), room, day, first, last: first + len - 1 }
        })
        .collect()
}

pub(crate) async fn run(ctx: &Ctx) -> anyhow::Result<Vec<VariantReport>> {
    let n = ctx.size(BOOKINGS_DEFAULT);
    let seed: u64 = rand::random();
    let load = bookings(n, seed);
    let naive = run_variant(ctx, Variant::Naive, &load).await?;
    let idem = run_variant(ctx, Variant::Idem, &load).await?;
    let get = |r: &VariantReport, k: &str| r.field(k).unwrap_or("na").to_string();
    let extra = vec![
        ("naive_p50_us".to_string(), get(&naive, "p50_us")),
        ("naive_p99_us".to_string(), get(&naive, "p99_us")),
        ("idem_p50_us".to_string(), get(&idem, "p50_us")),
        ("idem_p99_us".to_string(), get(&idem, "p99_us")),
        ("idem_partial_bookings".to_string(), get(&idem, "partial_bookings")),
        ("bookings".to_string(), n.to_string()),
        ("rooms".to_string(), ROOMS.to_string()),
        ("days".to_string(), DAYS.to_string()),
        ("slots".to_string(), SLOTS.to_string()),
    ];
    let s = summary(Scenario::S4, &naive, &idem, extra);
    Ok(vec![naive, idem, s])
}

async fn run_variant(ctx: &Ctx, variant: Variant, load: &[Booking]) -> anyhow::Result<VariantReport> {
    let table = ctx.table(&format!("s4_bookings_{}", variant.name()));
    let pool = ctx.mysql(SERVICE_CONNS)?;
    // The lookup index is not unique: select-then-insert is the only guard.
    exec(
        &pool,
        &format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, booking_id VARCHAR(32) NOT NULL, \
             room INT NOT NULL, day INT NOT NULL, slot INT NOT NULL, holder VARCHAR(32) NOT NULL, \
             nslots INT NOT NULL, KEY idx_room_day_slot (room, day, slot)) ENGINE=InnoDB"
        ),
    )
    .await?;
    let idem = match variant {
        Variant::Naive => None,
        Variant::Idem => Some(ctx.idem(BOOKERS)?),
    };
    let resource_prefix = format!("s4:{}:room:", ctx.run_id);
    let (persist_tx, persist_rx) = tokio::sync::mpsc::channel::<Booking>(PERSIST_QUEUE_MAX);
    let persister = tokio::spawn(persist_job(pool.clone(), table.clone(), persist_rx));

    let started = Instant::now();
    let results: Vec<(Outcome, Duration)> = futures::stream::iter(load.iter())
        .map(|b| {
            let pool = &pool;
            let table = &table;
            let idem = idem.as_ref();
            let resource_prefix = &resource_prefix;
            let persist_tx = &persist_tx;
            async move {
                let t = Instant::now();
                let outcome = match idem {
                    None => book_naive(pool, table, b).await,
                    Some(idem) => book_idem(idem, resource_prefix, persist_tx, b).await,
                };
                let outcome = outcome.unwrap_or_else(|e| {
                    tracing::warn!("booking {}: {e:#}", b.id);
                    Outcome::Error
                });
                (outcome, t.elapsed())
            }
        })
        .buffer_unordered(BOOKERS)
        .collect()
        .await;
    let elapsed = started.elapsed();
    drop(persist_tx);
    let persist_failed = persister.await.context("persistence job")?;
    let drained_after = started.elapsed() - elapsed;

    let mut lat = Latency::new();
    let (mut booked, mut conflicts, mut errors) = (0u64, 0u64, 0u64);
    for (o, d) in &results {
        lat.record(*d);
        match o {
            Outcome::Booked => booked += 1,
            Outcome::Conflict => conflicts += 1,
            Outcome::Error => errors += 1,
        }
    }

    let double_booked = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM (SELECT room, day, slot FROM {table} GROUP BY room, day, slot \
             HAVING COUNT(*) > 1) d"
        ),
    )
    .await?;
    let partial = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM (SELECT booking_id FROM {table} GROUP BY booking_id \
             HAVING COUNT(*) <> MAX(nslots)) p"
        ),
    )
    .await?;
    let rows = count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await?;
    pool.disconnect().await?;

    let attempts = load.len() as u64;
    Ok(VariantReport::new(Scenario::S4, variant.name())
        .with("bookings", attempts)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(attempts, elapsed))
        .with("anomalies", double_booked)
        .with("booked", booked)
        .with("conflicts", conflicts)
        .with("errors", errors)
        .with("booked_slot_rows", rows)
        .with("partial_bookings", partial)
        .with("persist_failed", persist_failed)
        .with("persist_drain_ms", drained_after.as_millis())
        .with("p50_us", lat.quantile_us(0.50))
        .with("p99_us", lat.quantile_us(0.99))
        .with("max_us", lat.max_us()))
}

/// Persists bookings: one statement, so their rows land all or none.
async fn insert_bookings(pool: &mysql_async::Pool, table: &str, bookings: &[Booking]) -> anyhow::Result<()> {
    let values: Vec<String> = bookings
        .iter()
        .flat_map(|b| {
            let n = b.last - b.first + 1;
            (b.first..=b.last).map(move |slot| format!("('{}', {}, {}, {slot}, '{}', {n})", b.id, b.room, b.day, b.id))
        })
        .collect();
    let mut conn = pool.get_conn().await?;
    conn.query_drop(format!(
        "INSERT INTO {table} (booking_id, room, day, slot, holder, nslots) VALUES {}",
        values.join(", ")
    ))
    .await?;
    Ok(())
}

async fn book_naive(pool: &mysql_async::Pool, table: &str, b: &Booking) -> anyhow::Result<Outcome> {
    let taken: Option<i64> = {
        let mut conn = pool.get_conn().await?;
        conn.exec_first(
            format!("SELECT COUNT(*) FROM {table} WHERE room = ? AND day = ? AND slot BETWEEN ? AND ?"),
            (b.room, b.day, b.first, b.last),
        )
        .await?
    };
    if taken.unwrap_or(0) > 0 {
        return Ok(Outcome::Conflict);
    }
    tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
    insert_bookings(pool, table, std::slice::from_ref(b)).await?;
    Ok(Outcome::Booked)
}

async fn book_idem(
    idem: &idem_client::Client,
    resource_prefix: &str,
    persist: &tokio::sync::mpsc::Sender<Booking>,
    b: &Booking,
) -> anyhow::Result<Outcome> {
    let resource = format!("{resource_prefix}{}:{}", b.room, b.day);
    match idem.slots_reserve(&resource, b.first, b.last, &b.id, Some(SLOTS)).await? {
        Reserve::Conflict(_) => Ok(Outcome::Conflict),
        Reserve::Reserved => {
            // The reservation is durable in idem; the row follows.
            persist.send(b.clone()).await.context("persistence job stopped")?;
            Ok(Outcome::Booked)
        }
    }
}

/// The persistence job: writes reserved bookings to the table in batches.
/// Returns how many bookings it could not write (after retries).
async fn persist_job(pool: mysql_async::Pool, table: String, mut rx: tokio::sync::mpsc::Receiver<Booking>) -> u64 {
    let mut failed = 0u64;
    let mut batch = Vec::with_capacity(PERSIST_BATCH_MAX);
    while rx.recv_many(&mut batch, PERSIST_BATCH_MAX).await > 0 {
        let mut written = false;
        for _ in 0..3 {
            match insert_bookings(&pool, &table, &batch).await {
                Ok(()) => {
                    written = true;
                    break;
                }
                Err(e) => tracing::warn!("persisting {} bookings: {e:#}", batch.len()),
            }
        }
        if !written {
            failed += batch.len() as u64;
        }
        batch.clear();
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_stay_inside_the_grid() {
        for b in bookings(5_000, 7) {
            assert!(b.room < ROOMS && b.day < DAYS);
            assert!(b.first <= b.last && b.last < SLOTS && b.last - b.first < 4);
        }
    }
}
