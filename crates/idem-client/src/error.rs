//! The client's errors: one variant per error code of the contract
//! (docs/commands.md, "Common rules"), and the ways a call can fail before a
//! reply arrives.

use idem_core::{CmdError, ErrorCode};

/// Why a call failed. A server error (the first eight variants, and
/// `OutOfMemory`) means the request changed nothing. `Unknown` (the ninth), a transport error and a
/// timeout on a write leave its outcome unknown: the command may have been
/// applied before a connection broke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ERR`: syntax, arity or type error in the request.
    #[error("ERR {0}")]
    Invalid(String),
    /// `LIMIT`: a size or count over a server limit.
    #[error("LIMIT {0}")]
    LimitExceeded(String),
    /// `MISMATCH`: the idempotency key was used with a different fingerprint.
    #[error("MISMATCH {0}")]
    Mismatch(String),
    /// `STALE`: the fence is no longer the current one (the lease ran out).
    #[error("STALE {0}")]
    Stale(String),
    /// `NOPERM`: the authenticated user may not run this command.
    #[error("NOPERM {0}")]
    NoPerm(String),
    /// `NOAUTH`: authentication is required first, or failed.
    #[error("NOAUTH {0}")]
    NoAuth(String),
    /// `READONLY`: the server's storage cannot accept writes.
    #[error("READONLY {0}")]
    ReadOnly(String),
    /// `BUSY`: the server is overloaded or its backend unreachable; retry later.
    #[error("BUSY {0}")]
    Busy(String),
    /// `UNKNOWN`: the server's external store broke off after the command was
    /// sent, so it may or may not have taken effect (the one server error that
    /// does not mean "changed nothing"). Retry with the same key or op id, or read.
    #[error("UNKNOWN {0}")]
    Unknown(String),
    /// `OOM`: the server's embedded store is at its memory bound
    /// (`maxmemory_bytes`): nothing was created; records that exist still work.
    #[error("OOM {0}")]
    OutOfMemory(String),
    /// `idempotent()` found the key's work in flight and its options say not
    /// to wait (or the wait ended with the work still running).
    #[error("the work of this key is in flight elsewhere (fence {fence}, {left_ms} ms left on its lease)")]
    InFlight {
        /// The fence of the running attempt.
        fence: u64,
        /// Milliseconds left on its lease.
        left_ms: u64,
    },
    /// [`crate::Lock::acquire`] found the lock held by someone else (after its wait).
    #[error("the lock is held by {holder:?} ({left_ms} ms left on its lease)")]
    LockBusy {
        /// The holder.
        holder: bytes::Bytes,
        /// Milliseconds left on its lease.
        left_ms: u64,
    },
    /// A stored result could not be encoded or decoded as the caller's type.
    #[error("result (de)serialisation: {0}")]
    Serde(#[from] serde_json::Error),
    /// No connection could be opened, or an open one broke.
    #[error("transport: {0}")]
    Transport(String),
    /// No reply within the command's deadline (connect, pool wait and reply).
    #[error("no reply within {timeout_ms} ms")]
    Timeout {
        /// The deadline that passed.
        timeout_ms: u64,
    },
    /// The server's reply does not have the shape the contract gives this
    /// command (or its error code is not one of the contract's).
    #[error("unexpected reply to {command}: {detail}")]
    Protocol {
        /// The command sent.
        command: &'static str,
        /// What arrived instead.
        detail: String,
    },
    /// The client's configuration is out of its documented bounds.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The contract's error code, for errors the server sent.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::Invalid(_) => ErrorCode::Err,
            Error::LimitExceeded(_) => ErrorCode::Limit,
            Error::Mismatch(_) => ErrorCode::Mismatch,
            Error::Stale(_) => ErrorCode::Stale,
            Error::NoPerm(_) => ErrorCode::NoPerm,
            Error::NoAuth(_) => ErrorCode::NoAuth,
            Error::ReadOnly(_) => ErrorCode::ReadOnly,
            Error::Busy(_) => ErrorCode::Busy,
            Error::Unknown(_) => ErrorCode::Unknown,
            Error::OutOfMemory(_) => ErrorCode::Oom,
            _ => return None,
        })
    }

    /// Builds the error for a server error reply whose first word is `code`;
    /// `None` when the word is not one of the contract's codes.
    pub(crate) fn from_server(code: &str, message: String) -> Option<Error> {
        Some(match code {
            "ERR" => Error::Invalid(message),
            "LIMIT" => Error::LimitExceeded(message),
            "MISMATCH" => Error::Mismatch(message),
            "STALE" => Error::Stale(message),
            "NOPERM" => Error::NoPerm(message),
            "NOAUTH" => Error::NoAuth(message),
            "READONLY" => Error::ReadOnly(message),
            "BUSY" => Error::Busy(message),
            "UNKNOWN" => Error::Unknown(message),
            "OOM" => Error::OutOfMemory(message),
            _ => return None,
        })
    }

    /// The error as a backend reports it: server errors keep their code;
    /// everything else is `BUSY`, the contract's code for "a backend is
    /// unreachable; retry later".
    pub(crate) fn into_cmd_error(self) -> CmdError {
        let text = self.to_string();
        match (self.code(), self) {
            (
                Some(code),
                Error::Invalid(m)
                | Error::LimitExceeded(m)
                | Error::Mismatch(m)
                | Error::Stale(m)
                | Error::NoPerm(m)
                | Error::NoAuth(m)
                | Error::ReadOnly(m)
                | Error::Busy(m)
                | Error::Unknown(m)
                | Error::OutOfMemory(m),
            ) => CmdError::new(code, m),
            _ => CmdError::busy(format!("idem server: {text}")),
        }
    }
}
