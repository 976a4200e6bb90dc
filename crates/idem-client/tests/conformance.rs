//! The conformance suite through [`RemoteBackend`]: every case runs against
//! an idem server (embedded store) reached over RESP, so each command's
//! encoding and each reply's strict decoding are checked against the
//! contract, WAIT wake-ups and pipelines included.

use std::sync::Arc;

use idem_client::testing::TestServer;
use idem_client::{Config, RemoteBackend};
use idem_conformance::Backend;

/// A backend that keeps its server alive for as long as the backend lives.
struct Served {
    remote: RemoteBackend,
    _server: TestServer,
}

impl Backend for Served {
    fn name(&self) -> &'static str {
        self.remote.name()
    }
    fn execute_batch(&self, cmds: Vec<idem_core::Command>) -> idem_core::BoxFuture<'_, Vec<idem_core::CmdResult>> {
        self.remote.execute_batch(cmds)
    }
    fn dbsize(&self) -> idem_core::BoxFuture<'_, Result<u64, idem_core::CmdError>> {
        self.remote.dbsize()
    }
}

/// A fresh server per test: each test has its own runtime.
async fn backend() -> Arc<dyn Backend> {
    let server = TestServer::start().await;
    let remote = RemoteBackend::new(Config::new(server.url()).pool_size(64)).expect("a valid config");
    Arc::new(Served { remote, _server: server })
}

idem_conformance::conformance_tests!(backend());
