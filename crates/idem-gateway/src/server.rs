//! The listener side: accepts HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN
//! over TLS) on a plain port, a TLS port or both ([`Listeners`]), with a
//! bound on connections, on header size, on the time a client may take to
//! finish its TLS handshake and to send its request head, and on the time a
//! connection stays open with no request in flight (HTTP/2 included, see
//! `idem_server::http_conn`).
//!
//! [`serve_on_loops`] is what `idem gateway` runs: every accepted connection
//! goes to one of several single-threaded event loops, in turn, and stays
//! there, as `idem serve` does with its RESP connections. A request, its
//! store calls and its upstream call then all run on one thread, with no
//! hand-off between threads: each loop has its own service (so its own
//! upstream connections). The backend's [`LoopHooks`] run on every loop:
//! with the embedded store and several loops, the log's writer thread syncs
//! every loop's records back to back and wakes each loop once per sync for
//! its waiters; a single loop syncs its own records when it runs dry.
//! [`serve`] serves on the caller's runtime instead, for embedding.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use idem_core::LoopHooks;
use idem_server::http_conn::{self, Drain};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use crate::proxy::{ClientAddr, ClientIpHeader};
use crate::tls::Listeners;

/// Default bound on open client connections.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;
/// Default bound on a request head (request line and headers), bytes.
pub const HEADER_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default time a client has to send its request head, ms.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time in-flight requests get to finish on shutdown, ms.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 10_000;
/// Default time a client has to finish its TLS handshake, ms.
pub const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Most event loops [`serve_on_loops`] starts.
pub const EVENT_LOOPS_MAX: usize = 256;

/// The default number of event loops: one per core the process may use.
/// Unlike `idem serve`, whose loops block in `fdatasync` with nothing else
/// to do, a gateway loop also parses HTTP and talks to the upstream, and
/// nginx, its peer, runs one worker per core (`worker_processes auto`).
pub fn default_event_loops() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, EVENT_LOOPS_MAX)
}

/// Bounds of the listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most open client connections; further clients wait in the accept queue.
    pub max_connections: usize,
    /// Largest request head, bytes (HTTP/1.1 read buffer; HTTP/2 header list).
    pub header_bytes_max: usize,
    /// Time a client has to send its request head, ms; also the longest a
    /// connection is kept with no request in flight (HTTP/1.1 and HTTP/2).
    pub header_read_timeout_ms: u64,
    /// Time in-flight requests get to finish on shutdown, ms.
    pub shutdown_grace_ms: u64,
    /// Time a client on the TLS listener has to finish its handshake, ms;
    /// the connection holds its slot meanwhile.
    pub tls_handshake_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: MAX_CONNECTIONS_DEFAULT,
            header_bytes_max: HEADER_BYTES_MAX_DEFAULT,
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            tls_handshake_timeout_ms: TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Serves `service` on `listener` (a [`TcpListener`], or [`Listeners`] for
/// TLS), on the caller's runtime, until `shutdown` resolves, then lets
/// in-flight requests finish (up to the grace period).
pub async fn serve<S>(
    listener: impl Into<Listeners>,
    service: S,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let listener = listener.into();
    let builder = Arc::new(builder(&config));
    let graceful = Drain::new();
    let bounds = ConnBounds::of(&config);
    accept(&listener, &config, shutdown, |stream, addr, tls, permit| {
        let (builder, service, signal) = (builder.clone(), service.clone(), graceful.signal());
        tokio::spawn(async move {
            serve_connection(&builder, stream, tls, bounds, hyper_service(service, addr), signal).await;
            drop(permit);
        });
    })
    .await;
    drop(listener);
    drain(graceful, &config).await;
}

/// Serves on `loops` single-threaded event loops (see the module docs):
/// `make_service` builds each loop's service, and `hooks` (the backend's
/// [`idem_core::Backend::loop_hooks`]) run on every loop. Accepts on the
/// caller's runtime until `shutdown` resolves, lets in-flight requests
/// finish (up to the grace period), then stops the loops.
pub async fn serve_on_loops<S>(
    listener: impl Into<Listeners>,
    make_service: impl Fn() -> S,
    config: ServerConfig,
    loops: usize,
    hooks: Option<Arc<dyn LoopHooks>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    assert!((1..=EVENT_LOOPS_MAX).contains(&loops), "event loops must be 1..={EVENT_LOOPS_MAX}");
    let listener = listener.into();
    let bounds = ConnBounds::of(&config);
    let running = EventLoops::start(loops, hooks)?;
    let services: Vec<S> = (0..loops).map(|_| make_service()).collect();
    let builder = Arc::new(builder(&config));
    let graceful = Drain::new();
    let mut next = 0;
    accept(&listener, &config, shutdown, |stream, addr, tls, permit| {
        let i = next;
        next = (next + 1) % loops;
        // The socket is registered with the loop's own reactor, there.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to an event loop");
                return;
            }
        };
        let (builder, service, signal) = (builder.clone(), services[i].clone(), graceful.signal());
        running.handles[i].spawn(async move {
            let stream = match TcpStream::from_std(std_stream) {
                Ok(s) => s,
                Err(e) => return tracing::warn!(error = %e, "cannot register a connection on its event loop"),
            };
            serve_connection(&builder, stream, tls, bounds, hyper_service(service, addr), signal).await;
            drop(permit);
        });
    })
    .await;
    drop(listener);
    drain(graceful, &config).await;
    running.stop().await;
    Ok(())
}

/// The time bounds of one connection.
#[derive(Clone, Copy)]
struct ConnBounds {
    handshake: Duration,
    /// With no request in flight, for HTTP/1.1 and HTTP/2 alike (hyper's
    /// own head read timeout covers HTTP/1.1 only).
    idle: Duration,
}

impl ConnBounds {
    fn of(config: &ServerConfig) -> ConnBounds {
        ConnBounds {
            handshake: Duration::from_millis(config.tls_handshake_timeout_ms),
            idle: Duration::from_millis(config.header_read_timeout_ms),
        }
    }
}

/// Serves one connection until it ends, after its TLS handshake when `tls`
/// is given. The handshake runs here, on the connection's own task, so a
/// slow one holds only its own connection slot, never the accept loop.
async fn serve_connection<H>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    bounds: ConnBounds,
    service: H,
    signal: watch::Receiver<bool>,
) where
    H: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    H::Future: Send + 'static,
{
    let ended = match tls {
        None => http_conn::serve(builder, stream, service, bounds.idle, signal).await,
        Some(acceptor) => {
            let stream = match tokio::time::timeout(bounds.handshake, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake not done in time; connection closed"),
            };
            http_conn::serve(builder, stream, service, bounds.idle, signal).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

fn builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
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
    builder
}

/// The hyper service of one connection: puts the client's address on each request.
fn hyper_service<S>(
    svc: S,
    addr: std::net::SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = tower::util::Oneshot<S, Request<Body>>,
> + Clone
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let ip_header = http::HeaderValue::from_str(&addr.ip().to_string()).ok().map(ClientIpHeader);
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(addr));
        if let Some(h) = &ip_header {
            req.extensions_mut().insert(h.clone());
        }
        svc.clone().oneshot(req.map(Body::new))
    })
}

/// Accepts connections on either listener within the connection bound
/// until `shutdown` resolves, giving each to `serve_one` with the TLS
/// acceptor to use (when it came in on the TLS listener) and its permit.
async fn accept(
    listeners: &Listeners,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
    mut serve_one: impl FnMut(TcpStream, std::net::SocketAddr, Option<TlsAcceptor>, tokio::sync::OwnedSemaphorePermit),
) {
    assert!(config.max_connections > 0, "max_connections must be at least 1");
    let permits = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            r = accept_on(listeners.plain.as_ref()) => r.map(|(s, a)| (s, a, None)),
            r = accept_on(listeners.tls.as_ref().map(|(l, _)| l)) => {
                r.map(|(s, a)| (s, a, listeners.tls.as_ref().map(|(_, t)| t.acceptor())))
            }
            () = &mut shutdown => break,
        };
        let (stream, addr, tls) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        serve_one(stream, addr, tls, permit);
    }
}

/// The next connection on `listener`; never, without one.
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn drain(graceful: Drain, config: &ServerConfig) {
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_millis(config.shutdown_grace_ms)) => {
            tracing::warn!("shutdown grace period over; dropping open connections");
        }
    }
}

/// Running event loops: a single-threaded tokio runtime each, on its own thread.
struct EventLoops {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl EventLoops {
    fn start(n: usize, hooks: Option<Arc<dyn LoopHooks>>) -> std::io::Result<EventLoops> {
        let mut loops = EventLoops { handles: Vec::new(), stops: Vec::new(), threads: Vec::new() };
        for i in 0..n {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            // I/O and timers only: no child processes or signals on a loop.
            builder.enable_io().enable_time();
            if let Some(h) = hooks.clone() {
                builder.on_thread_park(move || h.before_loop_park());
            }
            let runtime = builder.build()?;
            let handle = runtime.handle().clone();
            if let Some(h) = &hooks {
                handle.spawn(h.loop_task());
            }
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let hooks = hooks.clone();
            let thread = std::thread::Builder::new().name(format!("idem-gw-loop-{i}")).spawn(move || {
                if let Some(h) = &hooks {
                    h.on_loop_start();
                }
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
            loops.handles.push(handle);
            loops.stops.push(stop_tx);
            loops.threads.push(thread);
        }
        Ok(loops)
    }

    fn stop_now(&mut self) -> Vec<std::thread::JoinHandle<()>> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        std::mem::take(&mut self.threads)
    }

    /// Stops every loop and waits for their threads to end.
    async fn stop(mut self) {
        let threads = self.stop_now();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for EventLoops {
    fn drop(&mut self) {
        // A loop whose thread failed to start, or a panic in the accept loop: the threads end on their own.
        let _ = self.stop_now();
    }
}
