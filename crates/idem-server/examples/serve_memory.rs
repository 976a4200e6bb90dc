//! Serves idem over RESP (and HTTP) with an in-memory embedded store, for
//! poking at the server with `redis-cli`, `telnet` or `redis-benchmark`:
//!
//! ```text
//! cargo run -p idem-server --example serve_memory -- 127.0.0.1:7379 127.0.0.1:7380
//! ```

use std::sync::Arc;

use idem_server::{Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| ServerConfig::BIND_DEFAULT.to_string()).parse()?;
    let http_bind = args.next().map(|a| a.parse()).transpose()?;
    let store = idem_store::Store::open(idem_store::StoreConfig::default())?;
    let backend: Arc<dyn idem_core::Backend> = store;
    let server = Server::bind(ServerConfig { bind, http_bind, ..ServerConfig::default() }).await?;
    eprintln!("RESP on {}, HTTP on {:?}", server.local_addr(), server.http_local_addr());
    server.run(backend, idem_server::shutdown_signal()).await;
    Ok(())
}
