//! The listener side: accepts HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port, with a bound on connections, on header size and on the time a
//! client may take to send its request head.
//!
//! [`serve_on_loops`] is what `idem gateway` runs: every accepted connection
//! goes to one of several single-threaded event loops, in turn, and stays
//! there, as `idem serve` does with its RESP connections. A request, its
//! store calls and its upstream call then all run on one thread, with no
//! hand-off between threads: each loop has its own service (so its own
//! upstream connections), and with the embedded store the loop itself
//! writes and syncs the log when it runs dry (the backend's
//! [`LoopHooks`]), batching every loop's records in one sync. [`serve`]
//! serves on the caller's runtime instead, for embedding.

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
use idem_core::LoopHooks;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Semaphore};
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

/// Serves `service` on `listener`, on the caller's runtime, until `shutdown`
/// resolves, then lets in-flight requests finish (up to the grace period).
pub async fn serve<S>(listener: TcpListener, service: S, config: ServerConfig, shutdown: impl Future<Output = ()>)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let builder = Arc::new(builder(&config));
    let graceful = GracefulShutdown::new();
    accept(&listener, &config, shutdown, |stream, addr, permit| {
        let conn = builder.serve_connection(TokioIo::new(stream), hyper_service(service.clone(), addr)).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
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
    listener: TcpListener,
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
    let running = EventLoops::start(loops, hooks)?;
    let services: Vec<S> = (0..loops).map(|_| make_service()).collect();
    let builder = Arc::new(builder(&config));
    let graceful = GracefulShutdown::new();
    let mut next = 0;
    accept(&listener, &config, shutdown, |stream, addr, permit| {
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
        let (builder, service, watcher) = (builder.clone(), services[i].clone(), graceful.watcher());
        running.handles[i].spawn(async move {
            let stream = match TcpStream::from_std(std_stream) {
                Ok(s) => s,
                Err(e) => return tracing::warn!(error = %e, "cannot register a connection on its event loop"),
            };
            let conn = builder.serve_connection(TokioIo::new(stream), hyper_service(service, addr)).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    })
    .await;
    drop(listener);
    drain(graceful, &config).await;
    running.stop().await;
    Ok(())
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

/// Accepts connections within the connection bound until `shutdown`
/// resolves, giving each to `serve_one` with its permit.
async fn accept(
    listener: &TcpListener,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
    mut serve_one: impl FnMut(TcpStream, std::net::SocketAddr, tokio::sync::OwnedSemaphorePermit),
) {
    assert!(config.max_connections > 0, "max_connections must be at least 1");
    let permits = Arc::new(Semaphore::new(config.max_connections));
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
        serve_one(stream, addr, permit);
    }
}

async fn drain(graceful: GracefulShutdown, config: &ServerConfig) {
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
