//! Writes the history: one JSONL event per line, stamped with the
//! harness's monotonic clock (the one reference clock on this host).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use idem_check::history::{Call, Event, EventKind, Fault, Reply};

/// The shared history writer.
pub struct Recorder {
    start: Instant,
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    pub fn create(path: &Path) -> anyhow::Result<Recorder> {
        Ok(Recorder { start: Instant::now(), out: Mutex::new(BufWriter::new(File::create(path)?)) })
    }

    /// Nanoseconds since the run began.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Stamps and writes under one lock, so the file is in time order.
    fn write(&self, make: impl FnOnce(u64) -> Event) -> u64 {
        let mut out = self.out.lock().expect("recorder lock");
        let t = self.now_ns();
        let line = serde_json::to_string(&make(t)).expect("events serialise");
        writeln!(out, "{line}").expect("history write");
        t
    }

    pub fn invoke(&self, process: u64, call: &Call) -> u64 {
        self.write(|t| Event::invoke(process, t, call.clone()))
    }
    pub fn ok(&self, process: u64, reply: &Reply) -> u64 {
        self.write(|t| Event::ok(process, t, reply.clone()))
    }
    pub fn ended(&self, process: u64, kind: EventKind, why: &str) -> u64 {
        self.write(|t| Event::ended(process, t, kind, why))
    }
    pub fn fault(&self, fault: Fault, active: bool) -> u64 {
        self.write(|t| Event::nemesis(t, fault, active))
    }
    /// A step of the host's wall clock by `step_ns`, after the clocks last
    /// agreed at `since_ns` (this recorder's time).
    pub fn host_clock_step(&self, since_ns: u64, step_ns: i64) -> u64 {
        self.write(|t| Event::host_clock_step(t, since_ns, step_ns))
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        self.out.lock().expect("recorder lock").flush()?;
        Ok(())
    }
}
