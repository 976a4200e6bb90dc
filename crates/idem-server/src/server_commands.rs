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
    // Every request asks; a primitive's name (IDEM.BEGIN, COUNTER.ADD) is
    // longer than every server command's, which settles most at once.
    if name.len() > NAME_BYTES_MAX {
        return None;
    }
    SERVER_COMMANDS
        .iter()
        .enumerate()
        .find(|(_, (n, _))| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|(i, (n, _))| (i, *n))
}

/// The longest name in [`SERVER_COMMANDS`].
const NAME_BYTES_MAX: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < SERVER_COMMANDS.len() {
        if SERVER_COMMANDS[i].0.len() > max {
            max = SERVER_COMMANDS[i].0.len();
        }
        i += 1;
    }
    max
};
