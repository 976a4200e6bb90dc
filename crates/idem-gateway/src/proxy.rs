//! The reverse proxy: forwards a request to one upstream over keep-alive
//! HTTP/1.1 connections. Hop-by-hop headers are dropped both ways, the
//! `X-Forwarded-*` headers are set, bodies stream in both directions.
//!
//! Each [`Proxy`] built with [`Proxy::new`] keeps its own idle connections,
//! so a gateway builds one per event loop: a request takes an idle
//! connection of its loop (or opens one), and gives it back when the
//! response body has been read to its end. Connection, request and
//! response all stay on the loop's thread. A connection is given back only
//! after a complete response, so the next request on it never waits behind
//! another.
//!
//! A failure it answers on the upstream's behalf carries an
//! [`UpstreamFailure`] extension, so the idempotency layer can tell a
//! request that never left (connection refused) from one whose outcome is
//! unknown (timeout, connection lost after sending).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use idem_core::BoxFuture;
use tower::Service;

use crate::layer::UpstreamFailure;
use crate::problem::Problem;

/// Default bound on the upstream's answer (its response head), ms.
pub const UPSTREAM_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default idle keep-alive connections a proxy keeps (one proxy per event loop).
pub const UPSTREAM_IDLE_CONNECTIONS_MAX_DEFAULT: usize = 256;
/// Default time an idle upstream connection is kept, ms.
pub const UPSTREAM_IDLE_TIMEOUT_MS_DEFAULT: u64 = 90_000;

/// The client's address, put on each request by the server that accepted it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The client's IP as a header value, made once per connection by the
/// server, so that requests do not format it again.
#[derive(Debug, Clone)]
pub(crate) struct ClientIpHeader(pub(crate) HeaderValue);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Why a proxy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream '{url}': {reason}")]
pub struct ProxyError {
    url: String,
    reason: &'static str,
}

/// How to reach the upstream.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `http://host:port[/prefix]`.
    pub upstream: String,
    /// Bound on the upstream's response head, ms (connecting included).
    pub upstream_timeout_ms: u64,
    /// Idle keep-alive connections a proxy keeps.
    pub idle_connections_max: usize,
    /// Time an idle upstream connection is kept, ms.
    pub idle_timeout_ms: u64,
}

impl ProxyConfig {
    /// A config with default bounds.
    pub fn new(upstream: impl Into<String>) -> Self {
        ProxyConfig {
            upstream: upstream.into(),
            upstream_timeout_ms: UPSTREAM_TIMEOUT_MS_DEFAULT,
            idle_connections_max: UPSTREAM_IDLE_CONNECTIONS_MAX_DEFAULT,
            idle_timeout_ms: UPSTREAM_IDLE_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// The proxy service. Cheap to clone (one reference count, since every
/// request clones the service it runs on); clones share their idle
/// connections.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    /// `host:port` to connect to.
    address: String,
    /// The `Host` header sent upstream.
    host: HeaderValue,
    /// Path prefix of the upstream URL, without a trailing `/`.
    prefix: String,
    timeout: Duration,
    idle: Arc<Idle>,
}

/// A proxy's idle upstream connections, most recently used last.
struct Idle {
    conns: Mutex<Vec<(SendRequest<Body>, Instant)>>,
    max: usize,
    timeout: Duration,
    /// Whether the task that closes connections idle past `timeout` runs.
    sweeping: AtomicBool,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SendRequest<Body>, Instant)>> {
        // A panic while holding it leaves a plain list of connections.
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used live connection, if any.
    fn take(&self) -> Option<SendRequest<Body>> {
        let mut conns = self.lock();
        while let Some((c, since)) = conns.pop() {
            if !c.is_closed() && since.elapsed() < self.timeout {
                return Some(c);
            }
        }
        None
    }

    fn give_back(&self, c: SendRequest<Body>) {
        if c.is_closed() {
            return;
        }
        let mut conns = self.lock();
        if conns.len() < self.max {
            conns.push((c, Instant::now()));
        }
    }

    /// Closes the connections idle past the timeout (the oldest come first).
    fn sweep(&self) {
        let mut conns = self.lock();
        let expired = conns.iter().take_while(|(_, since)| since.elapsed() >= self.timeout).count();
        conns.drain(..expired);
    }

    /// Starts the sweeping task on the caller's runtime, once.
    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let idle: Weak<Idle> = Arc::downgrade(self);
        let every = self.timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(idle) = idle.upgrade() else { return };
                idle.sweep();
            }
        });
    }
}

impl Proxy {
    /// A proxy to `config.upstream` (plain `http://`; HTTP/1.1 with keep-alive).
    pub fn new(config: &ProxyConfig) -> Result<Self, ProxyError> {
        let err = |reason| ProxyError { url: config.upstream.clone(), reason };
        let uri: Uri = config.upstream.parse().map_err(|_| err("not a URL"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(err("only http:// upstreams are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| err("no host"))?;
        if authority.host().is_empty() {
            return Err(err("no host"));
        }
        if uri.query().is_some() {
            return Err(err("an upstream URL has no query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| err("not a host"))?;
        Ok(Proxy {
            inner: Arc::new(ProxyInner {
                address,
                host,
                prefix,
                timeout: Duration::from_millis(config.upstream_timeout_ms),
                idle: Arc::new(Idle {
                    conns: Mutex::new(Vec::new()),
                    max: config.idle_connections_max,
                    timeout: Duration::from_millis(config.idle_timeout_ms.max(1)),
                    sweeping: AtomicBool::new(false),
                }),
            }),
        })
    }
}

/// Why a request got no response from the upstream.
enum SendError {
    /// It never left: the connection could not be made.
    NotSent(String),
    /// It may have run.
    Unknown(String),
}

impl ProxyInner {
    /// The request target sent upstream (origin form).
    fn upstream_path(&self, uri: &Uri) -> Result<PathAndQuery, http::Error> {
        Ok(match uri.path_and_query() {
            // Without a prefix the client's path and query go as they are.
            Some(pq) if self.prefix.is_empty() => pq.clone(),
            pq => format!("{}{}", self.prefix, pq.map_or("/", PathAndQuery::as_str)).parse()?,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Body>, String> {
        let stream = tokio::net::TcpStream::connect(&self.address).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        // Driven on the caller's thread: with a proxy per event loop, the
        // connection never leaves its loop.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        self.idle.start_sweeping();
        Ok(sender)
    }

    /// Sends `req` on an idle connection, or on a new one. A request the
    /// idle connection did not take (it had just closed) goes on a new one.
    async fn send(&self, mut req: Request<Body>) -> Result<Response<PooledBody>, SendError> {
        let mut fresh = false;
        loop {
            let mut sender = match self.idle.take() {
                Some(s) => s,
                None => {
                    fresh = true;
                    self.connect().await.map_err(|e| SendError::NotSent(format!("cannot connect: {e}")))?
                }
            };
            if sender.ready().await.is_err() {
                if fresh {
                    return Err(SendError::NotSent("the new upstream connection closed at once".into()));
                }
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let idle = self.idle.clone();
                    return Ok(res.map(|body| PooledBody { body, conn: Some((sender, idle)), ended: false }));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => req = back,
                    Some(_) => {
                        return Err(SendError::NotSent(format!("the upstream refused the request: {}", e.error())))
                    }
                    None => {
                        return Err(SendError::Unknown(format!(
                            "the upstream connection failed after the request was sent: {}",
                            e.error()
                        )))
                    }
                },
            }
        }
    }

    async fn forward(&self, mut req: Request<Body>) -> Response<Body> {
        let path = match self.upstream_path(req.uri()) {
            Ok(p) => p,
            Err(e) => return failed(Problem::UpstreamUnreachable, UpstreamFailure::NotSent, e.to_string()),
        };
        let client_ip = match req.extensions().get::<ClientIpHeader>() {
            Some(h) => Some(h.0.clone()),
            None => {
                req.extensions().get::<ClientAddr>().and_then(|a| HeaderValue::from_str(&a.0.ip().to_string()).ok())
            }
        };
        let host = req
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        headers.insert(header::HOST, self.host.clone());
        if let Some(ip) = client_ip {
            let forwarded = match headers.get(X_FORWARDED_FOR).map(HeaderValue::to_str) {
                // An unreadable prior value is replaced, as it cannot be extended.
                None | Some(Err(_)) => Some(ip),
                Some(Ok(prior)) => {
                    ip.to_str().ok().and_then(|ip| HeaderValue::from_str(&format!("{prior}, {ip}")).ok())
                }
            };
            if let Some(v) = forwarded {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(self.timeout, self.send(req)).await {
            Err(_) => failed(
                Problem::UpstreamTimeout,
                UpstreamFailure::Unknown,
                format!("the upstream did not answer within {} ms", self.timeout.as_millis()),
            ),
            Ok(Err(SendError::NotSent(detail))) => {
                failed(Problem::UpstreamUnreachable, UpstreamFailure::NotSent, detail)
            }
            Ok(Err(SendError::Unknown(detail))) => {
                failed(Problem::UpstreamUnreachable, UpstreamFailure::Unknown, detail)
            }
            Ok(Ok(res)) => {
                let (mut parts, body) = res.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
        }
    }
}

/// An upstream response body that gives its connection back to the idle
/// list once it has been read to its end (a connection whose response was
/// not read to the end is closed: HTTP/1.1 cannot skip the rest).
struct PooledBody {
    body: Incoming,
    conn: Option<(SendRequest<Body>, Arc<Idle>)>,
    ended: bool,
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.ended || http_body::Body::is_end_stream(&self.body) {
            if let Some((conn, idle)) = self.conn.take() {
                idle.give_back(conn);
            }
        }
    }
}

fn failed(p: Problem, failure: UpstreamFailure, detail: String) -> Response<Body> {
    let mut res = p.response(detail);
    res.extensions_mut().insert(failure);
    res
}

/// RFC 9110 §7.6.1: the fixed hop-by-hop headers and those `Connection` names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        strip_connection_named(h);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// Removes the headers that `Connection` names.
fn strip_connection_named(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.inner.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn upstream_urls_are_checked_and_prefixes_kept() {
        let p = Proxy::new(&ProxyConfig::new("http://127.0.0.1:9/api/")).unwrap();
        let u = p.inner.upstream_path(&"/orders?x=1".parse().unwrap()).unwrap();
        assert_eq!(u.as_str(), "/api/orders?x=1");
        assert_eq!(p.inner.address, "127.0.0.1:9");
        let p = Proxy::new(&ProxyConfig::new("http://127.0.0.1:9")).unwrap();
        let u = p.inner.upstream_path(&"/orders?x=1".parse().unwrap()).unwrap();
        assert_eq!(u.as_str(), "/orders?x=1");
        let u = p.inner.upstream_path(&"http://elsewhere".parse().unwrap()).unwrap();
        assert_eq!(u.as_str(), "/");
        assert_eq!(Proxy::new(&ProxyConfig::new("http://app")).unwrap().inner.address, "app:80");
        for bad in ["https://h", "h:1", "http:///x", "http://h/?q=1"] {
            assert!(Proxy::new(&ProxyConfig::new(bad)).is_err(), "{bad}");
        }
    }
}
