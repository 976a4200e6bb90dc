//! The HTTP/JSON API (axum), beside RESP, on `http_bind`.
//!
//! - `POST /v1/command` with a JSON array: the command name, then its
//!   arguments, each a string or `{"base64": "..."}` for binary bytes:
//!   `["IDEM.BEGIN", "k", "LEASE", "5000"]`. Reply: `200` with the reply as
//!   JSON: status words and bytes become strings (`{"base64": "..."}` when
//!   not UTF-8), integers numbers, nil `null`, arrays arrays.
//! - A refused command: the status below and `{"error": CODE, "message": text}`.
//! - `GET /healthz`: `200 ok` while the server runs.
//!
//! | code | HTTP status | why |
//! |---|---|---|
//! | `ERR` | 400 Bad Request | syntax, arity, type |
//! | `LIMIT` | 413 Content Too Large | a size or count over a limit (also an oversized body) |
//! | `MISMATCH` | 422 Unprocessable Content | same idempotency key, different fingerprint (as the IETF Idempotency-Key draft) |
//! | `STALE` | 409 Conflict | the fence is no longer current |
//! | `NOAUTH` | 401 Unauthorized | no or wrong `Authorization: Bearer <password>` |
//! | `NOPERM` | 403 Forbidden | not allowed |
//! | `READONLY` | 503 Service Unavailable | storage cannot accept writes; reads still work |
//! | `BUSY` | 503 Service Unavailable, `Retry-After: 1` | overloaded; retry later |
//! | `UNKNOWN` | 502 Bad Gateway | the external store's connection broke after the command was sent: outcome unknown |
//! | `OOM` | 507 Insufficient Storage | the store is at `maxmemory_bytes`: no new record; existing ones still work |
//!
//! Outcomes that are not errors (`running`, `held`, `busy`, `refused`,
//! `conflict`) are 200 replies: the client switches on the status word.
//! Server commands (PING, INFO, ...) are RESP only.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use idem_core::{CmdError, Command, ErrorCode, Reply};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::acl::AclUser;
use crate::http_conn::{self, Drain};
use crate::metrics::{CommandLabel, Transport};
use crate::observe::OpenConnection;
use crate::state::{InfoCounter, ServerState};
use crate::tls::{Stream, TlsSource};
use crate::{base64, cmd};

/// Serves HTTP on `listener` until `stop` turns true, then finishes the
/// requests in flight. Each HTTP connection holds one of `permits` (a pool
/// of `max_connections`, separate from RESP's).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsSource>>,
    state: Arc<ServerState>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let handshake_ms = state.config().tls_handshake_timeout_ms;
    let header_read_timeout = Duration::from_millis(state.config().http_header_read_timeout_ms);
    let mut listener = BoundedListener { inner: listener, permits, tls, handshake_ms, state: state.clone() };
    let app = router(state);
    // hyper directly rather than `axum::serve`, for the head's read timeout
    // (a slow-loris client sending a byte now and then is cut at it; it
    // also bounds how long an idle keep-alive connection is kept).
    // HTTP/2 has no head read timeout in hyper: `http_conn::serve` closes
    // a connection with no request in flight for as long, for both.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let drain = Drain::new();
    loop {
        let (io, _addr) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (builder, service, signal) = (builder.clone(), TowerToHyperService::new(app.clone()), drain.signal());
        tokio::spawn(async move {
            if let Err(e) = http_conn::serve(&builder, io, service, header_read_timeout, signal).await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    // Finishes the requests in flight; `Server::run` bounds the wait.
    drain.shutdown().await;
}

/// A listener that accepts only while a connection permit is free; at the
/// bound, new HTTP connections wait in the kernel's backlog.
struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    /// HTTPS: each connection's handshake runs on its first read, in its
    /// own task, so a slow handshake never holds up the accept loop.
    tls: Option<Arc<TlsSource>>,
    handshake_ms: u64,
    /// For the open-connection gauge.
    state: Arc<ServerState>,
}

impl Listener for BoundedListener {
    type Io = Permitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Permitted, SocketAddr) {
        // The semaphore is never closed, so acquiring cannot fail; if it
        // ever did, serving without a permit beats refusing everyone.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(tls) => Stream::lazy_tls(tls.acceptor(), stream, self.handshake_ms),
        };
        let open = self.state.observe().http().opened();
        (Permitted { stream, _permit: permit, _open: open }, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection and the permit it holds until it is dropped.
struct Permitted {
    stream: Stream,
    _permit: Option<OwnedSemaphorePermit>,
    _open: OpenConnection,
}

impl AsyncRead for Permitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

fn router(state: Arc<ServerState>) -> Router {
    let body_max = state.config().http_body_bytes_max;
    Router::new()
        .route("/v1/command", post(command))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::api::routes(state.clone()))
        .layer(DefaultBodyLimit::max(body_max))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http_body::guard))
        // Outside the body guard: a client is authenticated before any of
        // its body is read.
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate_command))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::api::around))
        .with_state(state)
}

/// Who sent a `/v1/command` request, as [`authenticate_command`] found
/// from its headers; `None` without ACL users.
#[derive(Clone)]
struct CommandUser(Option<Arc<AclUser>>);

/// Authenticates `POST /v1/command` from its headers alone (the API routes
/// are authenticated in `crate::api::around`, which leaves this one to
/// answer in its own error format). A client that is refused gets its 401
/// before a byte of its body is read, so it never holds a body buffer or a
/// body-read wait; the connection is then closed, the body unread.
async fn authenticate_command(State(state): State<Arc<ServerState>>, mut req: Request, next: Next) -> Response {
    if req.uri().path() != "/v1/command" {
        return next.run(req).await;
    }
    match crate::http_auth::authenticate(&state, req.headers()) {
        Ok(user) => {
            req.extensions_mut().insert(CommandUser(user));
            next.run(req).await
        }
        Err(_) => {
            state.counters().add(InfoCounter::CommandsProcessed, 1);
            let mut resp = refused(&state, &CmdError::new(ErrorCode::NoAuth, "send Authorization: Bearer <password>"));
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

async fn command(
    State(state): State<Arc<ServerState>>,
    Extension(CommandUser(user)): Extension<CommandUser>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.counters().add(InfoCounter::CommandsProcessed, 1);
    let result = run(&state, user, body).await;
    match result {
        Ok(reply) => (StatusCode::OK, Json(reply_json(&reply))).into_response(),
        Err(e) => refused(&state, &e),
    }
}

/// The error reply to a command, counted.
fn refused(state: &ServerState, e: &CmdError) -> Response {
    state.counters().add(InfoCounter::ErrorReplies, 1);
    let text = e.to_string();
    state.metrics().error(&text, Transport::Http);
    error_response(e)
}

async fn run(
    state: &ServerState,
    user: Option<Arc<AclUser>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, CmdError> {
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            CmdError::limit(format!("request body is over the limit of {} bytes", state.config().http_body_bytes_max))
        } else {
            CmdError::syntax(format!("cannot read request body: {}", rej.body_text()))
        }
    })?;
    let args = parse_args(&body, state.config().args_max)?;
    if let Some((i, name)) = cmd::lookup(&args[0]) {
        state.metrics().command(CommandLabel::server(i), Transport::Http);
        return Err(CmdError::syntax(format!("{name} is a RESP server command; HTTP serves the primitives only")));
    }
    let command = match Command::parse(&args, &state.config().limits) {
        Ok(c) => {
            let label = CommandLabel::primitive(&c);
            state.metrics().command(label, Transport::Http);
            if let Some(user) = &user {
                user.check_primitive(label.index(), &c)?;
            }
            c
        }
        Err(e) => {
            state.metrics().command(CommandLabel::of_name(&args[0]), Transport::Http);
            return Err(e);
        }
    };
    let probe = state.observe().probe(std::slice::from_ref(&command));
    let result = state.backend().execute(command).await;
    state.observe().finish(probe, std::slice::from_ref(&result));
    result
}

/// The HTTP status for an error code (the table in the module docs).
pub(crate) fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Err => StatusCode::BAD_REQUEST,
        ErrorCode::Limit => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Stale => StatusCode::CONFLICT,
        ErrorCode::NoAuth => StatusCode::UNAUTHORIZED,
        ErrorCode::NoPerm => StatusCode::FORBIDDEN,
        ErrorCode::ReadOnly | ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unknown => StatusCode::BAD_GATEWAY,
        ErrorCode::Oom => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: &CmdError) -> Response {
    let body = Json(json!({ "error": e.code.as_str(), "message": e.message }));
    let mut resp = (status_for(e.code), body).into_response();
    if e.code == ErrorCode::Busy {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A reply as JSON (see the module docs).
pub(crate) fn reply_json(r: &Reply) -> Value {
    match r {
        Reply::Word(w) => Value::String((*w).to_owned()),
        Reply::Bulk(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => json!({ "base64": base64::encode(b) }),
        },
        Reply::Int(n) => Value::from(*n),
        Reply::Nil => Value::Null,
        Reply::Array(items) => Value::Array(items.iter().map(reply_json).collect()),
    }
}

/// Parses the body into arguments, stopping as soon as there are more than
/// `args_max`: a body of a million tiny elements is refused while reading,
/// not after building a million values.
pub(crate) fn parse_args(body: &[u8], args_max: usize) -> Result<Vec<Bytes>, CmdError> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = ArgsSeed { max: args_max, over: &over }.deserialize(&mut de).and_then(|v| de.end().map(|_| v));
    match parsed {
        Ok(args) if args.is_empty() => Err(CmdError::syntax("empty command: send [\"NAME\", args...]")),
        Ok(args) => Ok(args),
        Err(_) if over.get() => Err(CmdError::limit(format!("a command takes at most {args_max} arguments"))),
        Err(e) => Err(CmdError::syntax(format!(
            "body must be a JSON array of strings or {{\"base64\": \"...\"}} objects: {e}"
        ))),
    }
}

struct ArgsSeed<'a> {
    max: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for ArgsSeed<'_> {
    type Value = Vec<Bytes>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArgsSeed<'_> {
    type Value = Vec<Bytes>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Arg(b)) = seq.next_element()? {
            if out.len() == self.max {
                self.over.set(true);
                return Err(de::Error::custom("too many arguments"));
            }
            out.push(b);
        }
        Ok(out)
    }
}

/// One argument: a string, or `{"base64": "..."}`.
struct Arg(Bytes);

impl<'de> de::Deserialize<'de> for Arg {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArgVisitor)
    }
}

struct ArgVisitor;

impl<'de> Visitor<'de> for ArgVisitor {
    type Value = Arg;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or {\"base64\": \"...\"}")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Arg, E> {
        Ok(Arg(Bytes::copy_from_slice(s.as_bytes())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Arg, E> {
        Ok(Arg(Bytes::from(s)))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Arg, M::Error> {
        let mut value = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "base64" || value.is_some() {
                return Err(de::Error::custom("an object argument must be exactly {\"base64\": \"...\"}"));
            }
            let text: String = map.next_value()?;
            value = Some(base64::decode(&text).ok_or_else(|| de::Error::custom("invalid base64"))?);
        }
        value.map(|v| Arg(Bytes::from(v))).ok_or_else(|| de::Error::custom("missing \"base64\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_from_json() {
        let args = parse_args(br#"["IDEM.BEGIN","k",{"base64":"AP8="}]"#, 8).unwrap();
        assert_eq!(args, vec![Bytes::from("IDEM.BEGIN"), Bytes::from("k"), Bytes::from(vec![0u8, 255])]);
        assert_eq!(parse_args(b"[1]", 8).unwrap_err().code, ErrorCode::Err);
        assert_eq!(parse_args(b"{}", 8).unwrap_err().code, ErrorCode::Err);
        assert_eq!(parse_args(b"[]", 8).unwrap_err().code, ErrorCode::Err);
        assert_eq!(parse_args(br#"["a"] x"#, 8).unwrap_err().code, ErrorCode::Err);
        assert_eq!(parse_args(br#"["a","b","c"]"#, 2).unwrap_err().code, ErrorCode::Limit);
    }

    #[test]
    fn replies_to_json() {
        let r = Reply::Array(vec![
            Reply::Word("done"),
            Reply::Bulk(Bytes::from_static(&[0xff, 0])),
            Reply::Int(-3),
            Reply::Nil,
        ]);
        assert_eq!(reply_json(&r), json!(["done", {"base64": "/wA="}, -3, null]));
    }
}
