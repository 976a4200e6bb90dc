//! Counters recorded with the `metrics` crate. No exporter is installed
//! here; the binary (or an embedding application) installs one, and until
//! then every call is a cheap no-op.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `idem_commands_total` | counter | `command`, `transport` (`resp`/`http`) | commands received (unknown names count as `unknown`) |
//! | `idem_command_errors_total` | counter | `code`, `transport` | error replies, by code (`ERR`, `LIMIT`, `STALE`, ...) |
//! | `idem_connections_accepted_total` | counter | | RESP connections accepted |
//! | `idem_connections_rejected_total` | counter | | RESP connections refused at `max_connections` |
//! | `idem_connections` | gauge | | RESP connections open now |
//! | `idem_protocol_errors_total` | counter | | connections closed for a protocol error |
//! | `idem_slow_clients_disconnected_total` | counter | | clients cut for not reading replies or exceeding the output bound |

use idem_core::command::COMMAND_TABLE;

use crate::cmd::SERVER_COMMANDS;

/// Counts one command named `name` (any case) received over `transport`.
pub(crate) fn command(name: &[u8], transport: &'static str) {
    metrics::counter!("idem_commands_total", "command" => command_label(name), "transport" => transport).increment(1);
}

/// Counts one error reply whose text is `text` ("CODE message").
pub(crate) fn error(text: &str, transport: &'static str) {
    metrics::counter!("idem_command_errors_total", "code" => code_label(text), "transport" => transport).increment(1);
}

pub(crate) fn connection_accepted() {
    metrics::counter!("idem_connections_accepted_total").increment(1);
    metrics::gauge!("idem_connections").increment(1.0);
}

pub(crate) fn connection_closed() {
    metrics::gauge!("idem_connections").decrement(1.0);
}

pub(crate) fn connection_rejected() {
    metrics::counter!("idem_connections_rejected_total").increment(1);
}

pub(crate) fn protocol_error() {
    metrics::counter!("idem_protocol_errors_total").increment(1);
}

pub(crate) fn slow_client_disconnected() {
    metrics::counter!("idem_slow_clients_disconnected_total").increment(1);
}

/// A label from a fixed set, so that a client cannot create unbounded
/// label values (and so unbounded metric series) by sending random names.
fn command_label(name: &[u8]) -> &'static str {
    COMMAND_TABLE
        .iter()
        .map(|(n, ..)| *n)
        .chain(SERVER_COMMANDS.iter().map(|(n, _)| *n))
        .find(|n| n.as_bytes().eq_ignore_ascii_case(name))
        .unwrap_or("unknown")
}

fn code_label(text: &str) -> &'static str {
    const CODES: &[&str] = &["ERR", "LIMIT", "MISMATCH", "STALE", "NOPERM", "NOAUTH", "READONLY", "BUSY", "NOPROTO"];
    let code = text.split(' ').next().unwrap_or_default();
    CODES.iter().copied().find(|c| *c == code).unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_fixed_set() {
        assert_eq!(command_label(b"idem.begin"), "IDEM.BEGIN");
        assert_eq!(command_label(b"ping"), "PING");
        assert_eq!(command_label(b"random-garbage"), "unknown");
        assert_eq!(code_label("STALE fence 3 is not current"), "STALE");
        assert_eq!(code_label("WHATEVER x"), "OTHER");
    }
}
