//! The server's own figures, kept in plain atomics: outcomes and latency
//! per primitive command, and duplicates absorbed per primitive. Read by
//! `/metrics`, INFO and the dashboard.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use idem_core::command::COMMAND_TABLE;
use idem_core::{CmdResult, Command};
use idem_metrics::us_histogram::{UsHistogram, UsSnapshot};

use super::outcome::{is_absorbed_duplicate, outcome_index, primitive_of, OUTCOMES, PRIMITIVES};
use crate::metrics::CommandLabel;

/// Upper bounds (inclusive, microseconds) of the latency buckets: from a
/// memory-only reply to a WAIT that parked for a second.
pub(crate) const LATENCY_US_BOUNDS: [u64; 13] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

const COMMANDS: usize = COMMAND_TABLE.len();

/// Buckets of a command's latency histogram: one per bound, one above them.
const LATENCY_BUCKETS: usize = LATENCY_US_BOUNDS.len() + 1;

/// A command's latency histogram as read at one moment.
pub(crate) type LatencySnapshot = UsSnapshot<LATENCY_BUCKETS>;

/// Most commands of one batch whose labels a [`Probe`] keeps on the stack;
/// a longer batch (up to `batch_commands_max`) allocates once.
const PROBE_INLINE: usize = 64;

/// The labels and start time of one batch sent to the backend.
pub(crate) struct Probe {
    started: Instant,
    inline: [u8; PROBE_INLINE],
    spilled: Vec<u8>,
    len: usize,
}

/// Every figure the server keeps about the commands it ran.
pub(crate) struct Telemetry {
    outcomes: Box<[[AtomicU64; OUTCOMES.len()]; COMMANDS]>,
    /// `[command][outcome]`: the primitive whose duplicate counter the pair
    /// feeds, if it is an absorbed duplicate.
    absorbed: [[Option<u8>; OUTCOMES.len()]; COMMANDS],
    duplicates: [AtomicU64; PRIMITIVES.len()],
    latency: Box<[UsHistogram<LATENCY_BUCKETS>; COMMANDS]>,
}

impl Telemetry {
    pub(crate) fn new() -> Telemetry {
        let mut absorbed = [[None; OUTCOMES.len()]; COMMANDS];
        for (c, row) in absorbed.iter_mut().enumerate() {
            let name = COMMAND_TABLE[c].0;
            for (o, cell) in row.iter_mut().enumerate() {
                if is_absorbed_duplicate(name, o) {
                    *cell = Some(primitive_of(name) as u8);
                }
            }
        }
        Telemetry {
            outcomes: Box::new(std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))),
            absorbed,
            duplicates: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Box::new(std::array::from_fn(|_| UsHistogram::new(&LATENCY_US_BOUNDS))),
        }
    }

    /// Starts timing a batch of `cmds` (call before they go to the backend).
    pub(crate) fn probe(&self, cmds: &[Command]) -> Probe {
        let mut p = Probe { started: Instant::now(), inline: [0; PROBE_INLINE], spilled: Vec::new(), len: cmds.len() };
        let label = |c: &Command| CommandLabel::primitive(c).index() as u8;
        if cmds.len() <= PROBE_INLINE {
            for (slot, c) in p.inline.iter_mut().zip(cmds) {
                *slot = label(c);
            }
        } else {
            p.spilled = cmds.iter().map(label).collect();
        }
        p
    }

    /// Records the results of the batch `probe` timed: each command gets the
    /// batch's latency, which is what its caller waited.
    pub(crate) fn finish(&self, probe: Probe, results: &[CmdResult]) {
        let us = probe.started.elapsed().as_micros() as u64;
        let labels = if probe.len <= PROBE_INLINE { &probe.inline[..probe.len] } else { &probe.spilled[..] };
        for (&c, r) in labels.iter().zip(results) {
            self.record(c as usize, r, us);
        }
    }

    /// Records one command (label index `command`) that took `us`.
    pub(crate) fn record(&self, command: usize, result: &CmdResult, us: u64) {
        let o = outcome_index(result);
        self.outcomes[command][o].fetch_add(1, Relaxed);
        if let Some(p) = self.absorbed[command][o] {
            self.duplicates[p as usize].fetch_add(1, Relaxed);
        }
        self.latency[command].record(us);
    }

    /// `(command, outcome, count)` for every pair seen at least once.
    pub(crate) fn outcomes(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut v = Vec::new();
        for (c, row) in self.outcomes.iter().enumerate() {
            for (o, n) in row.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    v.push((COMMAND_TABLE[c].0, OUTCOMES[o], n));
                }
            }
        }
        v
    }

    /// `(primitive, duplicates absorbed)` for every primitive.
    pub(crate) fn duplicates(&self) -> [(&'static str, u64); PRIMITIVES.len()] {
        std::array::from_fn(|p| (PRIMITIVES[p], self.duplicates[p].load(Relaxed)))
    }

    /// `(command, latency)` for every command run at least once.
    pub(crate) fn latencies(&self) -> Vec<(&'static str, LatencySnapshot)> {
        (0..COMMANDS).map(|c| (COMMAND_TABLE[c].0, self.latency[c].snapshot())).filter(|(_, h)| h.count() > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use idem_core::{Limits, Reply};

    use super::*;

    fn parse(line: &str) -> Command {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        Command::parse(&args, &Limits::default()).unwrap()
    }

    #[test]
    fn a_batch_counts_outcomes_duplicates_and_latency() {
        let t = Telemetry::new();
        for n in [3, PROBE_INLINE + 5] {
            let cmds: Vec<Command> = (0..n).map(|i| parse(if i == 0 { "IDEM.BEGIN k" } else { "CLAIM k o" })).collect();
            let probe = t.probe(&cmds);
            let mut results = vec![Ok(Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"r"))]))];
            results.extend((1..n).map(|_| Ok(Reply::status_with("held", [Reply::Bulk(Bytes::from_static(b"x"))]))));
            t.finish(probe, &results);
        }
        let out = t.outcomes();
        assert!(out.contains(&("IDEM.BEGIN", "done", 2)), "{out:?}");
        assert!(out.contains(&("CLAIM", "held", 2 + PROBE_INLINE as u64 + 4)), "{out:?}");
        let dups = t.duplicates();
        assert_eq!(dups[0], ("idem", 2));
        assert_eq!(dups[1], ("claim", 2 + PROBE_INLINE as u64 + 4));
        assert_eq!(dups[2], ("lock", 0));
        let lat = t.latencies();
        assert_eq!(lat.len(), 2);
        assert_eq!(lat[0].1.count(), 2);
    }
}
