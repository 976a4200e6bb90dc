//! The bounds on an HTTP request body, before any route sees it: a
//! `Content-Length` over `http_body_bytes_max` is refused from the header
//! (413, nothing of the body is read); the whole body must arrive within
//! `http_body_read_timeout_ms` of the head (else 408, so that a client
//! sending a byte now and then cannot hold a connection); and while it is
//! read, it counts against `client_buffers_bytes_max` like a RESP buffer.
//! Every refusal closes the connection: the rest of the body is not read.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::BytesMut;
use futures::StreamExt;

use crate::api::problem;
use crate::state::ServerState;

/// The buffer a body starts with, at most.
const INITIAL_BODY_BYTES: u64 = 64 * 1024;

/// Reads the body of `req` within the bounds, then runs the route on it.
pub(crate) async fn guard(State(state): State<Arc<ServerState>>, req: Request, next: Next) -> Response {
    let max = state.config().http_body_bytes_max;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "LIMIT",
            &format!("request body is over the limit of {max} bytes"),
        );
    }
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let timeout_ms = state.config().http_body_read_timeout_ms;
    let mut tracked = state.buffers().register();
    let usage = tracked.usage().clone();
    // Grown as the bytes arrive, not to the declared length: what is
    // counted against the bound is what is held.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(INITIAL_BODY_BYTES) as usize);
    let read = async {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| refuse(StatusCode::BAD_REQUEST, "ERR", &format!("cannot read the body: {e}")))?;
            if buf.len() + chunk.len() > max {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "LIMIT",
                    &format!("request body is over the limit of {max} bytes"),
                ));
            }
            buf.extend_from_slice(&chunk);
            if !tracked.report(buf.capacity()) {
                return Err(evicted());
            }
        }
        Ok(())
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(Duration::from_millis(timeout_ms), read) => r,
        _ = usage.evicted() => Ok(Err(evicted())),
    };
    match outcome {
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "ERR",
                &format!("the body did not arrive within http_body_read_timeout_ms ({timeout_ms} ms)"),
            )
        }
        Ok(Err(resp)) => return resp,
        Ok(Ok(())) => {}
    }
    // Still counted while the route runs: it holds the body.
    let resp = next.run(Request::from_parts(parts, Body::from(buf.freeze()))).await;
    drop(tracked);
    resp
}

fn evicted() -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "BUSY",
        "evicted: the buffers of all clients are over client_buffers_bytes_max",
    )
}

/// A problem document that also closes the connection: the rest of the
/// body is never read, so the connection cannot carry another request.
fn refuse(status: StatusCode, code: &str, detail: &str) -> Response {
    let mut resp = problem(status, code, detail);
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
