//! The ordered index of record deadlines (idempotency records have their
//! own, more compact one in `idem_table.rs`). Each record with a deadline has
//! exactly one entry; the owner of the record removes the old entry before it
//! changes the deadline, so `tick` pops only entries that are really due and
//! never scans the keyspace.
//!
//! Entries are ordered by `(deadline_ms, tag, key)`, where the tag is a
//! cheap hash of the key with the record's [`Kind`] in its two low bits. At
//! a few hundred thousand commands per second hundreds of entries share a
//! deadline millisecond, and ordering those by the key bytes made every
//! B-tree step a `memcmp` (about a third of a new LOCK's instructions); the
//! tag decides nearly every comparison with one integer compare, and the
//! key only breaks ties between tags that collide. The hash is not seeded:
//! it needs no resistance to chosen keys, since keys whose tags collide cost
//! only the byte comparison that every entry paid before.

use std::collections::BTreeSet;

use bytes::Bytes;

/// Which map a deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    /// A claim with a TTL.
    Claim,
    /// A lock's lease.
    Lock,
    /// A one-time token (key: scope and token, see `pair_key`).
    Token,
    /// A counter op id (key: counter key and op id, see `pair_key`).
    CounterOp,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Claim, Kind::Lock, Kind::Token, Kind::CounterOp];
}

/// The tag of `key` in the index: a hash of the key with `kind` in the two
/// low bits, so that one integer comparison orders nearly every pair of
/// entries of one millisecond.
fn tag(kind: Kind, key: &[u8]) -> u64 {
    // FxHash-style: rotate, xor a word, multiply; the length goes in first
    // so that keys differing only by trailing zeros differ.
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (key.len() as u64).wrapping_mul(K);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    }
    // A multiply mixes the low bits least, so the kind replaces two of those.
    (h & !3) | kind as u64
}

/// Record deadlines in time order.
#[derive(Debug, Default)]
pub(super) struct Expiry {
    set: BTreeSet<(u64, u64, Bytes)>,
}

impl Expiry {
    /// Adds the entry of a record whose deadline is `at_ms`.
    pub(super) fn insert(&mut self, at_ms: u64, kind: Kind, key: &Bytes) {
        let fresh = self.set.insert((at_ms, tag(kind, key), key.clone()));
        debug_assert!(fresh, "a record has one deadline entry");
    }

    /// Removes the entry of a record whose deadline was `at_ms`.
    pub(super) fn remove(&mut self, at_ms: u64, kind: Kind, key: &Bytes) {
        let found = self.set.remove(&(at_ms, tag(kind, key), key.clone()));
        debug_assert!(found, "a record's deadline entry must exist until the record changes");
    }

    /// Moves the entry of a record from deadline `from_ms` to `to_ms`.
    #[inline]
    pub(super) fn moved(&mut self, from_ms: u64, to_ms: u64, kind: Kind, key: &Bytes) {
        if from_ms != to_ms {
            self.remove(from_ms, kind, key);
            self.insert(to_ms, kind, key);
        }
    }

    /// Takes the earliest entry whose deadline is at or before `now_ms`.
    pub(super) fn pop_due(&mut self, now_ms: u64) -> Option<(u64, Kind, Bytes)> {
        if self.set.first()?.0 > now_ms {
            return None;
        }
        let (at, tag, key) = self.set.pop_first()?;
        Some((at, Kind::ALL[(tag & 3) as usize], key))
    }

    /// The earliest deadline.
    pub(super) fn first_ms(&self) -> Option<u64> {
        self.set.first().map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::b;
    use super::*;

    /// Due entries come out in deadline order with their kind and key, each
    /// once; the same key under two kinds is two entries; a removed entry
    /// never comes out.
    #[test]
    fn entries_pop_in_deadline_order_with_their_kind() {
        let mut e = Expiry::default();
        e.insert(20, Kind::Lock, &b("a"));
        e.insert(10, Kind::CounterOp, &b("a"));
        e.insert(10, Kind::Claim, &b("a"));
        e.insert(15, Kind::Token, &b("tok"));
        e.insert(15, Kind::Claim, &b("gone"));
        e.remove(15, Kind::Claim, &b("gone"));
        assert_eq!(e.first_ms(), Some(10));
        assert_eq!(e.pop_due(9), None);
        let mut at10: Vec<_> = std::iter::from_fn(|| e.pop_due(10)).collect();
        at10.sort_by_key(|(_, k, _)| *k);
        assert_eq!(at10, vec![(10, Kind::Claim, b("a")), (10, Kind::CounterOp, b("a"))]);
        assert_eq!(e.pop_due(100), Some((15, Kind::Token, b("tok"))));
        assert_eq!(e.pop_due(100), Some((20, Kind::Lock, b("a"))));
        assert_eq!(e.pop_due(100), None);
        assert_eq!(e.first_ms(), None);
    }

    /// Every kind survives the trip through the tag, for keys of every
    /// length around the word size, and keys that differ only in trailing
    /// zeros or in one byte get different tags.
    #[test]
    fn the_tag_keeps_the_kind_and_separates_keys() {
        for kind in Kind::ALL {
            for len in 0..20 {
                let key = vec![7u8; len];
                assert_eq!(Kind::ALL[(tag(kind, &key) & 3) as usize], kind);
            }
        }
        assert_ne!(tag(Kind::Lock, b"k\0"), tag(Kind::Lock, b"k"));
        assert_ne!(tag(Kind::Lock, b"k:000000000001"), tag(Kind::Lock, b"k:000000000002"));
        let tags: std::collections::HashSet<u64> =
            (0..10_000u32).map(|i| tag(Kind::Claim, format!("k{i:015}").as_bytes())).collect();
        assert_eq!(tags.len(), 10_000, "sequential keys should not collide");
    }
}
