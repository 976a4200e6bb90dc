//! Per-key order inside one consumer: messages with the same order key wait
//! for each other, first come first served, so they never run at once.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One async mutex per order key with a message in flight. An entry lives
/// while a message of its key holds or waits for it, so the map is bounded
/// by the consumer's in-flight bound.
#[derive(Default)]
pub(crate) struct OrderGate {
    keys: Mutex<HashMap<Vec<u8>, Arc<AsyncMutex<()>>>>,
}

/// Held while a message of its key runs; dropping it lets the next one in.
pub(crate) struct Turn<'a> {
    gate: &'a OrderGate,
    key: Vec<u8>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl OrderGate {
    /// Waits for the turn of `key`. Tokio's mutex is fair, so turns go in
    /// the order the messages asked.
    pub(crate) async fn turn(&self, key: Vec<u8>) -> Turn<'_> {
        let lock = self.keys.lock().entry(key.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        Turn { gate: self, key, guard: Some(guard) }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut keys = self.gate.keys.lock();
        // Only the map holds it now: no message holds or waits for this key.
        if keys.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn same_key_never_runs_at_once_and_entries_are_freed() {
        let gate = Arc::new(OrderGate::default());
        let running = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (gate, running, order) = (gate.clone(), running.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = gate.turn(b"k".to_vec()).await;
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two runs of one key at once");
                order.lock().push(i);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
            }));
            // Let each task queue before the next asks, to fix the arrival order.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), (0..20).collect::<Vec<_>>());
        assert!(gate.keys.lock().is_empty());
    }
}
