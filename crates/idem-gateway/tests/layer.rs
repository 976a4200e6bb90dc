//! The layer inside an axum app, over the embedded store (in memory).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use http_body_util::BodyExt;
use idem_gateway::{IdempotencyLayer, LayerConfig, Route, RouteDefaults};
use tower::ServiceExt;

#[derive(Default)]
struct Effects {
    runs: AtomicU64,
}

async fn create(State(fx): State<Arc<Effects>>, body: String) -> impl IntoResponse {
    let n = fx.runs.fetch_add(1, Ordering::SeqCst) + 1;
    // Long enough for a concurrent duplicate to arrive while this runs.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/things/{n}")), (header::SET_COOKIE, "s=1".into())],
        format!("run {n}: {body}"),
    )
}

async fn explode(State(fx): State<Arc<Effects>>) -> &'static str {
    let n = fx.runs.fetch_add(1, Ordering::SeqCst);
    if n == 0 {
        panic!("the first call fails");
    }
    "second call"
}

/// Shortest lease the layer takes, ms: the slow handler outlives it many times.
const SHORT_LEASE_MS: u64 = 300;

async fn slow(State(fx): State<Arc<Effects>>) -> impl IntoResponse {
    let n = fx.runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(std::time::Duration::from_millis(SHORT_LEASE_MS * 4)).await;
    (StatusCode::CREATED, format!("slow run {n}"))
}

fn app(routes: &[&str]) -> (axum::Router, Arc<Effects>) {
    app_with(routes, LayerConfig::default())
}

fn app_with(routes: &[&str], config: LayerConfig) -> (axum::Router, Arc<Effects>) {
    let store = idem_store::Store::open(idem_store::StoreConfig::default()).unwrap();
    let d = RouteDefaults::default();
    let config = LayerConfig { routes: routes.iter().map(|r| Route::parse(r, &d).unwrap()).collect(), ..config };
    let fx = Arc::new(Effects::default());
    let router = axum::Router::new()
        .route("/slow", post(slow))
        .route("/things", post(create))
        .route("/explode", post(explode))
        .with_state(fx.clone())
        .layer(IdempotencyLayer::new(store, config).unwrap());
    (router, fx)
}

fn post_req(path: &str, key: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_duplicate_gets_the_first_response_and_allow_listed_headers() {
    let (app, fx) = app(&[]);
    let first = send(&app, post_req("/things", Some("\"k1\""), r#"{"a":1}"#)).await;
    let again = send(&app, post_req("/things", Some("k1"), r#"{ "a": 1 }"#)).await;
    assert_eq!(fx.runs.load(Ordering::SeqCst), 1);
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!((again.0, &again.2), (first.0, &first.2));
    assert!(first.1.get("idempotent-replayed").is_none());
    assert_eq!(again.1["idempotent-replayed"], "true");
    assert_eq!(again.1[header::LOCATION], first.1[header::LOCATION]);
    assert!(first.1.contains_key(header::SET_COOKIE), "the first caller gets every header");
    assert!(!again.1.contains_key(header::SET_COOKIE), "a replay never carries Set-Cookie");
    let other = send(&app, post_req("/things", Some("k1"), r#"{"a":2}"#)).await;
    assert_eq!(other.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.1[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(fx.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_duplicates_run_once_and_the_second_waits_for_the_first() {
    let (app, fx) = app(&[]);
    let (a, b) = tokio::join!(
        send(&app, post_req("/things", Some("k2"), "{}")),
        send(&app, post_req("/things", Some("k2"), "{}"))
    );
    assert_eq!(fx.runs.load(Ordering::SeqCst), 1);
    assert_eq!((a.0, &a.2), (b.0, &b.2));
    let replayed = [&a, &b].iter().filter(|r| r.1.get("idempotent-replayed").is_some()).count();
    assert_eq!(replayed, 1);
}

#[tokio::test]
async fn without_a_key_nothing_is_stored() {
    let (app, fx) = app(&[]);
    send(&app, post_req("/things", None, "{}")).await;
    send(&app, post_req("/things", None, "{}")).await;
    assert_eq!(fx.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_panicking_handler_frees_the_key_for_a_retry() {
    let (app, fx) = app(&[]);
    let first = send(&app, post_req("/explode", Some("k3"), "")).await;
    assert_eq!(first.0, StatusCode::INTERNAL_SERVER_ERROR);
    let retry = send(&app, post_req("/explode", Some("k3"), "")).await;
    assert_eq!((retry.0, retry.2.as_str()), (StatusCode::OK, "second call"));
    assert_eq!(fx.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_route_refuses_a_request_without_its_key() {
    let (app, fx) = app(&["POST /things key=json:user.id"]);
    let res = send(&app, post_req("/things", None, r#"{"user":{}}"#)).await;
    assert_eq!(res.0, StatusCode::BAD_REQUEST);
    assert_eq!(res.1[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(fx.runs.load(Ordering::SeqCst), 0);
    let a = send(&app, post_req("/things", None, r#"{"user":{"id":7},"x":1}"#)).await;
    let b = send(&app, post_req("/things", None, r#"{"x":1,"user":{"id":7}}"#)).await;
    assert_eq!((a.2, fx.runs.load(Ordering::SeqCst)), (b.2, 1));
}

#[tokio::test]
async fn the_lease_is_renewed_while_a_slow_handler_runs() {
    let config = LayerConfig { lease_ms: SHORT_LEASE_MS, ..Default::default() };
    let (app, fx) = app_with(&["POST /slow key=header:X-Key concurrent=conflict"], config);
    let req = || Request::post("/slow").header("x-key", "slow-1").body(Body::empty()).unwrap();
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, req()).await }
    });
    // Well past the first lease: without renewals the key would be free.
    tokio::time::sleep(std::time::Duration::from_millis(SHORT_LEASE_MS * 2)).await;
    let during = send(&app, req()).await;
    assert_eq!(during.0, StatusCode::CONFLICT, "the first request still holds the key: {}", during.2);
    let first = first.await.unwrap();
    assert_eq!((first.0, first.2.as_str()), (StatusCode::CREATED, "slow run 1"));
    let after = send(&app, req()).await;
    assert_eq!((after.0, after.2.as_str()), (StatusCode::CREATED, "slow run 1"));
    assert_eq!(after.1["idempotent-replayed"], "true");
    assert_eq!(fx.runs.load(Ordering::SeqCst), 1);
}
