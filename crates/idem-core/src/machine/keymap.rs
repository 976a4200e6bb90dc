//! A map from byte-string keys to values that looks a key up once even when
//! the command then inserts it: `entry` hashes and probes once, and a miss
//! returns the vacant slot to fill. (`std`'s `HashMap::entry` needs an owned
//! key up front, which would copy every key a command merely reads, and a
//! lookup followed by `insert` hashes and probes twice for every new key.)
//! Keys are hashed under a random seed ([`KeyHash`]): clients choose the
//! keys. The table grows a few entries per call
//! ([`GrowTable`]), never all at once.

use bytes::Bytes;
use hashbrown::hash_table;

use super::grow::GrowTable;
use super::key_hash::KeyHash;

/// Byte-string keys to `V`, one probe per command.
#[derive(Debug)]
pub(super) struct KeyMap<V> {
    table: GrowTable<(Bytes, V)>,
    hasher: KeyHash,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap { table: GrowTable::default(), hasher: KeyHash::default() }
    }
}

/// An occupied or vacant place of one key ([`KeyMap::entry`]).
pub(super) type Entry<'a, V> = hash_table::Entry<'a, (Bytes, V)>;

/// The place of a present key ([`KeyMap::find_mut`], [`KeyMap::entry`]).
pub(super) type Occupied<'a, V> = hash_table::OccupiedEntry<'a, (Bytes, V)>;

/// The vacant place of a key ([`KeyMap::entry`]), to insert that key.
pub(super) type Vacant<'a, V> = hash_table::VacantEntry<'a, (Bytes, V)>;

impl<V> KeyMap<V> {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash(key)
    }

    /// The value of `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<&V> {
        self.table.find(self.hash(key), |(k, _)| k.as_ref() == key).map(|(_, v)| v)
    }

    /// The place of `key` if it is present, to read, change or remove.
    /// Unlike [`KeyMap::entry`], it never makes room for an insert.
    pub(super) fn find_mut(&mut self, key: &[u8]) -> Option<Occupied<'_, V>> {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        self.table.find_entry(hash, |(k, _)| k.as_ref() == key, |(k, _)| hasher.hash(k.as_ref()))
    }

    /// Removes `key`, returning the stored key and its value.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<(Bytes, V)> {
        Some(self.find_mut(key)?.remove().0)
    }

    /// The place of `key`: occupied, or vacant and ready for an insert of
    /// `(key, value)` without another probe. The caller must insert the
    /// same key it looked up. Like an insert, it makes room for one more
    /// key (a full table starts growing) even when the caller then inserts
    /// nothing.
    pub(super) fn entry(&mut self, key: &[u8]) -> Entry<'_, V> {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        self.table.entry(hash, |(k, _)| k.as_ref() == key, |(k, _)| hasher.hash(k.as_ref()))
    }

    /// The number of keys.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every key and value, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Bytes, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through many growths: every key is found again with its value, a
    /// vacant entry filled once is found, a removed one is gone.
    #[test]
    fn keys_are_found_after_growth_and_removal() {
        let mut m: KeyMap<u32> = KeyMap::default();
        for i in 0..10_000u32 {
            let key = format!("key-{i}");
            match m.entry(key.as_bytes()) {
                hash_table::Entry::Vacant(v) => {
                    v.insert((Bytes::from(key), i));
                }
                hash_table::Entry::Occupied(_) => panic!("key-{i} is new"),
            }
        }
        assert_eq!(m.len(), 10_000);
        for i in (0..10_000u32).step_by(2) {
            let hash_table::Entry::Occupied(e) = m.entry(format!("key-{i}").as_bytes()) else {
                panic!("key-{i} was inserted");
            };
            assert_eq!(e.get().1, i);
            e.remove();
        }
        assert_eq!(m.len(), 5_000);
        for i in 0..10_000u32 {
            let want = (i % 2 == 1).then_some(i);
            assert_eq!(m.get(format!("key-{i}").as_bytes()).copied(), want, "key-{i}");
        }
        assert_eq!(m.iter().count(), 5_000);
    }
}
