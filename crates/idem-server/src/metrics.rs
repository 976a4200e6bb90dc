//! Counters recorded with the `metrics` crate. The `idem` binary installs
//! `idem_metrics::exporter` (and `/metrics` appends what it holds); an
//! embedding application may install any recorder instead.
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
//!
//! ## When to install the recorder
//!
//! Every series above is registered once, when [`crate::Server::run`]
//! starts (one handle per label combination, kept in [`Metrics`]); a request
//! then costs one indexed load and an increment, with no label vector built
//! and no name compared. The `metrics` crate binds a handle to the recorder
//! installed when the handle is registered, so **install the global
//! recorder before calling `Server::run`**. A recorder installed later sees
//! nothing from a server already running (its handles stay no-ops); a
//! server started after it is installed reports normally.
//!
//! Labels come from fixed sets, so that a client cannot create unbounded
//! label values (and so unbounded metric series) by sending random names.

use idem_core::command::COMMAND_TABLE;
use idem_core::Command;
use metrics::{Counter, Gauge};

use crate::server_commands::SERVER_COMMANDS;

/// The front end a request came in through, the `transport` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Resp = 0,
    Http = 1,
}

const TRANSPORTS: [Transport; 2] = [Transport::Resp, Transport::Http];

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Resp => "resp",
            Transport::Http => "http",
        }
    }
}

/// The `command` label of a request, as an index into the label set: the
/// primitives in [`COMMAND_TABLE`] order, then the server commands in
/// [`SERVER_COMMANDS`] order, then `unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CommandLabel(usize);

const PRIMITIVE_LABELS: usize = COMMAND_TABLE.len();
const COMMAND_LABELS: usize = PRIMITIVE_LABELS + SERVER_COMMANDS.len() + 1;
const UNKNOWN: CommandLabel = CommandLabel(COMMAND_LABELS - 1);

impl CommandLabel {
    /// The label of a parsed primitive, from its variant: no name compared.
    pub(crate) fn primitive(c: &Command) -> CommandLabel {
        // In COMMAND_TABLE order; `labels_match_the_command_names` checks it.
        CommandLabel(match c {
            Command::IdemBegin { .. } => 0,
            Command::IdemCommit { .. } => 1,
            Command::IdemAbort { .. } => 2,
            Command::IdemRenew { .. } => 3,
            Command::IdemGet { .. } => 4,
            Command::IdemDel { .. } => 5,
            Command::Claim { .. } => 6,
            Command::ClaimAll { .. } => 7,
            Command::Release { .. } => 8,
            Command::Owner { .. } => 9,
            Command::Lock { .. } => 10,
            Command::Renew { .. } => 11,
            Command::Unlock { .. } => 12,
            Command::LockInfo { .. } => 13,
            Command::TokenNew { .. } => 14,
            Command::TokenUse { .. } => 15,
            Command::CounterAdd { .. } => 16,
            Command::CounterGet { .. } => 17,
            Command::ValueGet { .. } => 18,
            Command::ValueSet { .. } => 19,
            Command::FsmMove { .. } => 20,
            Command::FsmGet { .. } => 21,
            Command::SlotsReserve { .. } => 22,
            Command::SlotsRelease { .. } => 23,
            Command::SlotsGet { .. } => 24,
        })
    }

    /// The label of the server command at `index` in [`SERVER_COMMANDS`]
    /// (as returned by `cmd::lookup`).
    pub(crate) fn server(index: usize) -> CommandLabel {
        debug_assert!(index < SERVER_COMMANDS.len());
        CommandLabel(PRIMITIVE_LABELS + index)
    }

    /// The label of a request named `name` (any case) that did not parse:
    /// found by comparing names, which only the error paths pay for.
    pub(crate) fn of_name(name: &[u8]) -> CommandLabel {
        (0..COMMAND_LABELS - 1)
            .map(CommandLabel)
            .find(|l| l.name().as_bytes().eq_ignore_ascii_case(name))
            .unwrap_or(UNKNOWN)
    }

    /// The label's index: for a primitive, its position in [`COMMAND_TABLE`].
    pub(crate) fn index(self) -> usize {
        self.0
    }

    fn name(self) -> &'static str {
        if self.0 < PRIMITIVE_LABELS {
            COMMAND_TABLE[self.0].0
        } else if self.0 < COMMAND_LABELS - 1 {
            SERVER_COMMANDS[self.0 - PRIMITIVE_LABELS].0
        } else {
            "unknown"
        }
    }
}

/// The `code` labels of `idem_command_errors_total`; anything else is `OTHER`.
const ERROR_CODES: &[&str] =
    &["ERR", "LIMIT", "MISMATCH", "STALE", "NOPERM", "NOAUTH", "READONLY", "BUSY", "OOM", "UNKNOWN", "NOPROTO"];

/// The index in [`ERROR_CODES`] of the code of an error text ("CODE
/// message"); `ERROR_CODES.len()` stands for `OTHER`.
fn code_index(text: &str) -> usize {
    let code = text.split(' ').next().unwrap_or_default();
    ERROR_CODES.iter().position(|c| *c == code).unwrap_or(ERROR_CODES.len())
}

fn code_label(index: usize) -> &'static str {
    ERROR_CODES.get(index).copied().unwrap_or("OTHER")
}

/// The `# HELP` of each series below (gauges take the same call: the
/// description is per name).
const DESCRIPTIONS: [(&str, &str); 7] = [
    ("idem_commands_total", "Requests received, by command name and front end."),
    ("idem_command_errors_total", "Error replies, by code and front end."),
    ("idem_connections_accepted_total", "RESP connections accepted."),
    ("idem_connections_rejected_total", "RESP connections turned away at max_connections."),
    ("idem_connections", "RESP connections open now."),
    ("idem_protocol_errors_total", "Connections closed for a protocol error."),
    (
        "idem_slow_clients_disconnected_total",
        "Clients cut for not reading their replies or exceeding the output bound.",
    ),
];

/// Every handle the server records to, registered once (see the module
/// docs for when the recorder must be installed).
pub(crate) struct Metrics {
    /// `[transport][command label]`.
    commands: [Vec<Counter>; 2],
    /// `[transport][code index]`.
    errors: [Vec<Counter>; 2],
    connections_accepted: Counter,
    connections_rejected: Counter,
    connections: Gauge,
    protocol_errors: Counter,
    slow_clients_disconnected: Counter,
}

impl Metrics {
    /// Registers every series with the recorder installed now.
    pub(crate) fn register() -> Metrics {
        let commands = TRANSPORTS.map(|t| {
            (0..COMMAND_LABELS)
                .map(|i| {
                    metrics::counter!(
                        "idem_commands_total",
                        "command" => CommandLabel(i).name(),
                        "transport" => t.label()
                    )
                })
                .collect()
        });
        let errors = TRANSPORTS.map(|t| {
            (0..=ERROR_CODES.len())
                .map(|i| metrics::counter!("idem_command_errors_total", "code" => code_label(i), "transport" => t.label()))
                .collect()
        });
        for (name, help) in DESCRIPTIONS {
            metrics::describe_counter!(name, help);
        }
        Metrics {
            commands,
            errors,
            connections_accepted: metrics::counter!("idem_connections_accepted_total"),
            connections_rejected: metrics::counter!("idem_connections_rejected_total"),
            connections: metrics::gauge!("idem_connections"),
            protocol_errors: metrics::counter!("idem_protocol_errors_total"),
            slow_clients_disconnected: metrics::counter!("idem_slow_clients_disconnected_total"),
        }
    }

    /// Counts one command received over `transport`.
    pub(crate) fn command(&self, label: CommandLabel, transport: Transport) {
        self.commands[transport as usize][label.0].increment(1);
    }

    /// Counts one error reply whose text is `text` ("CODE message").
    pub(crate) fn error(&self, text: &str, transport: Transport) {
        self.errors[transport as usize][code_index(text)].increment(1);
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.increment(1);
        self.connections.increment(1.0);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.decrement(1.0);
    }

    pub(crate) fn connection_rejected(&self) {
        self.connections_rejected.increment(1);
    }

    pub(crate) fn protocol_error(&self) {
        self.protocol_errors.increment(1);
    }

    pub(crate) fn slow_client_disconnected(&self) {
        self.slow_clients_disconnected.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use idem_core::Limits;

    use super::*;

    /// One valid request per primitive, in COMMAND_TABLE order.
    const SAMPLES: &[&str] = &[
        "IDEM.BEGIN k",
        "IDEM.COMMIT k 1 r",
        "IDEM.ABORT k 1",
        "IDEM.RENEW k 1 LEASE 5",
        "IDEM.GET k",
        "IDEM.DEL k",
        "CLAIM k o",
        "CLAIM.ALL o k",
        "RELEASE k o",
        "OWNER k",
        "LOCK n o LEASE 1000",
        "RENEW n o LEASE 1000",
        "UNLOCK n o",
        "LOCK.INFO n",
        "TOKEN.NEW s TTL 1000",
        "TOKEN.USE s t",
        "COUNTER.ADD k 1",
        "COUNTER.GET k",
        "VALUE.GET k",
        "VALUE.SET k v",
        "FSM.MOVE k b FROM a",
        "FSM.GET k",
        "SLOTS.RESERVE r 0 1 h",
        "SLOTS.RELEASE r 0 1 h",
        "SLOTS.GET r",
    ];

    fn parse(line: &str) -> Command {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        Command::parse(&args, &Limits::default()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn labels_match_the_command_names() {
        assert_eq!(SAMPLES.len(), COMMAND_TABLE.len());
        for (i, line) in SAMPLES.iter().enumerate() {
            let c = parse(line);
            let label = CommandLabel::primitive(&c);
            assert_eq!(label, CommandLabel(i), "{line}");
            assert_eq!(label.name(), c.name(), "{line}");
            assert_eq!(label.name(), COMMAND_TABLE[i].0);
            assert_eq!(CommandLabel::of_name(c.name().to_ascii_lowercase().as_bytes()), label);
        }
        for (i, (name, _)) in SERVER_COMMANDS.iter().enumerate() {
            assert_eq!(CommandLabel::server(i).name(), *name);
            assert_eq!(CommandLabel::of_name(name.as_bytes()), CommandLabel::server(i));
        }
    }

    /// Records counter increments by series, as an exporter would.
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<(String, std::sync::Arc<std::sync::atomic::AtomicU64>)>>);

    impl metrics::Recorder for Recorded {
        fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> Counter {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            let series = format!("{}{{{}}}", key.name(), labels.join(","));
            let value = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            self.0.lock().unwrap().push((series, value.clone()));
            Counter::from_arc(value)
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    impl Recorded {
        fn get(&self, series: &str) -> u64 {
            let all = self.0.lock().unwrap();
            let found: Vec<_> = all.iter().filter(|(s, _)| s == series).collect();
            assert_eq!(found.len(), 1, "{series} registered once");
            found[0].1.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    #[test]
    fn handles_registered_with_the_recorder_count_by_label() {
        let recorder = Recorded::default();
        let m = metrics::with_local_recorder(&recorder, Metrics::register);
        // Counted outside the recorder scope: each handle stays bound to the
        // recorder it was registered with.
        m.command(CommandLabel::primitive(&parse("idem.begin k")), Transport::Resp);
        m.command(CommandLabel::primitive(&parse("IDEM.BEGIN j")), Transport::Resp);
        m.command(CommandLabel::server(0), Transport::Http);
        m.command(CommandLabel::of_name(b"nope"), Transport::Resp);
        m.error("STALE fence 3 is not current", Transport::Resp);
        m.error("WHATEVER x", Transport::Http);
        m.connection_accepted();
        assert_eq!(recorder.get("idem_commands_total{command=IDEM.BEGIN,transport=resp}"), 2);
        assert_eq!(recorder.get("idem_commands_total{command=IDEM.BEGIN,transport=http}"), 0);
        assert_eq!(recorder.get("idem_commands_total{command=PING,transport=http}"), 1);
        assert_eq!(recorder.get("idem_commands_total{command=unknown,transport=resp}"), 1);
        assert_eq!(recorder.get("idem_command_errors_total{code=STALE,transport=resp}"), 1);
        assert_eq!(recorder.get("idem_command_errors_total{code=OTHER,transport=http}"), 1);
        assert_eq!(recorder.get("idem_connections_accepted_total{}"), 1);
        assert_eq!(recorder.0.lock().unwrap().len(), 2 * COMMAND_LABELS + 2 * (ERROR_CODES.len() + 1) + 4);
    }

    #[test]
    fn labels_come_from_a_fixed_set() {
        assert_eq!(CommandLabel::of_name(b"idem.begin").name(), "IDEM.BEGIN");
        assert_eq!(CommandLabel::of_name(b"ping").name(), "PING");
        assert_eq!(CommandLabel::of_name(b"random-garbage").name(), "unknown");
        assert_eq!(CommandLabel::of_name(b"unknown").name(), "unknown");
        assert_eq!(code_label(code_index("STALE fence 3 is not current")), "STALE");
        assert_eq!(code_label(code_index("WHATEVER x")), "OTHER");
        assert_eq!(code_label(code_index("ERR")), "ERR");
    }
}
