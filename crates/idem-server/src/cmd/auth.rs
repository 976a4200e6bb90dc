//! `AUTH [username] password` -> `OK` | error `NOAUTH`.
//!
//! Without ACL users, idem has one user, `default`, as a Redis server with
//! `requirepass` does, so `AUTH password` and `AUTH default password` are
//! the same. With ACL users (`crate::acl`), `AUTH user password` logs in as
//! that user, and `AUTH password` as `default`.

use std::sync::Arc;

use bytes::Bytes;
use idem_core::{CmdError, ErrorCode};

use super::{Parse, Session};
use crate::acl::AclUser;
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
            Ok(user) => {
                session.authenticated = true;
                session.user = user;
                Frame::Simple("OK")
            }
            Err(e) => e.into(),
        }
    }
}

/// Checks a username and password against the configuration (shared by
/// AUTH and HELLO ... AUTH). With ACL users, returns the user logged in.
pub(crate) fn check(
    state: &ServerState,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<Option<Arc<AclUser>>, CmdError> {
    if let Some(acl) = state.acl_enforced() {
        return match acl.authenticate(user, password) {
            Some(u) => Ok(Some(u.clone())),
            None => Err(invalid_pair()),
        };
    }
    let Some(expected) = state.config().password.as_deref() else {
        // As Redis with no requirepass: the default user takes any password
        // (so `HELLO 3 AUTH default x` works), the one-argument form is
        // flagged as a likely configuration mistake.
        return match user {
            Some(b"default") => Ok(None),
            Some(_) => Err(invalid_pair()),
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
        Ok(None)
    } else {
        Err(invalid_pair())
    }
}

fn invalid_pair() -> CmdError {
    CmdError::new(ErrorCode::NoAuth, "invalid username-password pair")
}

/// Compares in time that depends only on the lengths, so that response
/// timing does not reveal how many leading bytes of a guess were right.
pub(crate) fn password_matches(expected: &[u8], given: &[u8]) -> bool {
    if expected.len() != given.len() {
        return false;
    }
    expected.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
