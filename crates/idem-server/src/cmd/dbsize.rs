//! `DBSIZE` -> how many live records the backend holds.

use idem_core::CmdError;

use super::Parse;
use crate::resp::Frame;
use crate::state::ServerState;

/// DBSIZE.
#[derive(Debug)]
pub(crate) struct DbSize;

impl DbSize {
    pub(crate) fn parse(_p: &mut Parse) -> Result<DbSize, CmdError> {
        Ok(DbSize)
    }

    pub(crate) async fn apply(self, state: &ServerState) -> Frame {
        match state.backend().dbsize().await {
            Ok(n) => Frame::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => e.into(),
        }
    }
}
