//! A hash table that grows without stopping the world.
//!
//! A `hashbrown` table that runs out of room moves every entry into a table
//! twice its size inside the one insert that found it full: with millions
//! of records in one shard that insert stalls for a noticeable fraction of a
//! second (measured in docs/benchmarks.md, "Stalls while tables grow"), and every
//! client of the event loop waits for it.
//! [`GrowTable`] grows the way Redis's dictionaries do: when its table is
//! full it allocates one twice the size of what it holds, puts new entries
//! there, and moves the old table's entries over a few buckets at a time,
//! at every later call that may change the table. Lookups look in both
//! tables until the move is done.
//!
//! Bounds: each call moves at most [`GrowTable::step_buckets`] buckets of
//! the old table (16 for a table that filled up with entries, so at most
//! 16 entries: a few microseconds), and the move is over before the new table
//! can fill, so there is never more than one old table. While a move is in
//! progress both tables are allocated: the old
//! one, emptying, and the new one, twice the size (the same peak as
//! `hashbrown`'s own growth, held for longer). A table whose room was used
//! up by deletions rather than entries moves into a table sized for what
//! it holds, so churn never makes it grow.

use std::mem;

use hashbrown::{hash_table, HashTable};

/// The smallest table a move allocates.
const MIN_CAPACITY: usize = 8;

/// The fewest buckets a call moves. More than the bound needs: while a move
/// is in progress, every call that misses the new table probes the old one
/// too, so a short move costs fewer probes. Moving 16 entries takes a few
/// microseconds.
const STEP_BUCKETS_MIN: usize = 16;

/// A hash table of `T` that grows incrementally. Callers hash with one
/// function throughout; every call that may change the table takes it.
#[derive(Debug)]
pub(super) struct GrowTable<T> {
    /// Where new entries go.
    cur: HashTable<T>,
    /// The table being emptied into `cur`; empty (and unallocated) when no
    /// move is in progress. Nothing is ever inserted here, so its bucket
    /// indices stay put while `next` walks them.
    old: HashTable<T>,
    /// The next bucket of `old` to move.
    next: usize,
    /// Buckets of `old` moved per call (set when a move starts).
    step: usize,
}

impl<T> Default for GrowTable<T> {
    fn default() -> Self {
        GrowTable { cur: HashTable::new(), old: HashTable::new(), next: 0, step: 0 }
    }
}

impl<T> GrowTable<T> {
    /// How many entries the table holds.
    pub(super) fn len(&self) -> usize {
        self.cur.len() + self.old.len()
    }

    /// The entry of hash `hash` that `eq` accepts.
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&T> {
        match self.cur.find(hash, &mut eq) {
            Some(v) => Some(v),
            None if self.old.is_empty() => None,
            None => self.old.find(hash, eq),
        }
    }

    /// The place of the entry of hash `hash` that `eq` accepts, to read,
    /// change or remove. Never makes room for an insert.
    pub(super) fn find_entry(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        hasher: impl Fn(&T) -> u64,
    ) -> Option<hash_table::OccupiedEntry<'_, T>> {
        self.advance(&hasher);
        if let Some(i) = self.cur.find_bucket_index(hash, &mut eq) {
            return self.cur.get_bucket_entry(i).ok();
        }
        let (found, _) = self.old.find_entry(hash, eq).ok()?.remove();
        if self.cur.len() == self.cur.capacity() {
            // The move fell behind (it cannot, by `step_buckets`): finish it
            // now rather than fail.
            self.finish(&hasher);
        }
        Some(self.cur.insert_unique(hash, found, hasher))
    }

    /// The place of the entry of hash `hash` that `eq` accepts: occupied,
    /// or vacant and ready for one insert of an entry with that hash.
    pub(super) fn entry(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        hasher: impl Fn(&T) -> u64,
    ) -> hash_table::Entry<'_, T> {
        self.advance(&hasher);
        self.make_room(&hasher);
        if !self.old.is_empty() {
            if let Ok(found) = self.old.find_entry(hash, &mut eq) {
                let (found, _) = found.remove();
                return hash_table::Entry::Occupied(self.cur.insert_unique(hash, found, hasher));
            }
        }
        self.cur.entry(hash, eq, hasher)
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.cur.iter().chain(self.old.iter())
    }

    /// Whether a move is in progress.
    #[cfg(test)]
    pub(super) fn moving(&self) -> bool {
        !self.old.is_empty()
    }

    /// Buckets of the old table moved per call while a move is in progress.
    /// The new table has room for `headroom` inserts beyond the entries it
    /// will receive, and every insert is a call, so moving twice
    /// `old buckets / headroom` per call ends the move with half the room
    /// still free.
    fn step_buckets(old_buckets: usize, headroom: usize) -> usize {
        (2 * old_buckets.div_ceil(headroom.max(1))).max(STEP_BUCKETS_MIN)
    }

    /// Moves the next few buckets of the old table, if a move is in progress.
    fn advance(&mut self, hasher: &impl Fn(&T) -> u64) {
        if self.old.is_empty() {
            return;
        }
        let end = self.next.saturating_add(self.step).min(self.old.num_buckets());
        while self.next < end && self.cur.len() < self.cur.capacity() {
            self.move_bucket(self.next, hasher);
            self.next += 1;
        }
        self.end_if_done();
    }

    /// Moves what is left of the old table, growing the new one if it must.
    fn finish(&mut self, hasher: &impl Fn(&T) -> u64) {
        while !self.old.is_empty() && self.next < self.old.num_buckets() {
            self.move_bucket(self.next, hasher);
            self.next += 1;
        }
        self.end_if_done();
    }

    fn move_bucket(&mut self, i: usize, hasher: &impl Fn(&T) -> u64) {
        if let Ok(e) = self.old.get_bucket_entry(i) {
            let (v, _) = e.remove();
            self.cur.insert_unique(hasher(&v), v, hasher);
        }
    }

    fn end_if_done(&mut self) {
        if self.old.is_empty() {
            // Frees the old table's memory.
            self.old = HashTable::new();
            self.next = 0;
        } else {
            debug_assert!(self.next < self.old.num_buckets(), "entries left behind the move");
        }
    }

    /// Starts a move when the current table has no room for one insert.
    fn make_room(&mut self, hasher: &impl Fn(&T) -> u64) {
        if self.cur.len() < self.cur.capacity() {
            return;
        }
        self.finish(hasher);
        if self.cur.len() < self.cur.capacity() {
            return;
        }
        let holds = self.cur.len();
        let bigger = HashTable::with_capacity(holds.saturating_mul(2).max(MIN_CAPACITY));
        self.old = mem::replace(&mut self.cur, bigger);
        self.next = 0;
        self.step = Self::step_buckets(self.old.num_buckets(), self.cur.capacity() - holds);
        // A table that held nothing has nothing to move.
        self.end_if_done();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::testkit::Rng;
    use super::*;

    /// A hash that mixes well, or one that sends keys to a few values, so
    /// that probes see many entries of the same hash.
    fn hash_of(collide: bool) -> impl Fn(&u64) -> u64 + Copy {
        move |k: &u64| if collide { k % 5 } else { k.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) }
    }

    type Table = GrowTable<(u64, u32)>;

    fn put(t: &mut Table, h: impl Fn(&u64) -> u64 + Copy, k: u64, v: u32) {
        match t.entry(h(&k), |e| e.0 == k, |e| h(&e.0)) {
            hash_table::Entry::Occupied(mut e) => e.get_mut().1 = v,
            hash_table::Entry::Vacant(e) => {
                e.insert((k, v));
            }
        }
    }

    fn check(t: &Table, model: &BTreeMap<u64, u32>, h: impl Fn(&u64) -> u64) {
        assert_eq!(t.len(), model.len());
        let all: BTreeMap<u64, u32> = t.iter().map(|&(k, v)| (k, v)).collect();
        assert_eq!(&all, model, "each key exactly once, in one of the two tables");
        for (&k, &v) in model {
            assert_eq!(t.find(h(&k), |e| e.0 == k).map(|e| e.1), Some(v), "key {k}");
        }
    }

    fn random_ops(collide: bool, seed: u64) {
        let h = hash_of(collide);
        let mut rng = Rng(seed);
        let mut t = Table::default();
        let mut model = BTreeMap::new();
        let mut moves = 0;
        for step in 0..20_000u32 {
            let k = rng.below(3_000);
            let was_moving = t.moving();
            match rng.below(10) {
                // Mostly inserts and updates, so the table grows through moves.
                0..=5 => {
                    put(&mut t, h, k, step);
                    model.insert(k, step);
                }
                6 | 7 => {
                    let found = t.find_entry(h(&k), |e| e.0 == k, |e| h(&e.0)).map(|e| e.remove().0);
                    assert_eq!(found.map(|(_, v)| v), model.remove(&k), "remove {k}");
                }
                8 => {
                    if let Some(mut e) = t.find_entry(h(&k), |e| e.0 == k, |e| h(&e.0)) {
                        e.get_mut().1 += 1;
                    }
                    if let Some(v) = model.get_mut(&k) {
                        *v += 1;
                    }
                }
                _ => assert_eq!(t.find(h(&k), |e| e.0 == k).map(|e| e.1), model.get(&k).copied()),
            }
            moves += usize::from(!was_moving && t.moving());
            if step % 997 == 0 {
                check(&t, &model, h);
            }
        }
        check(&t, &model, h);
        assert!(moves >= 5, "the table grew through several moves ({moves})");
    }

    /// Inserts, updates, removals and lookups agree with a model through
    /// many moves, with well-spread hashes and with hashes that collide.
    #[test]
    fn random_operations_agree_with_a_model() {
        for seed in 1..=4 {
            random_ops(false, seed * 0x2545_F491_4F6C_DD1D);
            random_ops(true, seed * 0x2545_F491_4F6C_DD1D);
        }
    }

    /// Growing moves a few entries per call, never the whole table, and a
    /// move ends before the next one starts.
    #[test]
    fn growth_moves_a_few_entries_per_call() {
        let h = hash_of(false);
        let mut t = Table::default();
        let mut worst = 0;
        let mut moves = 0;
        for k in 0..200_000u64 {
            let before = (t.cur.len(), t.old.len(), t.moving());
            put(&mut t, h, k, 0);
            if t.moving() && !before.2 {
                moves += 1;
                // A move starts: everything is still in the old table.
                assert_eq!(t.cur.len(), 1, "only the new key is in the new table");
                assert_eq!(t.old.len(), before.0);
            } else if before.2 {
                // During a move, one call moves a few entries.
                let moved = before.1 - t.old.len();
                worst = worst.max(moved);
                assert_eq!(t.step, STEP_BUCKETS_MIN, "a table that filled up moves the fewest buckets");
            }
            assert_eq!(t.len(), k as usize + 1);
        }
        assert!(moves >= 14, "{moves} moves");
        assert!((1..=STEP_BUCKETS_MIN).contains(&worst), "at most 16 entries moved per call, saw {worst}");
    }

    /// A table whose room went to deletions moves into a table sized for
    /// what it holds instead of growing forever.
    #[test]
    fn churn_does_not_grow_the_table() {
        let h = hash_of(false);
        let mut t = Table::default();
        for k in 0..10_000u64 {
            put(&mut t, h, k, 0);
        }
        let buckets = t.cur.num_buckets() + t.old.num_buckets();
        // Keep 10,000 live keys while inserting and deleting 300,000.
        for k in 10_000..310_000u64 {
            put(&mut t, h, k, 0);
            let gone = k - 10_000;
            assert!(t.find_entry(h(&gone), |e| e.0 == gone, |e| h(&e.0)).map(|e| e.remove()).is_some());
            assert_eq!(t.len(), 10_000);
        }
        assert!(t.cur.num_buckets() + t.old.num_buckets() <= 2 * buckets, "the table stays near its size");
    }
}
