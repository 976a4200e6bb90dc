//! An idem server in the current process, for doc examples and for tests of
//! code that uses this client (feature `test-server`).

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A RESP server on a free loopback port over the embedded in-memory store.
/// Stopped on [`TestServer::stop`] or when dropped.
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0`. Panics if it cannot: this is test
    /// support, and a test without its server cannot run.
    pub async fn start() -> TestServer {
        Self::start_at("127.0.0.1:0".parse().expect("a loopback address")).await
    }

    /// Starts a server on `addr` (a fresh store): to bring a server back on
    /// the address of one that was stopped.
    pub async fn start_at(addr: SocketAddr) -> TestServer {
        let store = idem_store::Store::open(idem_store::StoreConfig::default()).expect("open an in-memory store");
        let config = idem_server::ServerConfig {
            bind: addr,
            // Connections run on the caller's runtime: a doc example's
            // current-thread runtime is enough, and no loop threads linger.
            event_loops: 0,
            shutdown_grace_ms: 1000,
            ..idem_server::ServerConfig::default()
        };
        let server = idem_server::Server::bind(config).await.expect("bind an idem server on a free port");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(store, async move {
            let _ = rx.await;
        }));
        TestServer { addr, stop: Some(tx), task: Some(task) }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops the server and waits until it has closed its connections.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
