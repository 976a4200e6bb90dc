//! A cursor over a server command's arguments, as in mini-redis: each
//! command takes what it needs and [`Parse::finish`] rejects leftovers.

use bytes::Bytes;
use idem_core::CmdError;

/// The arguments after the command name.
#[derive(Debug)]
pub(crate) struct Parse<'a> {
    name: &'static str,
    args: std::slice::Iter<'a, Bytes>,
}

impl<'a> Parse<'a> {
    /// A cursor over `args`, skipping the command name. Arguments taken
    /// are state with `args` (a reference count, not a copy).
    pub(crate) fn new(name: &'static str, args: &'a [Bytes]) -> Parse<'a> {
        let mut args = args.iter();
        args.next();
        Parse { name, args }
    }

    /// The error Redis gives for a wrong argument count.
    pub(crate) fn arity(&self) -> CmdError {
        CmdError::syntax(format!("wrong number of arguments for '{}' command", self.name.to_ascii_lowercase()))
    }

    /// The next argument; an arity error when there is none.
    pub(crate) fn next_bytes(&mut self) -> Result<Bytes, CmdError> {
        self.args.next().cloned().ok_or_else(|| self.arity())
    }

    /// The next argument, if any.
    pub(crate) fn next_opt(&mut self) -> Option<Bytes> {
        self.args.next().cloned()
    }

    /// How many arguments are left.
    pub(crate) fn remaining(&self) -> usize {
        self.args.len()
    }

    /// Takes every argument that is left.
    pub(crate) fn rest(&mut self) -> Vec<Bytes> {
        self.args.by_ref().cloned().collect()
    }

    /// Fails when arguments are left over.
    pub(crate) fn finish(&self) -> Result<(), CmdError> {
        if self.args.len() == 0 {
            Ok(())
        } else {
            Err(self.arity())
        }
    }
}

/// An argument shown in an error message: lossy UTF-8, cut at 64 bytes so
/// a hostile argument cannot inflate the reply.
pub(crate) fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()
}
