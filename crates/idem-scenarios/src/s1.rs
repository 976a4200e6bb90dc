//! S1 — replayed registration (seed 000).
//!
//! An axum HTTP service registers users by `openid` in MariaDB with the
//! original check-then-insert handler: `SELECT ... WHERE openid = ?`, then
//! `INSERT`. There is no unique index on `openid`. Between the check and the
//! insert the handler awaits (as the original coroutine yielded at the
//! `await` of its existence check), so two concurrent replays both see
//! "absent". The load is the write-up's batch test: N users, each registration
//! sent twice concurrently.
//!
//! The idem variant keeps the very same handler body and wraps it:
//! `IDEM.BEGIN register:<openid> FP <hash of body> WAIT ..`; `started` → run
//! the handler and `IDEM.COMMIT` its JSON response; `done` → return the stored
//! response (the replay gets the first request's response, byte for byte);
//! `running` after the wait → a clear 409 "in progress" (never a 500).
//!
//! Anomaly = an `openid` present more than once in the table afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use mysql_async::prelude::*;
use serde::Deserialize;

use crate::harness::{count, exec, fingerprint, rate, Ctx, Variant};
use crate::report::{summary, VariantReport};
use crate::Scenario;
use idem_client::{Error as IdemError, IdempotentError, IdempotentOptions, OnRunning};

/// Users in the write-up's batch test.
pub const USERS_DEFAULT: usize = 50;
/// The pause between the existence check and the insert: the await point at
/// which the original coroutine yielded to its concurrent replay.
const CHECK_TO_INSERT_PAUSE: Duration = Duration::from_millis(20);
/// Registration pairs in flight at once (the write-up fired all 100 requests
/// at once; for 10,000 users the client keeps this many pairs in flight).
pub(crate) const PAIRS_IN_FLIGHT_MAX: usize = 100;
/// MariaDB connections of the service.
pub(crate) const SERVICE_CONNS: usize = 32;
/// idem: how long a registration may take before its lease runs out, and how
/// long a replay waits for the first request to finish.
const LEASE_MS: u64 = 10_000;
const WAIT_MS: u64 = 5_000;

#[derive(Deserialize)]
struct RegisterReq {
    openid: String,
    username: String,
    password: String,
}

struct App {
    pool: mysql_async::Pool,
    table: String,
    idem: Option<idem_client::Client>,
    key_prefix: String,
}

pub(crate) async fn run(ctx: &Ctx) -> anyhow::Result<Vec<VariantReport>> {
    let users = ctx.size(USERS_DEFAULT);
    let naive = run_variant(ctx, Variant::Naive, users).await?;
    let idem = run_variant(ctx, Variant::Idem, users).await?;
    let gateway = crate::s1_gateway::run_variant(ctx, users).await?;
    let extra = vec![
        ("users".to_string(), users.to_string()),
        ("naive_http_5xx".to_string(), naive.field("http_5xx").unwrap_or("na").to_string()),
        ("idem_http_5xx".to_string(), idem.field("http_5xx").unwrap_or("na").to_string()),
        ("idem_same_response_pairs".to_string(), idem.field("same_response_pairs").unwrap_or("na").to_string()),
    ];
    let mut s = summary(Scenario::S1, &naive, &idem, extra);
    for k in ["anomalies", "ops_per_s", "same_response_pairs", "one_replay_pairs", "http_5xx"] {
        s.push(&format!("gateway_{k}"), gateway.field(k).unwrap_or("na"));
    }
    Ok(vec![naive, idem, gateway, s])
}

async fn run_variant(ctx: &Ctx, variant: Variant, users: usize) -> anyhow::Result<VariantReport> {
    let table = ctx.table(&format!("s1_users_{}", variant.name()));
    let pool = ctx.mysql(SERVICE_CONNS)?;
    exec(&pool, &users_table_sql(&table)).await?;

    let idem = match variant {
        Variant::Naive => None,
        // One connection per in-flight request at most: a replay parks on WAIT.
        Variant::Idem => Some(ctx.idem(2 * PAIRS_IN_FLIGHT_MAX)?),
    };
    let app = Arc::new(App {
        pool: pool.clone(),
        table: table.clone(),
        idem,
        key_prefix: format!("s1:{}:register:", ctx.run_id),
    });
    let router = match variant {
        Variant::Naive => axum::Router::new().route("/register", post(register_naive)),
        Variant::Idem => axum::Router::new().route("/register", post(register_idem)),
    }
    .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the HTTP service")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let started = Instant::now();
    let outcomes = send_replayed_pairs(&format!("http://{addr}/register"), users, &ctx.run_id, post_once).await?;
    let elapsed = started.elapsed();
    server.abort();

    let requests = (2 * users) as u64;
    let mut http_5xx = 0u64;
    let mut http_409 = 0u64;
    let mut transport_errors = 0u64;
    let mut registered = 0u64;
    let mut already = 0u64;
    let mut same_response_pairs = 0u64;
    for (a, b) in &outcomes {
        for r in [a, b] {
            match r.status {
                Some(s) if s >= 500 => http_5xx += 1,
                Some(409) => http_409 += 1,
                Some(_) => {}
                None => transport_errors += 1,
            }
            match r.code {
                Some(0) => registered += 1,
                Some(-1) => already += 1,
                _ => {}
            }
        }
        if a.status == Some(200) && a.status == b.status && a.body == b.body {
            same_response_pairs += 1;
        }
    }

    // The verdict comes from the table, not from the handler's replies.
    let (rows, dup_openids, distinct) = count_users(&pool, &table).await?;
    pool.disconnect().await?;

    Ok(VariantReport::new(Scenario::S1, variant.name())
        .with("requests", requests)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(requests, elapsed))
        .with("anomalies", dup_openids)
        .with("rows", rows)
        .with("extra_rows", rows.saturating_sub(distinct))
        .with("missing_users", (users as u64).saturating_sub(distinct))
        .with("replies_registered", registered)
        .with("replies_already", already)
        .with("same_response_pairs", same_response_pairs)
        .with("http_409", http_409)
        .with("http_5xx", http_5xx)
        .with("transport_errors", transport_errors))
}

/// What the users table holds after a run: (rows, openids stored more than
/// once, distinct openids). Every variant's verdict comes from here.
pub(crate) async fn count_users(pool: &mysql_async::Pool, table: &str) -> anyhow::Result<(u64, u64, u64)> {
    let rows = count(pool, &format!("SELECT COUNT(*) FROM {table}")).await?;
    let dup_openids = count(
        pool,
        &format!("SELECT COUNT(*) FROM (SELECT openid FROM {table} GROUP BY openid HAVING COUNT(*) > 1) d"),
    )
    .await?;
    let distinct = count(pool, &format!("SELECT COUNT(DISTINCT openid) FROM {table}")).await?;
    Ok((rows, dup_openids, distinct))
}

/// The users table. No unique index on openid: only a plain one, as a lookup would have.
pub(crate) fn users_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, openid VARCHAR(64) NOT NULL, \
         username VARCHAR(64) NOT NULL, password VARCHAR(128) NOT NULL, \
         created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), KEY idx_openid (openid)) ENGINE=InnoDB"
    )
}

/// The naive service, unchanged, for the variant behind the gateway (`s1_gateway`).
pub(crate) fn naive_router(pool: mysql_async::Pool, table: String) -> axum::Router {
    let app = Arc::new(App { pool, table, idem: None, key_prefix: String::new() });
    axum::Router::new().route("/register", post(register_naive)).with_state(app)
}

/// What a client saw for one request.
struct Reply {
    status: Option<u16>,
    body: Vec<u8>,
    /// The `code` field of the JSON body.
    code: Option<i64>,
}

/// Sends each of `users` registrations twice at once (the replay), at most
/// [`PAIRS_IN_FLIGHT_MAX`] pairs in flight, through `send`; one answer pair
/// per user. The naive, idem and gateway variants all drive their service
/// through it, so they see the same load.
pub(crate) async fn send_replayed_pairs<A, F, Fut>(
    url: &str,
    users: usize,
    run_id: &str,
    send: F,
) -> anyhow::Result<Vec<(A, A)>>
where
    F: Fn(reqwest::Client, String, String) -> Fut + Copy,
    Fut: std::future::Future<Output = A>,
{
    let client = reqwest::Client::builder().pool_max_idle_per_host(2 * PAIRS_IN_FLIGHT_MAX).build()?;
    Ok(futures::stream::iter(0..users)
        .map(|i| {
            let body = serde_json::json!({
                "openid": format!("o{i}-{run_id}"),
                "username": format!("user{i}"),
                "password": format!("pw{i}"),
            })
            .to_string();
            let (client, url) = (client.clone(), url.to_string());
            async move { tokio::join!(send(client.clone(), url.clone(), body.clone()), send(client, url, body)) }
        })
        .buffer_unordered(PAIRS_IN_FLIGHT_MAX)
        .collect()
        .await)
}

async fn post_once(client: reqwest::Client, url: String, body: String) -> Reply {
    let (client, url) = (&client, url.as_str());
    let res = client.post(url).header(header::CONTENT_TYPE, "application/json").body(body).send().await;
    match res {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            let code = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["code"].as_i64());
            Reply { status: Some(status), body, code }
        }
        Err(_) => Reply { status: None, body: Vec::new(), code: None },
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_value(status: StatusCode, v: serde_json::Value) -> Response {
    json(status, v.to_string().into_bytes())
}

/// The original handler's body: check, await, insert. Returns the JSON reply.
async fn check_then_insert(app: &App, req: &RegisterReq) -> anyhow::Result<serde_json::Value> {
    let exists: Option<i64> = {
        let mut conn = app.pool.get_conn().await?;
        conn.exec_first(format!("SELECT id FROM {} WHERE openid = ? LIMIT 1", app.table), (&req.openid,)).await?
    };
    if exists.is_some() {
        return Ok(serde_json::json!({"code": -1, "message": "openid already registered"}));
    }
    // The await between check and insert: the concurrent replay runs here.
    tokio::time::sleep(CHECK_TO_INSERT_PAUSE).await;
    let mut conn = app.pool.get_conn().await?;
    conn.exec_drop(
        format!("INSERT INTO {} (openid, username, password) VALUES (?, ?, ?)", app.table),
        (&req.openid, &req.username, &req.password),
    )
    .await?;
    let id = conn.last_insert_id().unwrap_or(0);
    Ok(serde_json::json!({"code": 0, "message": "registered", "user_id": id}))
}

async fn register_naive(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req: RegisterReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_value(StatusCode::BAD_REQUEST, serde_json::json!({"code": -9, "message": e.to_string()}))
        }
    };
    match check_then_insert(&app, &req).await {
        Ok(v) => json_value(StatusCode::OK, v),
        // What the original service did on a database error.
        Err(e) => {
            json_value(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"code": -3, "message": e.to_string()}))
        }
    }
}

async fn register_idem(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req: RegisterReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_value(StatusCode::BAD_REQUEST, serde_json::json!({"code": -9, "message": e.to_string()}))
        }
    };
    let idem = app.idem.as_ref().expect("idem variant has an idem pool");
    let key = format!("{}{}", app.key_prefix, req.openid);
    let fp = fingerprint(&body);
    let unavailable = |why: String| {
        json_value(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"code": -3, "message": why, "retry": true}))
    };
    let opts =
        IdempotentOptions::new().fingerprint(&fp).lease_ms(LEASE_MS).on_running(OnRunning::Wait { wait_ms: WAIT_MS });
    // `attempt > 1` would mean an earlier attempt's lease ran out mid-way; the
    // handler's own existence check then finds any half-done insert.
    match idem.idempotent(&key, &opts, |_attempt| check_then_insert(&app, &req)).await {
        // The first request and its replays answer the same bytes.
        Ok(outcome) => json_value(StatusCode::OK, outcome.into_inner()),
        // Still running after the wait, or our lease ran out and another
        // attempt took over (its outcome is the one on record).
        Err(IdempotentError::Idem(IdemError::InFlight { .. } | IdemError::Stale(_))) => json_value(
            StatusCode::CONFLICT,
            serde_json::json!({"code": -2, "message": "registration in progress, retry"}),
        ),
        Err(IdempotentError::Idem(IdemError::Mismatch(_))) => json_value(
            StatusCode::CONFLICT,
            serde_json::json!({"code": -1, "message": "openid already registered with different details"}),
        ),
        Err(IdempotentError::Idem(e)) => unavailable(e.to_string()),
        // A retryable failure: the record was aborted, so a retry runs.
        Err(IdempotentError::Failed(e)) => unavailable(e.to_string()),
    }
}
