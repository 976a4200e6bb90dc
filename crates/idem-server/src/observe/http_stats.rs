//! HTTP requests by status class, and connections open.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The status classes counted.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// HTTP figures.
#[derive(Default)]
pub(crate) struct HttpStats {
    by_class: [AtomicU64; CLASSES.len()],
    /// HTTP connections accepted and not yet closed (both listeners).
    open: Arc<AtomicU64>,
}

/// Counts one open HTTP connection for as long as it lives.
pub(crate) struct OpenConnection(Arc<AtomicU64>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Relaxed);
        assert!(before > 0, "an open HTTP connection was counted when it opened");
    }
}

impl HttpStats {
    /// Counts one response with `status`.
    pub(crate) fn answered(&self, status: u16) {
        let class = (usize::from(status / 100)).clamp(1, CLASSES.len()) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
    }

    /// Counts a connection just accepted, until the returned guard drops.
    pub(crate) fn opened(&self) -> OpenConnection {
        self.open.fetch_add(1, Relaxed);
        OpenConnection(self.open.clone())
    }

    /// `(class, responses)` for every class.
    pub(crate) fn by_class(&self) -> [(&'static str, u64); CLASSES.len()] {
        std::array::from_fn(|i| (CLASSES[i], self.by_class[i].load(Relaxed)))
    }

    /// HTTP connections open now. Counted from the accepts, not from the
    /// permit pool: the accept loop holds a permit while it waits for the
    /// next connection, which the pool would count as one more open.
    pub(crate) fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }
}
