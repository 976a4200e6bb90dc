//! `HELLO [2|3 [AUTH username password] [SETNAME name]]` -> a map of facts
//! about the server (a flat array in RESP2), as Redis replies:
//! `server idem version .. proto .. id .. mode standalone role master modules []`.

use bytes::Bytes;
use idem_core::{CmdError, ErrorCode};

use super::client::check_name;
use super::parse::shown;
use super::{auth, Parse, Session};
use crate::resp::{Frame, Protocol};
use crate::state::ServerState;

/// HELLO.
#[derive(Debug)]
pub(crate) struct Hello {
    proto: Option<Bytes>,
    auth: Option<(Bytes, Bytes)>,
    setname: Option<Bytes>,
}

impl Hello {
    pub(crate) fn parse(p: &mut Parse) -> Result<Hello, CmdError> {
        let mut hello = Hello { proto: p.next_opt(), auth: None, setname: None };
        while let Some(opt) = p.next_opt() {
            if opt.eq_ignore_ascii_case(b"AUTH") && p.remaining() >= 2 {
                hello.auth = Some((p.next_bytes()?, p.next_bytes()?));
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && p.remaining() >= 1 {
                hello.setname = Some(p.next_bytes()?);
            } else {
                return Err(CmdError::syntax(format!("Syntax error in HELLO option '{}'", shown(&opt))));
            }
        }
        Ok(hello)
    }

    pub(crate) fn apply(self, session: &mut Session, state: &ServerState) -> Frame {
        // Everything is checked before anything changes: a refused HELLO
        // leaves the protocol, the name and the authentication as they were.
        let proto = match self.proto.as_deref() {
            None => session.proto,
            Some(v) => match std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()) {
                Some(2) => Protocol::Resp2,
                Some(3) => Protocol::Resp3,
                Some(_) => return Frame::Error("NOPROTO sorry, this protocol version is not supported".into()),
                None => return CmdError::syntax("Protocol version is not an integer or out of range").into(),
            },
        };
        if let Some(name) = &self.setname {
            if let Err(e) = check_name(name) {
                return e.into();
            }
        }
        if let Some((user, password)) = &self.auth {
            match auth::check(state, Some(user), password) {
                Ok(u) => session.user = u,
                Err(e) => return e.into(),
            }
            session.authenticated = true;
        } else if !session.authenticated {
            return CmdError::new(
                ErrorCode::NoAuth,
                "HELLO must be called with the client already authenticated, otherwise the \
                 HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
                 and select the RESP protocol version at the same time",
            )
            .into();
        }
        if let Some(name) = self.setname {
            session.name = (!name.is_empty()).then_some(name);
        }
        session.proto = proto;
        Frame::Map(vec![
            (Frame::text("server"), Frame::text("idem")),
            (Frame::text("version"), Frame::text(env!("CARGO_PKG_VERSION"))),
            (Frame::text("proto"), Frame::Int(proto.version())),
            (Frame::text("id"), Frame::Int(i64::try_from(session.id).unwrap_or(i64::MAX))),
            (Frame::text("mode"), Frame::text("standalone")),
            (Frame::text("role"), Frame::text("master")),
            (Frame::text("modules"), Frame::Array(Vec::new())),
        ])
    }
}
