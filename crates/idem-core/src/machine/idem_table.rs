//! Compact storage of idempotency records, the record kind idem holds by the
//! million. Back of the envelope for a 16-byte key and a 32-byte result:
//! one 48-byte heap block (key, fingerprint and result side by side), a
//! 40-byte record header in a second block, an 8-byte table slot (a
//! pointer; empty slots cost 9 bytes, not a record), and a 16-byte expiry
//! entry; no `Bytes` headers and no second copy of the key.
//!
//! The table is keyed by a 64-bit SipHash of the key (seeded per machine, so
//! collisions cannot be aimed). The expiry index orders
//! `(reclaim_at_ms, hash)`, so it needs no copy of the key either.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use bytes::Bytes;

use crate::change::{IdemRecord, IdemState};
use crate::command::KEEP_MS_DEFAULT;

/// The state of a record, without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum St {
    /// An attempt holds the key until `lease_until_ms`.
    Running { fence: u64, attempt: u32, lease_until_ms: u64 },
    /// Completed; the result is kept until `keep_until_ms`.
    Done { keep_until_ms: u64 },
}

impl St {
    /// When a record in this state is forgotten: a done record at the end of
    /// its KEEP; a running one `KEEP_MS_DEFAULT` after its lease ran out,
    /// so that the attempt number survives that long.
    pub(super) fn reclaim_at(self) -> u64 {
        match self {
            St::Running { lease_until_ms, .. } => lease_until_ms.saturating_add(KEEP_MS_DEFAULT),
            St::Done { keep_until_ms } => keep_until_ms,
        }
    }
}

/// Marks "no fingerprint" in `IdemRec::fp_len`.
const NO_FP: u16 = u16::MAX;

/// One record in 40 bytes plus one heap block: `data` is the key, then the
/// fingerprint, then the result. Keys and fingerprints are at most
/// `Limits::KEY_BYTES_CONTRACT_MAX` (512) bytes, so `u16` lengths suffice.
#[derive(Debug)]
pub(super) struct IdemRec {
    data: Box<[u8]>,
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
    fn new(key: &[u8], fp: Option<&[u8]>, result: &[u8], st: St) -> IdemRec {
        let fp_bytes = fp.unwrap_or_default();
        let mut data = Vec::with_capacity(key.len() + fp_bytes.len() + result.len());
        data.extend_from_slice(key);
        data.extend_from_slice(fp_bytes);
        data.extend_from_slice(result);
        let mut rec = IdemRec {
            data: data.into_boxed_slice(),
            key_len: short_len(key.len()),
            fp_len: fp.map_or(NO_FP, |f| short_len(f.len())),
            attempt: 0,
            a: 0,
            b: 0,
        };
        rec.set_state(st);
        rec
    }

    fn set_state(&mut self, st: St) {
        match st {
            St::Running { fence, attempt, lease_until_ms } => {
                debug_assert!(attempt >= 1, "attempts count from 1");
                (self.a, self.attempt, self.b) = (fence, attempt.max(1), lease_until_ms);
            }
            St::Done { keep_until_ms } => (self.a, self.attempt, self.b) = (keep_until_ms, 0, 0),
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
    pub(super) fn state(&self) -> St {
        if self.attempt == 0 {
            St::Done { keep_until_ms: self.a }
        } else {
            St::Running { fence: self.a, attempt: self.attempt, lease_until_ms: self.b }
        }
    }

    /// As logged.
    pub(super) fn to_record(&self) -> IdemRecord {
        let state = match self.state() {
            St::Running { fence, attempt, lease_until_ms } => IdemState::Running { fence, attempt, lease_until_ms },
            St::Done { keep_until_ms } => {
                IdemState::Done { result: Bytes::copy_from_slice(self.result()), keep_until_ms }
            }
        };
        IdemRecord { fingerprint: self.fp().map(Bytes::copy_from_slice), state }
    }
}

/// Every idempotency record of a machine, with its expiry index.
///
/// The table's slots hold only a pointer (plus hashbrown's control byte), so
/// the empty slots a hash table keeps while it grows cost 9 bytes each, not
/// a whole record: at a million records that is the difference between
/// beating Redis's memory per key and not. Keys whose hashes collide are
/// simply different entries; the hash is recomputed from the key when the
/// table grows, so records need not store it.
#[derive(Debug, Default)]
pub(super) struct IdemTable {
    map: HashTable<Box<IdemRec>>,
    hasher: RandomState,
    /// `(reclaim_at_ms, hash)`; one entry per distinct pair.
    expiry: BTreeSet<(u64, u64)>,
    /// Tests force every key onto one hash to exercise collisions.
    #[cfg(test)]
    forced_hash: Option<u64>,
}

impl IdemTable {
    fn hash(&self, key: &[u8]) -> u64 {
        #[cfg(test)]
        if let Some(h) = self.forced_hash {
            return h;
        }
        self.hasher.hash_one(key)
    }

    /// How many records the table holds (expired ones until reclaimed).
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The record of `key`, expired or not.
    pub(super) fn get(&self, key: &[u8]) -> Option<&IdemRec> {
        self.map.find(self.hash(key), |r| r.key() == key).map(|r| &**r)
    }

    /// Removes the expiry entry `(at, h)` unless another record of hash `h`
    /// still needs it.
    fn unindex(&mut self, at: u64, h: u64) {
        let shared = self.map.iter_hash(h).any(|r| r.state().reclaim_at() == at && self.hash(r.key()) == h);
        if !shared {
            self.expiry.remove(&(at, h));
        }
    }

    /// Stores `key` with `fp`, `result` and `st`, replacing its record. The
    /// heap blocks are reused when the bytes do not change (a takeover).
    pub(super) fn put(&mut self, key: &[u8], fp: Option<&[u8]>, result: &[u8], st: St) {
        let h = self.hash(key);
        let rec = match self.take(h, key) {
            Some(mut r) => {
                self.unindex(r.state().reclaim_at(), h);
                if r.fp() == fp && r.result() == result {
                    r.set_state(st);
                    r
                } else {
                    Box::new(IdemRec::new(key, fp, result, st))
                }
            }
            None => Box::new(IdemRec::new(key, fp, result, st)),
        };
        self.expiry.insert((st.reclaim_at(), h));
        let hasher = &self.hasher;
        #[cfg(test)]
        let forced = self.forced_hash;
        self.map.insert_unique(h, rec, |r| {
            #[cfg(test)]
            if let Some(f) = forced {
                return f;
            }
            hasher.hash_one(r.key())
        });
    }

    /// Removes the record of `key`; false if there was none.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        let h = self.hash(key);
        match self.take(h, key) {
            Some(r) => {
                self.unindex(r.state().reclaim_at(), h);
                true
            }
            None => false,
        }
    }

    /// Takes the record of `key` (hash `h`) out of the table.
    fn take(&mut self, h: u64, key: &[u8]) -> Option<Box<IdemRec>> {
        match self.map.find_entry(h, |r| r.key() == key) {
            Ok(entry) => Some(entry.remove().0),
            Err(_) => None,
        }
    }

    /// The earliest time at which a record is forgotten.
    pub(super) fn first_deadline_ms(&self) -> Option<u64> {
        self.expiry.first().map(|e| e.0)
    }

    /// Forgets every record whose time is up at `now_ms`; `on_reclaim`
    /// sees each key first.
    pub(super) fn reclaim_due(&mut self, now_ms: u64, mut on_reclaim: impl FnMut(&[u8])) {
        while self.expiry.first().is_some_and(|e| e.0 <= now_ms) {
            let Some((at, h)) = self.expiry.pop_first() else { break };
            let keys: Vec<Box<[u8]>> = self
                .map
                .iter_hash(h)
                .filter(|r| r.state().reclaim_at() == at && self.hash(r.key()) == h)
                .map(|r| r.key().into())
                .collect();
            for k in keys {
                on_reclaim(&k);
                self.take(h, &k);
            }
        }
    }

    /// Every record, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &IdemRec> {
        self.map.iter().map(|r| &**r)
    }

    #[cfg(test)]
    /// Stores a record with every key forced onto hash `h`, to test collisions.
    fn put_with_hash(&mut self, h: u64, key: &[u8], st: St) {
        self.forced_hash = Some(h);
        self.put(key, None, b"", st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_round_trips() {
        let st = St::Done { keep_until_ms: 9 };
        let r = IdemRec::new(b"key", Some(b"fp"), b"result", st);
        assert_eq!((r.key(), r.fp(), r.result(), r.state()), (&b"key"[..], Some(&b"fp"[..]), &b"result"[..], st));
        let st = St::Running { fence: 3, attempt: 2, lease_until_ms: 7 };
        let r = IdemRec::new(b"k", None, b"", st);
        assert_eq!((r.key(), r.fp(), r.result(), r.state()), (&b"k"[..], None, &b""[..], st));
        assert_eq!(std::mem::size_of::<IdemRec>(), 40);
        assert_eq!(std::mem::size_of::<Box<IdemRec>>(), 8, "a table slot is one pointer");
    }

    #[test]
    fn colliding_keys_share_a_bucket_and_expire_separately() {
        let mut t = IdemTable::default();
        let st = |at| St::Done { keep_until_ms: at };
        t.put_with_hash(7, b"a", st(10));
        t.put_with_hash(7, b"b", st(10));
        t.put_with_hash(7, b"c", st(20));
        assert_eq!(t.len(), 3);
        assert_eq!(t.expiry.len(), 2, "a and b share one expiry entry");
        // Moving a's deadline must keep b's entry.
        t.put_with_hash(7, b"a", st(30));
        assert!(t.expiry.contains(&(10, 7)));
        let mut gone = Vec::new();
        t.reclaim_due(10, |k| gone.push(k.to_vec()));
        assert_eq!(gone, [b"b".to_vec()]);
        t.reclaim_due(30, |k| gone.push(k.to_vec()));
        gone.sort();
        assert_eq!(gone, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(t.len(), 0);
        assert!(t.map.is_empty() && t.expiry.is_empty());
    }
}
