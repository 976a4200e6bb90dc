//! # idem-backends
//!
//! Opens the backend a store URL names, over the engine crates this build
//! includes, one cargo feature each (all on by default):
//! - `postgres`: [`idem_postgres`], PostgreSQL (also inside the caller's own transaction);
//! - `mysql`: [`idem_mysql`], MySQL / MariaDB (also inside the caller's own transaction);
//! - `redis`: [`idem_redis`], Redis and Redis Cluster.
//!
//! The engines live in their own crates, in the shape of TiKV's engine
//! crates: each implements [`idem_core::Backend`], shares nothing with the
//! others but `idem-core` (and, for the SQL two, `idem-sql`), and passes the
//! one conformance suite in `idem-conformance`. This facade only maps a URL
//! scheme to an engine, so that the binaries (`idem serve --store`,
//! `idem migrate`, the gateway, the benchmarks) choose engines by feature
//! without each repeating the dispatch.

use std::sync::Arc;

use idem_core::Backend;
pub use idem_core::BackendError;
#[cfg(feature = "mysql")]
pub use idem_mysql as mysql;
#[cfg(feature = "postgres")]
pub use idem_postgres as postgres;
#[cfg(feature = "redis")]
pub use idem_redis as redis;

/// The engine a store URL's scheme names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Postgres,
    MySql,
    Redis,
    RedisCluster,
}

fn engine_of(url: &str) -> Result<Engine, BackendError> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "postgres" | "postgresql" => Ok(Engine::Postgres),
        "mysql" | "mariadb" => Ok(Engine::MySql),
        "redis" | "rediss" => Ok(Engine::Redis),
        "redis-cluster" => Ok(Engine::RedisCluster),
        _ => Err(BackendError::UnsupportedUrl(url.to_string())),
    }
}

/// Opens the backend a store URL names: `postgres://…`, `mysql://…`,
/// `redis://…` (`rediss://…` over TLS) or `redis-cluster://host:port,host:port,…`.
/// A scheme whose engine this build leaves out is an
/// [`BackendError::UnsupportedUrl`].
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>, BackendError> {
    match engine_of(url)? {
        #[cfg(feature = "postgres")]
        Engine::Postgres => Ok(Arc::new(postgres::PgBackend::connect(url).await?)),
        #[cfg(feature = "mysql")]
        Engine::MySql => Ok(Arc::new(mysql::MySqlBackend::connect(url).await?)),
        #[cfg(feature = "redis")]
        Engine::RedisCluster => Ok(Arc::new(redis::RedisBackend::connect_cluster(url).await?)),
        #[cfg(feature = "redis")]
        Engine::Redis => Ok(Arc::new(redis::RedisBackend::connect(url).await?)),
        #[allow(unreachable_patterns)]
        _ => Err(BackendError::UnsupportedUrl(url.to_string())),
    }
}

/// What [`migrate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrated {
    /// The SQL schema is at this build's version (created or upgraded if it was not).
    Schema,
    /// Redis keeps no schema; the store answered and its version is supported.
    NoSchema,
}

/// Creates or upgrades idem's schema in the store a URL names (SQL
/// engines); on Redis, which keeps no schema, only connects, so that an
/// unreachable store or a bad URL still fails. Safe to run repeatedly and
/// concurrently.
pub async fn migrate(url: &str) -> Result<Migrated, BackendError> {
    match engine_of(url)? {
        #[cfg(feature = "postgres")]
        Engine::Postgres => postgres::migrate(url).await.map(|()| Migrated::Schema),
        #[cfg(feature = "mysql")]
        Engine::MySql => mysql::migrate(url).await.map(|()| Migrated::Schema),
        #[cfg(feature = "redis")]
        Engine::Redis | Engine::RedisCluster => connect(url).await.map(|_| Migrated::NoSchema),
        #[allow(unreachable_patterns)]
        _ => Err(BackendError::UnsupportedUrl(url.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_engines() {
        assert_eq!(engine_of("postgresql://u@h/db").ok(), Some(Engine::Postgres));
        assert_eq!(engine_of("mariadb://u@h/db").ok(), Some(Engine::MySql));
        assert_eq!(engine_of("rediss://h:1").ok(), Some(Engine::Redis));
        assert_eq!(engine_of("redis-cluster://h:1,h:2").ok(), Some(Engine::RedisCluster));
        assert!(matches!(engine_of("redisx://h"), Err(BackendError::UnsupportedUrl(_))));
        assert!(matches!(engine_of("postgres"), Err(BackendError::UnsupportedUrl(_))));
    }
}
