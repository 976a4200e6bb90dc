//! Server commands: the ones the server answers itself, without the backend
//! (PING, HELLO, AUTH, QUIT, INFO, CLIENT, COMMAND, DBSIZE, SELECT, ECHO).
//!
//! One file per command, as in mini-redis: each has `parse` (from a
//! [`Parse`] cursor that rejects leftover arguments) and `apply` (which
//! returns the reply frame). Adding a command touches its file, the enum
//! below and `SERVER_COMMANDS` (in `server_commands`, which the metrics
//! read too).

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

use bytes::Bytes;
use idem_core::CmdError;

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
    /// Set by QUIT: close after writing the replies so far.
    pub(crate) quit: bool,
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
        }
    }
}
