//! S1 behind the Idempotency-Key gateway: the naive registration service,
//! unchanged, with `idem-gateway` in front of it as a reverse proxy. The
//! route `POST /register key=json:openid` makes each registration's openid
//! its key; the records live in the scenario's idem server (as with
//! `idem gateway --idem`).
//!
//! Besides the table's duplicates, every replayed pair is checked on the
//! wire: both answers must carry the same status and body, and exactly one
//! of the two must carry `Idempotent-Replayed: true`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use idem_gateway::{IdempotencyLayer, LayerConfig, Proxy, ProxyConfig, Route, RouteDefaults, ServerConfig};
use tower::Layer as _;

use crate::harness::{exec, rate, Ctx};
use crate::report::VariantReport;
use crate::s1::{count_users, naive_router, send_replayed_pairs, users_table_sql, PAIRS_IN_FLIGHT_MAX, SERVICE_CONNS};
use crate::Scenario;

/// The variant's name in report lines.
pub(crate) const VARIANT: &str = "idem-gateway";
/// The gateway's route: the registration's openid is its idempotency key.
const ROUTE: &str = "POST /register key=json:openid";
/// Connections from the gateway to the idem server: every request in flight
/// may hold one (a replay parks on WAIT).
const IDEM_CONNS: usize = 2 * PAIRS_IN_FLIGHT_MAX + 16;

/// What a client saw for one request.
struct Answer {
    status: Option<u16>,
    body: Vec<u8>,
    replayed: bool,
}

pub(crate) async fn run_variant(ctx: &Ctx, users: usize) -> anyhow::Result<VariantReport> {
    let table = ctx.table("s1_users_gateway");
    let pool = ctx.mysql(SERVICE_CONNS)?;
    exec(&pool, &users_table_sql(&table)).await?;

    // The naive service, unchanged, on its own port.
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the HTTP service")?;
    let app_addr = app_listener.local_addr()?;
    let router = naive_router(pool.clone(), table.clone());
    let app = tokio::spawn(async move {
        let _ = axum::serve(app_listener, router).await;
    });

    // The gateway in front of it.
    let config = idem_client::Config::new(&ctx.idem_url).pool_size(IDEM_CONNS);
    let backend = Arc::new(idem_client::RemoteBackend::new(config)?);
    let route = Route::parse(ROUTE, &RouteDefaults::default())?;
    let layer_config =
        LayerConfig { routes: vec![route], key_prefix: format!("s1:{}:gateway:", ctx.run_id), ..Default::default() };
    let proxy = Proxy::new(&ProxyConfig::new(format!("http://{app_addr}")))?;
    let service = IdempotencyLayer::new(backend, layer_config)?.layer(proxy);
    let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the gateway")?;
    let gw_addr = gw_listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(idem_gateway::serve(gw_listener, service, ServerConfig::default(), async move {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    let outcomes = send_replayed_pairs(&format!("http://{gw_addr}/register"), users, &ctx.run_id, post).await?;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let _ = gateway.await;
    app.abort();

    let requests = (2 * users) as u64;
    let (mut http_5xx, mut http_409, mut transport_errors) = (0u64, 0u64, 0u64);
    let (mut same_response_pairs, mut one_replay_pairs, mut replayed) = (0u64, 0u64, 0u64);
    for (a, b) in &outcomes {
        for r in [a, b] {
            match r.status {
                Some(s) if s >= 500 => http_5xx += 1,
                Some(409) => http_409 += 1,
                Some(_) => {}
                None => transport_errors += 1,
            }
            replayed += u64::from(r.replayed);
        }
        if a.status.is_some() && a.status == b.status && a.body == b.body {
            same_response_pairs += 1;
        }
        if a.replayed != b.replayed {
            one_replay_pairs += 1;
        }
    }
    let (rows, dup_openids, distinct) = count_users(&pool, &table).await?;
    pool.disconnect().await?;

    Ok(VariantReport::new(Scenario::S1, VARIANT)
        .with("requests", requests)
        .with("elapsed_ms", elapsed.as_millis())
        .with_rate("ops_per_s", rate(requests, elapsed))
        .with("anomalies", dup_openids)
        .with("rows", rows)
        .with("extra_rows", rows.saturating_sub(distinct))
        .with("missing_users", (users as u64).saturating_sub(distinct))
        .with("same_response_pairs", same_response_pairs)
        .with("one_replay_pairs", one_replay_pairs)
        .with("replayed", replayed)
        .with("http_409", http_409)
        .with("http_5xx", http_5xx)
        .with("transport_errors", transport_errors))
}

async fn post(client: reqwest::Client, url: String, body: String) -> Answer {
    let (client, url) = (&client, url.as_str());
    let res = client.post(url).header("content-type", "application/json").body(body).send().await;
    match res {
        Ok(r) => {
            let status = r.status().as_u16();
            let replayed = r.headers().get(idem_gateway::REPLAYED).is_some_and(|v| v == "true");
            let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            Answer { status: Some(status), body, replayed }
        }
        Err(_) => Answer { status: None, body: Vec::new(), replayed: false },
    }
}
