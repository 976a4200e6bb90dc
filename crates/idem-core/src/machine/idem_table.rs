//! Compact storage of idempotency records, the record kind idem holds by the
//! million. Back of the envelope for a 16-byte key and a 32-byte result:
//! one 48-byte heap block (key, fingerprint and result side by side), a
//! 48-byte record header (with the key's hash) in a second block, an 8-byte table slot (a
//! pointer; empty slots cost 9 bytes, not a record), and a 16-byte expiry
//! entry; no `Bytes` headers and no second copy of the key.
//!
//! The table is keyed by a 64-bit hash of the key under a random seed
//! (`KeyHash`), so collisions cannot be aimed. The expiry index orders
//! `(reclaim_at_ms, hash)`, so it needs no copy of the key either.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::hash_table;

use bytes::Bytes;

use crate::change::{IdemRecord, IdemState};
use crate::command::KEEP_MS_DEFAULT;

use super::grow::GrowTable;
use super::key_hash::KeyHash;

/// The state of a record, without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EntryState {
    /// An attempt holds the key until `lease_until_ms`.
    Running { fence: u64, attempt: u32, lease_until_ms: u64 },
    /// Completed; the result is kept until `keep_until_ms`.
    Done { keep_until_ms: u64 },
}

impl EntryState {
    /// When a record in this state is forgotten: a done record at the end of
    /// its KEEP; a running one `KEEP_MS_DEFAULT` after its lease ran out,
    /// so that the attempt number survives that long.
    pub(super) fn reclaim_at(self) -> u64 {
        match self {
            EntryState::Running { lease_until_ms, .. } => lease_until_ms.saturating_add(KEEP_MS_DEFAULT),
            EntryState::Done { keep_until_ms } => keep_until_ms,
        }
    }
}

/// Marks "no fingerprint" in `IdemRec::fp_len`.
const NO_FP: u16 = u16::MAX;

/// One record in 48 bytes plus one heap block: `data` is the key, then the
/// fingerprint, then the result. Keys and fingerprints are at most
/// `Limits::KEY_BYTES_CONTRACT_MAX` (512) bytes, so `u16` lengths suffice.
/// The key's hash is kept so that moving the record to a bigger table
/// (`GrowTable`) and reclaiming it need not read and hash the key; under
/// jemalloc (the `idem` binary) 48 bytes take the same size class as 40.
#[derive(Debug)]
pub(super) struct IdemRec {
    data: Box<[u8]>,
    /// The key's hash under the table's seed.
    hash: u64,
    /// The fence (running) or `keep_until_ms` (done).
    a: u64,
    /// `lease_until_ms` (running).
    b: u64,
    /// The attempt while running; 0 marks a done record.
    attempt: u32,
    key_len: u16,
    fp_len: u16,
}

/// A key or fingerprint length as stored.
fn short_len(len: usize) -> u16 {
    debug_assert!(len <= crate::limits::Limits::KEY_BYTES_CONTRACT_MAX);
    u16::try_from(len).ok().filter(|&l| l != NO_FP).expect("keys and fingerprints are at most 512 bytes")
}

impl IdemRec {
    fn new(hash: u64, key: &[u8], fp: Option<&[u8]>, result: &[u8], st: EntryState) -> IdemRec {
        let fp_bytes = fp.unwrap_or_default();
        let mut data = Vec::with_capacity(key.len() + fp_bytes.len() + result.len());
        data.extend_from_slice(key);
        data.extend_from_slice(fp_bytes);
        data.extend_from_slice(result);
        let mut rec = IdemRec {
            data: data.into_boxed_slice(),
            hash,
            key_len: short_len(key.len()),
            fp_len: fp.map_or(NO_FP, |f| short_len(f.len())),
            attempt: 0,
            a: 0,
            b: 0,
        };
        rec.set_state(st);
        rec
    }

    fn set_state(&mut self, st: EntryState) {
        match st {
            EntryState::Running { fence, attempt, lease_until_ms } => {
                debug_assert!(attempt >= 1, "attempts count from 1");
                (self.a, self.attempt, self.b) = (fence, attempt.max(1), lease_until_ms);
            }
            EntryState::Done { keep_until_ms } => (self.a, self.attempt, self.b) = (keep_until_ms, 0, 0),
        }
    }

    /// Replaces the result, keeping key and fingerprint (and the heap block
    /// when the result does not change).
    fn set_result(&mut self, result: &[u8]) {
        let end = self.fp_end();
        if &self.data[end..] != result {
            let mut data = Vec::with_capacity(end + result.len());
            data.extend_from_slice(&self.data[..end]);
            data.extend_from_slice(result);
            self.data = data.into_boxed_slice();
        }
    }

    fn fp_end(&self) -> usize {
        self.key_len as usize + if self.fp_len == NO_FP { 0 } else { self.fp_len as usize }
    }

    /// The key.
    pub(super) fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    /// The fingerprint of the BEGIN that created the record.
    pub(super) fn fp(&self) -> Option<&[u8]> {
        (self.fp_len != NO_FP).then(|| &self.data[self.key_len as usize..self.fp_end()])
    }

    /// The committed result (empty while running).
    pub(super) fn result(&self) -> &[u8] {
        &self.data[self.fp_end()..]
    }

    /// The state.
    pub(super) fn state(&self) -> EntryState {
        if self.attempt == 0 {
            EntryState::Done { keep_until_ms: self.a }
        } else {
            EntryState::Running { fence: self.a, attempt: self.attempt, lease_until_ms: self.b }
        }
    }

    /// As logged.
    pub(super) fn to_record(&self) -> IdemRecord {
        let state = match self.state() {
            EntryState::Running { fence, attempt, lease_until_ms } => {
                IdemState::Running { fence, attempt, lease_until_ms }
            }
            EntryState::Done { keep_until_ms } => {
                IdemState::Done { result: Bytes::copy_from_slice(self.result()), keep_until_ms }
            }
        };
        IdemRecord { fingerprint: self.fp().map(Bytes::copy_from_slice), state }
    }
}

/// Hashes keys with the machine's random seed.
#[derive(Debug, Default)]
struct KeyHasher {
    state: KeyHash,
    /// Tests force every key onto one hash to exercise collisions.
    #[cfg(test)]
    forced: Option<u64>,
}

impl KeyHasher {
    fn hash(&self, key: &[u8]) -> u64 {
        #[cfg(test)]
        if let Some(h) = self.forced {
            return h;
        }
        self.state.hash(key)
    }
}

/// The expiry index: `(reclaim_at_ms, hash)` in time order, one entry per
/// distinct pair. Records whose 64-bit hashes collide and that are forgotten
/// in the same millisecond share an entry; `extra` counts the records beyond
/// the first, so that moving one record's entry needs no look at the others.
#[derive(Debug, Default)]
struct Index {
    set: BTreeSet<(u64, u64)>,
    /// Pairs held by more than one record, with how many more. Empty unless
    /// two keys' 64-bit hashes collide.
    extra: BTreeMap<(u64, u64), u32>,
}

impl Index {
    /// A record of hash `h` is now forgotten at `at`.
    fn add(&mut self, at: u64, h: u64) {
        if !self.set.insert((at, h)) {
            *self.extra.entry((at, h)).or_insert(0) += 1;
        }
    }

    /// A record of hash `h` is no longer forgotten at `at`.
    fn remove(&mut self, at: u64, h: u64) {
        if let Some(n) = self.extra.get_mut(&(at, h)) {
            *n -= 1;
            if *n == 0 {
                self.extra.remove(&(at, h));
            }
            return;
        }
        let found = self.set.remove(&(at, h));
        debug_assert!(found, "a record's expiry entry exists until the record changes");
    }

    /// A record of hash `h` moved from `from` to `to`.
    fn moved(&mut self, from: u64, to: u64, h: u64) {
        if from != to {
            self.remove(from, h);
            self.add(to, h);
        }
    }
}

/// Whether a record is the one of `key`, whose hash is `h`: the stored hash
/// is compared first, so a probe reads a candidate's key only when it
/// matches.
fn is(h: u64, key: &[u8]) -> impl Fn(&Box<IdemRec>) -> bool + '_ {
    move |r| r.hash == h && r.key() == key
}

/// The hash a growing table rehashes a record with: the one it keeps. (It
/// takes the table's element, the box.)
#[allow(clippy::borrowed_box)]
fn stored_hash(r: &Box<IdemRec>) -> u64 {
    r.hash
}

/// Every idempotency record of a machine, with its expiry index.
///
/// The table's slots hold only a pointer (plus hashbrown's control byte), so
/// the empty slots a hash table keeps while it grows cost 9 bytes each, not
/// a whole record: at a million records that is the difference between
/// beating Redis's memory per key and not. Keys whose hashes collide are
/// simply different entries. Each record keeps its key's hash, so that the
/// table grows ([`GrowTable`], a few entries per command) without reading
/// or hashing keys, and a probe reads a candidate's key only when the whole
/// hash matches.
///
/// Commands go through [`IdemTable::entry`] or [`IdemTable::find`]: the key
/// is hashed once and the table probed once; the record found is changed in
/// place, and its expiry entry moved with the hash from that probe.
#[derive(Debug, Default)]
pub(super) struct IdemTable {
    map: GrowTable<Box<IdemRec>>,
    hasher: KeyHasher,
    index: Index,
}

/// The outcome of [`IdemTable::entry`].
pub(super) enum Entry<'a> {
    /// The key has a live record.
    Occupied(Occupied<'a>),
    /// The key has no record (an expired one was forgotten by the probe).
    Vacant(Vacant<'a>),
}

/// A live record found by a probe, to read or change in place.
pub(super) struct Occupied<'a> {
    slot: hash_table::OccupiedEntry<'a, Box<IdemRec>>,
    h: u64,
    index: &'a mut Index,
}

/// The place of a key without a record, found by a probe.
pub(super) struct Vacant<'a> {
    slot: hash_table::VacantEntry<'a, Box<IdemRec>>,
    h: u64,
    index: &'a mut Index,
    /// The header of the expired record this probe forgot, to reuse.
    spare: Option<Box<IdemRec>>,
}

impl Occupied<'_> {
    /// The record.
    pub(super) fn rec(&self) -> &IdemRec {
        self.slot.get()
    }

    /// Moves the record to `st`, keeping its bytes.
    pub(super) fn set_state(&mut self, st: EntryState) {
        let from = self.rec().state().reclaim_at();
        self.slot.get_mut().set_state(st);
        self.index.moved(from, st.reclaim_at(), self.h);
    }

    /// Stores `result` (the fingerprint stays) and moves the record to `st`.
    pub(super) fn set_result(&mut self, result: &[u8], st: EntryState) {
        self.slot.get_mut().set_result(result);
        self.set_state(st);
    }

    /// Removes the record.
    pub(super) fn remove(self) {
        let (old, _) = self.slot.remove();
        self.index.remove(old.state().reclaim_at(), self.h);
    }
}

impl Vacant<'_> {
    /// Stores a new record of the key.
    pub(super) fn insert(self, key: &[u8], fp: Option<&[u8]>, result: &[u8], st: EntryState) {
        let rec = IdemRec::new(self.h, key, fp, result, st);
        let rec = match self.spare {
            Some(mut b) => {
                *b = rec;
                b
            }
            None => Box::new(rec),
        };
        self.index.add(st.reclaim_at(), self.h);
        self.slot.insert(rec);
    }
}

impl IdemTable {
    /// How many records the table holds (expired ones until reclaimed).
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The record of `key`, expired or not.
    pub(super) fn get(&self, key: &[u8]) -> Option<&IdemRec> {
        let h = self.hasher.hash(key);
        self.map.find(h, is(h, key)).map(|r| &**r)
    }

    /// The record of `key` live at `now_ms`, or the place for a new one, in
    /// one probe. An expired record is forgotten (lazy expiry; `on_expired`
    /// sees its key first). Makes room for one more record, as an insert
    /// would, even when the key has a live one.
    pub(super) fn entry(&mut self, now_ms: u64, key: &[u8], on_expired: impl FnOnce(&[u8])) -> Entry<'_> {
        let h = self.hasher.hash(key);
        let index = &mut self.index;
        match self.map.entry(h, is(h, key), stored_hash) {
            hash_table::Entry::Occupied(slot) if now_ms >= slot.get().state().reclaim_at() => {
                on_expired(key);
                let (old, slot) = slot.remove();
                index.remove(old.state().reclaim_at(), h);
                Entry::Vacant(Vacant { slot, h, index, spare: Some(old) })
            }
            hash_table::Entry::Occupied(slot) => Entry::Occupied(Occupied { slot, h, index }),
            hash_table::Entry::Vacant(slot) => Entry::Vacant(Vacant { slot, h, index, spare: None }),
        }
    }

    /// The record of `key` live at `now_ms`, in one probe; for commands that
    /// create no record. An expired record is forgotten as by `entry`.
    pub(super) fn find(&mut self, now_ms: u64, key: &[u8], on_expired: impl FnOnce(&[u8])) -> Option<Occupied<'_>> {
        let h = self.hasher.hash(key);
        let index = &mut self.index;
        let slot = self.map.find_entry(h, is(h, key), stored_hash)?;
        let at = slot.get().state().reclaim_at();
        if now_ms >= at {
            on_expired(key);
            slot.remove();
            index.remove(at, h);
            return None;
        }
        Some(Occupied { slot, h, index })
    }

    /// Stores `key` with `fp`, `result` and `st`, replacing its record (the
    /// replay of a logged record; commands use `entry`). The heap blocks are
    /// reused when the bytes do not change (a takeover).
    pub(super) fn put(&mut self, key: &[u8], fp: Option<&[u8]>, result: &[u8], st: EntryState) {
        let h = self.hasher.hash(key);
        let index = &mut self.index;
        match self.map.entry(h, is(h, key), stored_hash) {
            hash_table::Entry::Occupied(mut slot) => {
                let rec = slot.get_mut();
                let from = rec.state().reclaim_at();
                if rec.fp() == fp {
                    rec.set_result(result);
                    rec.set_state(st);
                } else {
                    **rec = IdemRec::new(h, key, fp, result, st);
                }
                index.moved(from, st.reclaim_at(), h);
            }
            hash_table::Entry::Vacant(slot) => {
                index.add(st.reclaim_at(), h);
                slot.insert(Box::new(IdemRec::new(h, key, fp, result, st)));
            }
        }
    }

    /// Removes the record of `key`; false if there was none.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        let h = self.hasher.hash(key);
        match self.map.find_entry(h, is(h, key), stored_hash) {
            Some(slot) => {
                let (old, _) = slot.remove();
                self.index.remove(old.state().reclaim_at(), h);
                true
            }
            None => false,
        }
    }

    /// The earliest time at which a record is forgotten.
    pub(super) fn first_deadline_ms(&self) -> Option<u64> {
        self.index.set.first().map(|e| e.0)
    }

    /// Forgets every record whose time is up at `now_ms`; `on_reclaim`
    /// sees each key first.
    pub(super) fn reclaim_due(&mut self, now_ms: u64, mut on_reclaim: impl FnMut(&[u8])) {
        while self.index.set.first().is_some_and(|e| e.0 <= now_ms) {
            let Some((at, h)) = self.index.set.pop_first() else { break };
            let records = 1 + self.index.extra.remove(&(at, h)).unwrap_or(0);
            for _ in 0..records {
                // Other keys may share the probe sequence and even the time:
                // only the hash tells the records of this entry apart.
                let due = |r: &IdemRec| r.state().reclaim_at() == at && r.hash == h;
                let Some(slot) = self.map.find_entry(h, |r| due(r), stored_hash) else {
                    debug_assert!(false, "an expiry entry has its records");
                    break;
                };
                on_reclaim(slot.get().key());
                slot.remove();
            }
        }
    }

    /// Every record, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &IdemRec> {
        self.map.iter().map(|r| &**r)
    }

    #[cfg(test)]
    /// Stores a record with every key forced onto hash `h`, to test collisions.
    fn put_with_hash(&mut self, h: u64, key: &[u8], st: EntryState) {
        self.hasher.forced = Some(h);
        self.put(key, None, b"", st);
    }

    #[cfg(test)]
    /// Checks that the index holds exactly the `(reclaim_at, hash)` of every
    /// record, with the right multiplicity.
    fn check_index(&self) {
        let mut want = BTreeMap::<(u64, u64), u32>::new();
        for r in self.map.iter() {
            assert_eq!(r.hash, self.hasher.hash(r.key()), "a record keeps its key's hash");
            *want.entry((r.state().reclaim_at(), r.hash)).or_insert(0) += 1;
        }
        let mut got = BTreeMap::<(u64, u64), u32>::new();
        for &e in &self.index.set {
            got.insert(e, 1 + self.index.extra.get(&e).copied().unwrap_or(0));
        }
        assert!(self.index.extra.keys().all(|e| self.index.set.contains(e)), "extra counts only indexed pairs");
        assert!(self.index.extra.values().all(|&n| n > 0));
        assert_eq!(got, want, "the index mirrors the records");
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Rng;
    use super::*;

    #[test]
    fn record_layout_round_trips() {
        let st = EntryState::Done { keep_until_ms: 9 };
        let r = IdemRec::new(7, b"key", Some(b"fp"), b"result", st);
        assert_eq!((r.key(), r.fp(), r.result(), r.state()), (&b"key"[..], Some(&b"fp"[..]), &b"result"[..], st));
        let st = EntryState::Running { fence: 3, attempt: 2, lease_until_ms: 7 };
        let r = IdemRec::new(7, b"k", None, b"", st);
        assert_eq!((r.key(), r.fp(), r.result(), r.state()), (&b"k"[..], None, &b""[..], st));
        assert_eq!(std::mem::size_of::<IdemRec>(), 48, "one 48-byte size class");
        assert_eq!(std::mem::size_of::<Box<IdemRec>>(), 8, "a table slot is one pointer");
    }

    #[test]
    fn colliding_keys_share_a_bucket_and_expire_separately() {
        let mut t = IdemTable::default();
        let st = |at| EntryState::Done { keep_until_ms: at };
        t.put_with_hash(7, b"a", st(10));
        t.put_with_hash(7, b"b", st(10));
        t.put_with_hash(7, b"c", st(20));
        assert_eq!(t.len(), 3);
        assert_eq!(t.index.set.len(), 2, "a and b share one expiry entry");
        t.check_index();
        // Moving a's deadline must keep b's entry.
        t.put_with_hash(7, b"a", st(30));
        assert!(t.index.set.contains(&(10, 7)));
        t.check_index();
        let mut gone = Vec::new();
        t.reclaim_due(10, |k| gone.push(k.to_vec()));
        assert_eq!(gone, [b"b".to_vec()]);
        t.reclaim_due(30, |k| gone.push(k.to_vec()));
        gone.sort();
        assert_eq!(gone, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.map.len(), 0);
        assert!(t.index.set.is_empty() && t.index.extra.is_empty());
    }

    fn done(at: u64) -> EntryState {
        EntryState::Done { keep_until_ms: at }
    }

    fn run(fence: u64, lease_until_ms: u64) -> EntryState {
        EntryState::Running { fence, attempt: 1, lease_until_ms }
    }

    #[test]
    fn entry_forgets_an_expired_record_and_stores_the_new_one_in_its_place() {
        let mut t = IdemTable::default();
        t.put(b"k", Some(b"fp"), b"old", done(10));
        t.put(b"j", None, b"", done(10));
        let mut expired = Vec::new();
        match t.entry(9, b"k", |k| expired.push(k.to_vec())) {
            Entry::Occupied(o) => assert_eq!(o.rec().result(), b"old", "live until its time"),
            Entry::Vacant(_) => panic!("k is live at 9"),
        }
        assert!(expired.is_empty());
        match t.entry(10, b"k", |k| expired.push(k.to_vec())) {
            Entry::Vacant(v) => v.insert(b"k", None, b"", run(1, 50)),
            Entry::Occupied(_) => panic!("k expired at 10"),
        }
        assert_eq!(expired, [b"k".to_vec()]);
        assert_eq!(t.len(), 2);
        let r = t.get(b"k").expect("stored");
        assert_eq!((r.fp(), r.result(), r.state()), (None, &b""[..], run(1, 50)));
        t.check_index();
        assert_eq!(t.first_deadline_ms(), Some(10), "j still expires at 10");
        let mut gone = Vec::new();
        t.reclaim_due(10, |k| gone.push(k.to_vec()));
        assert_eq!(gone, [b"j".to_vec()], "the new k is not reclaimed with the old deadline");
        t.check_index();
    }

    #[test]
    fn find_forgets_an_expired_record() {
        let mut t = IdemTable::default();
        t.put(b"k", None, b"", run(1, 10));
        let at = run(1, 10).reclaim_at();
        assert!(t.find(at - 1, b"k", |_| panic!("not expired")).is_some());
        let mut expired = 0;
        assert!(t.find(at, b"k", |_| expired += 1).is_none());
        assert_eq!((expired, t.len(), t.first_deadline_ms()), (1, 0, None));
        assert!(t.find(at, b"k", |_| panic!("gone already")).is_none());
        t.check_index();
    }

    #[test]
    fn changes_in_place_move_the_expiry_entry() {
        let mut t = IdemTable::default();
        t.put(b"k", Some(b"fp"), b"", run(1, 10));
        let Some(mut o) = t.find(0, b"k", |_| {}) else { panic!("k is live") };
        o.set_state(EntryState::Running { fence: 2, attempt: 2, lease_until_ms: 20 });
        t.check_index();
        assert_eq!(t.first_deadline_ms(), Some(run(2, 20).reclaim_at()));
        let Some(mut o) = t.find(0, b"k", |_| {}) else { panic!("k is live") };
        o.set_result(b"result", done(5));
        let r = t.get(b"k").expect("kept");
        assert_eq!((r.key(), r.fp(), r.result(), r.state()), (&b"k"[..], Some(&b"fp"[..]), &b"result"[..], done(5)));
        assert_eq!(t.first_deadline_ms(), Some(5));
        t.check_index();
        // The same deadline again leaves the index as it is.
        let Some(mut o) = t.find(0, b"k", |_| {}) else { panic!("k is live") };
        o.set_state(done(5));
        t.check_index();
        let Some(o) = t.find(0, b"k", |_| {}) else { panic!("k is live") };
        o.remove();
        assert_eq!((t.len(), t.first_deadline_ms()), (0, None));
        t.check_index();
    }

    /// Fingerprint, result and state of a record in `random_ops`'s model.
    type ModelRec = (Option<Vec<u8>>, Vec<u8>, EntryState);

    /// Random operations against a plain map of key to state: the table
    /// agrees with it and its index never holds an entry no record needs.
    fn random_ops(forced_hash: Option<u64>, seed: u64) {
        use std::collections::BTreeMap;
        let mut t = IdemTable::default();
        t.hasher.forced = forced_hash;
        let mut model: BTreeMap<Vec<u8>, ModelRec> = BTreeMap::new();
        let mut rng = Rng(seed);
        let mut now = 0u64;
        for _ in 0..4000 {
            let key = vec![b'a' + rng.below(12) as u8];
            let st = match rng.below(3) {
                0 => done(now + rng.below(40)),
                // Small leases, so that `reclaim_at` often ties.
                _ => run(rng.below(1000) + 1, now + rng.below(4)),
            };
            let fp = (rng.below(2) == 0).then(|| vec![b'f', rng.below(2) as u8]);
            let result = vec![b'r'; rng.below(3) as usize];
            let live = |m: &BTreeMap<_, ModelRec>, now| m.get(&key).filter(|e| now < e.2.reclaim_at()).cloned();
            match rng.below(8) {
                0 => {
                    t.put(&key, fp.as_deref(), &result, st);
                    model.insert(key.clone(), (fp, result, st));
                }
                1 => assert_eq!(t.remove(&key), model.remove(&key).is_some()),
                2 | 3 => {
                    let want = live(&model, now);
                    let was_expired = model.contains_key(&key) && want.is_none();
                    let mut expired = false;
                    match t.entry(now, &key, |_| expired = true) {
                        Entry::Vacant(v) => {
                            assert!(want.is_none());
                            v.insert(&key, fp.as_deref(), &result, st);
                            model.insert(key.clone(), (fp, result, st));
                        }
                        Entry::Occupied(mut o) => {
                            let (wfp, wres, wst) = want.expect("live in the model");
                            assert_eq!(
                                (o.rec().fp(), o.rec().result(), o.rec().state()),
                                (wfp.as_deref(), &wres[..], wst)
                            );
                            o.set_state(st);
                            model.insert(key.clone(), (wfp, wres, st));
                        }
                    }
                    assert_eq!(expired, was_expired, "an expired record is forgotten by the probe");
                }
                4 | 5 => {
                    let want = live(&model, now);
                    let was = model.contains_key(&key);
                    let mut expired = false;
                    let found = t.find(now, &key, |_| expired = true);
                    assert_eq!(expired, was && want.is_none());
                    match (found, want) {
                        (None, None) => {
                            model.remove(&key);
                        }
                        (Some(mut o), Some((wfp, _, _))) => match rng.below(3) {
                            0 => {
                                o.remove();
                                model.remove(&key);
                            }
                            1 => {
                                o.set_result(&result, st);
                                model.insert(key.clone(), (wfp, result, st));
                            }
                            _ => {
                                o.set_state(st);
                                model.get_mut(&key).expect("live").2 = st;
                            }
                        },
                        (f, w) => panic!("table {:?}, model {w:?}", f.map(|o| o.rec().state())),
                    }
                }
                6 => {
                    let mut gone = Vec::new();
                    t.reclaim_due(now, |k| gone.push(k.to_vec()));
                    gone.sort();
                    let due: Vec<Vec<u8>> =
                        model.iter().filter(|(_, e)| e.2.reclaim_at() <= now).map(|(k, _)| k.clone()).collect();
                    model.retain(|_, e| e.2.reclaim_at() > now);
                    assert_eq!(gone, due);
                }
                _ => now += rng.below(5),
            }
            t.check_index();
            assert_eq!(t.len(), model.len());
            for (k, (fp, result, st)) in &model {
                let r = t.get(k).expect("the model's keys are stored");
                assert_eq!((r.fp(), r.result(), r.state()), (fp.as_deref(), &result[..], *st));
            }
            assert_eq!(t.first_deadline_ms(), model.values().map(|e| e.2.reclaim_at()).min());
        }
    }

    #[test]
    fn random_operations_keep_table_and_index_in_step() {
        for seed in 1..=8 {
            random_ops(None, seed);
        }
    }

    #[test]
    fn random_operations_with_every_hash_colliding() {
        for seed in 1..=8 {
            random_ops(Some(7), seed);
        }
    }
}
