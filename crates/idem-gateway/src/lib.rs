//! # idem-gateway
//!
//! Makes an unchanged HTTP app idempotent: the first request with a key runs,
//! every duplicate gets the first response with `Idempotent-Replayed: true`,
//! following the IETF "Idempotency-Key HTTP Header Field" draft and Stripe's
//! replay behaviour, over any idem [`idem_core::Backend`].
//!
//! - [`IdempotencyLayer`]: a tower layer, usable in any axum or hyper app;
//! - [`Proxy`]: a reverse proxy service to one upstream;
//! - [`serve_on_loops`] and [`serve`]: the listener (HTTP/1.1 and HTTP/2,
//!   bounded, plain and/or TLS: [`tls`]), on single-threaded event loops or
//!   on the caller's runtime;
//! - the gateway (`idem gateway`) is the layer around the proxy.
//!
//! docs/gateway.md describes the behaviour, the settings and the failure policy.
#![warn(missing_docs)]

pub mod canonical;
pub mod config;
pub mod extract;
pub mod key_header;
pub mod layer;
mod metrics;
pub mod problem;
pub mod proxy;
pub mod route;
pub mod server;
pub mod stored;
pub mod tls;

pub use config::{ConfigError, LayerConfig};
pub use layer::{Idempotency, IdempotencyLayer, UpstreamFailure, REPLAYED};
pub use metrics::{install_exporter, serve_metrics};
pub use problem::Problem;
pub use proxy::{ClientAddr, Proxy, ProxyConfig, ProxyError};
pub use route::{Route, RouteDefaults, RouteError, RouteTable};
pub use server::{default_event_loops, serve, serve_on_loops, ServerConfig, EVENT_LOOPS_MAX};
pub use tls::Listeners;
