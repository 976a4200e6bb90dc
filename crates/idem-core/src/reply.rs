//! Replies, independent of any wire protocol. The RESP and HTTP front ends
//! encode them; backends produce them.

use bytes::Bytes;

/// One reply. Status words ("started", "done", ...) are sent as bulk strings
/// so that every Redis client library reads them the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A status word from docs/commands.md.
    Word(&'static str),
    /// Binary-safe bytes (results, values, owners, tokens).
    Bulk(Bytes),
    /// An integer (fences, counts, milliseconds, counter values).
    Int(i64),
    /// Absent.
    Nil,
    /// An array; the first element of a primitive's reply is its status word.
    Array(Vec<Reply>),
}

impl Reply {
    /// `[word]`.
    pub fn status(word: &'static str) -> Reply {
        Reply::Array(vec![Reply::Word(word)])
    }
    /// `[word, rest...]`.
    pub fn status_with(word: &'static str, rest: impl IntoIterator<Item = Reply>) -> Reply {
        // Sized once: replies are built per request, a regrow would be a
        // second allocation every time.
        let rest = rest.into_iter();
        let mut v = Vec::with_capacity(1 + rest.size_hint().0);
        v.push(Reply::Word(word));
        v.extend(rest);
        Reply::Array(v)
    }
    /// An integer from a u64 (fences, durations). Values above i64::MAX are a bug.
    pub fn uint(v: u64) -> Reply {
        debug_assert!(v <= i64::MAX as u64, "integer reply out of range: {v}");
        Reply::Int(v.min(i64::MAX as u64) as i64)
    }
    /// The status word, if this is an array that starts with one.
    pub fn word(&self) -> Option<&'static str> {
        match self {
            Reply::Array(v) => match v.first() {
                Some(Reply::Word(w)) => Some(w),
                _ => None,
            },
            Reply::Word(w) => Some(w),
            _ => None,
        }
    }
}

impl From<Bytes> for Reply {
    fn from(b: Bytes) -> Self {
        Reply::Bulk(b)
    }
}
