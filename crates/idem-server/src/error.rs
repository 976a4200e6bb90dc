//! Why the server could not start.

use std::net::SocketAddr;

/// An error from [`Server::bind`](crate::Server::bind).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound (in use, no permission, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A configuration value is out of its range.
    #[error("invalid server configuration: {0}")]
    Config(String),
}
