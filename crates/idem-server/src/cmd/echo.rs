//! `ECHO message` -> the message.

use bytes::Bytes;
use idem_core::CmdError;

use super::Parse;
use crate::resp::Frame;

/// ECHO.
#[derive(Debug)]
pub(crate) struct Echo {
    msg: Bytes,
}

impl Echo {
    pub(crate) fn parse(p: &mut Parse) -> Result<Echo, CmdError> {
        Ok(Echo { msg: p.next_bytes()? })
    }

    pub(crate) fn apply(self) -> Frame {
        Frame::Bulk(self.msg)
    }
}
