//! Request ids: the client's `X-Request-Id` when usable, else a new one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;

/// The header read and written.
pub(crate) const HEADER: &str = "x-request-id";

/// Longest client id kept; a longer one is replaced, so a client cannot
/// make every log line carry kilobytes.
const CLIENT_ID_BYTES_MAX: usize = 128;

/// The request's id.
pub(crate) fn of(headers: &HeaderMap) -> String {
    let given = headers.get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| usable(v));
    given.map_or_else(fresh, str::to_string)
}

/// Visible ASCII, not empty, not too long: safe in a header and a log line.
fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= CLIENT_ID_BYTES_MAX && id.bytes().all(|b| b.is_ascii_graphic())
}

/// `<process start in ms, hex>-<sequence, hex>`: unique across restarts
/// that are at least a millisecond apart.
fn fresh() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        format!("{ms:x}")
    });
    format!("{prefix}-{:x}", NEXT.fetch_add(1, Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_when_usable() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(of(&h), "abc-123");
        h.insert(HEADER, "a b".parse().unwrap());
        assert_ne!(of(&h), "a b");
        h.insert(HEADER, "x".repeat(CLIENT_ID_BYTES_MAX + 1).parse().unwrap());
        assert!(of(&h).len() < CLIENT_ID_BYTES_MAX);
        let (a, b) = (of(&HeaderMap::new()), of(&HeaderMap::new()));
        assert_ne!(a, b);
    }
}
