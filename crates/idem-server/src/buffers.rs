//! The bound on the buffers of all clients together
//! (`client_buffers_bytes_max`): the read and write buffers of every RESP
//! connection and the bodies of HTTP requests being read.
//!
//! Each client reports the bytes its buffers hold when that changes (a
//! swap on its own atomic and an add to the total: no lock). Only when the
//! total goes over the bound is the list of clients walked, under a lock,
//! for the one holding the most; it is marked evicted and woken, and its
//! connection closes (as Redis's client eviction does). Its bytes leave the
//! total at once, so one overflow evicts one client, not a crowd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The buffers of every client, against the bound.
pub(crate) struct ClientBuffers {
    /// Bytes held by all clients. Signed: a client's swap and its add to
    /// the total are two steps, so an eviction between them may take the
    /// total below zero for an instant.
    total: AtomicI64,
    max_bytes: usize,
    clients: Mutex<HashMap<u64, Arc<Usage>>>,
    next_id: AtomicU64,
    evicted: AtomicU64,
    gauge: metrics::Gauge,
    evicted_counter: metrics::Counter,
}

/// One client's share.
pub(crate) struct Usage {
    bytes: AtomicUsize,
    evicted: AtomicBool,
    wake: Notify,
}

impl Usage {
    /// Whether the client was evicted: its connection must close.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Relaxed)
    }

    /// Completes once the client is evicted (at once if it already was).
    pub(crate) async fn evicted(&self) {
        while !self.is_evicted() {
            self.wake.notified().await;
        }
    }
}

impl ClientBuffers {
    /// No client yet, bound `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> ClientBuffers {
        assert!(max_bytes > 0, "validated at bind");
        metrics::describe_gauge!("idem_client_buffers_bytes", "Bytes held by every client's buffers together.");
        metrics::describe_counter!(
            "idem_clients_evicted_total",
            "Clients disconnected to keep the buffers under client_buffers_bytes_max."
        );
        ClientBuffers {
            total: AtomicI64::new(0),
            max_bytes,
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            gauge: metrics::gauge!("idem_client_buffers_bytes"),
            evicted_counter: metrics::counter!("idem_clients_evicted_total"),
        }
    }

    /// Registers a client holding nothing yet; it leaves when the returned
    /// [`Tracked`] is dropped.
    pub(crate) fn register(self: &Arc<Self>) -> Tracked {
        let id = self.next_id.fetch_add(1, Relaxed);
        let usage =
            Arc::new(Usage { bytes: AtomicUsize::new(0), evicted: AtomicBool::new(false), wake: Notify::new() });
        self.clients.lock().expect("client list lock").insert(id, usage.clone());
        Tracked { buffers: self.clone(), id, usage, reported: 0 }
    }

    /// Bytes held by all clients now.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total.load(Relaxed).max(0) as u64
    }

    /// The bound.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Clients evicted since start.
    pub(crate) fn evicted_count(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    /// Moves `usage`'s share to `bytes`; over the bound, evicts the largest.
    fn set(&self, usage: &Usage, bytes: usize) {
        let old = usage.bytes.swap(bytes, Relaxed);
        let delta = bytes as i64 - old as i64;
        let total = self.total.fetch_add(delta, Relaxed) + delta;
        self.gauge.set(total.max(0) as f64);
        if delta > 0 && total > self.max_bytes as i64 {
            self.evict_largest();
        }
    }

    /// Evicts the clients holding the most until the total is back within
    /// the bound.
    fn evict_largest(&self) {
        let clients = self.clients.lock().expect("client list lock");
        while self.total.load(Relaxed) > self.max_bytes as i64 {
            let Some(victim) = clients
                .values()
                .filter(|u| !u.is_evicted())
                .max_by_key(|u| u.bytes.load(Relaxed))
                .filter(|u| u.bytes.load(Relaxed) > 0)
            else {
                return;
            };
            victim.evicted.store(true, Relaxed);
            let freed = victim.bytes.swap(0, Relaxed);
            self.total.fetch_sub(freed as i64, Relaxed);
            self.evicted.fetch_add(1, Relaxed);
            self.evicted_counter.increment(1);
            tracing::info!(
                bytes = freed,
                bound = self.max_bytes,
                "evicting the client with the largest buffers (client_buffers_bytes_max)"
            );
            victim.wake.notify_one();
        }
    }
}

/// A client's registration: reports its bytes, leaves on drop.
pub(crate) struct Tracked {
    buffers: Arc<ClientBuffers>,
    id: u64,
    usage: Arc<Usage>,
    /// The last figure reported, so that an unchanged one costs nothing.
    reported: usize,
}

impl Tracked {
    /// Reports that the client's buffers hold `bytes` now. Returns false
    /// when the client is evicted (by this report or earlier).
    pub(crate) fn report(&mut self, bytes: usize) -> bool {
        if bytes != self.reported && !self.usage.is_evicted() {
            self.reported = bytes;
            self.buffers.set(&self.usage, bytes);
        }
        !self.usage.is_evicted()
    }

    /// This client's share, to wait for its eviction.
    pub(crate) fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.buffers.clients.lock().expect("client list lock").remove(&self.id);
        self.buffers.set(&self.usage, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_bound_the_largest_client_is_evicted_and_its_bytes_leave_the_total() {
        let buffers = Arc::new(ClientBuffers::new(1000));
        let mut a = buffers.register();
        let mut b = buffers.register();
        let mut c = buffers.register();
        assert!(a.report(300));
        assert!(b.report(500));
        assert_eq!(buffers.total_bytes(), 800);
        // c's 300 takes the total to 1100: b, the largest, goes.
        assert!(c.report(300));
        assert!(b.usage().is_evicted() && !a.usage().is_evicted() && !c.usage().is_evicted());
        assert_eq!(buffers.total_bytes(), 600);
        assert!(!b.report(10), "an evicted client stays evicted");
        assert_eq!(buffers.evicted_count(), 1);
        // Shrinking never evicts; leaving takes the share out.
        assert!(a.report(100));
        drop(c);
        assert_eq!(buffers.total_bytes(), 100);
        drop(b);
        drop(a);
        assert_eq!(buffers.total_bytes(), 0);
    }

    #[test]
    fn a_client_alone_over_the_bound_evicts_itself() {
        let buffers = Arc::new(ClientBuffers::new(100));
        let mut a = buffers.register();
        assert!(!a.report(101));
        assert_eq!(buffers.total_bytes(), 0);
    }
}
