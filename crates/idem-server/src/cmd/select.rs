//! `SELECT 0` -> `OK`. idem has one keyspace; clients and connection pools
//! send `SELECT 0` on connect, so it must succeed, and any other index fails.

use bytes::Bytes;
use idem_core::CmdError;

use super::Parse;
use crate::resp::Frame;

/// SELECT.
#[derive(Debug)]
pub(crate) struct Select {
    index: Bytes,
}

impl Select {
    pub(crate) fn parse(p: &mut Parse) -> Result<Select, CmdError> {
        Ok(Select { index: p.next_bytes()? })
    }

    pub(crate) fn apply(self) -> Frame {
        match std::str::from_utf8(&self.index).ok().and_then(|s| s.parse::<i64>().ok()) {
            Some(0) => Frame::Simple("OK"),
            Some(_) => CmdError::syntax("DB index is out of range (idem has only database 0)").into(),
            None => CmdError::syntax("value is not an integer or out of range").into(),
        }
    }
}
