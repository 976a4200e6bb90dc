//! `ACL WHOAMI | LIST | CAT [category]`.
//!
//! WHOAMI and CAT are open to every authenticated user; LIST shows every
//! user's rules (passwords only as their SHA-256) and needs the `acl`
//! command (category `@admin`).

use bytes::Bytes;
use idem_core::CmdError;

use super::parse::shown;
use super::{Parse, Session};
use crate::acl;
use crate::resp::Frame;
use crate::state::ServerState;

/// ACL and its subcommand.
#[derive(Debug)]
pub(crate) enum AclCmd {
    WhoAmI,
    List,
    Cat(Option<Bytes>),
}

impl AclCmd {
    pub(crate) fn parse(p: &mut Parse) -> Result<AclCmd, CmdError> {
        let sub = p.next_bytes()?;
        Ok(match sub.to_ascii_uppercase().as_slice() {
            b"WHOAMI" => AclCmd::WhoAmI,
            b"LIST" => AclCmd::List,
            b"CAT" => AclCmd::Cat(p.next_opt()),
            other => {
                return Err(CmdError::syntax(format!(
                    "unknown subcommand '{}'. idem supports ACL WHOAMI, LIST and CAT",
                    shown(other)
                )))
            }
        })
    }

    /// WHOAMI and CAT reveal nothing about other users.
    pub(crate) fn always_allowed(&self) -> bool {
        matches!(self, AclCmd::WhoAmI | AclCmd::Cat(_))
    }

    pub(crate) fn apply(self, session: &Session, state: &ServerState) -> Frame {
        match self {
            AclCmd::WhoAmI => Frame::text(session.user.as_ref().map_or("default", |u| u.name()).to_string()),
            AclCmd::List => Frame::Array(state.acl().describe().into_iter().map(Frame::text).collect()),
            AclCmd::Cat(None) => Frame::Array(acl::category_names().map(|c| Frame::text(c.to_string())).collect()),
            AclCmd::Cat(Some(name)) => {
                let name = String::from_utf8_lossy(&name).into_owned();
                match acl::category_commands(&name) {
                    Some(cmds) => Frame::Array(cmds.into_iter().map(|c| Frame::text(c.to_ascii_lowercase())).collect()),
                    None => CmdError::syntax(format!("Unknown category '{}'", shown(name.as_bytes()))).into(),
                }
            }
        }
    }
}
