//! Slot reservations: SLOTS.RESERVE, SLOTS.RELEASE, SLOTS.GET.
//!
//! A resource stores one `u32` per slot: 0 for free, else an index + 1 into
//! a small table of distinct holders, so a 48-slot day held by a few people
//! costs 192 bytes plus one copy of each holder's name.
//!
//! Decisions where docs/commands.md is silent:
//! - A new resource gets SIZE, or `SLOTS_SIZE_DEFAULT` without it; SIZE for
//!   an existing resource must equal its size (`ERR` otherwise), and so must
//!   every slot be below the size (`ERR`).
//! - RESERVE that conflicts lists every slot of the range held by someone
//!   else, in slot order, and creates nothing.
//! - RELEASE frees only the caller's slots of the range (slots past the size
//!   are ignored); a resource left with no held slot is forgotten, so its
//!   size may be chosen again.

use bytes::Bytes;

use super::{own, Effects, Machine};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::command::SLOTS_SIZE_DEFAULT;
use crate::error::CmdError;
use crate::outcome::Reserved;
use crate::reply::Reply;

/// One resource's slots.
#[derive(Debug)]
pub(super) struct Resource {
    holders: Vec<Bytes>,
    slots: Box<[u32]>,
}

impl Resource {
    /// Bytes held besides the name: the slot table at `slot_bytes` a slot,
    /// and the holders' names (for `Machine::memory_bytes`).
    pub(super) fn payload_bytes(&self, slot_bytes: u64) -> u64 {
        self.slots.len() as u64 * slot_bytes + self.holders.iter().map(|h| h.len() as u64).sum::<u64>()
    }

    fn new(size: u32) -> Self {
        Resource { holders: Vec::new(), slots: vec![0; size as usize].into_boxed_slice() }
    }

    fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The holder of slot `i`, if held.
    fn holder(&self, i: usize) -> Option<&Bytes> {
        match self.slots[i] {
            0 => None,
            h => Some(&self.holders[h as usize - 1]),
        }
    }

    /// The table index + 1 of `holder`, if it holds anything.
    fn find(&self, holder: &[u8]) -> Option<u32> {
        self.holders.iter().position(|h| h.as_ref() == holder).map(|i| i as u32 + 1)
    }

    /// Sets `first..=last` (within the size) to `holder`; true if any slot changed.
    fn set(&mut self, first: u32, last: u32, holder: &Bytes) -> bool {
        let h = match self.find(holder) {
            Some(h) => h,
            None => {
                self.holders.push(own(holder));
                self.holders.len() as u32
            }
        };
        let last = last.min(self.size().saturating_sub(1));
        let mut changed = false;
        for s in self.slots.iter_mut().take(last as usize + 1).skip(first as usize) {
            changed |= *s != h;
            *s = h;
        }
        self.compact();
        changed
    }

    /// Frees the slots of `first..=last` held by `holder`; returns how many.
    fn free(&mut self, first: u32, last: u32, holder: &[u8]) -> u32 {
        let Some(h) = self.find(holder) else {
            return 0;
        };
        let last = last.min(self.size().saturating_sub(1));
        let mut freed = 0;
        for s in self.slots.iter_mut().take(last as usize + 1).skip(first as usize) {
            if *s == h {
                *s = 0;
                freed += 1;
            }
        }
        self.compact();
        freed
    }

    /// Drops holders that hold no slot (a `set` may have overwritten the
    /// last slot of a holder during replay), renumbering the rest.
    fn compact(&mut self) {
        let mut used = vec![false; self.holders.len()];
        for &s in self.slots.iter() {
            if s != 0 {
                used[s as usize - 1] = true;
            }
        }
        if used.iter().all(|&u| u) {
            return;
        }
        let mut remap = vec![0u32; self.holders.len()];
        let mut kept = Vec::with_capacity(self.holders.len());
        for (i, h) in self.holders.drain(..).enumerate() {
            if used[i] {
                kept.push(h);
                remap[i] = kept.len() as u32;
            }
        }
        self.holders = kept;
        for s in self.slots.iter_mut() {
            if *s != 0 {
                *s = remap[*s as usize - 1];
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

impl Machine {
    /// Replay of `SlotsReserve`: creates the resource with `size` if absent.
    pub(super) fn slots_put(&mut self, resource: &Bytes, size: u32, first: u32, last: u32, holder: &Bytes) {
        let r = match self.slots.get_mut(resource.as_ref()) {
            Some(r) => r,
            None => self.slots.entry(own(resource)).or_insert_with(|| Resource::new(size)),
        };
        r.set(first, last, holder);
        if r.is_empty() {
            self.slots.remove(resource.as_ref());
        }
    }

    /// Replay of `SlotsRelease`; returns how many slots were freed.
    pub(super) fn slots_free(&mut self, resource: &Bytes, first: u32, last: u32, holder: &Bytes) -> u32 {
        let Some(r) = self.slots.get_mut(resource.as_ref()) else {
            return 0;
        };
        let freed = r.free(first, last, holder);
        if r.is_empty() {
            self.slots.remove(resource.as_ref());
        }
        freed
    }

    pub(super) fn slots_reserve(
        &mut self,
        resource: &Bytes,
        first: u32,
        last: u32,
        holder: &Bytes,
        size: Option<u32>,
        effects: &mut Effects,
    ) -> CmdResult {
        // One lookup for an existing resource: read it, then write it.
        let existing = self.slots.get_mut(resource.as_ref());
        let size = match (existing.as_deref(), size) {
            (Some(r), Some(s)) if s != r.size() => {
                return Err(CmdError::syntax(format!(
                    "SLOTS.RESERVE: SIZE {s} differs from the resource's size {}",
                    r.size()
                )))
            }
            (Some(r), _) => r.size(),
            (None, s) => s.unwrap_or(SLOTS_SIZE_DEFAULT),
        };
        if last >= size {
            return Err(CmdError::syntax(format!("SLOTS.RESERVE: slot {last} is outside SIZE {size}")));
        }
        if let Some(r) = existing.as_deref() {
            let mut conflicts = Vec::new();
            for i in first as usize..=last as usize {
                if let Some(h) = r.holder(i).filter(|h| *h != holder) {
                    conflicts.push((i as u64, h.clone()));
                }
            }
            if !conflicts.is_empty() {
                return Ok(Reserved::Conflict(conflicts).into_reply());
            }
        }
        let r = match existing {
            Some(r) => r,
            None => self.slots.entry(own(resource)).or_insert_with(|| Resource::new(size)),
        };
        if r.set(first, last, holder) {
            effects.changes.push(Change::SlotsReserve {
                resource: resource.clone(),
                size,
                first,
                last,
                holder: holder.clone(),
            });
        }
        Ok(Reserved::Reserved.into_reply())
    }

    pub(super) fn slots_release(
        &mut self,
        resource: &Bytes,
        first: u32,
        last: u32,
        holder: &Bytes,
        effects: &mut Effects,
    ) -> CmdResult {
        let freed = self.slots_free(resource, first, last, holder);
        if freed > 0 {
            effects.changes.push(Change::SlotsRelease {
                resource: resource.clone(),
                first,
                last,
                holder: holder.clone(),
            });
        }
        Ok(Reply::Int(i64::from(freed)))
    }

    pub(super) fn slots_get(&mut self, resource: &Bytes) -> CmdResult {
        Ok(Reply::Array(match self.slots.get(resource.as_ref()) {
            Some(r) => (0..r.slots.len()).map(|i| r.holder(i).map_or(Reply::Nil, |h| Reply::Bulk(h.clone()))).collect(),
            None => Vec::new(),
        }))
    }

    pub(super) fn dump_slots(&self, out: &mut dyn FnMut(Change)) {
        for (resource, r) in &self.slots {
            let mut i = 0;
            while i < r.slots.len() {
                let h = r.slots[i];
                let mut j = i;
                while j + 1 < r.slots.len() && r.slots[j + 1] == h {
                    j += 1;
                }
                if h != 0 {
                    out(Change::SlotsReserve {
                        resource: resource.clone(),
                        size: r.size(),
                        first: i as u32,
                        last: j as u32,
                        holder: r.holders[h as usize - 1].clone(),
                    });
                }
                i = j + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::T;

    #[test]
    fn reserve_release_get() {
        let mut t = T::new();
        assert_eq!(t.cmd("SLOTS.GET r"), "[]");
        assert_eq!(t.cmd("SLOTS.RESERVE r 1 2 a SIZE 4"), "[reserved]");
        assert_eq!(t.cmd("SLOTS.GET r"), "[nil a a nil]");
        assert_eq!(t.cmd("SLOTS.RESERVE r 1 2 a"), "[reserved]", "re-reserving one's own slots");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("SLOTS.RESERVE r 0 3 b"), "[conflict 1 a 2 a]");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("SLOTS.RESERVE r 3 3 b"), "[reserved]");
        assert_eq!(t.cmd("SLOTS.RESERVE r 0 2 a"), "[reserved]");
        assert_eq!(t.cmd("SLOTS.GET r"), "[a a a b]");
        assert_eq!(t.cmd("SLOTS.RESERVE r 0 0 a SIZE 5"), "!ERR");
        assert_eq!(t.cmd("SLOTS.RESERVE r 4 4 a"), "!ERR");
        assert_eq!(t.cmd("SLOTS.RELEASE r 0 3 b"), "1");
        assert_eq!(t.cmd("SLOTS.RELEASE r 2 3 a"), "1");
        assert_eq!(t.cmd("SLOTS.RELEASE r 2 3 a"), "0");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("SLOTS.GET r"), "[a a nil nil]");
        t.check_replay();
        assert_eq!(t.cmd("SLOTS.RELEASE r 0 100 a"), "2");
        assert_eq!(t.m.len(), 0, "a resource with no held slot is forgotten");
        assert_eq!(t.cmd("SLOTS.RESERVE r 40 47 a"), "[reserved]", "default size 48");
        assert_eq!(t.cmd("SLOTS.RESERVE r 48 48 a"), "!ERR");
        t.check_replay();
    }

    #[test]
    fn holder_table_stays_small() {
        let mut t = T::new();
        for i in 0..10 {
            assert_eq!(t.cmd(&format!("SLOTS.RESERVE r {i} {i} h{i}")), "[reserved]");
        }
        for i in 0..9 {
            assert_eq!(t.cmd(&format!("SLOTS.RELEASE r {i} {i} h{i}")), "1");
        }
        let r = t.m.slots.get(b"r".as_ref()).expect("resource");
        assert_eq!(r.holders.len(), 1);
        assert_eq!(t.cmd("SLOTS.RESERVE r 0 0 h0"), "[reserved]");
        let mut want = vec!["nil"; 48];
        want[0] = "h0";
        want[9] = "h9";
        assert_eq!(t.cmd("SLOTS.GET r"), format!("[{}]", want.join(" ")));
        t.check_replay();
    }
}
