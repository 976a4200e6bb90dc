//! Who an HTTP request comes from: its `Authorization` header mapped onto
//! the same users as RESP's AUTH.
//!
//! - `Bearer <password>`: without ACL users, the server's password; with
//!   them, the user whose password it is (passwords are unique per user,
//!   checked at bind).
//! - `Basic base64(user:password)`: without ACL users, any user name and
//!   the server's password (so a browser can open the dashboard); with
//!   them, that user and password, as `AUTH user password`.
//! - No header: allowed when no password is set, or when the ACL's
//!   `default` user is `on nopass`.

use std::sync::Arc;

use axum::http::{header, HeaderMap};

use crate::acl::AclUser;
use crate::state::ServerState;

/// The request is not authenticated.
#[derive(Debug)]
pub(crate) struct Unauthenticated;

/// The ACL user a request comes from; `Ok(None)` when no ACL users are
/// configured and the request may run everything.
pub(crate) fn authenticate(state: &ServerState, headers: &HeaderMap) -> Result<Option<Arc<AclUser>>, Unauthenticated> {
    let value = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Some(acl) = state.acl_enforced() {
        let user = match value {
            None => acl.anonymous(),
            Some(v) => match credentials(v) {
                Some(Credentials::Bearer(token)) => acl.by_token(token),
                Some(Credentials::Basic(decoded)) => {
                    let (name, password) = split_basic(&decoded);
                    acl.authenticate(Some(name), password)
                }
                None => None,
            },
        };
        return user.cloned().map(Some).ok_or(Unauthenticated);
    }
    let Some(password) = state.config().password.as_deref() else { return Ok(None) };
    let ok = match value.and_then(credentials) {
        Some(Credentials::Bearer(token)) => crate::cmd::password_matches(password.as_bytes(), token),
        Some(Credentials::Basic(decoded)) => crate::cmd::password_matches(password.as_bytes(), split_basic(&decoded).1),
        None => false,
    };
    if ok {
        Ok(None)
    } else {
        Err(Unauthenticated)
    }
}

enum Credentials<'a> {
    Bearer(&'a [u8]),
    /// Decoded `user:password`.
    Basic(Vec<u8>),
}

fn credentials(value: &[u8]) -> Option<Credentials<'_>> {
    if let Some(token) = value.strip_prefix(b"Bearer ") {
        return Some(Credentials::Bearer(token));
    }
    let encoded = value.strip_prefix(b"Basic ")?;
    let decoded = std::str::from_utf8(encoded).ok().and_then(crate::base64::decode)?;
    Some(Credentials::Basic(decoded))
}

/// `user:password` -> (user, password); no colon: an empty user name.
fn split_basic(decoded: &[u8]) -> (&[u8], &[u8]) {
    match decoded.iter().position(|b| *b == b':') {
        Some(i) => (&decoded[..i], &decoded[i + 1..]),
        None => (&[], decoded),
    }
}
