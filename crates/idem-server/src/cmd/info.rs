//! `INFO [section ...]` -> a bulk string of `field:value` lines grouped in
//! `# Section` blocks, as Redis writes it. Sections: server, clients, stats,
//! store (the backend's own facts), then those of `crate::observe`. No section, `all`, `default` or
//! `everything` means every section; unknown sections are skipped.

use std::fmt::Write;

use bytes::Bytes;
use idem_core::CmdError;

use super::Parse;
use crate::resp::Frame;
use crate::state::{InfoCounter, ServerState};

const SECTIONS: &[&str] = &["server", "clients", "stats", "store"];

/// INFO.
#[derive(Debug)]
pub(crate) struct Info {
    sections: Vec<Bytes>,
}

impl Info {
    pub(crate) fn parse(p: &mut Parse) -> Result<Info, CmdError> {
        Ok(Info { sections: p.rest() })
    }

    pub(crate) fn apply(self, state: &ServerState) -> Frame {
        let everything = self.sections.is_empty()
            || self
                .sections
                .iter()
                .any(|s| [&b"all"[..], b"default", b"everything"].iter().any(|w| s.eq_ignore_ascii_case(w)));
        let mut text = String::new();
        for &section in SECTIONS.iter().chain(&crate::observe::SECTIONS) {
            if everything || self.sections.iter().any(|s| s.eq_ignore_ascii_case(section.as_bytes())) {
                if !text.is_empty() {
                    text.push_str("\r\n");
                }
                write_section(&mut text, section, state);
            }
        }
        Frame::Bulk(Bytes::from(text))
    }
}

fn write_section(out: &mut String, section: &str, state: &ServerState) {
    let counters = state.counters();
    let title = match section {
        "server" => "Server",
        "clients" => "Clients",
        "stats" => "Stats",
        "store" => "Store",
        other => return observe_section(out, other, state),
    };
    out.push_str("# ");
    out.push_str(title);
    out.push_str("\r\n");
    // Writing to a String cannot fail.
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    match section {
        "server" => {
            line("idem_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("process_id", &std::process::id());
            line("tcp_port", &state.port());
            line("uptime_in_seconds", &state.uptime().as_secs());
            line("backend", &state.backend().name());
            line("event_loops", &state.config().event_loops);
        }
        "clients" => {
            line("connected_clients", &counters.get(InfoCounter::ConnectedClients));
            line("maxclients", &state.config().max_connections);
            line("client_buffers_bytes", &state.buffers().total_bytes());
            line("client_buffers_bytes_max", &state.buffers().max_bytes());
        }
        "stats" => {
            line("total_connections_received", &counters.get(InfoCounter::ConnectionsReceived));
            line("rejected_connections", &counters.get(InfoCounter::ConnectionsRejected));
            line("total_commands_processed", &counters.get(InfoCounter::CommandsProcessed));
            line("total_error_replies", &counters.get(InfoCounter::ErrorReplies));
            line("total_protocol_errors", &counters.get(InfoCounter::ProtocolErrors));
            line("total_clients_disconnected_slow", &counters.get(InfoCounter::SlowClientsDisconnected));
            line("evicted_clients", &state.buffers().evicted_count());
        }
        _ => {
            for (k, v) in state.backend().info() {
                // Backend facts are free text: keep one field per line.
                let clean = |s: &str| s.replace(['\r', '\n'], " ");
                line(&clean(&k), &clean(&v));
            }
        }
    }
}

/// A section of `crate::observe`, under its title.
fn observe_section(out: &mut String, section: &str, state: &ServerState) {
    let mut title = section.to_string();
    title[..1].make_ascii_uppercase();
    out.push_str("# ");
    out.push_str(&title);
    out.push_str("\r\n");
    crate::observe::write_section(out, section, state);
}
