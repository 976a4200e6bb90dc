//! What the server shows about itself: `/metrics` (Prometheus text), the
//! INFO sections `outcomes`, `duplicates`, `latency`, `records` and `wal`,
//! and the figures behind them. Metric names and what counts as an absorbed
//! duplicate are documented in docs/observability.md.
//!
//! The hot path pays for [`Telemetry`] only: one clock read at each end of
//! a batch, then per command an outcome lookup and three relaxed atomic
//! adds. [`crate::Server::metrics`] turns it off.

mod http_stats;
mod info;
mod outcome;
mod render;
mod telemetry;

pub(crate) use http_stats::{HttpStats, OpenConnection};
/// Installs the exporter whose series `/metrics` appends (see
/// `idem_metrics::exporter`).
pub use idem_metrics::exporter::install as install_recorder;
pub(crate) use info::{write_section, SECTIONS};
pub(crate) use render::{render, CONTENT_TYPE};
pub(crate) use telemetry::{Probe, Telemetry};

/// Everything observation keeps for one server.
pub(crate) struct Observe {
    telemetry: Option<Telemetry>,
    http: HttpStats,
}

impl Observe {
    /// With per-command figures when `commands` is true.
    pub(crate) fn new(commands: bool) -> Observe {
        Observe { telemetry: commands.then(Telemetry::new), http: HttpStats::default() }
    }

    /// The per-command figures, unless turned off.
    pub(crate) fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// HTTP requests and connections.
    pub(crate) fn http(&self) -> &HttpStats {
        &self.http
    }

    /// Starts timing a batch (None when per-command figures are off).
    pub(crate) fn probe(&self, cmds: &[idem_core::Command]) -> Option<Probe> {
        match &self.telemetry {
            Some(t) if !cmds.is_empty() => Some(t.probe(cmds)),
            _ => None,
        }
    }

    /// Records a batch's results (see [`Telemetry::finish`]).
    pub(crate) fn finish(&self, probe: Option<Probe>, results: &[idem_core::CmdResult]) {
        if let (Some(t), Some(p)) = (&self.telemetry, probe) {
            t.finish(p, results);
        }
    }
}
