//! Error replies. Every refused request gets one of these; the first word of
//! its text is the code that clients switch on (see docs/commands.md, "Common rules").

use std::fmt;

/// The code that starts every error reply. Clients in other languages match on
/// the word, so the spelling is part of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Syntax, arity or type error in the request.
    Err,
    /// A size or count over a configured limit.
    Limit,
    /// Same idempotency key, different fingerprint.
    Mismatch,
    /// The fence is no longer the current one.
    Stale,
    /// The authenticated user may not run this command.
    NoPerm,
    /// Authentication is required first, or failed.
    NoAuth,
    /// Storage cannot accept writes (disk full, fsync failed); reads still work.
    ReadOnly,
    /// Overloaded or a backend is unreachable; retry later.
    Busy,
    /// The outcome is unknown: an external store's connection broke after
    /// the command was sent, so it may or may not have taken effect. The one
    /// code that does not promise "changed nothing" (docs/commands.md).
    Unknown,
    /// The store is at its memory bound (`maxmemory`): a command that would
    /// create a record is refused; records that exist still work.
    Oom,
}

impl ErrorCode {
    /// The word that starts the error reply.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Err => "ERR",
            ErrorCode::Limit => "LIMIT",
            ErrorCode::Mismatch => "MISMATCH",
            ErrorCode::Stale => "STALE",
            ErrorCode::NoPerm => "NOPERM",
            ErrorCode::NoAuth => "NOAUTH",
            ErrorCode::ReadOnly => "READONLY",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::Oom => "OOM",
        }
    }
}

/// A refused request: a code and a human-readable message. The request
/// changed nothing, except under [`ErrorCode::Unknown`], whose outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CmdError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.code.as_str())
        } else {
            write!(f, "{} {}", self.code.as_str(), self.message)
        }
    }
}

impl CmdError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CmdError { code, message: message.into() }
    }
    /// `ERR`: syntax, arity or type.
    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Err, message)
    }
    /// `LIMIT`: a size or count over a limit.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Limit, message)
    }
    /// `STALE`: the fence is not the current one.
    pub fn stale(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Stale, message)
    }
    /// `MISMATCH`: the fingerprint differs from the first request's.
    pub fn mismatch(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Mismatch, message)
    }
    /// `READONLY`: storage cannot accept writes.
    pub fn read_only(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ReadOnly, message)
    }
    /// `BUSY`: overloaded or backend unreachable; retry later.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Busy, message)
    }
    /// `UNKNOWN`: the command may or may not have taken effect (an external
    /// store's connection broke after it was sent).
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unknown, message)
    }
}
