//! The result the gateway commits for a request: the response to replay,
//! or a marker that the request completed but its response was too large
//! to store.
//!
//! Byte layout (all integers big-endian):
//!
//! ```text
//! replayable:      "G1R" status:u16 count:u16 { name_len:u16 name value_len:u16 value }*count body...
//! not replayable:  "G1N" status:u16
//! ```
//!
//! The body runs to the end of the result. Only allow-listed headers are
//! stored (never `Set-Cookie` or `Date`): a replay must not hand one
//! client's session to another or claim a date that has passed.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const MAGIC_REPLAYABLE: &[u8; 3] = b"G1R";
const MAGIC_NOT_REPLAYABLE: &[u8; 3] = b"G1N";

/// A committed outcome, as decoded from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The first response, to be replayed.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its allow-listed headers.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Its body.
        body: Bytes,
    },
    /// The request completed with this status, but its response was not stored.
    NotReplayable {
        /// The first response's status.
        status: StatusCode,
    },
}

/// Why a stored result could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored result is not a gateway response: {0}")]
pub struct DecodeError(&'static str);

impl Stored {
    /// Encodes the first response, keeping only headers whose names `keep` accepts.
    pub fn encode_response(
        status: StatusCode,
        headers: &HeaderMap,
        keep: impl Fn(&HeaderName) -> bool,
        body: &[u8],
    ) -> Vec<u8> {
        let kept: Vec<(&HeaderName, &HeaderValue)> = headers.iter().filter(|(n, _)| keep(n)).collect();
        let mut out = Vec::with_capacity(7 + body.len() + kept.len() * 32);
        out.extend_from_slice(MAGIC_REPLAYABLE);
        out.extend_from_slice(&status.as_u16().to_be_bytes());
        // Header names and values are bounded by the server's header bytes
        // bound, far below u16::MAX; a longer one is not stored.
        let kept: Vec<_> = kept
            .into_iter()
            .filter(|(n, v)| n.as_str().len() <= usize::from(u16::MAX) && v.len() <= usize::from(u16::MAX))
            .take(usize::from(u16::MAX))
            .collect();
        out.extend_from_slice(&(kept.len() as u16).to_be_bytes());
        for (n, v) in kept {
            out.extend_from_slice(&(n.as_str().len() as u16).to_be_bytes());
            out.extend_from_slice(n.as_str().as_bytes());
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    /// Encodes the marker of a completed request whose response is not stored.
    pub fn encode_not_replayable(status: StatusCode) -> Vec<u8> {
        let mut out = MAGIC_NOT_REPLAYABLE.to_vec();
        out.extend_from_slice(&status.as_u16().to_be_bytes());
        out
    }

    /// Decodes a committed result.
    pub fn decode(b: &Bytes) -> Result<Stored, DecodeError> {
        let mut r = Reader { b, at: 0 };
        let magic = r.take(3)?;
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError("bad status"))?;
        if magic == MAGIC_NOT_REPLAYABLE {
            if r.at != b.len() {
                return Err(DecodeError("trailing bytes after the marker"));
            }
            return Ok(Stored::NotReplayable { status });
        }
        if magic != MAGIC_REPLAYABLE {
            return Err(DecodeError("unknown magic"));
        }
        let count = r.u16()?;
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let n = usize::from(r.u16()?);
            let name = HeaderName::from_bytes(r.take(n)?).map_err(|_| DecodeError("bad header name"))?;
            let n = usize::from(r.u16()?);
            let value = HeaderValue::from_bytes(r.take(n)?).map_err(|_| DecodeError("bad header value"))?;
            headers.push((name, value));
        }
        Ok(Stored::Response { status, headers, body: b.slice(r.at..) })
    }
}

struct Reader<'a> {
    b: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(DecodeError("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn a_response_round_trips_with_allow_listed_headers_only() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::LOCATION, HeaderValue::from_static("/orders/1"));
        h.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        h.insert(header::DATE, HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        let keep = |n: &HeaderName| n == header::CONTENT_TYPE || n == header::LOCATION;
        let enc = Stored::encode_response(StatusCode::CREATED, &h, keep, b"{\"id\":1}");
        let Stored::Response { status, headers, body } = Stored::decode(&Bytes::from(enc)).unwrap() else {
            panic!("expected a response")
        };
        assert_eq!(status, StatusCode::CREATED);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"content-type") && names.contains(&"location"));
        assert!(!names.contains(&"set-cookie") && !names.contains(&"date"));
        assert_eq!(&body[..], b"{\"id\":1}");
    }

    #[test]
    fn the_marker_round_trips() {
        let enc = Bytes::from(Stored::encode_not_replayable(StatusCode::OK));
        assert_eq!(Stored::decode(&enc).unwrap(), Stored::NotReplayable { status: StatusCode::OK });
    }

    #[test]
    fn foreign_or_truncated_results_are_errors() {
        for bad in [&b""[..], b"hello", b"G1R\x00", b"G1R\x00\xc8\x00\x01\x00\x04na", b"G1N\x00\xc8x", b"G1N\x00\x01"] {
            assert!(Stored::decode(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
