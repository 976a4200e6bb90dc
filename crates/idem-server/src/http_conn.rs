//! One HTTP connection (HTTP/1.1 or HTTP/2, as hyper's auto builder finds),
//! served with an idle bound that holds for both protocols, and the drain
//! of all connections on shutdown. Used by the HTTP API and the gateway.
//!
//! hyper bounds the time an HTTP/1.1 client takes to send a request head
//! (`header_read_timeout`, which also ends an idle keep-alive connection),
//! but has no such bound for HTTP/2: a client that sends the preface and
//! then nothing, or a HEADERS frame whose CONTINUATION frames never end,
//! would hold its connection, one of `max_connections`, for ever. So
//! [`serve`] closes a connection once no request has been in flight on it
//! for `idle`: gracefully (GOAWAY for HTTP/2), and never under a request;
//! if the connection has still not ended after another `idle` with no
//! request (an HTTP/2 client that never answers the PING of a graceful
//! close), it is dropped. A request is in flight from the moment its head
//! is complete until its response body has been sent or dropped, so a slow
//! upload or a long response is not cut by this bound (the body read
//! timeouts bound those).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

/// Signals every connection to close gracefully, then waits until they have.
#[derive(Debug)]
pub struct Drain {
    stop: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { stop: watch::channel(false).0 }
    }
}

impl Drain {
    /// A drain with no connection yet.
    pub fn new() -> Drain {
        Drain::default()
    }

    /// What one connection watches (and holds until it ends, which is how
    /// [`Drain::shutdown`] knows it has).
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Asks every connection to close once its requests are answered, and
    /// waits until all have ended.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.stop.closed().await;
    }
}

/// Serves `io` with `service` until the connection ends. It is closed
/// gracefully once no request has been in flight for `idle`, and when
/// `stop` (from [`Drain::signal`]) turns true or its drain is dropped;
/// closing, it is dropped after another `idle` with no request in flight.
pub async fn serve<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let activity =
        Arc::new(Activity { in_flight: AtomicUsize::new(0), last_done_ms: AtomicU64::new(0), start: Instant::now() });
    let service = Tracked { inner: service, activity: activity.clone() };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let (mut closing, mut stopping) = (false, false);
    let mut idle_since = activity.start;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            () = activity.idle_for(idle, idle_since) => {
                if closing {
                    tracing::debug!("a connection asked to close has not; dropping it");
                    return Ok(());
                }
                tracing::debug!(idle_ms = idle.as_millis() as u64, "no request in flight for the idle bound; closing the connection");
                conn.as_mut().graceful_shutdown();
                (closing, idle_since) = (true, Instant::now());
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                if !closing {
                    conn.as_mut().graceful_shutdown();
                    (closing, idle_since) = (true, Instant::now());
                }
            }
        }
    }
}

/// The requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended, ms after `start`.
    last_done_ms: AtomicU64,
    start: Instant,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`, counting
    /// from `since` at the earliest. Requests begin on the connection's own
    /// task, which does not run while this is looked at; only their ends
    /// may race with it, and an end only moves the deadline later.
    async fn idle_for(&self, idle: Duration, since: Instant) {
        let mut deadline = since + idle;
        loop {
            tokio::time::sleep_until(deadline).await;
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                deadline = Instant::now() + idle;
                continue;
            }
            let last = self.start + Duration::from_millis(self.last_done_ms.load(Ordering::SeqCst));
            let from = last.max(since);
            if from + idle <= Instant::now() {
                return;
            }
            deadline = from + idle;
        }
    }
}

/// One request in flight; it ends when this is dropped (with the response body).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        // The time first: whoever sees no request in flight sees when the last one ended.
        a.last_done_ms.store(a.start.elapsed().as_millis() as u64, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `inner`, with each request counted in flight until its response body is done.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let token = Some(self.activity.begin());
        TrackedFuture { inner: self.inner.call(req), token }
    }
}

pin_project_lite::pin_project! {
    /// The response of a tracked request; moves the request's token into the body.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        token: Option<InFlight>,
    }
}

impl<F: std::future::Future<Output = Result<Response<Body>, Infallible>>> std::future::Future for TrackedFuture<F> {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx));
        let token = this.token.take();
        Poll::Ready(resp.map(|r| r.map(|body| Body::new(TrackedBody { inner: body, _token: token }))))
    }
}

/// A response body that holds its request's token until it is dropped.
struct TrackedBody {
    inner: Body,
    _token: Option<InFlight>,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
