//! `PING [message]` -> `PONG`, or the message as a bulk string.

use bytes::Bytes;
use idem_core::CmdError;

use super::Parse;
use crate::resp::Frame;

/// PING.
#[derive(Debug)]
pub(crate) struct Ping {
    msg: Option<Bytes>,
}

impl Ping {
    pub(crate) fn parse(p: &mut Parse) -> Result<Ping, CmdError> {
        Ok(Ping { msg: p.next_opt() })
    }

    pub(crate) fn apply(self) -> Frame {
        match self.msg {
            None => Frame::Simple("PONG"),
            Some(m) => Frame::Bulk(m),
        }
    }
}
