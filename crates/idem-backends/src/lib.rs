//! # idem-backends
//!
//! idem's contract on external engines, for users who outgrow one machine or
//! whose business rows live in PostgreSQL or MySQL:
//! - [`postgres`]: PostgreSQL (also inside the caller's own transaction);
//! - [`mysql`]: MySQL / MariaDB (also inside the caller's own transaction);
//! - [`redis`]: Redis and Redis Cluster.
//!
//! Every backend implements [`idem_core::Backend`] and passes the one
//! conformance suite in `idem-conformance`.

use std::sync::Arc;

use idem_core::Backend;

pub mod mysql;
pub mod postgres;
pub mod redis;
mod url_params;

/// Why a backend could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The store URL is not one this crate understands.
    #[error("unsupported store URL '{0}': expected postgres://, mysql://, redis:// or redis-cluster://")]
    UnsupportedUrl(String),
    /// The engine refused or could not be reached.
    #[error("{engine}: {message}")]
    Engine {
        /// Which engine.
        engine: &'static str,
        /// What it said.
        message: String,
    },
}

/// Opens the backend a store URL names: `postgres://…`, `mysql://…`,
/// `redis://…` (`rediss://…` over TLS) or `redis-cluster://host:port,host:port,…`.
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>, BackendError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgBackend::connect(url).await?))
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Ok(Arc::new(mysql::MySqlBackend::connect(url).await?))
    } else if url.starts_with("redis-cluster://") {
        Ok(Arc::new(redis::RedisBackend::connect_cluster(url).await?))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Arc::new(redis::RedisBackend::connect(url).await?))
    } else {
        Err(BackendError::UnsupportedUrl(url.to_string()))
    }
}

/// Creates or upgrades idem's schema in the store a URL names (SQL engines;
/// a no-op for Redis). Safe to run repeatedly and concurrently.
pub async fn migrate(url: &str) -> Result<(), BackendError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::migrate(url).await
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        mysql::migrate(url).await
    } else if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis-cluster://") {
        Ok(())
    } else {
        Err(BackendError::UnsupportedUrl(url.to_string()))
    }
}
