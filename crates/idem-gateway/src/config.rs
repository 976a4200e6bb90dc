//! What the layer needs besides a backend: its routes and its bounds. Every
//! bound has a named default, documented in docs/gateway.md.

use http::header::{self, HeaderName};

use crate::key_header::IDEMPOTENCY_KEY_BYTES_MAX;
use crate::route::{Route, RouteDefaults};

/// Default prefix of every stored key.
pub const KEY_PREFIX_DEFAULT: &str = "gw:";
/// Default lease of a first request, ms. It is renewed at a third of itself
/// while the call runs, so it bounds only how long the record of a gateway
/// that died blocks its key.
pub const LEASE_MS_DEFAULT: u64 = 10_000;
/// Shortest lease of a first request, ms: renewals come at a third of the
/// lease, and each is a store write.
pub const LEASE_MS_MIN: u64 = 300;
/// Default bound on a buffered request body, bytes.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default time a client has to send a buffered request body, ms.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default bound on a stored response body, bytes; a larger response is
/// passed through and marked done but not replayable. With the headers it
/// stays below the store's 1 MiB value bound.
pub const STORED_BODY_BYTES_MAX_DEFAULT: usize = 512 * 1024;
/// Default time to read the first response's body for storing, ms.
pub const RESPONSE_READ_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Responses with these statuses are not stored: the request did not take
/// effect, or may be retried as is (Request Timeout, Conflict, Too Early,
/// Too Many Requests).
pub const RELEASE_STATUSES_DEFAULT: [u16; 4] = [408, 409, 425, 429];

/// Headers never stored, whatever the allow-list says.
pub const NEVER_STORED: [HeaderName; 2] = [header::SET_COOKIE, header::DATE];

/// The layer's configuration. Routes empty = IETF mode.
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// The idempotent routes, tried in order; empty: IETF mode (POST and
    /// PATCH carrying `Idempotency-Key`).
    pub routes: Vec<Route>,
    /// Values for the IETF mode's implicit route.
    pub defaults: RouteDefaults,
    /// Prefix of every stored key (lets gateways share a store without sharing records).
    pub key_prefix: String,
    /// Lease of a first request, ms; renewed at a third of itself while the call runs.
    pub lease_ms: u64,
    /// Longest key part, bytes (the `Idempotency-Key` value, or each source of a combined key).
    pub key_bytes_max: usize,
    /// Largest buffered request body, bytes (413 above it).
    pub request_bytes_max: usize,
    /// Time a client has to send a buffered request body, ms (408 after it).
    pub body_read_timeout_ms: u64,
    /// Largest stored response body, bytes.
    pub stored_body_bytes_max: usize,
    /// Time to read the first response's body for storing, ms.
    pub response_read_timeout_ms: u64,
    /// Response headers stored and replayed.
    pub replay_headers: Vec<HeaderName>,
    /// Statuses never stored (the record is removed: a retry runs again).
    pub release_statuses: Vec<u16>,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            routes: Vec::new(),
            defaults: RouteDefaults::default(),
            key_prefix: KEY_PREFIX_DEFAULT.to_string(),
            lease_ms: LEASE_MS_DEFAULT,
            key_bytes_max: IDEMPOTENCY_KEY_BYTES_MAX,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            body_read_timeout_ms: BODY_READ_TIMEOUT_MS_DEFAULT,
            stored_body_bytes_max: STORED_BODY_BYTES_MAX_DEFAULT,
            response_read_timeout_ms: RESPONSE_READ_TIMEOUT_MS_DEFAULT,
            replay_headers: vec![header::CONTENT_TYPE, header::LOCATION, header::ETAG, header::LINK],
            release_statuses: RELEASE_STATUSES_DEFAULT.to_vec(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gateway configuration: {0}")]
pub struct ConfigError(pub(crate) String);

impl LayerConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError(s));
        if let Some(h) = self.replay_headers.iter().find(|h| NEVER_STORED.contains(h)) {
            return bad(format!("{h} is never stored or replayed"));
        }
        if self.key_prefix.len() > 128 {
            return bad("key_prefix may be at most 128 bytes".into());
        }
        if self.lease_ms < LEASE_MS_MIN || self.lease_ms > crate::route::KEEP_MS_MAX {
            return bad(format!("lease_ms must be {LEASE_MS_MIN}..={}", crate::route::KEEP_MS_MAX));
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > 4096 {
            return bad("key_bytes_max must be 1..=4096 (parts are hashed into the stored key)".into());
        }
        if self.request_bytes_max == 0 || self.stored_body_bytes_max == 0 {
            return bad("request_bytes_max and stored_body_bytes_max must be at least 1".into());
        }
        if self.stored_body_bytes_max > 960 * 1024 {
            return bad("stored_body_bytes_max must leave room for headers below the store's 1 MiB value bound (at most 960 KiB)".into());
        }
        if self.body_read_timeout_ms == 0 || self.response_read_timeout_ms == 0 {
            return bad("body_read_timeout_ms and response_read_timeout_ms must be at least 1".into());
        }
        if let Some(s) = self.release_statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return bad(format!("release status {s} is not an HTTP status"));
        }
        Ok(())
    }
}
