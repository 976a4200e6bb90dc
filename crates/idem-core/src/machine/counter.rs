//! Bounded counters: COUNTER.ADD, COUNTER.GET.
//!
//! Decisions where docs/commands.md is silent:
//! - Only an applied ADD (`ok`) records its op id. A refused ADD records
//!   nothing, so its retry is evaluated afresh against the current value.
//! - An op id is remembered per counter key, for KEEP from the time it was
//!   applied; its `replayed` value is the value right after that ADD.
//! - A counter at 0 is not stored (0 is what an absent counter reads), so
//!   `CounterPut { value: 0 }` removes it.

use bytes::Bytes;

use super::expiry::Kind;
use super::keymap;
use super::{own, pair_key, split_pair, Effects, Machine};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::outcome::Counted;
use crate::reply::Reply;

/// An applied op id of a counter.
#[derive(Clone, Copy, Debug)]
pub(super) struct OpEntry {
    /// The counter's value right after the op was applied.
    value: i64,
    expires_at_ms: u64,
}

/// Sets the counter at `entry` (the place of `key`) to `value`; a counter at
/// 0 is not stored, so 0 removes it.
#[inline]
fn store_counter(entry: keymap::Entry<'_, i64>, key: &[u8], value: i64) {
    match entry {
        keymap::Entry::Occupied(e) if value == 0 => {
            e.remove();
        }
        keymap::Entry::Occupied(mut e) => e.get_mut().1 = value,
        keymap::Entry::Vacant(e) if value != 0 => {
            e.insert((own(key), value));
        }
        keymap::Entry::Vacant(_) => {}
    }
}

impl Machine {
    pub(super) fn counter_put(&mut self, key: &Bytes, value: i64) {
        store_counter(self.counters.entry(key), key, value);
    }

    pub(super) fn counter_op_put(&mut self, k: Bytes, value: i64, expires_at_ms: u64) {
        match self.counter_ops.entry(&k) {
            keymap::Entry::Occupied(mut e) => {
                let (key, op) = e.get_mut();
                self.expiry.moved(op.expires_at_ms, expires_at_ms, Kind::CounterOp, key);
                *op = OpEntry { value, expires_at_ms };
            }
            keymap::Entry::Vacant(e) => {
                self.expiry.insert(expires_at_ms, Kind::CounterOp, &k);
                e.insert((k, OpEntry { value, expires_at_ms }));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn counter_add(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        delta: i64,
        min: Option<i64>,
        max: Option<i64>,
        op: Option<&Bytes>,
        keep_ms: u64,
        effects: &mut Effects,
    ) -> CmdResult {
        let op_key = op.map(|op| pair_key(key, op));
        if let Some(k) = &op_key {
            if let Some(e) = self.counter_ops.find_mut(k) {
                let op = e.get().1;
                if now_ms < op.expires_at_ms {
                    return Ok(Counted::Replayed(op.value).into_reply());
                }
                // Expired: forget it (lazy expiry) and apply afresh.
                e.remove();
                self.expiry.remove(op.expires_at_ms, Kind::CounterOp, k);
            }
        }
        // One probe reads the counter and updates, removes or inserts it.
        let entry = self.counters.entry(key);
        let current = match &entry {
            keymap::Entry::Occupied(e) => e.get().1,
            keymap::Entry::Vacant(_) => 0,
        };
        let Some(value) = current.checked_add(delta) else {
            return Ok(Counted::Refused(current).into_reply());
        };
        if min.is_some_and(|m| value < m) || max.is_some_and(|m| value > m) {
            return Ok(Counted::Refused(current).into_reply());
        }
        if value != current {
            store_counter(entry, key, value);
            effects.changes.push(Change::CounterPut { key: key.clone(), value });
        }
        if let (Some(k), Some(op)) = (op_key, op) {
            let expires_at_ms = now_ms.saturating_add(keep_ms);
            self.counter_op_put(k, value, expires_at_ms);
            effects.changes.push(Change::CounterOpPut { key: key.clone(), op: op.clone(), value, expires_at_ms });
        }
        Ok(Counted::Ok(value).into_reply())
    }

    pub(super) fn counter_get(&mut self, key: &Bytes) -> CmdResult {
        Ok(Reply::Int(self.counters.get(key).copied().unwrap_or(0)))
    }

    pub(super) fn reclaim_counter_op(&mut self, at_ms: u64, k: &Bytes) {
        if let Some(e) = self.counter_ops.find_mut(k).filter(|e| e.get().1.expires_at_ms == at_ms) {
            e.remove();
        }
    }

    pub(super) fn dump_counters(&self, now_ms: u64, out: &mut dyn FnMut(Change)) {
        for (key, &value) in self.counters.iter() {
            out(Change::CounterPut { key: key.clone(), value });
        }
        for (k, e) in self.counter_ops.iter() {
            if now_ms < e.expires_at_ms {
                let (key, op) = split_pair(k);
                out(Change::CounterOpPut { key, op, value: e.value, expires_at_ms: e.expires_at_ms });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::T;

    #[test]
    fn add_within_bounds() {
        let mut t = T::new();
        assert_eq!(t.cmd("COUNTER.GET c"), "0");
        assert_eq!(t.cmd("COUNTER.ADD c 5 MAX 10"), "[ok 5]");
        assert_eq!(t.cmd("COUNTER.ADD c 6 MAX 10"), "[refused 5]");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("COUNTER.ADD c -6 MIN 0"), "[refused 5]");
        assert_eq!(t.cmd("COUNTER.ADD c -5 MIN 0"), "[ok 0]");
        assert_eq!(t.m.len(), 0, "a counter at 0 is not stored");
        assert_eq!(t.cmd("COUNTER.ADD c 9223372036854775807"), "[ok 9223372036854775807]");
        assert_eq!(t.cmd("COUNTER.ADD c 1"), "[refused 9223372036854775807]", "overflow");
        assert_eq!(t.cmd("COUNTER.GET c"), "9223372036854775807");
        t.check_replay();
    }

    #[test]
    fn op_ids_apply_once_within_keep() {
        let mut t = T::new();
        assert_eq!(t.cmd("COUNTER.ADD c 5 OP o1 KEEP 100"), "[ok 5]");
        assert_eq!(t.cmd("COUNTER.ADD c 1"), "[ok 6]");
        assert_eq!(t.cmd("COUNTER.ADD c 5 OP o1 KEEP 100"), "[replayed 5]");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("COUNTER.ADD d 5 OP o1"), "[ok 5]", "op ids are per counter");
        assert_eq!(t.cmd("COUNTER.ADD c 100 MAX 10 OP o2"), "[refused 6]");
        assert_eq!(t.cmd("COUNTER.ADD c 1 MAX 10 OP o2"), "[ok 7]", "a refused op is not remembered");
        t.check_replay();
        t.now += 100;
        assert_eq!(t.cmd("COUNTER.ADD c 5 OP o1 KEEP 100"), "[ok 12]", "KEEP passed");
        t.tick(t.now + 86_400_000);
        assert_eq!(t.m.len(), 2, "op ids are reclaimed, counters stay");
        t.check_replay();
    }
}
