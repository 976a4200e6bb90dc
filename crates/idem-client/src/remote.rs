//! [`RemoteBackend`]: a running idem server as an [`idem_core::Backend`], so
//! that a front end (the HTTP gateway, a test harness) can serve the
//! contract from another idem server instead of a store of its own.

use std::sync::Arc;

use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command};

use crate::config::Config;
use crate::error::Error;
use crate::pool::{redact, Pool};
use crate::wire;

/// Forwards [`Command`]s to an idem server over RESP and decodes the replies
/// strictly: a reply whose shape is not the one docs/commands.md gives its
/// command is a `BUSY` error that says so, never a plausible value.
///
/// Errors the server sent keep their code. Transport failures and timeouts
/// become `BUSY` ("a backend unreachable; retry later"); a write that failed
/// this way may have been applied.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = idem_client::testing::TestServer::start().await;
/// # let url = server.url();
/// use idem_client::{Config, RemoteBackend};
/// use idem_core::{Backend, Command, Reply};
///
/// let backend = RemoteBackend::new(Config::new(url))?;
/// let reply = backend.execute(Command::CounterGet { key: "stock".into() }).await?;
/// assert_eq!(reply, Reply::Int(0));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteBackend {
    pool: Arc<Pool>,
}

impl RemoteBackend {
    /// A backend for the server in `config`; connections open on first use.
    pub fn new(config: Config) -> Result<RemoteBackend, Error> {
        Ok(RemoteBackend { pool: Arc::new(Pool::new(config)?) })
    }

    pub(crate) fn from_pool(pool: Arc<Pool>) -> RemoteBackend {
        RemoteBackend { pool }
    }

    /// Runs `cmds` as one pipeline on one connection, in order.
    async fn run(&self, cmds: Vec<Command>) -> Vec<CmdResult> {
        let n = cmds.len();
        if n == 0 {
            return Vec::new();
        }
        match self.pool.send(&cmds).await {
            Ok(values) => {
                assert_eq!(values.len(), n, "the pool returns one reply per command");
                cmds.iter().zip(values).map(|(c, v)| wire::decode(c, v).map_err(Error::into_cmd_error)).collect()
            }
            Err(e) => {
                let e: CmdError = e.into_cmd_error();
                vec![Err(e); n]
            }
        }
    }
}

impl Backend for RemoteBackend {
    fn name(&self) -> &'static str {
        "remote"
    }

    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(self.run(cmds))
    }

    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async move {
            let v = self.pool.send_raw(redis::cmd("DBSIZE"), "DBSIZE").await.map_err(Error::into_cmd_error)?;
            wire::decode_dbsize(v).map_err(Error::into_cmd_error)
        })
    }

    fn info(&self) -> Vec<(String, String)> {
        let c = self.pool.config();
        vec![("remote_url".into(), redact(c.url())), ("remote_pool_size".into(), c.get_pool_size().to_string())]
    }
}
