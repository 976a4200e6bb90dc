//! The listener side: accepts HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port, with a bound on connections, on header size and on the time a
//! client may take to send its request head.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

use crate::proxy::{ClientAddr, ClientIpHeader};

/// Default bound on open client connections.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;
/// Default bound on a request head (request line and headers), bytes.
pub const HEADER_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default time a client has to send its request head, ms.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time in-flight requests get to finish on shutdown, ms.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 10_000;

/// Bounds of the listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most open client connections; further clients wait in the accept queue.
    pub max_connections: usize,
    /// Largest request head, bytes (HTTP/1.1 read buffer; HTTP/2 header list).
    pub header_bytes_max: usize,
    /// Time a client has to send its request head, ms.
    pub header_read_timeout_ms: u64,
    /// Time in-flight requests get to finish on shutdown, ms.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: MAX_CONNECTIONS_DEFAULT,
            header_bytes_max: HEADER_BYTES_MAX_DEFAULT,
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (up to the grace period).
pub async fn serve<S>(listener: TcpListener, service: S, config: ServerConfig, shutdown: impl Future<Output = ()>)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    assert!(config.max_connections > 0, "max_connections must be at least 1");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(config.header_bytes_max.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.header_bytes_max.min(u32::MAX as usize) as u32);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let ip_header = http::HeaderValue::from_str(&addr.ip().to_string()).ok().map(ClientIpHeader);
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(addr));
            if let Some(h) = &ip_header {
                req.extensions_mut().insert(h.clone());
            }
            svc.clone().oneshot(req.map(Body::new))
        });
        let conn = builder.serve_connection(TokioIo::new(stream), hyper_svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_millis(config.shutdown_grace_ms)) => {
            tracing::warn!("shutdown grace period over; dropping open connections");
        }
    }
}
