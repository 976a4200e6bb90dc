//! Requests: from buffered bytes to a list of arguments, in two passes.
//!
//! [`check`] proves that a whole request is buffered and within every bound,
//! reading only the headers and allocating nothing, so a hostile header
//! (`*1000000`, `$1099511627776`) is refused before the server reserves a
//! byte for it. [`parse`] then cuts the arguments out of the frame without
//! copying them. Partial input is `Ok(None)` ("not yet"), never an error.
//!
//! Two forms are accepted, as Redis does:
//! - multibulk, what every client library and `redis-cli` sends:
//!   `*<n>\r\n` then `n` times `$<len>\r\n<len bytes>\r\n`;
//! - inline, for a person at `telnet`: one line of words separated by
//!   spaces, with `"..."` and `'...'` quoting as in `redis-cli`.

use bytes::{Bytes, BytesMut};

/// The bounds framing enforces while checking, before allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest declared bulk length, in bytes.
    pub bulk_bytes_max: usize,
    /// Most arguments in one request.
    pub args_max: usize,
    /// Longest inline request line, in bytes.
    pub inline_bytes_max: usize,
    /// Largest whole request, in bytes (the client's query buffer bound).
    pub frame_bytes_max: usize,
}

/// A request that breaks the protocol. The connection replies
/// `-ERR Protocol error: <this>` and closes, as Redis does: after a framing
/// error the server can no longer tell where the next request starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The array length after `*` is not a non-negative integer.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// The array declares more arguments than `args_max`.
    #[error("request has {got} arguments, the limit is {max}")]
    TooManyArgs {
        /// Declared argument count.
        got: u64,
        /// The bound.
        max: usize,
    },
    /// An array element does not start with `$`.
    #[error("expected '$', got '{}'", (*.0 as char).escape_default())]
    ExpectedBulk(u8),
    /// The length after `$` is not a non-negative integer.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// The declared bulk length is over `bulk_bytes_max`.
    #[error("bulk length {got} is over the limit of {max} bytes")]
    BulkTooLong {
        /// Declared length.
        got: u64,
        /// The bound.
        max: usize,
    },
    /// A bulk string is not followed by `\r\n`.
    #[error("expected CRLF after bulk string")]
    MissingCrlf,
    /// A `*` or `$` header line is too long to hold a length.
    #[error("too big count string")]
    HeaderTooLong,
    /// A header line ends in a bare `\n`.
    #[error("expected CRLF after count")]
    HeaderWithoutCr,
    /// An inline request line is longer than `inline_bytes_max`.
    #[error("too big inline request")]
    InlineTooLong,
    /// An inline request has an unterminated quote, or text glued to a closing quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// The request declares more bytes than the query buffer bound.
    #[error("request of at least {got} bytes is over the limit of {max} bytes")]
    RequestTooLarge {
        /// Bytes declared so far.
        got: u64,
        /// The bound.
        max: usize,
    },
}

/// Longest `*<n>` or `$<n>` header line, without its CRLF. A length never
/// needs more than a sign and 19 digits; refusing longer lines early keeps a
/// client from streaming an endless "header".
const HEADER_LINE_BYTES_MAX: usize = 32;

/// Checks whether `buf` starts with a whole request within `limits`.
/// Returns its length in bytes, `Ok(None)` when more bytes are needed, or the
/// protocol error that makes the connection unusable. Never allocates.
pub fn check(buf: &[u8], limits: &FrameLimits) -> Result<Option<usize>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => check_multibulk(buf, limits),
        Some(_) => check_inline(buf, limits),
    }
}

/// Cuts the arguments out of a frame whose length [`check`] returned. The
/// arguments share the frame's memory (no copy), except quoted inline words.
/// An empty list means an empty request (`*0`, a blank line): no reply is due.
pub fn parse(frame: Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    parse_into(frame, &mut args)?;
    Ok(args)
}

/// [`parse`] that appends the arguments to `args`, so that a connection can
/// reuse one vector for every request. On an error, `args` may have grown by
/// the words before the error.
pub fn parse_into(frame: Bytes, args: &mut Vec<Bytes>) -> Result<(), ProtocolError> {
    if frame.first() == Some(&b'*') {
        parse_multibulk(&frame, args);
        Ok(())
    } else {
        parse_inline(frame, args)
    }
}

/// Most arguments whose places [`take_request`] remembers while checking;
/// a request with more is walked a second time by [`parse_into`].
const SPANS_MAX: usize = 16;

/// [`check`] then [`parse_into`] on the first request of `buf`, walking
/// the headers once: on `Ok(true)` the request is cut out of `buf` and its
/// arguments appended to `args` (none for an empty request); on `Ok(false)`
/// (not whole yet) nothing changes. An error ends the connection, so what
/// is left of `buf` and `args` then is unspecified (an inline request that
/// fails to split is already cut out, some of its words appended).
pub fn take_request(buf: &mut BytesMut, limits: &FrameLimits, args: &mut Vec<Bytes>) -> Result<bool, ProtocolError> {
    if buf.first() != Some(&b'*') {
        let Some(n) = check(buf, limits)? else { return Ok(false) };
        let before = args.len();
        parse_into(buf.split_to(n).freeze(), args)?;
        // An inline line's words are only known once split; the line's own
        // bound (`inline_bytes_max`) keeps the split small.
        let words = args.len() - before;
        if words > limits.args_max {
            return Err(ProtocolError::TooManyArgs { got: words as u64, max: limits.args_max });
        }
        return Ok(true);
    }
    let mut spans = [(0usize, 0usize); SPANS_MAX];
    let mut count = 0;
    let whole = scan_multibulk(buf, limits, |start, len| {
        if let Some(span) = spans.get_mut(count) {
            *span = (start, len);
        }
        count += 1;
    })?;
    let Some(n) = whole else { return Ok(false) };
    let frame = buf.split_to(n).freeze();
    match spans.get(..count) {
        Some(spans) => args.extend(spans.iter().map(|&(start, len)| frame.slice(start..start + len))),
        None => parse_multibulk(&frame, args),
    }
    Ok(true)
}

fn check_multibulk(buf: &[u8], limits: &FrameLimits) -> Result<Option<usize>, ProtocolError> {
    scan_multibulk(buf, limits, |_, _| {})
}

/// Checks a multibulk request; tells `on_arg` where each argument starts
/// and how long it is (possibly before failing on a later one).
fn scan_multibulk(
    buf: &[u8],
    limits: &FrameLimits,
    mut on_arg: impl FnMut(usize, usize),
) -> Result<Option<usize>, ProtocolError> {
    let Some((count, mut pos)) = header_len(buf, 1, ProtocolError::InvalidMultibulkLength)? else { return Ok(None) };
    if count > limits.args_max as u64 {
        return Err(ProtocolError::TooManyArgs { got: count, max: limits.args_max });
    }
    for _ in 0..count {
        let Some(&tag) = buf.get(pos) else { return Ok(None) };
        if tag != b'$' {
            return Err(ProtocolError::ExpectedBulk(tag));
        }
        let Some((len, start)) = header_len(buf, pos + 1, ProtocolError::InvalidBulkLength)? else { return Ok(None) };
        if len > limits.bulk_bytes_max as u64 {
            return Err(ProtocolError::BulkTooLong { got: len, max: limits.bulk_bytes_max });
        }
        // `len` is at most bulk_bytes_max, so this cannot overflow.
        let end = start + len as usize + 2;
        if end > limits.frame_bytes_max {
            return Err(ProtocolError::RequestTooLarge { got: end as u64, max: limits.frame_bytes_max });
        }
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        on_arg(start, len as usize);
        pos = end;
    }
    Ok(Some(pos))
}

fn check_inline(buf: &[u8], limits: &FrameLimits) -> Result<Option<usize>, ProtocolError> {
    let max = limits.inline_bytes_max.min(limits.frame_bytes_max);
    let window = &buf[..buf.len().min(max + 1)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some(i + 1)),
        None if buf.len() > max => Err(ProtocolError::InlineTooLong),
        None => Ok(None),
    }
}

/// The length in the header line starting at `start` (after its `*` or
/// `$`), and the offset just past its CRLF; `invalid` when the line is not
/// a length.
fn header_len(buf: &[u8], start: usize, invalid: ProtocolError) -> Result<Option<(u64, usize)>, ProtocolError> {
    // Fast path, one pass: 1 to 19 digits then CRLF, which the general
    // path below would accept with the same value. Anything else (partial,
    // malformed) goes the general way, which decides which error it is.
    let rest = buf.get(start..).unwrap_or_default();
    let mut n = 0u64;
    for (i, &c) in rest.iter().enumerate().take(20) {
        // At most 19 digits, so `n` cannot overflow.
        if c.is_ascii_digit() && i < 19 {
            n = n * 10 + u64::from(c - b'0');
        } else {
            if c == b'\r' && i > 0 && rest.get(i + 1) == Some(&b'\n') {
                return Ok(Some((n, start + i + 2)));
            }
            break;
        }
    }
    let Some((line, end)) = header_line(buf, start)? else { return Ok(None) };
    let n = parse_len(line).ok_or(invalid)?;
    Ok(Some((n, end)))
}

/// The header line starting at `start` (after its `*` or `$`), and the
/// offset just past its CRLF.
fn header_line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(HEADER_LINE_BYTES_MAX + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(ProtocolError::HeaderWithoutCr),
        Some(i) if rest[i - 1] != b'\r' => Err(ProtocolError::HeaderWithoutCr),
        Some(i) => Ok(Some((&rest[..i - 1], start + i + 1))),
        None if rest.len() > HEADER_LINE_BYTES_MAX + 1 => Err(ProtocolError::HeaderTooLong),
        None => Ok(None),
    }
}

/// A non-negative decimal length: digits only (no sign, no spaces), at
/// most 19 of them so it fits in a u64 without overflow checks.
fn parse_len(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &d in s {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Some(n)
}

/// Walks a frame that `check_multibulk` accepted; it cannot fail.
fn parse_multibulk(frame: &Bytes, args: &mut Vec<Bytes>) {
    let mut pos = frame.iter().position(|&b| b == b'\n').map_or(frame.len(), |i| i + 1);
    let count = parse_len(trim_cr(&frame[1..pos - 1])).unwrap_or(0) as usize;
    args.reserve(count);
    for _ in 0..count {
        let nl = pos + frame[pos..].iter().position(|&b| b == b'\n').unwrap_or(0);
        let len = parse_len(trim_cr(&frame[pos + 1..nl])).unwrap_or(0) as usize;
        let start = nl + 1;
        args.push(frame.slice(start..start + len));
        pos = start + len + 2;
    }
}

fn trim_cr(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\r").unwrap_or(s)
}

/// Splits an inline line into words like Redis's `sdssplitargs`: spaces
/// separate words; `"..."` understands `\n \r \t \b \a \\ \" \xHH`; `'...'`
/// understands `\'`; a closing quote must end the word.
fn parse_inline(frame: Bytes, args: &mut Vec<Bytes>) -> Result<(), ProtocolError> {
    let b = &frame[..];
    let mut i = 0;
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i == b.len() {
            return Ok(());
        }
        let start = i;
        // Fast path: a word without quotes is sliced, not copied.
        while i < b.len() && !is_space(b[i]) && b[i] != b'"' && b[i] != b'\'' {
            i += 1;
        }
        if i == b.len() || is_space(b[i]) {
            args.push(frame.slice(start..i));
            continue;
        }
        let mut word = b[start..i].to_vec();
        while i < b.len() && !is_space(b[i]) {
            match b[i] {
                b'"' => i = double_quoted(b, i + 1, &mut word)?,
                b'\'' => i = single_quoted(b, i + 1, &mut word)?,
                c => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(word));
    }
}

/// Reads a `"..."` body starting after the opening quote; returns the offset
/// after the closing quote.
fn double_quoted(b: &[u8], mut i: usize, word: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match b.get(i) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\\') if b.get(i + 1) == Some(&b'x') && i + 3 < b.len() => match (hex(b[i + 2]), hex(b[i + 3])) {
                (Some(h), Some(l)) => {
                    word.push(h << 4 | l);
                    i += 4;
                }
                _ => {
                    word.push(b'x');
                    i += 2;
                }
            },
            Some(b'\\') if i + 1 < b.len() => {
                word.push(match b[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'a' => 7,
                    c => c,
                });
                i += 2;
            }
            Some(b'"') => return closing_quote(b, i + 1),
            Some(&c) => {
                word.push(c);
                i += 1;
            }
        }
    }
}

fn single_quoted(b: &[u8], mut i: usize, word: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match b.get(i) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\\') if b.get(i + 1) == Some(&b'\'') => {
                word.push(b'\'');
                i += 2;
            }
            Some(b'\'') => return closing_quote(b, i + 1),
            Some(&c) => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// A closing quote must be followed by a space or the end of the line, as in Redis.
fn closing_quote(b: &[u8], i: usize) -> Result<usize, ProtocolError> {
    match b.get(i) {
        Some(&c) if !is_space(c) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(i),
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: FrameLimits =
        FrameLimits { bulk_bytes_max: 1024, args_max: 8, inline_bytes_max: 64, frame_bytes_max: 4096 };

    fn one(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        match check(input, &LIM)? {
            None => Ok(None),
            Some(n) => parse(Bytes::copy_from_slice(&input[..n])).map(Some),
        }
    }

    fn words(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect()
    }

    #[test]
    fn multibulk_whole_and_every_prefix() {
        let input = b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$5\r\nhe\r\nl\r\n";
        assert_eq!(check(input, &LIM), Ok(Some(input.len())));
        assert_eq!(one(input).unwrap().unwrap(), vec![Bytes::from("SET"), Bytes::new(), Bytes::from("he\r\nl")]);
        // Every strict prefix is "not yet", never an error.
        for n in 0..input.len() {
            assert_eq!(check(&input[..n], &LIM), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let input = b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        assert_eq!(check(input, &LIM), Ok(Some(14)));
    }

    #[test]
    fn empty_multibulk_is_empty_request() {
        assert_eq!(one(b"*0\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn bad_lengths_are_protocol_errors() {
        assert_eq!(check(b"*-1\r\n", &LIM), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(check(b"*x\r\n", &LIM), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(check(b"*\r\n", &LIM), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(check(b"*+1\r\n", &LIM), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(check(b"*1\r\n$-1\r\n", &LIM), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(check(b"*1\r\n$abc\r\n", &LIM), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(check(b"*1\r\n+OK\r\n", &LIM), Err(ProtocolError::ExpectedBulk(b'+')));
        assert_eq!(check(b"*1\n", &LIM), Err(ProtocolError::HeaderWithoutCr));
        assert_eq!(check(b"*1\r\n$1\r\nab\r\n", &LIM), Err(ProtocolError::MissingCrlf));
    }

    #[test]
    fn bounds_are_checked_before_the_data_arrives() {
        assert_eq!(check(b"*1000000\r\n", &LIM), Err(ProtocolError::TooManyArgs { got: 1_000_000, max: 8 }));
        // An inline request is held to the same bound once split (a fuzz finding).
        let mut buf = BytesMut::from(&b"a b c d e f g h i\r\n"[..]);
        let mut args = Vec::new();
        assert_eq!(take_request(&mut buf, &LIM, &mut args), Err(ProtocolError::TooManyArgs { got: 9, max: 8 }));
        assert_eq!(
            check(b"*1\r\n$1099511627776\r\n", &LIM),
            Err(ProtocolError::BulkTooLong { got: 1 << 40, max: 1024 })
        );
        assert_eq!(check(b"*1\r\n$99999999999999999999\r\n", &LIM), Err(ProtocolError::InvalidBulkLength));
        let lim = FrameLimits { frame_bytes_max: 1500, ..LIM };
        assert!(matches!(check(b"*2\r\n$1000\r\n", &lim), Ok(None)));
        let mut two = b"*2\r\n$1000\r\n".to_vec();
        two.extend(std::iter::repeat_n(b'a', 1000));
        two.extend_from_slice(b"\r\n$1000\r\n");
        assert!(matches!(check(&two, &lim), Err(ProtocolError::RequestTooLarge { .. })));
    }

    #[test]
    fn endless_header_is_refused() {
        let long = [b'1'; 40];
        let mut input = b"*".to_vec();
        input.extend_from_slice(&long);
        assert_eq!(check(&input, &LIM), Err(ProtocolError::HeaderTooLong));
        assert_eq!(check(&input[..20], &LIM), Ok(None));
    }

    #[test]
    fn inline_words_and_quotes() {
        assert_eq!(one(b"PING\r\n").unwrap().unwrap(), words(&["PING"]));
        assert_eq!(
            one(b"  idem.begin  k  LEASE 5000\n").unwrap().unwrap(),
            words(&["idem.begin", "k", "LEASE", "5000"])
        );
        assert_eq!(
            one(b"set \"a b\\n\\x41\" 'it\\'s' x\"y\"\r\n").unwrap().unwrap(),
            words(&["set", "a b\nA", "it's", "xy"])
        );
        assert_eq!(one(b"\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
        assert_eq!(one(b"PING"), Ok(None));
        assert_eq!(one(b"ECHO \"abc\r\n"), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(one(b"ECHO \"abc\"d\r\n"), Err(ProtocolError::UnbalancedQuotes));
    }

    /// `take_request` cuts the same arguments as `check` + `parse`, for
    /// requests with few and with many arguments, inline and multibulk.
    #[test]
    fn take_request_matches_check_and_parse() {
        let many: String = (0..20).map(|i| format!("$2\r\n{i:02}\r\n")).collect();
        let many = format!("*20\r\n{many}");
        let inputs: [&[u8]; 6] = [
            b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$5\r\nhe\r\nl\r\n*1\r\n$4\r\nPING\r\n",
            b"*0\r\n*1\r\n$1\r\nx\r\n",
            b"PING a 'b c'\r\n",
            b"*2\r\n$4\r\nPING\r\n$1\r\n",
            b"*1\r\n$-1\r\n",
            many.as_bytes(),
        ];
        let lim = FrameLimits { args_max: 64, ..LIM };
        for input in inputs {
            let mut buf = BytesMut::from(input);
            let mut args = vec![Bytes::from("before")];
            let mut expect = args.clone();
            let mut rest = input;
            loop {
                let got = take_request(&mut buf, &lim, &mut args);
                match check(rest, &lim) {
                    Ok(Some(n)) => {
                        assert_eq!(got, Ok(true));
                        expect.extend(parse(Bytes::copy_from_slice(&rest[..n])).unwrap());
                        rest = &rest[n..];
                    }
                    Ok(None) => {
                        assert_eq!(got, Ok(false));
                        break;
                    }
                    Err(e) => {
                        assert_eq!(got, Err(e));
                        break;
                    }
                }
                assert_eq!(args, expect);
                assert_eq!(&buf[..], rest);
            }
            assert_eq!(args, expect);
            assert_eq!(&buf[..], rest);
        }
    }

    /// The one-pass header path agrees with the general one on every input.
    #[test]
    fn header_fast_path_agrees_with_the_general_path() {
        let general = |buf: &[u8]| -> Result<Option<(u64, usize)>, ProtocolError> {
            let Some((line, end)) = header_line(buf, 1)? else { return Ok(None) };
            Ok(Some((parse_len(line).ok_or(ProtocolError::InvalidBulkLength)?, end)))
        };
        let mut cases: Vec<Vec<u8>> = [
            &b"$0\r\n"[..],
            b"$0000000000000000003\r\n",
            b"$9999999999999999999\r\n",
            b"$99999999999999999999\r\n",
            b"$\r\n",
            b"$1\r",
            b"$1\n",
            b"$1\r\r\n",
            b"$-1\r\n",
            b"$12",
        ]
        .iter()
        .map(|c| c.to_vec())
        .collect();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let len = 1 + (x % 26) as usize;
            let mut buf = b"$".to_vec();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(b"0123456789\r\n\r\n-a"[(x % 16) as usize]);
            }
            cases.push(buf);
        }
        for buf in cases {
            assert_eq!(header_len(&buf, 1, ProtocolError::InvalidBulkLength), general(&buf), "{buf:?}");
        }
    }

    #[test]
    fn endless_inline_is_refused() {
        assert_eq!(check(&[b'a'; 64], &LIM), Ok(None));
        assert_eq!(check(&[b'a'; 65], &LIM), Err(ProtocolError::InlineTooLong));
    }

    #[test]
    fn check_never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every check either succeeds, waits or errs.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(b"*$\r\n0123456789-ab \"'\\x"[(x % 22) as usize]);
            }
            if let Ok(Some(n)) = check(&buf, &LIM) {
                assert!(n <= buf.len());
                let _ = parse(Bytes::copy_from_slice(&buf[..n]));
            }
        }
    }
}
