//! The idempotency layer: a tower `Layer` that makes the service it wraps
//! run each keyed request once and replay its response to every duplicate.
//!
//! Per keyed request: buffer the body (bounded), derive the stored key and
//! the fingerprint, `IDEM.BEGIN`. Then
//! - `started`: run the wrapped service in its own task (a client that
//!   hangs up does not cancel a request that may already have taken effect),
//!   and commit, abort or leave the record by the failure policy;
//! - `done`: replay the stored response with `Idempotent-Replayed: true`;
//! - `running` (after the route's wait): 409 with `Retry-After`;
//! - `MISMATCH`: 422.
//!
//! A first request holds its record under a short lease
//! ([`LayerConfig::lease_ms`]), renewed (`IDEM.RENEW`) at a third of the
//! lease while the wrapped service runs and its response is read. A gateway
//! that dies stops renewing, so its record expires with its last lease; the
//! fence makes a late commit `STALE`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures::future::Fuse;
use futures::FutureExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use idem_core::{Backend, BoxFuture, CmdError, Command, ErrorCode, Reply};
use tower::{Layer, Service};

use crate::config::{ConfigError, LayerConfig};
use crate::extract::{ExtractError, Extractor, Identity, RequestView};
use crate::metrics::{Metrics, Outcome};
use crate::problem::Problem;
use crate::route::{On5xx, OnTimeout, Route};
use crate::stored::Stored;

/// The header on every replayed response.
pub const REPLAYED: &str = "idempotent-replayed";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Set on a response that a service made up because its upstream failed,
/// so that the layer knows whether the request may have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The request never reached the upstream (connection refused): a retry may run it.
    NotSent,
    /// The request may have run (timeout, connection lost after sending): outcome unknown.
    Unknown,
}

struct Shared {
    backend: Arc<dyn Backend>,
    config: LayerConfig,
    ietf: Route,
    metrics: Metrics,
}

/// The tower layer. Cheap to clone.
#[derive(Clone)]
pub struct IdempotencyLayer {
    shared: Arc<Shared>,
}

impl IdempotencyLayer {
    /// A layer over `backend`, after checking `config`. Its metric handles
    /// are registered here, with the `metrics` recorder installed now (see
    /// docs/gateway.md, "Metrics").
    pub fn new(backend: Arc<dyn Backend>, config: LayerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let ietf = Route::ietf(&config.defaults);
        let metrics = Metrics::register();
        Ok(IdempotencyLayer { shared: Arc::new(Shared { backend, config, ietf, metrics }) })
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Idempotency<S> {
        Idempotency { inner, shared: self.shared.clone() }
    }
}

/// The service the layer builds around `S`.
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S>
where
    S: Service<Request<Body>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
    ReqB: http_body::Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The clone that was polled ready handles this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let start = Instant::now();
            let mut idem = None;
            let (res, outcome) = handle(&shared, inner, req.map(Body::new), &mut idem).await;
            shared.metrics.record(outcome, start.elapsed(), idem);
            res
        })
    }
}

/// Adds the time of a store call to `spent`.
async fn timed<F: Future>(spent: &mut Option<Duration>, call: F) -> F::Output {
    let start = Instant::now();
    let out = call.await;
    *spent = Some(spent.unwrap_or_default() + start.elapsed());
    out
}

type Handled<E> = (Result<Response<Body>, E>, Outcome);

/// Handles one request; also says what happened to it and adds the time
/// its store calls took to `idem`.
async fn handle<S, ResB>(
    shared: &Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
    idem: &mut Option<Duration>,
) -> Handled<S::Error>
where
    S: Service<Request<Body>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let cfg = &shared.config;
    let bypass = |res: Result<Response<ResB>, S::Error>| (res.map(|r| r.map(Body::new)), Outcome::Bypassed);
    let refuse = |res: Response<Body>| (Ok(res), Outcome::MissingKey);
    let Some((route, params)) = shared.route_for(&req) else {
        return bypass(inner.call(req).await);
    };
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.request_bytes_max as u64) {
        return refuse(too_large(cfg.request_bytes_max));
    }
    let read = Limited::new(body, cfg.request_bytes_max).collect();
    let body = match tokio::time::timeout(Duration::from_millis(cfg.body_read_timeout_ms), read).await {
        Err(_) => {
            return refuse(
                Problem::BodyTimeout
                    .response(format!("the body did not arrive within {} ms", cfg.body_read_timeout_ms)),
            )
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => return refuse(too_large(cfg.request_bytes_max)),
        Ok(Err(e)) => return refuse(Problem::BodyUnreadable.response(e.to_string())),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let view = RequestView {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
        params: &params,
    };
    let identity = Extractor::new(view, cfg.key_bytes_max).identity(route, cfg.key_prefix.as_bytes());
    let req = Request::from_parts(parts, Body::from(body));
    let Identity { key, fingerprint } = match identity {
        Ok(Some(id)) => id,
        Ok(None) if !route.require() => return bypass(inner.call(req).await),
        Ok(None) => {
            let sources: Vec<String> = route.key().iter().map(ToString::to_string).collect();
            return refuse(
                Problem::KeyMissing.response(format!("this route needs its key from {}", sources.join(" + "))),
            );
        }
        Err(e @ ExtractError::Missing(_)) => return refuse(Problem::KeyMissing.response(e.to_string())),
        Err(e) => return refuse(Problem::KeyInvalid.response(e.to_string())),
    };
    let key = Bytes::from(key);
    let begin = Command::IdemBegin {
        key: key.clone(),
        fingerprint: fingerprint.map(Bytes::from),
        lease_ms: cfg.lease_ms,
        wait_ms: route.wait_ms(),
    };
    let reply = match timed(idem, shared.backend.execute(begin)).await {
        Ok(r) => r,
        Err(e) if e.code == ErrorCode::Mismatch => {
            let res = Problem::KeyReused
                .response("this key was first used with a different request (method, path, query or body)");
            return (Ok(res), Outcome::Mismatch);
        }
        Err(e) => return (Ok(store_unavailable(&e)), Outcome::IdemError),
    };
    match Begin::decode(&reply) {
        Some(Begin::Started { fence, attempt }) => {
            if attempt > 1 {
                // An earlier attempt's lease ran out without an outcome.
                tracing::info!(attempt, key = %String::from_utf8_lossy(&key), "running a request again after an earlier attempt's lease ran out");
            }
            let route = route.clone();
            let task = tokio::spawn(first_run(shared.clone(), route, key.clone(), fence, inner, req));
            let res = match task.await {
                Ok((r, settle)) => {
                    *idem = Some(idem.unwrap_or_default() + settle);
                    r
                }
                Err(e) => {
                    // Only a cancelled task gets here (runtime shutdown): a
                    // panic is caught inside, and the record was aborted.
                    Ok(Problem::ServiceFailed.response(format!("the request's task ended: {e}")))
                }
            };
            (res, Outcome::Executed)
        }
        Some(Begin::Running { left_ms }) => (Ok(in_progress(left_ms)), Outcome::InFlight),
        Some(Begin::Done(result)) => (Ok(replay(&result)), Outcome::Replayed),
        None => (
            Ok(store_unavailable(&CmdError::busy(format!("unexpected IDEM.BEGIN reply {reply:?}")))),
            Outcome::IdemError,
        ),
    }
}

impl Shared {
    /// The route serving `req`, with its path parameters.
    fn route_for(&self, req: &Request<Body>) -> Option<(&Route, Vec<(String, String)>)> {
        let (method, path) = (req.method(), req.uri().path());
        if self.config.routes.is_empty() {
            if !req.headers().contains_key("idempotency-key") {
                return None;
            }
            return self.ietf.matches(method, path).map(|p| (&self.ietf, p));
        }
        self.config.routes.iter().find_map(|r| r.matches(method, path).map(|p| (r, p)))
    }

    async fn abort(&self, key: &Bytes, fence: u64) {
        match self.backend.execute(Command::IdemAbort { key: key.clone(), fence }).await {
            Ok(_) => {}
            // Another attempt took over: the record is no longer ours to remove.
            Err(e) if e.code == ErrorCode::Stale => {}
            Err(e) => tracing::warn!(error = %e, "could not abort a record; it is freed when its lease ends"),
        }
    }

    /// Commits `result`; returns whether it is on record.
    async fn commit(&self, route: &Route, key: &Bytes, fence: u64, result: Vec<u8>) -> Result<(), CmdError> {
        let cmd =
            Command::IdemCommit { key: key.clone(), fence, result: Bytes::from(result), keep_ms: route.keep_ms() };
        self.backend.execute(cmd).await.map(drop)
    }

    /// Commits and logs what the caller cannot act on: the caller's
    /// response goes out either way, since the upstream already answered.
    async fn commit_logged(&self, route: &Route, key: &Bytes, fence: u64, result: Vec<u8>) {
        match self.commit(route, key, fence, result).await {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::Stale => tracing::warn!(
                key = %String::from_utf8_lossy(key),
                "commit refused as STALE: the lease ran out and another attempt took over; this caller still gets its upstream response"
            ),
            Err(e) => tracing::error!(
                error = %e,
                key = %String::from_utf8_lossy(key),
                "commit failed; the record stays in flight until its lease ends"
            ),
        }
    }
}

/// The first request with a key, in its own task: run, then settle the
/// record. Also gives the time the settling store calls took.
async fn first_run<S, ResB>(
    shared: Arc<Shared>,
    route: Route,
    key: Bytes,
    fence: u64,
    inner: S,
    req: Request<Body>,
) -> (Result<Response<Body>, S::Error>, Duration)
where
    S: Service<Request<Body>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let mut spent = None;
    let res = run_and_settle(&shared, &route, &key, fence, inner, req, &mut spent).await;
    (res, spent.unwrap_or_default())
}

async fn run_and_settle<S, ResB>(
    shared: &Shared,
    route: &Route,
    key: &Bytes,
    fence: u64,
    mut inner: S,
    req: Request<Body>,
    spent: &mut Option<Duration>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let cfg = &shared.config;
    let renewal = renew_lease(shared, key, fence).fuse();
    tokio::pin!(renewal);
    let called = renewing(renewal.as_mut(), AssertUnwindSafe(inner.call(req)).catch_unwind()).await;
    let res = match called {
        Err(_) => {
            timed(spent, shared.abort(key, fence)).await;
            return Ok(
                Problem::ServiceFailed.response("the service failed while handling this request; it may be retried")
            );
        }
        Ok(Err(e)) => {
            timed(spent, shared.abort(key, fence)).await;
            return Err(e);
        }
        Ok(Ok(res)) => res.map(Body::new),
    };
    if let Some(failure) = res.extensions().get::<UpstreamFailure>().copied() {
        match (failure, route.on_timeout()) {
            (UpstreamFailure::NotSent, _) | (UpstreamFailure::Unknown, OnTimeout::Abort) => {
                timed(spent, shared.abort(key, fence)).await
            }
            (UpstreamFailure::Unknown, OnTimeout::Keep) => tracing::warn!(
                key = %String::from_utf8_lossy(key),
                "upstream outcome unknown; the record stays in flight until its lease ends"
            ),
        }
        return Ok(res);
    }
    let status = res.status();
    let released = cfg.release_statuses.contains(&status.as_u16())
        || (status.is_server_error() && route.on_5xx() == On5xx::Abort)
        || status.is_informational();
    if released {
        timed(spent, shared.abort(key, fence)).await;
        return Ok(res);
    }
    let declared = res.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.stored_body_bytes_max as u64) {
        timed(spent, shared.commit_logged(route, key, fence, Stored::encode_not_replayable(status))).await;
        return Ok(res);
    }
    let (parts, mut body) = res.into_parts();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.response_read_timeout_ms);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        match renewing(renewal.as_mut(), tokio::time::timeout_at(deadline, body.frame())).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                // Trailers are not stored; a replay has none.
                let Ok(data) = frame.into_data() else { continue };
                total += data.len();
                chunks.push(data);
                if total > cfg.stored_body_bytes_max {
                    // Done, but too large to store: pass it through.
                    timed(spent, shared.commit_logged(route, key, fence, Stored::encode_not_replayable(status))).await;
                    let head = futures::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
                    let stream = futures::StreamExt::chain(head, body.into_data_stream());
                    return Ok(Response::from_parts(parts, Body::from_stream(stream)));
                }
            }
            // The response broke off or stalled: the upstream ran, but
            // whether it finished is unknown.
            Ok(Some(Err(e))) => {
                timed(spent, unknown_outcome(shared, route, key, fence)).await;
                return Ok(Problem::UpstreamUnreachable.response(format!("the response body broke off: {e}")));
            }
            Err(_) => {
                timed(spent, unknown_outcome(shared, route, key, fence)).await;
                return Ok(Problem::UpstreamTimeout
                    .response(format!("the response body did not arrive within {} ms", cfg.response_read_timeout_ms)));
            }
        }
    }
    let body = match chunks.len() {
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    };
    debug_assert_eq!(body.len(), total);
    let keep = |n: &http::HeaderName| cfg.replay_headers.contains(n);
    let result = Stored::encode_response(status, &parts.headers, keep, &body);
    match timed(spent, shared.commit(route, key, fence, result)).await {
        Err(e) if e.code == ErrorCode::Limit => {
            timed(spent, shared.commit_logged(route, key, fence, Stored::encode_not_replayable(status))).await
        }
        Err(e) if e.code == ErrorCode::Stale => tracing::warn!(
            key = %String::from_utf8_lossy(key),
            "commit refused as STALE: the lease ran out and another attempt took over; this caller still gets its upstream response"
        ),
        Err(e) => tracing::error!(error = %e, "commit failed; the record stays in flight until its lease ends"),
        Ok(()) => {}
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Runs `work` while the renewal runs beside it. The renewal is polled only
/// here, so it stops when the work is done: the record is then settled, or
/// (outcome unknown) left to expire with its last lease.
async fn renewing<F: Future>(mut renewal: Pin<&mut Fuse<impl Future<Output = ()>>>, work: F) -> F::Output {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            // A fused renewal that gave up stays pending from then on.
            () = &mut renewal => {}
        }
    }
}

/// Renews the first request's lease at a third of the lease, so that a
/// renewal that fails once still leaves time for the next. Ends when a
/// renewal is refused as `STALE`: the lease ran out and another attempt
/// may hold the record, so the commit's fence check decides.
async fn renew_lease(shared: &Shared, key: &Bytes, fence: u64) {
    let lease_ms = shared.config.lease_ms;
    let every = Duration::from_millis((lease_ms / 3).max(1));
    loop {
        tokio::time::sleep(every).await;
        let cmd = Command::IdemRenew { key: key.clone(), fence, lease_ms };
        match shared.backend.execute(cmd).await {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::Stale => {
                tracing::warn!(
                    key = %String::from_utf8_lossy(key),
                    "lease renewal refused as STALE: the lease ran out; renewal stops and the commit's fence decides"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, key = %String::from_utf8_lossy(key), "lease renewal failed; retrying at the next interval")
            }
        }
    }
}

async fn unknown_outcome(shared: &Shared, route: &Route, key: &Bytes, fence: u64) {
    match route.on_timeout() {
        OnTimeout::Keep => {
            tracing::warn!(key = %String::from_utf8_lossy(key), "outcome unknown; the record stays in flight until its lease ends")
        }
        OnTimeout::Abort => shared.abort(key, fence).await,
    }
}

/// An `IDEM.BEGIN` reply, decoded strictly.
enum Begin {
    Started { fence: u64, attempt: u64 },
    Running { left_ms: u64 },
    Done(Bytes),
}

impl Begin {
    fn decode(r: &Reply) -> Option<Begin> {
        let Reply::Array(v) = r else { return None };
        let uint = |i: usize| match v.get(i) {
            Some(Reply::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        match (r.word()?, v.len()) {
            ("started", 3) => Some(Begin::Started { fence: uint(1)?, attempt: uint(2)? }),
            ("running", 3) => Some(Begin::Running { left_ms: uint(2)? }),
            ("done", 2) => match &v[1] {
                Reply::Bulk(b) => Some(Begin::Done(b.clone())),
                _ => None,
            },
            _ => None,
        }
    }
}

fn too_large(max: usize) -> Response<Body> {
    Problem::RequestTooLarge.response(format!("an idempotent request body may be at most {max} bytes"))
}

fn store_unavailable(e: &CmdError) -> Response<Body> {
    tracing::warn!(error = %e, "idempotency store unavailable");
    let mut res = Problem::StoreUnavailable.response(format!("the request was not run: {e}"));
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

fn in_progress(left_ms: u64) -> Response<Body> {
    let secs = left_ms.div_ceil(1000).max(1);
    let mut res = Problem::InProgress.response_with(
        "the first request with this key is still running; retry after it ends",
        &[("lease_left_ms", left_ms.into())],
    );
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

fn replay(result: &Bytes) -> Response<Body> {
    match Stored::decode(result) {
        Ok(Stored::Response { status, headers, body }) => {
            let mut res = Response::new(Body::from(body));
            *res.status_mut() = status;
            let h = res.headers_mut();
            for (n, v) in headers {
                h.append(n, v);
            }
            h.insert(REPLAYED, HeaderValue::from_static("true"));
            res
        }
        Ok(Stored::NotReplayable { status }) => {
            Problem::NotReplayable.response_with(
                "the first request with this key completed, but its response was larger than the gateway stores; it is not run again",
                &[("first_status", status.as_u16().into())],
            )
        }
        Err(e) => {
            // The key prefix is the gateway's own: a foreign record under it is an operator error.
            tracing::error!(error = %e, "a record under the gateway's prefix is not a gateway response");
            let mut res = Problem::NotReplayable.response(format!("the stored result cannot be replayed: {e}"));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_replies_are_decoded_strictly() {
        let started = Reply::status_with("started", [Reply::Int(7), Reply::Int(2)]);
        assert!(matches!(Begin::decode(&started), Some(Begin::Started { fence: 7, attempt: 2 })));
        let running = Reply::status_with("running", [Reply::Int(7), Reply::Int(1500)]);
        assert!(matches!(Begin::decode(&running), Some(Begin::Running { left_ms: 1500 })));
        let done = Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"r"))]);
        assert!(matches!(Begin::decode(&done), Some(Begin::Done(b)) if &b[..] == b"r"));
        for bad in [
            Reply::status("started"),
            Reply::status_with("started", [Reply::Int(-1), Reply::Int(1)]),
            Reply::status_with("done", [Reply::Int(1)]),
            Reply::status_with("ok", []),
            Reply::Int(1),
        ] {
            assert!(Begin::decode(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn retry_after_rounds_the_lease_left_up_to_whole_seconds() {
        for (left_ms, secs) in [(0, "1"), (1, "1"), (1000, "1"), (1001, "2"), (29_500, "30")] {
            let res = in_progress(left_ms);
            assert_eq!(res.status(), StatusCode::CONFLICT);
            assert_eq!(res.headers()[header::RETRY_AFTER], secs, "{left_ms} ms");
        }
    }

    #[test]
    fn a_not_replayable_record_answers_410_and_a_foreign_one_500() {
        let marker = Bytes::from(Stored::encode_not_replayable(StatusCode::CREATED));
        let res = replay(&marker);
        assert_eq!(res.status(), StatusCode::GONE);
        assert!(res.headers().get(REPLAYED).is_none());
        assert_eq!(replay(&Bytes::from_static(b"not ours")).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
