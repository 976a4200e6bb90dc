//! The names and arities of the commands the server answers itself: a leaf
//! table that dispatch (`cmd`), the `COMMAND` reply and the metric labels
//! (`metrics`) all read.

/// Name (upper case) and Redis-style arity of every server command, for
/// dispatch and for the `COMMAND` reply.
pub(crate) const SERVER_COMMANDS: &[(&str, i64)] = &[
    ("PING", -1),
    ("ECHO", 2),
    ("HELLO", -1),
    ("AUTH", -2),
    ("QUIT", -1),
    ("INFO", -1),
    ("CLIENT", -2),
    ("COMMAND", -1),
    ("DBSIZE", 1),
    ("SELECT", 2),
    ("ACL", -2),
];

/// The index in [`SERVER_COMMANDS`] and the upper-case name of the server
/// command `name`, if it is one.
pub(crate) fn lookup(name: &[u8]) -> Option<(usize, &'static str)> {
    SERVER_COMMANDS
        .iter()
        .enumerate()
        .find(|(_, (n, _))| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|(i, (n, _))| (i, *n))
}
