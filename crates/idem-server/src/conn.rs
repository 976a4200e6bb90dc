//! One client connection: read requests, run them, write replies.
//!
//! The loop, per round:
//! 1. cut every complete request out of the read buffer (up to
//!    `batch_commands_max`), refusing oversized ones while checking;
//! 2. run them in order: consecutive primitives go to the backend in ONE
//!    `execute_batch` call; a server command (PING, HELLO, ...) splits the
//!    batch so that replies keep the order of the requests;
//! 3. write all replies (one write for a normal batch), then read again.
//!
//! Backpressure: nothing is read while replies are pending, so a client that
//! pipelines without reading stalls its own connection, not the server's
//! memory. A write that makes no progress for `write_timeout_ms`, or pending
//! output over `output_buffer_bytes_max`, disconnects the client.

use std::future::Future;
use std::io;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::FutureExt;
use idem_core::{CmdError, Command, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::buffers::Tracked;
use crate::cmd::{self, ServerCmd, Session};
use crate::metrics::{CommandLabel, Transport};
use crate::resp::{self, Frame, FrameLimits, ProtocolError};
use crate::state::{InfoCounter, ServerState};
use crate::tls::{self, Stream};
use crate::wake_gate::Gated;

/// Bytes asked of the socket per read. Redis uses the same 16 KiB.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Pending output above this is written before more replies are encoded,
/// so a batch of large replies never sits in memory all at once.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Buffers larger than this are given back while a connection waits for
/// input: ten thousand idle clients must not pin ten thousand buffers. It is
/// also the read size after a read that did not fill its window, so that
/// the read buffer of a connection sending small requests stays under this
/// bound and is reused from one request to the next instead of being freed
/// and allocated again every time the connection waits.
const IDLE_BUFFER_BYTES_MAX: usize = 4 * 1024;

/// The unit in which a connection's buffers are counted against
/// `client_buffers_bytes_max` (see `Conn::report_buffers`). Rounding up
/// over-counts by less than this per buffer, so the bound still holds.
const REPORT_GRANULE_BYTES: usize = 1024;

/// After a protocol error, how long and how much in-flight input is
/// discarded before closing (see `protocol_error`).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Serves one accepted connection until it closes, fails or shutdown; over
/// TLS when `tls` is given (the handshake runs here, in the connection's
/// own task, bounded by `tls_handshake_timeout_ms`).
pub(crate) async fn serve(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
    shutdown: watch::Receiver<bool>,
) {
    // Replies are small and latency matters more than packet count: batching
    // already happens per pipeline, Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let _open = OpenGuard::new(&state);
    let stream = match tls {
        None => Stream::Plain(stream),
        Some(acceptor) => match tls::accept(acceptor, stream, state.config().tls_handshake_timeout_ms).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    let session = Session::new(state.next_client_id(), &state);
    // Registered with the channel once, for the life of the connection:
    // `shutdown.changed()` at every read would add and remove a waiter (a
    // lock of a mutex that every connection shares) each time.
    let mut stop_rx = shutdown.clone();
    let stopping = async move {
        let _ = stop_rx.changed().await;
    };
    let buffers = state.buffers().register();
    // Registered once too, for the same reason: a wait for eviction made
    // at every read and write would add and remove a waiter of its `Notify`.
    let usage = buffers.usage().clone();
    let evicting = async move { usage.evicted().await };
    let mut conn = Conn {
        stream,
        buffers,
        stopping: Gated::new(Box::pin(stopping.fuse())),
        evicting: Gated::new(Box::pin(evicting.fuse())),
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        read_filled: false,
        args: Vec::new(),
        ends: Vec::new(),
        slots: Vec::new(),
        session,
        state,
        shutdown,
    };
    match conn.run().await {
        Err(e) if e.kind() == EVICTED => conn.close_evicted().await,
        Err(e) => tracing::debug!(client = conn.session.id, error = %e, "connection closed"),
        Ok(()) => {}
    }
}

/// The error kind that ends an evicted connection (see `buffers`).
const EVICTED: io::ErrorKind = io::ErrorKind::OutOfMemory;

fn evicted_error() -> io::Error {
    io::Error::new(EVICTED, "evicted: the buffers of all clients are over client_buffers_bytes_max")
}

/// Keeps `connected_clients` right even when the task is aborted.
struct OpenGuard(Arc<ServerState>);

impl OpenGuard {
    fn new(state: &Arc<ServerState>) -> OpenGuard {
        state.counters().add(InfoCounter::ConnectedClients, 1);
        state.metrics().connection_accepted();
        OpenGuard(state.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.counters().take_one(InfoCounter::ConnectedClients);
        self.0.metrics().connection_closed();
    }
}

struct Conn {
    stream: Stream,
    /// This connection's share of `client_buffers_bytes_max`.
    buffers: Tracked,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Whether the last read filled its whole window: more input is
    /// probably streaming in, so the next read asks for `READ_CHUNK_BYTES`.
    read_filled: bool,
    /// The arguments of every request of the batch, back to back. This and
    /// the two vectors below live as long as the connection, so a batch
    /// allocates none of them (see `shrink_idle`).
    args: Vec<Bytes>,
    /// Where each request of the batch ends in `args`.
    ends: Vec<usize>,
    /// One reply slot per request of the segment being run.
    slots: Vec<Slot>,
    session: Session,
    state: Arc<ServerState>,
    shutdown: watch::Receiver<bool>,
    /// Completes when shutdown starts (or the server is gone). Gated: a
    /// wait for input polls it only after it woke the task.
    stopping: Gated<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Completes when this client is evicted (see `buffers`). Gated too.
    evicting: Gated<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// Whether the connection goes on after a batch.
enum Next {
    Continue,
    Close,
}

/// A reply slot in a segment of primitives: ready at once (a parse error,
/// NOAUTH) or filled by the backend's result.
enum Slot {
    Ready(Frame),
    Backend,
}

impl Conn {
    async fn run(&mut self) -> io::Result<()> {
        loop {
            let limits = self.frame_limits();
            let error = self.take_frames(&limits);
            let had_frames = !self.ends.is_empty();
            if had_frames {
                if let Next::Close = self.run_batch().await? {
                    return Ok(());
                }
            }
            if let Some(e) = error {
                return self.protocol_error(e).await;
            }
            // On shutdown, the batch in flight is done and answered: close.
            if *self.shutdown.borrow() {
                return Ok(());
            }
            // More complete requests may be buffered (batch_commands_max).
            if had_frames {
                continue;
            }
            if !self.read_more(&limits).await? {
                return Ok(());
            }
        }
    }

    /// The framing bounds now: tighter before authentication.
    fn frame_limits(&self) -> FrameLimits {
        let c = &self.state.config();
        let frame_bytes_max =
            if self.session.authenticated { c.query_buffer_bytes_max } else { c.query_buffer_bytes_max_unauth };
        FrameLimits {
            bulk_bytes_max: c.bulk_bytes_max,
            args_max: c.args_max,
            inline_bytes_max: c.inline_bytes_max,
            frame_bytes_max,
        }
    }

    /// Cuts complete requests out of the read buffer into `args` and
    /// `ends`. Stops at a protocol error (returned after the good requests
    /// before it, which still run).
    fn take_frames(&mut self, limits: &FrameLimits) -> Option<ProtocolError> {
        self.args.clear();
        self.ends.clear();
        while self.ends.len() < self.state.config().batch_commands_max {
            let start = self.args.len();
            match resp::take_request(&mut self.rbuf, limits, &mut self.args) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.args.truncate(start);
                    return Some(e);
                }
            }
            let Some(name) = self.args.get(start) else {
                continue; // `*0` or a blank line: no reply is due.
            };
            // Before authentication, stop after AUTH or HELLO: the requests
            // behind it must be checked against the bounds that hold after it.
            let authenticates = !self.session.authenticated
                && (name.eq_ignore_ascii_case(b"AUTH") || name.eq_ignore_ascii_case(b"HELLO"));
            self.ends.push(self.args.len());
            if authenticates {
                break;
            }
        }
        None
    }

    /// Runs the batch in `args` and `ends` in order and writes its replies.
    async fn run_batch(&mut self) -> io::Result<Next> {
        // Taken out of `self` while the batch runs (the requests borrow them
        // while replies need `&mut self`), then put back empty, keeping their
        // capacity for the next batch.
        let mut args = mem::take(&mut self.args);
        let mut ends = mem::take(&mut self.ends);
        let mut slots = mem::take(&mut self.slots);
        let next = self.run_requests(&args, &ends, &mut slots).await;
        // Dropping the arguments now lets the read buffer be reused.
        args.clear();
        ends.clear();
        slots.clear();
        (self.args, self.ends, self.slots) = (args, ends, slots);
        next
    }

    async fn run_requests(&mut self, args: &[Bytes], ends: &[usize], slots: &mut Vec<Slot>) -> io::Result<Next> {
        // Allocated at the first primitive of a segment, for every request
        // left: `execute_batch` takes it by value, so it cannot be reused,
        // but it is sized once instead of regrown.
        let mut cmds: Vec<Command> = Vec::new();
        let state = self.state.clone();
        state.counters().add(InfoCounter::CommandsProcessed, ends.len() as u64);
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            let request = &args[start..end];
            start = end;
            if let Some((index, name)) = cmd::lookup(&request[0]) {
                state.metrics().command(CommandLabel::server(index), Transport::Resp);
                // A server command splits the batch: everything before it
                // runs and is answered first, so replies keep request order.
                self.run_segment(&mut cmds, slots).await?;
                let frame = self.server_command(index, name, request).await;
                self.reply(frame).await?;
                if self.session.quit {
                    self.flush().await?;
                    return Ok(Next::Close);
                }
                continue;
            }
            if !self.session.authenticated {
                state.metrics().command(CommandLabel::of_name(&request[0]), Transport::Resp);
                slots.push(Slot::Ready(noauth()));
                continue;
            }
            match Command::parse(request, &state.config().limits) {
                Ok(c) => {
                    let label = CommandLabel::primitive(&c);
                    state.metrics().command(label, Transport::Resp);
                    if let Some(user) = &self.session.user {
                        if let Err(e) = user.check_primitive(label.index(), &c) {
                            slots.push(Slot::Ready(e.into()));
                            continue;
                        }
                    }
                    if cmds.capacity() == 0 {
                        cmds.reserve_exact(ends.len() - i);
                    }
                    cmds.push(c);
                    slots.push(Slot::Backend);
                }
                Err(e) => {
                    state.metrics().command(CommandLabel::of_name(&request[0]), Transport::Resp);
                    slots.push(Slot::Ready(e.into()));
                }
            }
        }
        self.run_segment(&mut cmds, slots).await?;
        self.flush().await?;
        Ok(Next::Continue)
    }

    /// Sends the pending primitives to the backend in one call and encodes
    /// every reply of the segment in order.
    async fn run_segment(&mut self, cmds: &mut Vec<Command>, slots: &mut Vec<Slot>) -> io::Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let count = cmds.len();
        let probe = self.state.observe().probe(cmds);
        let results = if cmds.is_empty() {
            Vec::new()
        } else if cmds.iter().any(|c| c.wait_ms() > 0) {
            // A WAIT may park for minutes. If the client goes away meanwhile,
            // drop the batch (the backend abandons its parked waits) rather
            // than hold a waiter slot for nobody, as Redis frees a blocked
            // client that disconnects.
            let batch = self.state.backend().execute_batch(mem::take(cmds));
            tokio::select! {
                results = batch => results,
                _ = peer_closed(self.stream.tcp().expect("the handshake is done before serving")) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client left during a WAIT"));
                }
            }
        } else {
            self.state.backend().execute_batch(mem::take(cmds)).await
        };
        // `Backend::execute_batch` returns one result per command, in order.
        // A backend that breaks that is a bug, and any reply written after it
        // would answer the wrong request: the connection's task stops here.
        assert_eq!(
            results.len(),
            count,
            "backend {} answered {} of {count} commands",
            self.state.backend().name(),
            results.len()
        );
        self.state.observe().finish(probe, &results);
        let mut results = results.into_iter();
        for slot in slots.drain(..) {
            let frame = match slot {
                Slot::Ready(f) => f,
                Slot::Backend => results.next().expect("one result per backend slot, counted above").into(),
            };
            self.reply(frame).await?;
        }
        Ok(())
    }

    async fn server_command(&mut self, index: usize, name: &'static str, args: &[Bytes]) -> Frame {
        if !self.session.authenticated && !ServerCmd::allowed_unauthenticated(name) {
            return noauth();
        }
        match ServerCmd::parse(name, args) {
            Ok(c) => {
                if let (Some(user), false) = (&self.session.user, c.always_allowed()) {
                    if let Err(e) = user.check_server(index) {
                        return e.into();
                    }
                }
                c.apply(&mut self.session, &self.state).await
            }
            Err(e) => e.into(),
        }
    }

    /// Encodes one reply; writes when enough output has accumulated.
    async fn reply(&mut self, frame: Frame) -> io::Result<()> {
        if let Frame::Error(text) = &frame {
            self.state.counters().add(InfoCounter::ErrorReplies, 1);
            self.state.metrics().error(text, Transport::Resp);
        }
        resp::encode(&frame, self.session.proto, &mut self.wbuf);
        self.report_buffers()?;
        let max = self.state.config().output_buffer_bytes_max;
        if self.wbuf.len() > max {
            self.slow_client();
            return Err(io::Error::other(format!("pending output over the limit of {max} bytes")));
        }
        if self.wbuf.len() >= WRITE_CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes all pending output. Each write must make progress within
    /// `write_timeout_ms`, or the client is cut: it is not reading.
    async fn flush(&mut self) -> io::Result<()> {
        let timeout_ms = self.state.config().write_timeout_ms;
        self.try_write_plain()?;
        while !self.wbuf.is_empty() {
            let Conn { stream, wbuf, evicting, .. } = self;
            // A client that does not read its replies is the likely one to
            // be evicted: stop waiting for it then.
            let write = async {
                tokio::select! {
                    biased;
                    r = stream.write(wbuf) => r,
                    _ = evicting => Err(evicted_error()),
                }
            };
            let n = if timeout_ms == 0 {
                write.await?
            } else {
                match tokio::time::timeout(Duration::from_millis(timeout_ms), write).await {
                    Ok(r) => r?,
                    Err(_) => {
                        self.slow_client();
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("client read no replies for {timeout_ms} ms"),
                        ));
                    }
                }
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.wbuf.advance(n);
        }
        if let Stream::Tls(_) = self.stream {
            // TLS may hold encrypted bytes the socket did not take yet.
            let flush = self.stream.flush();
            if timeout_ms == 0 {
                flush.await?;
            } else if tokio::time::timeout(Duration::from_millis(timeout_ms), flush).await.is_err() {
                self.slow_client();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("client read no replies for {timeout_ms} ms"),
                ));
            }
        }
        Ok(())
    }

    /// Writes what the socket takes at once, without waiting: a plain
    /// connection's replies almost always fit its send buffer, and then
    /// `flush` sets up no timer and no wait for eviction.
    fn try_write_plain(&mut self) -> io::Result<()> {
        let Stream::Plain(tcp) = &self.stream else { return Ok(()) };
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if self.buffers.usage().is_evicted() {
            return Err(evicted_error());
        }
        match tcp.try_write(&self.wbuf) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.wbuf.advance(n);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn slow_client(&self) {
        self.state.counters().add(InfoCounter::SlowClientsDisconnected, 1);
        self.state.metrics().slow_client_disconnected();
        tracing::info!(client = self.session.id, "disconnecting a client that does not read its replies");
    }

    /// Reports what the read and write buffers hold now to the bound on
    /// all clients' buffers; fails when this client is evicted.
    ///
    /// Each buffer counts as its capacity rounded up to
    /// `REPORT_GRANULE_BYTES`: cutting a request out of the read buffer, or
    /// writing the replies out of the write buffer, shrinks its capacity by
    /// a few bytes until the next `reserve` takes them back, and reporting
    /// each such change would cost two shared atomic updates per request.
    fn report_buffers(&mut self) -> io::Result<()> {
        let granule = |b: &BytesMut| b.capacity().next_multiple_of(REPORT_GRANULE_BYTES);
        if self.buffers.report(granule(&self.rbuf) + granule(&self.wbuf)) {
            Ok(())
        } else {
            Err(evicted_error())
        }
    }

    /// Ends an evicted connection: gives its buffers back at once, tells
    /// the client why when no reply is half written, and closes as after a
    /// protocol error (reading what is in flight, into a fixed buffer, so
    /// that the close is not a reset).
    async fn close_evicted(&mut self) {
        tracing::info!(client = self.session.id, "client evicted: client_buffers_bytes_max");
        let whole_replies = self.wbuf.is_empty();
        self.rbuf = BytesMut::new();
        self.wbuf = BytesMut::new();
        if whole_replies {
            let line = format!("-ERR {}\r\n", evicted_error());
            let _ = tokio::time::timeout(LINGER, self.stream.write_all(line.as_bytes())).await;
        }
        self.linger().await;
    }

    /// Replies `-ERR Protocol error: ...` and ends the connection: after a
    /// framing error the next request's start is unknown.
    async fn protocol_error(&mut self, e: ProtocolError) -> io::Result<()> {
        self.state.counters().add(InfoCounter::ProtocolErrors, 1);
        self.state.metrics().protocol_error();
        tracing::debug!(client = self.session.id, error = %e, "protocol error");
        self.reply(Frame::Error(format!("ERR Protocol error: {e}"))).await?;
        self.flush().await?;
        self.linger().await;
        Ok(())
    }

    /// Shuts the write side and reads what the client still sends before
    /// the connection is dropped. Closing with unread input makes the
    /// kernel reset the connection, and a client still sending (say, a
    /// 3 MiB value) would see "reset" instead of the error. So read and
    /// discard what is in flight, into a fixed buffer, for a bounded time
    /// and size, before closing.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        let mut left = LINGER_BYTES_MAX;
        let _ = tokio::time::timeout(LINGER, async {
            while left > 0 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }

    /// Waits for input and appends it to the read buffer. Returns false
    /// when the connection should end: end of input, idle timeout, shutdown.
    async fn read_more(&mut self, limits: &FrameLimits) -> io::Result<bool> {
        if self.rbuf.is_empty() && self.rbuf.capacity() > IDLE_BUFFER_BYTES_MAX {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.capacity() > IDLE_BUFFER_BYTES_MAX {
            self.wbuf = BytesMut::new();
        }
        shrink_idle(&mut self.args);
        shrink_idle(&mut self.ends);
        shrink_idle(&mut self.slots);
        self.report_buffers()?;
        let idle_ms = self.state.config().idle_timeout_ms;
        let idle = async {
            if idle_ms == 0 {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(Duration::from_millis(idle_ms)).await
            }
        };
        tokio::pin!(idle);
        // Never read past the request bound (+1 byte, so that check() sees
        // the overflow): the buffer stays within its limit.
        let room = (limits.frame_bytes_max + 1).saturating_sub(self.rbuf.len()).max(1);
        let chunk = if self.read_filled { READ_CHUNK_BYTES } else { IDLE_BUFFER_BYTES_MAX };
        let want = room.min(chunk);
        self.rbuf.reserve(want);
        self.report_buffers()?;
        let mut buf = (&mut self.rbuf).limit(want);
        // `read_buf` rather than `readable()` + `try_read_buf`: tokio clears
        // the read readiness after a short read, which saves the empty
        // (EAGAIN) `recvfrom` that otherwise follows every request. It is
        // cancel-safe: when another branch wins, nothing was read. Biased,
        // read first: a read that is ready at once never polls the others.
        tokio::select! {
            biased;
            n = self.stream.read_buf(&mut buf) => {
                let n = n?;
                self.read_filled = n == want;
                Ok(n > 0)
            }
            _ = &mut self.stopping => Ok(false),
            _ = &mut self.evicting => Err(evicted_error()),
            _ = &mut idle => {
                tracing::debug!(client = self.session.id, "closing idle connection");
                Ok(false)
            }
        }
    }
}

/// Completes when the peer has closed (or reset) the connection; stays
/// pending while it is open, including when it has sent more requests,
/// which are left unread for the next batch.
async fn peer_closed(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        // Data is waiting: the client is alive. Readiness stays set while
        // it is unread, so stop polling instead of spinning.
        Ok(_) => std::future::pending::<()>().await,
    }
}

/// Gives back a per-connection vector that a large batch grew over
/// `IDLE_BUFFER_BYTES_MAX`, as the byte buffers are, while the connection
/// waits for input. Small ones are kept for the next batch.
fn shrink_idle<T>(v: &mut Vec<T>) {
    if v.capacity() * mem::size_of::<T>() > IDLE_BUFFER_BYTES_MAX {
        *v = Vec::new();
    }
}

fn noauth() -> Frame {
    CmdError::new(ErrorCode::NoAuth, "Authentication required.").into()
}
