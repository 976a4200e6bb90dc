//! `AUTH [username] password` -> `OK` | error `NOAUTH`.
//!
//! idem has one user, `default`, as a Redis server with `requirepass` does,
//! so `AUTH password` and `AUTH default password` are the same.

use bytes::Bytes;
use idem_core::{CmdError, ErrorCode};

use super::{Parse, Session};
use crate::resp::Frame;
use crate::state::ServerState;

/// AUTH.
#[derive(Debug)]
pub(crate) struct Auth {
    user: Option<Bytes>,
    password: Bytes,
}

impl Auth {
    pub(crate) fn parse(p: &mut Parse) -> Result<Auth, CmdError> {
        let first = p.next_bytes()?;
        match p.next_opt() {
            Some(password) => Ok(Auth { user: Some(first), password }),
            None => Ok(Auth { user: None, password: first }),
        }
    }

    pub(crate) fn apply(self, session: &mut Session, state: &ServerState) -> Frame {
        match check(state, self.user.as_deref(), &self.password) {
            Ok(()) => {
                session.authenticated = true;
                Frame::Simple("OK")
            }
            Err(e) => e.into(),
        }
    }
}

/// Checks a username and password against the configuration (state by
/// AUTH and HELLO ... AUTH).
pub(crate) fn check(state: &ServerState, user: Option<&[u8]>, password: &[u8]) -> Result<(), CmdError> {
    let Some(expected) = state.config().password.as_deref() else {
        // As Redis with no requirepass: the default user takes any password
        // (so `HELLO 3 AUTH default x` works), the one-argument form is
        // flagged as a likely configuration mistake.
        return match user {
            Some(b"default") => Ok(()),
            Some(_) => Err(CmdError::new(ErrorCode::NoAuth, "invalid username-password pair")),
            None => Err(CmdError::syntax(
                "AUTH called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            )),
        };
    };
    let user_ok = matches!(user, None | Some(b"default"));
    // Evaluate both so that a wrong user and a wrong password take the same path.
    let password_ok = password_matches(expected.as_bytes(), password);
    if user_ok && password_ok {
        Ok(())
    } else {
        Err(CmdError::new(ErrorCode::NoAuth, "invalid username-password pair"))
    }
}

/// Compares in time that depends only on the lengths, so that response
/// timing does not reveal how many leading bytes of a guess were right.
pub(crate) fn password_matches(expected: &[u8], given: &[u8]) -> bool {
    if expected.len() != given.len() {
        return false;
    }
    expected.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
