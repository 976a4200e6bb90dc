//! The resource a lock protects: a set read and rewritten by its holder
//! (read-modify-write), which refuses any fence lower than the highest it
//! has seen, on reads as well as writes. Registering the fence on the read
//! is what makes the read-modify-write safe: a holder that read before a
//! newer holder cannot write back over it.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct FencedSet {
    fence_max: u64,
    items: Vec<String>,
}

/// Every lock name's protected set.
#[derive(Default)]
pub struct Resources {
    sets: Mutex<HashMap<String, FencedSet>>,
}

impl Resources {
    /// The set, if `fence` is not lower than any seen.
    pub fn read(&self, name: &str, fence: u64) -> Option<Vec<String>> {
        let mut sets = self.sets.lock().expect("resource lock");
        let s = sets.entry(name.to_string()).or_default();
        if fence < s.fence_max {
            return None;
        }
        s.fence_max = fence;
        Some(s.items.clone())
    }

    /// Replaces the set, if `fence` is not lower than any seen.
    pub fn write(&self, name: &str, fence: u64, items: Vec<String>) -> bool {
        let mut sets = self.sets.lock().expect("resource lock");
        let s = sets.entry(name.to_string()).or_default();
        if fence < s.fence_max {
            return false;
        }
        s.fence_max = fence;
        s.items = items;
        true
    }

    /// Every set, by name.
    pub fn all(&self) -> HashMap<String, Vec<String>> {
        self.sets.lock().expect("resource lock").iter().map(|(k, v)| (k.clone(), v.items.clone())).collect()
    }
}
