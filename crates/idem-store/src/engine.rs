//! PLACEHOLDER: the sharded engine is being written.

use std::sync::Arc;

use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command};

use crate::{StoreConfig, StoreError};

/// The embedded store: implements [`Backend`].
pub struct Store {
    _config: StoreConfig,
}

impl Store {
    /// Opens (recovering) the store described by `config`. Must be called
    /// from within a tokio runtime.
    pub fn open(config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        Ok(Arc::new(Store { _config: config }))
    }
}

impl Backend for Store {
    fn name(&self) -> &'static str {
        "embedded"
    }
    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(async move { cmds.iter().map(|_| Err(CmdError::busy("not implemented"))).collect() })
    }
    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async { Ok(0) })
    }
}
