//! A small harness for the unit tests: commands as text, replies rendered
//! as text, a deterministic `Env`, and a log of every change so each test
//! can check that replaying the log rebuilds the same state.

use bytes::Bytes;

use super::{Applied, Effects, Machine, SeqEnv, WaiterId};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::command::Command;
use crate::limits::Limits;
use crate::reply::Reply;

/// A small deterministic generator (xorshift64*) for randomised tests.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A `Bytes` of `s`.
pub(crate) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `[started 1 1]`, `nil`, `7`, `!STALE`.
pub(crate) fn render(r: &CmdResult) -> String {
    fn one(r: &Reply) -> String {
        match r {
            Reply::Word(w) => (*w).to_string(),
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(i) => i.to_string(),
            Reply::Nil => "nil".into(),
            Reply::Array(v) => format!("[{}]", v.iter().map(one).collect::<Vec<_>>().join(" ")),
        }
    }
    match r {
        Ok(r) => one(r),
        Err(e) => format!("!{}", e.code.as_str()),
    }
}

pub(crate) struct T {
    pub(crate) m: Machine,
    pub(crate) env: SeqEnv,
    pub(crate) now: u64,
    /// Every change made so far.
    pub(crate) log: Vec<Change>,
    /// Changes of the last call only.
    pub(crate) last: Vec<Change>,
    /// Woken replies not yet taken by `woken()`.
    woken: Vec<(WaiterId, CmdResult)>,
}

impl T {
    pub(crate) fn new() -> T {
        T::with_limits(Limits::default())
    }

    pub(crate) fn with_limits(limits: Limits) -> T {
        T { m: Machine::new(limits), env: SeqEnv::default(), now: 1000, log: vec![], last: vec![], woken: vec![] }
    }

    fn parse(&self, args: &str) -> Command {
        let args: Vec<Bytes> = args.split_whitespace().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        Command::parse(&args, self.m.limits()).expect("test command parses")
    }

    fn collect(&mut self, effects: Effects) {
        self.last = effects.changes;
        self.log.extend(self.last.iter().cloned());
        self.woken.extend(effects.woken);
    }

    /// Applies `args` at `self.now` without a waiter.
    pub(crate) fn cmd(&mut self, args: &str) -> String {
        match self.apply(args, None) {
            Applied::Done(r) => render(&r),
            Applied::Parked => "parked".into(),
        }
    }

    /// Applies `args` with waiter `id`.
    pub(crate) fn wait(&mut self, args: &str, id: u64) -> String {
        match self.apply(args, Some(WaiterId(id))) {
            Applied::Done(r) => render(&r),
            Applied::Parked => "parked".into(),
        }
    }

    fn apply(&mut self, args: &str, waiter: Option<WaiterId>) -> Applied {
        let cmd = self.parse(args);
        let mut effects = Effects::default();
        let r = self.m.apply(self.now, &cmd, waiter, &mut self.env, &mut effects);
        self.collect(effects);
        r
    }

    /// Moves time to `now` and ticks.
    pub(crate) fn tick(&mut self, now: u64) {
        self.now = now;
        let mut effects = Effects::default();
        self.m.tick(now, &mut self.env, &mut effects);
        self.collect(effects);
    }

    /// Woken replies since the last call, rendered as `id=reply`.
    pub(crate) fn woken(&mut self) -> Vec<String> {
        self.woken.drain(..).map(|(id, r)| format!("{}={}", id.0, render(&r))).collect()
    }

    /// The machine's dump at `now`, as sorted text.
    pub(crate) fn dump_of(m: &Machine, now: u64) -> Vec<String> {
        let mut v = Vec::new();
        m.dump(now, &mut |c| v.push(format!("{c:?}")));
        v.sort();
        v
    }

    /// Replaying the log, and replaying the dump, both rebuild what `dump` shows.
    pub(crate) fn check_replay(&self) {
        let want = T::dump_of(&self.m, self.now);
        let mut fresh = Machine::new(self.m.limits().clone());
        for c in &self.log {
            fresh.replay(c);
        }
        assert_eq!(T::dump_of(&fresh, self.now), want, "replaying the log");
        let mut again = Machine::new(self.m.limits().clone());
        self.m.dump(self.now, &mut |c| again.replay(&c));
        assert_eq!(T::dump_of(&again, self.now), want, "replaying the dump");
    }
}
