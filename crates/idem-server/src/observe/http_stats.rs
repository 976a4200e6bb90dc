//! HTTP requests by status class, and connections open.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

/// The status classes counted.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// HTTP figures.
#[derive(Default)]
pub(crate) struct HttpStats {
    by_class: [AtomicU64; CLASSES.len()],
    /// The pool of HTTP connection permits and its size.
    pool: OnceLock<(Arc<Semaphore>, usize)>,
}

impl HttpStats {
    /// Counts one response with `status`.
    pub(crate) fn answered(&self, status: u16) {
        let class = (usize::from(status / 100)).clamp(1, CLASSES.len()) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
    }

    /// Lets the open-connection gauge read the permit pool of `size`.
    pub(crate) fn watch_pool(&self, pool: Arc<Semaphore>, size: usize) {
        let _ = self.pool.set((pool, size));
    }

    /// `(class, responses)` for every class.
    pub(crate) fn by_class(&self) -> [(&'static str, u64); CLASSES.len()] {
        std::array::from_fn(|i| (CLASSES[i], self.by_class[i].load(Relaxed)))
    }

    /// HTTP connections holding a permit now.
    pub(crate) fn open(&self) -> u64 {
        self.pool.get().map_or(0, |(p, size)| size.saturating_sub(p.available_permits()) as u64)
    }
}
