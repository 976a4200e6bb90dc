//! The HTTP routes beside `/v1/command`, and the layer every route shares.
//!
//! - `GET /metrics`: Prometheus text (see `crate::observe`).
//! - API v1 (`v1`): one REST path per primitive command; its OpenAPI 3.1
//!   document at `GET /openapi.json` (`openapi`).
//! - `GET /ui`: the dashboard (`ui`), `GET /v1/inspect/{key}`: one key's
//!   state across the primitives (`inspect`).
//! - [`around`]: authentication, the request id, status counting and the
//!   request's log line, for every route.

mod inspect;
mod openapi;
mod problem;
mod request_id;
mod ui;
pub(crate) mod v1;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::Instrument;

use crate::state::ServerState;

pub(crate) use problem::problem;

/// The routes, with their state applied.
pub(crate) fn routes(state: Arc<ServerState>) -> Router<Arc<ServerState>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .route("/v1/inspect/{key}", get(inspect::inspect))
        .merge(ui::routes())
        .merge(v1::routes())
        .with_state(state)
}

async fn metrics(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, crate::observe::CONTENT_TYPE)], crate::observe::render(&state).await)
}

/// Paths anyone may read: liveness, and `/v1/command`, which checks the
/// password itself and answers in its own error format.
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/openapi.json" | "/v1/command")
}

/// The ACL user a request was authenticated as (see `crate::http_auth`),
/// for the handlers that check it; absent without ACL users.
#[derive(Clone)]
pub(crate) struct Principal(pub(crate) Arc<crate::acl::AclUser>);

/// With ACL users, the figures and the dashboard need the rights of INFO.
fn check_route(user: &crate::acl::AclUser, path: &str) -> Result<(), idem_core::CmdError> {
    if path == "/metrics" || path.starts_with("/ui") {
        let info = crate::server_commands::lookup(b"INFO").expect("INFO is a server command").0;
        return user.check_server(info);
    }
    Ok(())
}

/// Runs around every HTTP request: gives it an id (the client's
/// `X-Request-Id` if it sent a usable one), checks the password, counts the
/// response's status and logs one line.
pub(crate) async fn around(State(state): State<Arc<ServerState>>, req: Request, next: Next) -> Response {
    let id = request_id::of(req.headers());
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("http", request_id = %id, %method, %path);
    let mut req = req;
    let mut resp = async {
        if !is_open(&path) {
            match crate::http_auth::authenticate(&state, req.headers()) {
                Ok(None) => {}
                Ok(Some(user)) => {
                    if let Err(e) = check_route(&user, &path) {
                        return problem(StatusCode::FORBIDDEN, "NOPERM", &e.message);
                    }
                    req.extensions_mut().insert(Principal(user));
                }
                Err(_) => {
                    let mut resp = problem(StatusCode::UNAUTHORIZED, "NOAUTH", "send Authorization: Bearer <password>");
                    // Basic on every path: a browser sends the password it was
                    // given for the dashboard page only to a path that asks for it
                    // this way (the dashboard's own requests to /metrics and
                    // /v1/inspect); API clients send Bearer without being asked.
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"idem\""));
                    return resp;
                }
            }
        }
        next.run(req).await
    }
    .instrument(span.clone())
    .await;
    let status = resp.status().as_u16();
    state.observe().http().answered(status);
    span.in_scope(|| tracing::debug!(status, elapsed_us = started.elapsed().as_micros() as u64, "answered"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    resp
}
