//! `INFO [section ...]` -> a bulk string of `field:value` lines grouped in
//! `# Section` blocks, as Redis writes it. Sections: server, clients, stats,
//! store (the backend's own facts). No section, `all`, `default` or
//! `everything` means every section; unknown sections are skipped.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use idem_core::CmdError;

use super::Parse;
use crate::resp::Frame;
use crate::server::Shared;

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

    pub(crate) fn apply(self, shared: &Shared) -> Frame {
        let everything = self.sections.is_empty()
            || self
                .sections
                .iter()
                .any(|s| [&b"all"[..], b"default", b"everything"].iter().any(|w| s.eq_ignore_ascii_case(w)));
        let mut text = String::new();
        for &section in SECTIONS {
            if everything || self.sections.iter().any(|s| s.eq_ignore_ascii_case(section.as_bytes())) {
                if !text.is_empty() {
                    text.push_str("\r\n");
                }
                write_section(&mut text, section, shared);
            }
        }
        Frame::Bulk(Bytes::from(text))
    }
}

fn write_section(out: &mut String, section: &str, shared: &Shared) {
    let stats = &shared.stats;
    let title = match section {
        "server" => "Server",
        "clients" => "Clients",
        "stats" => "Stats",
        _ => "Store",
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
            line("tcp_port", &shared.port);
            line("uptime_in_seconds", &shared.started.elapsed().as_secs());
            line("backend", &shared.backend.name());
            line("event_loops", &shared.config.event_loops);
        }
        "clients" => {
            line("connected_clients", &stats.connected_clients.load(Relaxed));
            line("maxclients", &shared.config.max_connections);
        }
        "stats" => {
            line("total_connections_received", &stats.connections_received.load(Relaxed));
            line("rejected_connections", &stats.connections_rejected.load(Relaxed));
            line("total_commands_processed", &stats.commands_processed.load(Relaxed));
            line("total_error_replies", &stats.error_replies.load(Relaxed));
            line("total_protocol_errors", &stats.protocol_errors.load(Relaxed));
            line("total_clients_disconnected_slow", &stats.slow_clients_disconnected.load(Relaxed));
        }
        _ => {
            for (k, v) in shared.backend.info() {
                // Backend facts are free text: keep one field per line.
                let clean = |s: &str| s.replace(['\r', '\n'], " ");
                line(&clean(&k), &clean(&v));
            }
        }
    }
}
