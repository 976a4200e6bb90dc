//! The reverse proxy: forwards a request to one upstream over pooled
//! keep-alive connections. Hop-by-hop headers are dropped both ways, the
//! `X-Forwarded-*` headers are set, bodies stream in both directions.
//!
//! A failure it answers on the upstream's behalf carries an
//! [`UpstreamFailure`] extension, so the idempotency layer can tell a
//! request that never left (connection refused) from one whose outcome is
//! unknown (timeout, connection lost after sending).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use idem_core::BoxFuture;
use tower::Service;

use crate::layer::UpstreamFailure;
use crate::problem::Problem;

/// Default bound on the upstream's answer (its response head), ms.
pub const UPSTREAM_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default idle keep-alive connections kept per upstream host.
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
    /// Bound on the upstream's response head, ms.
    pub upstream_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host.
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

/// The proxy service. Cheap to clone: one reference count, since every
/// request clones the service it runs on.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix of the upstream URL, without a trailing `/`.
    prefix: String,
    timeout: Duration,
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
        if uri.query().is_some() {
            return Err(err("an upstream URL has no query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.idle_connections_max)
            .pool_idle_timeout(Duration::from_millis(config.idle_timeout_ms))
            .build(connector);
        Ok(Proxy {
            inner: Arc::new(ProxyInner {
                client,
                scheme: Scheme::HTTP,
                authority,
                prefix,
                timeout: Duration::from_millis(config.upstream_timeout_ms),
            }),
        })
    }
}

impl ProxyInner {
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = match uri.path_and_query() {
            // Without a prefix the client's path and query go as they are.
            Some(pq) if self.prefix.is_empty() => pq.clone(),
            pq => format!("{}{}", self.prefix, pq.map_or("/", PathAndQuery::as_str)).parse()?,
        };
        Uri::builder().scheme(self.scheme.clone()).authority(self.authority.clone()).path_and_query(pq).build()
    }

    async fn forward(&self, mut req: Request<Body>) -> Response<Body> {
        let uri = match self.upstream_uri(req.uri()) {
            Ok(u) => u,
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
        headers.remove(header::HOST);
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
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => failed(
                Problem::UpstreamTimeout,
                UpstreamFailure::Unknown,
                format!("the upstream did not answer within {} ms", self.timeout.as_millis()),
            ),
            Ok(Err(e)) if e.is_connect() => {
                failed(Problem::UpstreamUnreachable, UpstreamFailure::NotSent, format!("cannot connect: {e}"))
            }
            Ok(Err(e)) => failed(
                Problem::UpstreamUnreachable,
                UpstreamFailure::Unknown,
                format!("the upstream connection failed after the request was sent: {e}"),
            ),
            Ok(Ok(res)) => {
                let (mut parts, body) = res.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
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
        let u = p.inner.upstream_uri(&"/orders?x=1".parse().unwrap()).unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:9/api/orders?x=1");
        let p = Proxy::new(&ProxyConfig::new("http://127.0.0.1:9")).unwrap();
        let u = p.inner.upstream_uri(&"/orders?x=1".parse().unwrap()).unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:9/orders?x=1");
        let u = p.inner.upstream_uri(&"http://elsewhere".parse().unwrap()).unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:9/");
        for bad in ["https://h", "h:1", "http:///x", "http://h/?q=1"] {
            assert!(Proxy::new(&ProxyConfig::new(bad)).is_err(), "{bad}");
        }
    }
}
