//! Versioned values: VALUE.GET, VALUE.SET. Every SET that succeeds bumps the
//! version (even with the same bytes); IFVERSION 0 means "only if absent",
//! and a conflict replies the current version (0 when absent).

use bytes::Bytes;

use super::keymap;
use super::{own, Effects, Machine};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::outcome::{ValueSetStatus, ValueWritten};
use crate::reply::Reply;

/// A value and its version (1 for the first SET).
#[derive(Debug)]
pub(super) struct ValueEntry {
    value: Bytes,
    version: u64,
}

impl ValueEntry {
    /// Bytes held besides the key (for `Machine::memory_bytes`).
    pub(super) fn payload_bytes(&self) -> u64 {
        self.value.len() as u64
    }
}

impl Machine {
    pub(super) fn value_put(&mut self, key: &Bytes, value: &Bytes, version: u64) {
        let entry = ValueEntry { value: own(value), version };
        // No "versions only grow" assertion here: recovery replays the log
        // written after a snapshot's cut over a dump that may already reflect
        // it, so an older version can arrive before the newer one that wins.
        match self.values.entry(key) {
            keymap::Entry::Occupied(mut e) => e.get_mut().1 = entry,
            keymap::Entry::Vacant(e) => {
                e.insert((own(key), entry));
            }
        }
    }

    pub(super) fn value_get(&mut self, key: &Bytes) -> CmdResult {
        Ok(match self.values.get(key) {
            Some(e) => Reply::Array(vec![Reply::Bulk(e.value.clone()), Reply::uint(e.version)]),
            None => Reply::Nil,
        })
    }

    pub(super) fn value_set(
        &mut self,
        key: &Bytes,
        value: &Bytes,
        if_version: Option<u64>,
        effects: &mut Effects,
    ) -> CmdResult {
        // One probe reads the version and writes, or finds where to insert.
        let slot = self.values.entry(key);
        let current = match &slot {
            keymap::Entry::Occupied(e) => e.get().1.version,
            keymap::Entry::Vacant(_) => 0,
        };
        if if_version.is_some_and(|v| v != current) {
            return Ok(ValueWritten { status: ValueSetStatus::Conflict, version: current }.into_reply());
        }
        let version = current + 1;
        let entry = ValueEntry { value: own(value), version };
        match slot {
            keymap::Entry::Occupied(mut e) => e.get_mut().1 = entry,
            keymap::Entry::Vacant(e) => {
                e.insert((own(key), entry));
            }
        }
        effects.changes.push(Change::ValuePut { key: key.clone(), value: value.clone(), version });
        Ok(ValueWritten { status: ValueSetStatus::Ok, version }.into_reply())
    }

    pub(super) fn dump_values(&self, out: &mut dyn FnMut(Change)) {
        for (key, e) in self.values.iter() {
            out(Change::ValuePut { key: key.clone(), value: e.value.clone(), version: e.version });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::T;

    #[test]
    fn versions_guard_writes() {
        let mut t = T::new();
        assert_eq!(t.cmd("VALUE.GET v"), "nil");
        assert_eq!(t.cmd("VALUE.SET v a IFVERSION 1"), "[conflict 0]");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("VALUE.SET v a IFVERSION 0"), "[ok 1]");
        assert_eq!(t.cmd("VALUE.SET v b IFVERSION 0"), "[conflict 1]");
        assert_eq!(t.cmd("VALUE.SET v b"), "[ok 2]");
        assert_eq!(t.cmd("VALUE.SET v c IFVERSION 2"), "[ok 3]");
        assert_eq!(t.cmd("VALUE.GET v"), "[c 3]");
        t.check_replay();
    }
}
