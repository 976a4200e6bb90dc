//! Replies: from [`Frame`] (or a primitive's [`Reply`]) to RESP2 or RESP3 bytes.
//!
//! Status words are bulk strings in both protocols (docs/commands.md: every
//! client library reads them the same way); arrays stay arrays. RESP3 only
//! changes how absence (`_`) and maps (`%`) are written.

use bytes::{BufMut, Bytes, BytesMut};
use idem_core::{CmdError, Reply};

/// The protocol a connection speaks: RESP2 until the client sends `HELLO 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2 (the default).
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` reports.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One reply frame on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `+text`: server-command statuses such as `OK` and `PONG`.
    Simple(&'static str),
    /// `-CODE message`: the whole error text, code first.
    Error(String),
    /// `$len`: binary-safe bytes.
    Bulk(Bytes),
    /// `:n`.
    Int(i64),
    /// Absent: `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// `*n`.
    Array(Vec<Frame>),
    /// `%n` in RESP3; a flat array of keys and values in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// A primitive's reply, encoded without converting it first.
    Reply(Reply),
}

impl Frame {
    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Frame {
        Frame::Bulk(Bytes::from(s.into()))
    }
}

impl From<CmdError> for Frame {
    fn from(e: CmdError) -> Self {
        Frame::Error(e.to_string())
    }
}

impl From<Result<Reply, CmdError>> for Frame {
    fn from(r: Result<Reply, CmdError>) -> Self {
        match r {
            Ok(reply) => Frame::Reply(reply),
            Err(e) => e.into(),
        }
    }
}

/// Appends `frame` to `out`.
pub fn encode(frame: &Frame, proto: Protocol, out: &mut BytesMut) {
    match frame {
        Frame::Simple(s) => {
            out.put_u8(b'+');
            put_line(out, s.as_bytes());
        }
        Frame::Error(s) => {
            out.put_u8(b'-');
            put_line(out, s.as_bytes());
        }
        Frame::Bulk(b) => put_bulk(out, b),
        Frame::Int(n) => put_int(out, b':', *n),
        Frame::Nil => put_nil(out, proto),
        Frame::Array(items) => {
            put_int(out, b'*', items.len() as i64);
            for item in items {
                encode(item, proto, out);
            }
        }
        Frame::Map(pairs) => {
            match proto {
                Protocol::Resp2 => put_int(out, b'*', 2 * pairs.len() as i64),
                Protocol::Resp3 => put_int(out, b'%', pairs.len() as i64),
            }
            for (k, v) in pairs {
                encode(k, proto, out);
                encode(v, proto, out);
            }
        }
        Frame::Reply(r) => encode_reply(r, proto, out),
    }
}

/// Appends a primitive's reply to `out`.
pub fn encode_reply(reply: &Reply, proto: Protocol, out: &mut BytesMut) {
    match reply {
        Reply::Word(w) => put_bulk(out, w.as_bytes()),
        Reply::Bulk(b) => put_bulk(out, b),
        Reply::Int(n) => put_int(out, b':', *n),
        Reply::Nil => put_nil(out, proto),
        Reply::Array(items) => {
            put_int(out, b'*', items.len() as i64);
            for item in items {
                encode_reply(item, proto, out);
            }
        }
    }
}

fn put_bulk(out: &mut BytesMut, b: &[u8]) {
    // One reservation for header, bytes and CRLF.
    out.reserve(b.len() + 24 + 2);
    put_int(out, b'$', b.len() as i64);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn put_nil(out: &mut BytesMut, proto: Protocol) {
    out.put_slice(match proto {
        Protocol::Resp2 => b"$-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// A simple string or error line: CR and LF would end the line early and
/// desynchronise the client, so they become spaces.
fn put_line(out: &mut BytesMut, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.extend(s.iter().map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }));
    out.put_slice(b"\r\n");
}

fn put_int(out: &mut BytesMut, tag: u8, n: i64) {
    // One digit, as most array lengths, status word lengths and attempt
    // numbers are: four bytes of a known size, copied without the loop
    // below or a variable-length copy.
    if (0..10).contains(&n) {
        out.put_slice(&[tag, b'0' + n as u8, b'\r', b'\n']);
        return;
    }
    // Formatted by hand, right to left, into a stack buffer that receives
    // the whole line (tag, sign, digits, CRLF) and is copied once: this runs
    // for every header of every reply, and `fmt` machinery costs more than
    // the digits. 1 + 1 + 19 + 2 bytes fit.
    let mut line = [0u8; 24];
    let mut i = line.len() - 2;
    line[i..].copy_from_slice(b"\r\n");
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        line[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        line[i] = b'-';
    }
    i -= 1;
    line[i] = tag;
    out.put_slice(&line[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &Frame, p: Protocol) -> String {
        let mut out = BytesMut::new();
        encode(f, p, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn primitive_reply_shapes() {
        let r = Reply::status_with("started", [Reply::Int(7), Reply::Int(1)]);
        let f = Frame::Reply(r);
        assert_eq!(enc(&f, Protocol::Resp2), "*3\r\n$7\r\nstarted\r\n:7\r\n:1\r\n");
        assert_eq!(enc(&f, Protocol::Resp3), "*3\r\n$7\r\nstarted\r\n:7\r\n:1\r\n");
        let nils = Frame::Reply(Reply::Array(vec![Reply::Nil, Reply::Bulk(Bytes::from("h"))]));
        assert_eq!(enc(&nils, Protocol::Resp2), "*2\r\n$-1\r\n$1\r\nh\r\n");
        assert_eq!(enc(&nils, Protocol::Resp3), "*2\r\n_\r\n$1\r\nh\r\n");
    }

    #[test]
    fn integers() {
        for n in [0i64, 1, -1, 9, 10, -10, 42, 99_999, i64::MAX, i64::MAX - 1, i64::MIN, i64::MIN + 1] {
            assert_eq!(enc(&Frame::Int(n), Protocol::Resp2), format!(":{n}\r\n"));
        }
    }

    #[test]
    fn bulks() {
        assert_eq!(enc(&Frame::Bulk(Bytes::new()), Protocol::Resp2), "$0\r\n\r\n");
        let long = "x".repeat(1000);
        assert_eq!(enc(&Frame::text(long.clone()), Protocol::Resp3), format!("$1000\r\n{long}\r\n"));
        assert_eq!(enc(&Frame::Simple("OK"), Protocol::Resp2), "+OK\r\n");
    }

    #[test]
    fn maps_flatten_in_resp2() {
        let m = Frame::Map(vec![(Frame::text("proto"), Frame::Int(3))]);
        assert_eq!(enc(&m, Protocol::Resp2), "*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(enc(&m, Protocol::Resp3), "%1\r\n$5\r\nproto\r\n:3\r\n");
    }

    #[test]
    fn errors_stay_on_one_line() {
        let e = Frame::from(CmdError::syntax("bad\r\nthing"));
        assert_eq!(enc(&e, Protocol::Resp2), "-ERR bad  thing\r\n");
    }
}
