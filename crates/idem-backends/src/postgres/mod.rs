//! Placeholder: being written.

use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command};

use crate::BackendError;

/// The postgres backend.
pub struct PgBackend {}

impl PgBackend {
    /// Connects to the store at `url`.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let _ = url;
        Err(BackendError::Engine { engine: "postgres", message: "not implemented yet".into() })
    }
}

/// Creates or upgrades the schema.
pub async fn migrate(url: &str) -> Result<(), BackendError> {
    let _ = url;
    Err(BackendError::Engine { engine: "postgres", message: "not implemented yet".into() })
}

impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(async move { cmds.iter().map(|_| Err(CmdError::busy("not implemented"))).collect() })
    }
    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async { Ok(0) })
    }
}
