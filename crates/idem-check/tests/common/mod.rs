//! Builds histories for the checker's tests.
#![allow(dead_code)]

use idem_check::history::{Call, Event, EventKind, Fault, History, Reply};
use idem_check::{check_linearizable, check_side, CheckOptions, SideOptions, SideReport, Verdict};

/// Milliseconds, as the recorder's nanoseconds.
pub fn ms(n: u64) -> u64 {
    n * 1_000_000
}

/// A history under construction: ops are given as whole intervals and
/// turned into time-ordered events.
#[derive(Clone, Default)]
pub struct H {
    events: Vec<(u64, usize, Event)>,
    next_process: u64,
}

impl H {
    pub fn new() -> H {
        H::default()
    }
    fn push(&mut self, e: Event) {
        let seq = self.events.len();
        self.events.push((e.time_ns, seq, e));
    }
    fn process(&mut self) -> u64 {
        self.next_process += 1;
        self.next_process
    }
    /// A call sent at `inv` ms and answered `reply` at `ret` ms.
    pub fn op(&mut self, inv: u64, ret: u64, call: Call, reply: Reply) -> &mut Self {
        let p = self.process();
        self.push(Event::invoke(p, ms(inv), call));
        self.push(Event::ok(p, ms(ret), reply));
        self
    }
    /// A call sent at `inv` ms whose outcome is unknown.
    pub fn info(&mut self, inv: u64, call: Call) -> &mut Self {
        let p = self.process();
        self.push(Event::invoke(p, ms(inv), call));
        self.push(Event::ended(p, ms(inv) + 1, EventKind::Info, "timeout"));
        self
    }
    /// A server kill at `at` ms, answering again at `back` ms.
    pub fn kill(&mut self, at: u64, back: u64) -> &mut Self {
        self.push(Event::nemesis(ms(at), Fault::Kill, true));
        self.push(Event::nemesis(ms(back), Fault::Kill, false));
        self
    }
    pub fn fault(&mut self, fault: Fault, at: u64, end: u64) -> &mut Self {
        self.push(Event::nemesis(ms(at), fault, true));
        self.push(Event::nemesis(ms(end), fault, false));
        self
    }
    /// A step of the host's wall clock by `step_us` (signed), seen at `at`
    /// ms, after the clocks last agreed at `since` ms.
    pub fn host_step(&mut self, since: u64, at: u64, step_us: i64) -> &mut Self {
        self.push(Event::host_clock_step(ms(at), ms(since), step_us * 1_000));
        self
    }
    pub fn events(&self) -> Vec<Event> {
        let mut e = self.events.clone();
        e.sort_by_key(|(t, seq, _)| (*t, *seq));
        e.into_iter().map(|(_, _, e)| e).collect()
    }
    pub fn history(&self) -> History {
        // Through JSONL, so the file format is exercised too.
        let text: String = self.events().iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
        History::from_jsonl(text.as_bytes()).expect("a well-formed history")
    }
    pub fn linear(&self) -> Verdict {
        check_linearizable(&self.history(), CheckOptions::default()).verdict
    }
    pub fn side(&self) -> SideReport {
        self.side_with(SideOptions::default())
    }
    pub fn side_with(&self, options: SideOptions) -> SideReport {
        check_side(&self.history(), options)
    }
    pub fn side_kinds(&self) -> Vec<&'static str> {
        self.side().anomalies.iter().map(|a| a.kind).collect()
    }
}

pub fn s(x: &str) -> String {
    x.to_string()
}

pub fn lock(name: &str, owner: &str, lease_ms: u64) -> Call {
    Call::Lock { name: s(name), owner: s(owner), lease_ms, wait_ms: 0 }
}
pub fn begin(key: &str, lease_ms: u64) -> Call {
    Call::IdemBegin { key: s(key), lease_ms, wait_ms: 0 }
}
pub fn commit(key: &str, fence: u64, result: &str) -> Call {
    Call::IdemCommit { key: s(key), fence, result: s(result) }
}
pub fn add(key: &str, delta: i64, max: i64, op: Option<&str>) -> Call {
    Call::CounterAdd { key: s(key), delta, min: 0, max, op: op.map(s) }
}
pub fn set(key: &str, value: &str, if_version: Option<u64>) -> Call {
    Call::ValueSet { key: s(key), value: s(value), if_version }
}
pub fn get(key: &str) -> Call {
    Call::ValueGet { key: s(key) }
}
pub fn versioned(value: &str, version: u64) -> Reply {
    Reply::Versioned { value: Some((s(value), version)) }
}
