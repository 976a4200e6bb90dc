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

use std::io;
use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use idem_core::{CmdError, Command, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::cmd::{self, ServerCmd, Session};
use crate::metrics;
use crate::resp::{self, Frame, FrameLimits, ProtocolError};
use crate::server::Shared;

/// Bytes asked of the socket per read. Redis uses the same 16 KiB.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Pending output above this is written before more replies are encoded,
/// so a batch of large replies never sits in memory all at once.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Buffers larger than this are given back while a connection waits for
/// input: ten thousand idle clients must not pin ten thousand buffers.
const IDLE_BUFFER_BYTES_MAX: usize = 4 * 1024;

const TRANSPORT: &str = "resp";

/// After a protocol error, how long and how much in-flight input is
/// discarded before closing (see `protocol_error`).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Serves one accepted connection until it closes, fails or shutdown.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    // Replies are small and latency matters more than packet count: batching
    // already happens per pipeline, Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let _open = OpenGuard::new(&shared);
    let session = Session {
        id: shared.next_client_id(),
        name: None,
        proto: resp::Protocol::Resp2,
        authenticated: shared.config.password.is_none(),
        quit: false,
    };
    let mut conn = Conn { stream, rbuf: BytesMut::new(), wbuf: BytesMut::new(), session, shared, shutdown };
    if let Err(e) = conn.run().await {
        tracing::debug!(client = conn.session.id, error = %e, "connection closed");
    }
}

/// Keeps `connected_clients` right even when the task is aborted.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: &Arc<Shared>) -> OpenGuard {
        shared.stats.connected_clients.fetch_add(1, Relaxed);
        metrics::connection_accepted();
        OpenGuard(shared.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.connected_clients.fetch_sub(1, Relaxed);
        metrics::connection_closed();
    }
}

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    session: Session,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
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
            let (frames, error) = self.take_frames(&limits);
            let had_frames = !frames.is_empty();
            if had_frames {
                if let Next::Close = self.run_batch(frames).await? {
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
        let c = &self.shared.config;
        let frame_bytes_max =
            if self.session.authenticated { c.query_buffer_bytes_max } else { c.query_buffer_bytes_max_unauth };
        FrameLimits {
            bulk_bytes_max: c.bulk_bytes_max,
            args_max: c.args_max,
            inline_bytes_max: c.inline_bytes_max,
            frame_bytes_max,
        }
    }

    /// Cuts complete requests out of the read buffer. Stops at a protocol
    /// error (returned after the good requests before it, which still run).
    fn take_frames(&mut self, limits: &FrameLimits) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
        let mut frames = Vec::new();
        while frames.len() < self.shared.config.batch_commands_max {
            let n = match resp::check(&self.rbuf, limits) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            };
            let args = match resp::parse(self.rbuf.split_to(n).freeze()) {
                Ok(args) => args,
                Err(e) => return (frames, Some(e)),
            };
            if args.is_empty() {
                continue; // `*0` or a blank line: no reply is due.
            }
            // Before authentication, stop after AUTH or HELLO: the requests
            // behind it must be checked against the bounds that hold after it.
            let authenticates = !self.session.authenticated
                && (args[0].eq_ignore_ascii_case(b"AUTH") || args[0].eq_ignore_ascii_case(b"HELLO"));
            frames.push(args);
            if authenticates {
                break;
            }
        }
        (frames, None)
    }

    /// Runs one batch in order and writes its replies.
    async fn run_batch(&mut self, frames: Vec<Vec<Bytes>>) -> io::Result<Next> {
        let mut cmds: Vec<Command> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        let stats = &self.shared.stats;
        stats.commands_processed.fetch_add(frames.len() as u64, Relaxed);
        for args in frames {
            metrics::command(&args[0], TRANSPORT);
            if let Some(name) = cmd::lookup(&args[0]) {
                // A server command splits the batch: everything before it
                // runs and is answered first, so replies keep request order.
                self.run_segment(&mut cmds, &mut slots).await?;
                let frame = self.server_command(name, args).await;
                self.reply(frame).await?;
                if self.session.quit {
                    self.flush().await?;
                    return Ok(Next::Close);
                }
                continue;
            }
            if !self.session.authenticated {
                slots.push(Slot::Ready(noauth()));
                continue;
            }
            match Command::parse(&args, &self.shared.config.limits) {
                Ok(c) => {
                    cmds.push(c);
                    slots.push(Slot::Backend);
                }
                Err(e) => slots.push(Slot::Ready(e.into())),
            }
        }
        self.run_segment(&mut cmds, &mut slots).await?;
        self.flush().await?;
        Ok(Next::Continue)
    }

    /// Sends the pending primitives to the backend in one call and encodes
    /// every reply of the segment in order.
    async fn run_segment(&mut self, cmds: &mut Vec<Command>, slots: &mut Vec<Slot>) -> io::Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let results = if cmds.is_empty() {
            Vec::new()
        } else if cmds.iter().any(|c| c.wait_ms() > 0) {
            // A WAIT may park for minutes. If the client goes away meanwhile,
            // drop the batch (the backend abandons its parked waits) rather
            // than hold a waiter slot for nobody, as Redis frees a blocked
            // client that disconnects.
            let backend = self.shared.backend.clone();
            let batch = backend.execute_batch(mem::take(cmds));
            tokio::select! {
                results = batch => results,
                _ = peer_closed(&self.stream) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client left during a WAIT"));
                }
            }
        } else {
            let backend = self.shared.backend.clone();
            backend.execute_batch(mem::take(cmds)).await
        };
        let mut results = results.into_iter();
        for slot in mem::take(slots) {
            let frame = match slot {
                Slot::Ready(f) => f,
                Slot::Backend => match results.next() {
                    Some(r) => r.into(),
                    // A backend bug must not shift every later reply onto
                    // the wrong request.
                    None => CmdError::busy("backend returned fewer replies than commands").into(),
                },
            };
            self.reply(frame).await?;
        }
        Ok(())
    }

    async fn server_command(&mut self, name: &'static str, args: Vec<Bytes>) -> Frame {
        if !self.session.authenticated && !ServerCmd::allowed_unauthenticated(name) {
            return noauth();
        }
        match ServerCmd::parse(name, args) {
            Ok(c) => c.apply(&mut self.session, &self.shared).await,
            Err(e) => e.into(),
        }
    }

    /// Encodes one reply; writes when enough output has accumulated.
    async fn reply(&mut self, frame: Frame) -> io::Result<()> {
        if let Frame::Error(text) = &frame {
            self.shared.stats.error_replies.fetch_add(1, Relaxed);
            metrics::error(text, TRANSPORT);
        }
        resp::encode(&frame, self.session.proto, &mut self.wbuf);
        let max = self.shared.config.output_buffer_bytes_max;
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
        let timeout_ms = self.shared.config.write_timeout_ms;
        while !self.wbuf.is_empty() {
            let write = self.stream.write(&self.wbuf);
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
        Ok(())
    }

    fn slow_client(&self) {
        self.shared.stats.slow_clients_disconnected.fetch_add(1, Relaxed);
        metrics::slow_client_disconnected();
        tracing::info!(client = self.session.id, "disconnecting a client that does not read its replies");
    }

    /// Replies `-ERR Protocol error: ...` and ends the connection: after a
    /// framing error the next request's start is unknown.
    async fn protocol_error(&mut self, e: ProtocolError) -> io::Result<()> {
        self.shared.stats.protocol_errors.fetch_add(1, Relaxed);
        metrics::protocol_error();
        tracing::debug!(client = self.session.id, error = %e, "protocol error");
        self.reply(Frame::Error(format!("ERR Protocol error: {e}"))).await?;
        self.flush().await?;
        let _ = self.stream.shutdown().await;
        // Closing with unread input makes the kernel reset the connection,
        // and a client still sending (say, a 3 MiB value) would see "reset"
        // instead of the error. So read and discard what is in flight, into
        // a fixed buffer, for a bounded time and size, before closing.
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
        Ok(())
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
        let idle_ms = self.shared.config.idle_timeout_ms;
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
        let want = room.min(READ_CHUNK_BYTES);
        self.rbuf.reserve(want);
        let mut buf = (&mut self.rbuf).limit(want);
        // `read_buf` rather than `readable()` + `try_read_buf`: tokio clears
        // the read readiness after a short read, which saves the empty
        // (EAGAIN) `recvfrom` that otherwise follows every request. It is
        // cancel-safe: when another branch wins, nothing was read.
        tokio::select! {
            n = self.stream.read_buf(&mut buf) => Ok(n? > 0),
            _ = &mut idle => {
                tracing::debug!(client = self.session.id, "closing idle connection");
                Ok(false)
            }
            _ = self.shutdown.changed() => Ok(false),
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

fn noauth() -> Frame {
    CmdError::new(ErrorCode::NoAuth, "Authentication required.").into()
}
