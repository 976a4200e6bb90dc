//! `CLIENT SETNAME name | GETNAME | ID | SETINFO attr value`.
//!
//! SETINFO is accepted and ignored: client libraries (redis-rs, redis-py,
//! go-redis) send `CLIENT SETINFO LIB-NAME ...` on every connect.

use bytes::Bytes;
use idem_core::CmdError;

use super::parse::shown;
use super::{Parse, Session};
use crate::resp::Frame;

/// Longest client name, in bytes: a name is for people reading INFO and
/// logs, and every bound is explicit.
pub(crate) const CLIENT_NAME_BYTES_MAX: usize = 256;

/// CLIENT and its subcommand.
#[derive(Debug)]
pub(crate) enum Client {
    SetName(Bytes),
    GetName,
    Id,
    SetInfo,
}

impl Client {
    pub(crate) fn parse(p: &mut Parse) -> Result<Client, CmdError> {
        let sub = p.next_bytes()?;
        let sub = sub.to_ascii_uppercase();
        Ok(match sub.as_slice() {
            b"SETNAME" => Client::SetName(p.next_bytes()?),
            b"GETNAME" => Client::GetName,
            b"ID" => Client::Id,
            b"SETINFO" => {
                p.next_bytes()?;
                p.next_bytes()?;
                Client::SetInfo
            }
            other => {
                return Err(CmdError::syntax(format!(
                    "unknown subcommand '{}'. idem supports CLIENT SETNAME, GETNAME, ID and SETINFO",
                    shown(other)
                )))
            }
        })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Frame {
        match self {
            Client::SetName(name) => match check_name(&name) {
                Ok(()) => {
                    session.name = (!name.is_empty()).then_some(name);
                    Frame::Simple("OK")
                }
                Err(e) => e.into(),
            },
            Client::GetName => session.name.clone().map_or(Frame::Nil, Frame::Bulk),
            Client::Id => Frame::Int(i64::try_from(session.id).unwrap_or(i64::MAX)),
            Client::SetInfo => Frame::Simple("OK"),
        }
    }
}

/// Client names are printable ASCII without spaces, as in Redis, so INFO
/// and log lines stay one line per client.
pub(crate) fn check_name(name: &[u8]) -> Result<(), CmdError> {
    if name.len() > CLIENT_NAME_BYTES_MAX {
        return Err(CmdError::limit(format!(
            "client name is {} bytes, the limit is {CLIENT_NAME_BYTES_MAX}",
            name.len()
        )));
    }
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(CmdError::syntax("Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}
