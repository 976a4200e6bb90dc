//! `COMMAND`, `COMMAND COUNT`, `COMMAND LIST`, `COMMAND INFO name...`,
//! `COMMAND DOCS [name...]`: enough for `redis-cli` (it sends `COMMAND DOCS`
//! when it starts interactively) and for client libraries that look up
//! which commands are read-only.

use bytes::Bytes;
use idem_core::command::COMMAND_TABLE;
use idem_core::CmdError;

use super::parse::shown;
use super::Parse;
use crate::resp::Frame;
use crate::server_commands::SERVER_COMMANDS;

/// COMMAND and its subcommand.
#[derive(Debug)]
pub(crate) enum CommandQuery {
    All,
    Count,
    List,
    Info(Vec<Bytes>),
    Docs,
}

impl CommandQuery {
    pub(crate) fn parse(p: &mut Parse) -> Result<CommandQuery, CmdError> {
        let Some(sub) = p.next_opt() else { return Ok(CommandQuery::All) };
        Ok(match sub.to_ascii_uppercase().as_slice() {
            b"COUNT" => CommandQuery::Count,
            b"LIST" => CommandQuery::List,
            b"INFO" => CommandQuery::Info(p.rest()),
            b"DOCS" => {
                // Docs are not served; the names asked for do not matter.
                p.rest();
                CommandQuery::Docs
            }
            other => {
                return Err(CmdError::syntax(format!(
                    "unknown subcommand '{}'. idem supports COMMAND, COMMAND COUNT, LIST, INFO and DOCS",
                    shown(other)
                )))
            }
        })
    }

    pub(crate) fn apply(self) -> Frame {
        match self {
            CommandQuery::All => {
                Frame::Array(all().map(|(name, arity, write, server)| info(name, arity, write, server)).collect())
            }
            CommandQuery::Count => Frame::Int(all().count() as i64),
            CommandQuery::List => {
                Frame::Array(all().map(|(name, ..)| Frame::text(name.to_ascii_lowercase())).collect())
            }
            CommandQuery::Info(names) => Frame::Array(
                names
                    .iter()
                    .map(|n| {
                        all()
                            .find(|(name, ..)| name.as_bytes().eq_ignore_ascii_case(n))
                            .map_or(Frame::Nil, |(name, arity, write, server)| info(name, arity, write, server))
                    })
                    .collect(),
            ),
            // An empty map: redis-cli then simply offers no hints.
            CommandQuery::Docs => Frame::Map(Vec::new()),
        }
    }
}

/// Every command: `(name, arity, writes, is_server_command)`.
fn all() -> impl Iterator<Item = (&'static str, i64, bool, bool)> {
    COMMAND_TABLE
        .iter()
        .map(|&(n, a, w)| (n, a, w, false))
        .chain(SERVER_COMMANDS.iter().map(|&(n, a)| (n, a, false, true)))
}

/// One entry in Redis 7's COMMAND INFO shape: name, arity, flags, first
/// key, last key, key step, ACL categories, tips, key specs, subcommands.
fn info(name: &str, arity: i64, write: bool, server: bool) -> Frame {
    let flags: &[&'static str] = match (server, write) {
        (true, _) => &["fast", "noscript", "loading", "stale"],
        (false, true) => &["write"],
        (false, false) => &["readonly", "fast"],
    };
    // CLAIM.ALL's keys start after the owner and run to the end.
    let (first, last, step) = match (server, name) {
        (true, _) => (0, 0, 0),
        (false, "CLAIM.ALL") => (2, -1, 1),
        (false, _) => (1, 1, 1),
    };
    Frame::Array(vec![
        Frame::text(name.to_ascii_lowercase()),
        Frame::Int(arity),
        Frame::Array(flags.iter().map(|f| Frame::Simple(f)).collect()),
        Frame::Int(first),
        Frame::Int(last),
        Frame::Int(step),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}
