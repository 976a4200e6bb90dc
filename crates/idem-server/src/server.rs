//! The listener: binds, accepts, bounds the number of connections, spawns
//! one task per connection and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use idem_core::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::acl::Acl;
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::loops::{EventLoops, EVENT_LOOPS_MAX};
use crate::state::{InfoCounter, ServerState};
use crate::tls::{reload_on_sighup, TlsSource};
use crate::{conn, http};

/// Backlog of the listening socket; the kernel caps it at `somaxconn`.
/// Large so that a burst of thousands of connects is queued, not refused.
const LISTEN_BACKLOG: u32 = 4096;

/// Most connections being turned away at once, each by a short task that
/// writes its `-BUSY` line and closes politely. When all are busy, the
/// accept loop waits for one (at most `REJECT_LINGER`) and further
/// connections wait in the backlog: a connect flood cannot grow the number
/// of tasks, and every turned-away client still reads its `-BUSY`.
const REJECTERS_MAX: usize = 1024;

/// How long a turned-away connection is given to read its `-BUSY` line.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A bound, not yet running, idem server.
///
/// ```no_run
/// # async fn example(backend: std::sync::Arc<dyn idem_core::Backend>) -> Result<(), idem_server::ServerError> {
/// let server = idem_server::Server::bind(idem_server::ServerConfig::default()).await?;
/// println!("listening on {}", server.local_addr());
/// server.run(backend, idem_server::shutdown_signal()).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    /// The plain RESP listener; `None` in TLS-only mode.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    http: Option<(TcpListener, SocketAddr)>,
    /// RESP over TLS.
    tls_listener: Option<(TcpListener, SocketAddr)>,
    /// HTTP over TLS.
    https: Option<(TcpListener, SocketAddr)>,
    tls: Option<Arc<TlsSource>>,
    acl: Acl,
    /// Whether per-command figures are kept (see [`Server::metrics`]).
    metrics: bool,
}

impl Server {
    /// Validates `config` and binds its RESP address (and its HTTP address,
    /// if any). Bind port 0 to get a free port, then read [`Server::local_addr`].
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        validate(&config)?;
        let acl = Acl::build(&config.users, config.password.as_deref()).map_err(ServerError::Config)?;
        let tls = match &config.tls {
            None => None,
            Some(files) => Some(Arc::new(TlsSource::load(files).map_err(ServerError::Config)?)),
        };
        let listen_opt = |addr: Option<SocketAddr>| -> Result<Option<(TcpListener, SocketAddr)>, ServerError> {
            match addr {
                None => Ok(None),
                Some(addr) => {
                    let l = listen(addr)?;
                    let a = l.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
                    Ok(Some((l, a)))
                }
            }
        };
        let plain = listen_opt((!config.tls_only).then_some(config.bind))?;
        let http = listen_opt(config.http_bind.filter(|_| !config.tls_only))?;
        let tls_listener = listen_opt(config.tls_bind)?;
        let https = listen_opt(config.https_bind)?;
        let local_addr = match (&plain, &tls_listener) {
            (Some((_, a)), _) | (None, Some((_, a))) => *a,
            (None, None) => unreachable!("validate requires a RESP listener"),
        };
        let listener = plain.map(|(l, _)| l);
        Ok(Server { config, listener, local_addr, http, tls_listener, https, tls, acl, metrics: true })
    }

    /// Keeps (the default) or skips the per-command figures: outcomes,
    /// duplicates absorbed and latency. Off, `/metrics` and INFO still show
    /// connections, the store and the WAL.
    pub fn metrics(mut self, on: bool) -> Server {
        self.metrics = on;
        self
    }

    /// The RESP address actually bound: the plain one, or in TLS-only mode
    /// the TLS one.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTP address actually bound, when `http_bind` was set (and not
    /// in TLS-only mode).
    pub fn http_local_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, a)| *a)
    }

    /// The RESP-over-TLS address actually bound, when `tls_bind` was set.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().map(|(_, a)| *a)
    }

    /// The HTTPS address actually bound, when `https_bind` was set.
    pub fn https_local_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|(_, a)| *a)
    }

    /// The TLS configuration in force, to reload it (the server reloads it
    /// itself on SIGHUP).
    pub fn tls(&self) -> Option<Arc<TlsSource>> {
        self.tls.clone()
    }

    /// Serves until `shutdown` completes. Then it stops accepting, lets each
    /// connection finish the batch in flight and write its replies (for at
    /// most `shutdown_grace_ms`), closes them, and finally calls
    /// [`Backend::shutdown`].
    pub async fn run<F>(self, backend: Arc<dyn Backend>, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        let Server { config, listener, local_addr, http, tls_listener, https, tls, acl, metrics } = self;
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        let observe = crate::observe::Observe::new(metrics);
        let state = Arc::new(ServerState::new(config, acl, backend.clone(), local_addr.port(), observe));
        let reloader = tls.clone().and_then(reload_on_sighup);
        let (stop_tx, stop_rx) = watch::channel(false);

        let permits = Arc::new(Semaphore::new(state.config().max_connections));
        // HTTP gets its own pool of the same size: slow HTTP clients (hyper
        // has no header timeout here) must not starve RESP of connections.
        let http_permits = Arc::new(Semaphore::new(state.config().max_connections));
        let http_task =
            http.map(|(l, _)| tokio::spawn(http::serve(l, None, state.clone(), http_permits.clone(), stop_rx.clone())));
        let https_task = https
            .zip(tls.clone())
            .map(|((l, _), t)| tokio::spawn(http::serve(l, Some(t), state.clone(), http_permits, stop_rx.clone())));
        let tls_listener = tls_listener.map(|(l, _)| l);
        let mut loops = match state.config().event_loops {
            0 => None,
            n => match EventLoops::start(n, backend.loop_hooks()) {
                Ok(loops) => Some(loops),
                Err(e) => {
                    tracing::error!(error = %e, loops = n, "cannot start the event loops; serving connections on the caller's runtime");
                    None
                }
            },
        };
        let rejecters = Arc::new(Semaphore::new(REJECTERS_MAX));
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept(listener.as_ref(), tls_listener.as_ref(), tls.as_deref()) => match accepted {
                    Ok((stream, acceptor)) => {
                        state.counters().add(InfoCounter::ConnectionsReceived, 1);
                        match permits.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let (state, stop_rx) = (state.clone(), stop_rx.clone());
                                match &mut loops {
                                    None => {
                                        conns.spawn(async move {
                                            conn::serve(stream, acceptor, state, stop_rx).await;
                                            drop(permit);
                                        });
                                    }
                                    // The socket moves to the loop's own reactor.
                                    Some(loops) => match stream.into_std() {
                                        Ok(std_stream) => {
                                            conns.spawn_on(async move {
                                                match TcpStream::from_std(std_stream) {
                                                    Ok(stream) => conn::serve(stream, acceptor, state, stop_rx).await,
                                                    Err(e) => tracing::warn!(error = %e, "cannot register a connection with its event loop"),
                                                }
                                                drop(permit);
                                            }, loops.next());
                                        }
                                        Err(e) => tracing::warn!(error = %e, "cannot move a connection to an event loop"),
                                    },
                                }
                            }
                            Err(_) => reject(stream, &state, &rejecters).await,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; pausing");
                        tokio::select! {
                            _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                            _ = &mut shutdown => break,
                        }
                    }
                },
                // Reap finished connection tasks so the set holds only live ones.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }

        // Stop accepting: closing the listener makes new connects fail at once.
        drop(listener);
        drop(tls_listener);
        if let Some(r) = reloader {
            r.abort();
        }
        tracing::info!(connections = conns.len(), "shutting down: finishing batches in flight");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(grace, async {
            while conns.join_next().await.is_some() {}
            for t in [http_task, https_task].into_iter().flatten() {
                let _ = t.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(left = conns.len(), "shutdown grace period over; cutting connections");
            conns.shutdown().await;
        }
        if let Some(loops) = loops {
            loops.stop().await;
        }
        backend.shutdown().await;
        tracing::info!("shut down");
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: pass it to [`Server::run`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The next connection from either RESP listener, with the TLS acceptor to
/// use when it came in on the TLS one.
async fn accept(
    plain: Option<&TcpListener>,
    tls_listener: Option<&TcpListener>,
    tls: Option<&TlsSource>,
) -> std::io::Result<(TcpStream, Option<tokio_rustls::TlsAcceptor>)> {
    let plain = async {
        match plain {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    };
    let secure = async {
        match (tls_listener, tls) {
            (Some(l), Some(_)) => l.accept().await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        r = plain => r.map(|(s, _)| (s, None)),
        r = secure => r.map(|(s, _)| (s, tls.map(TlsSource::acceptor))),
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    // Lets a restarted server bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

fn validate(c: &ServerConfig) -> Result<(), ServerError> {
    let positive = [
        ("max_connections", c.max_connections),
        ("bulk_bytes_max", c.bulk_bytes_max),
        ("args_max", c.args_max),
        ("inline_bytes_max", c.inline_bytes_max),
        ("query_buffer_bytes_max", c.query_buffer_bytes_max),
        ("query_buffer_bytes_max_unauth", c.query_buffer_bytes_max_unauth),
        ("output_buffer_bytes_max", c.output_buffer_bytes_max),
        ("batch_commands_max", c.batch_commands_max),
        ("http_body_bytes_max", c.http_body_bytes_max),
        ("client_buffers_bytes_max", c.client_buffers_bytes_max),
        ("http_header_read_timeout_ms", c.http_header_read_timeout_ms as usize),
        ("http_body_read_timeout_ms", c.http_body_read_timeout_ms as usize),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(ServerError::Config(format!("{name} must be at least 1")));
        }
    }
    if c.event_loops > EVENT_LOOPS_MAX {
        return Err(ServerError::Config(format!("event_loops must be at most {EVENT_LOOPS_MAX}")));
    }
    // The semaphore's documented maximum.
    if c.max_connections > Semaphore::MAX_PERMITS {
        return Err(ServerError::Config(format!("max_connections must be at most {}", Semaphore::MAX_PERMITS)));
    }
    // Framing must let a value just over the value limit through, so that
    // it gets the parser's LIMIT reply on a connection that stays usable.
    if c.bulk_bytes_max <= c.limits.value_bytes_max {
        return Err(ServerError::Config(format!(
            "bulk_bytes_max ({}) must be larger than limits.value_bytes_max ({})",
            c.bulk_bytes_max, c.limits.value_bytes_max
        )));
    }
    if c.password.as_deref() == Some("") {
        return Err(ServerError::Config("password must not be empty (use None for no password)".into()));
    }
    if c.tls.is_none() && (c.tls_bind.is_some() || c.https_bind.is_some()) {
        return Err(ServerError::Config("tls_bind and https_bind need tls (a certificate and key)".into()));
    }
    if c.tls_only && c.tls_bind.is_none() {
        return Err(ServerError::Config("tls_only needs tls_bind: RESP must be served somewhere".into()));
    }
    if c.tls.is_some() && c.tls_handshake_timeout_ms == 0 {
        return Err(ServerError::Config("tls_handshake_timeout_ms must be at least 1".into()));
    }
    Ok(())
}

/// Turns a connection away with `-BUSY max connections reached`.
async fn reject(stream: TcpStream, state: &ServerState, rejecters: &Arc<Semaphore>) {
    state.counters().add(InfoCounter::ConnectionsRejected, 1);
    state.metrics().connection_rejected();
    let permit = rejecters.clone().acquire_owned().await.expect("the rejecters' semaphore is never closed");
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        // Awaited, not `try_write`: a socket just accepted is not known to
        // be writable until the reactor has seen it, and `try_write` would
        // then give up without writing. The send buffer is empty, so this
        // completes as soon as the socket is registered.
        let _ = tokio::time::timeout(REJECT_LINGER, stream.write_all(b"-BUSY max connections reached\r\n")).await;
        // Read (and discard) what the client sent meanwhile before closing:
        // closing with unread input makes the kernel send a reset, which can
        // destroy the BUSY line before the client reads it.
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(REJECT_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}
