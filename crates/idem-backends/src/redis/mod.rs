//! Placeholder: being written.

use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command};

use crate::BackendError;

/// The Redis / Redis Cluster backend.
pub struct RedisBackend {}

impl RedisBackend {
    /// Connects to a single Redis at `redis://…`.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let _ = url;
        Err(BackendError::Engine { engine: "redis", message: "not implemented yet".into() })
    }
    /// Connects to a Redis Cluster at `redis-cluster://host:port,host:port,…`.
    pub async fn connect_cluster(url: &str) -> Result<Self, BackendError> {
        let _ = url;
        Err(BackendError::Engine { engine: "redis", message: "not implemented yet".into() })
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(async move { cmds.iter().map(|_| Err(CmdError::busy("not implemented"))).collect() })
    }
    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async { Ok(0) })
    }
}
