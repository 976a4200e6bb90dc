//! `QUIT` -> `OK`, then the connection closes once the replies before it are written.

use idem_core::CmdError;

use super::{Parse, Session};
use crate::resp::Frame;

/// QUIT.
#[derive(Debug)]
pub(crate) struct Quit;

impl Quit {
    pub(crate) fn parse(p: &mut Parse) -> Result<Quit, CmdError> {
        // Redis ignores QUIT's arguments; so do we, so that no client is
        // left connected because it said goodbye with extra words.
        p.rest();
        Ok(Quit)
    }

    pub(crate) fn apply(self, session: &mut Session) -> Frame {
        session.quit = true;
        Frame::Simple("OK")
    }
}
