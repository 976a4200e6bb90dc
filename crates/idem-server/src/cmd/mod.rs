//! Server commands: the ones the server answers itself, without the backend
//! (PING, HELLO, AUTH, QUIT, INFO, CLIENT, COMMAND, DBSIZE, SELECT, ECHO,
//! ACL).
//!
//! One file per command, as in mini-redis: each has `parse` (from a
//! [`Parse`] cursor that rejects leftover arguments) and `apply` (which
//! returns the reply frame). Adding a command touches its file, the enum
//! below and `SERVER_COMMANDS` (in `server_commands`, which the metrics
//! read too).

mod acl;
mod auth;
mod client;
mod command;
mod dbsize;
mod echo;
mod hello;
mod info;
mod parse;
mod ping;
mod quit;
mod select;

use std::sync::Arc;

use bytes::Bytes;
use idem_core::CmdError;

use crate::acl::AclUser;

use crate::resp::{Frame, Protocol};
use crate::state::ServerState;

pub(crate) use auth::password_matches;
use parse::Parse;

pub(crate) use crate::server_commands::lookup;

/// The per-connection state server commands read and change.
#[derive(Debug)]
pub(crate) struct Session {
    /// Unique id of the connection (`CLIENT ID`).
    pub(crate) id: u64,
    /// `CLIENT SETNAME`.
    pub(crate) name: Option<Bytes>,
    /// The protocol chosen by `HELLO`.
    pub(crate) proto: Protocol,
    /// True once AUTH succeeded, or from the start when no password is set.
    pub(crate) authenticated: bool,
    /// The ACL user logged in, when ACL users are configured; `None`
    /// without them (every command allowed once authenticated).
    pub(crate) user: Option<Arc<AclUser>>,
    /// Set by QUIT: close after writing the replies so far.
    pub(crate) quit: bool,
}

impl Session {
    /// A new connection's session: logged in as the `default` user when it
    /// needs no password.
    pub(crate) fn new(id: u64, state: &ServerState) -> Session {
        let (authenticated, user) = match state.acl_enforced() {
            None => (state.config().password.is_none(), None),
            Some(acl) => match acl.anonymous() {
                Some(u) => (true, Some(u.clone())),
                None => (false, None),
            },
        };
        Session { id, name: None, proto: Protocol::Resp2, authenticated, user, quit: false }
    }
}

/// A parsed server command.
#[derive(Debug)]
pub(crate) enum ServerCmd {
    Ping(ping::Ping),
    Echo(echo::Echo),
    Hello(hello::Hello),
    Auth(auth::Auth),
    Quit(quit::Quit),
    Info(info::Info),
    Client(client::Client),
    Command(command::CommandQuery),
    DbSize(dbsize::DbSize),
    Select(select::Select),
    Acl(acl::AclCmd),
}

impl ServerCmd {
    /// Parses `args` whose first element [`lookup`] recognised as `name`.
    pub(crate) fn parse(name: &'static str, args: &[Bytes]) -> Result<ServerCmd, CmdError> {
        let mut p = Parse::new(name, args);
        let cmd = match name {
            "PING" => ServerCmd::Ping(ping::Ping::parse(&mut p)?),
            "ECHO" => ServerCmd::Echo(echo::Echo::parse(&mut p)?),
            "HELLO" => ServerCmd::Hello(hello::Hello::parse(&mut p)?),
            "AUTH" => ServerCmd::Auth(auth::Auth::parse(&mut p)?),
            "QUIT" => ServerCmd::Quit(quit::Quit::parse(&mut p)?),
            "INFO" => ServerCmd::Info(info::Info::parse(&mut p)?),
            "CLIENT" => ServerCmd::Client(client::Client::parse(&mut p)?),
            "COMMAND" => ServerCmd::Command(command::CommandQuery::parse(&mut p)?),
            "DBSIZE" => ServerCmd::DbSize(dbsize::DbSize::parse(&mut p)?),
            "SELECT" => ServerCmd::Select(select::Select::parse(&mut p)?),
            "ACL" => ServerCmd::Acl(acl::AclCmd::parse(&mut p)?),
            other => return Err(CmdError::syntax(format!("unknown command '{other}'"))),
        };
        p.finish()?;
        Ok(cmd)
    }

    /// Whether a client may run the command before authenticating: only the
    /// ones that authenticate or leave, as in Redis.
    pub(crate) fn allowed_unauthenticated(name: &str) -> bool {
        matches!(name, "AUTH" | "HELLO" | "QUIT")
    }

    /// Whether every authenticated user may run the command, whatever its
    /// ACL rules: logging in and out, and asking who one is.
    pub(crate) fn always_allowed(&self) -> bool {
        match self {
            ServerCmd::Auth(_) | ServerCmd::Hello(_) | ServerCmd::Quit(_) => true,
            ServerCmd::Acl(c) => c.always_allowed(),
            _ => false,
        }
    }

    /// Runs the command and returns its reply.
    pub(crate) async fn apply(self, session: &mut Session, state: &ServerState) -> Frame {
        match self {
            ServerCmd::Ping(c) => c.apply(),
            ServerCmd::Echo(c) => c.apply(),
            ServerCmd::Hello(c) => c.apply(session, state),
            ServerCmd::Auth(c) => c.apply(session, state),
            ServerCmd::Quit(c) => c.apply(session),
            ServerCmd::Info(c) => c.apply(state),
            ServerCmd::Client(c) => c.apply(session),
            ServerCmd::Command(c) => c.apply(),
            ServerCmd::DbSize(c) => c.apply(state).await,
            ServerCmd::Select(c) => c.apply(),
            ServerCmd::Acl(c) => c.apply(session, state),
        }
    }
}
