//! The state every connection shares. A leaf below the listener
//! (`server`), the connections (`conn`, `http`) and the server commands
//! (`cmd`): they all read it, and it knows none of them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_core::Backend;

use crate::acl::Acl;
use crate::buffers::ClientBuffers;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::observe::Observe;

/// What every connection task shares: the configuration, the backend,
/// the counters INFO reports and the metric handles.
pub(crate) struct ServerState {
    config: ServerConfig,
    backend: Arc<dyn Backend>,
    /// The users, built from `config.users` and `config.password`.
    acl: Acl,
    counters: InfoCounters,
    /// Registered here, so at `Server::run` (see `metrics` for why).
    metrics: Metrics,
    observe: Observe,
    started: Instant,
    port: u16,
    next_client_id: AtomicU64,
    buffers: Arc<ClientBuffers>,
}

impl ServerState {
    /// The state of a server on `port` that runs commands on `backend`,
    /// with the users `acl` (built from `config` at bind).
    pub(crate) fn new(
        config: ServerConfig,
        acl: Acl,
        backend: Arc<dyn Backend>,
        port: u16,
        observe: Observe,
    ) -> ServerState {
        ServerState {
            buffers: Arc::new(ClientBuffers::new(config.client_buffers_bytes_max)),
            config,
            backend,
            acl,
            counters: InfoCounters::default(),
            metrics: Metrics::register(),
            observe,
            started: Instant::now(),
            port,
            next_client_id: AtomicU64::new(1),
        }
    }

    /// The validated configuration.
    pub(crate) fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Every user, for `ACL LIST` (the `default` user included).
    pub(crate) fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The users whose rules are enforced: `Some` only when ACL users are
    /// configured, so that without them nothing changes.
    pub(crate) fn acl_enforced(&self) -> Option<&Acl> {
        (!self.config.users.is_empty()).then_some(&self.acl)
    }

    /// Where commands run.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The counters INFO reports.
    pub(crate) fn counters(&self) -> &InfoCounters {
        &self.counters
    }

    /// The metric handles.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The figures `/metrics` and INFO show.
    pub(crate) fn observe(&self) -> &Observe {
        &self.observe
    }

    /// How long the server has run.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The RESP port actually bound.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The buffers of all clients, against `client_buffers_bytes_max`.
    pub(crate) fn buffers(&self) -> &Arc<ClientBuffers> {
        &self.buffers
    }

    /// A fresh connection id; ids are never reused within a process.
    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Relaxed)
    }
}

/// A counter INFO reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InfoCounter {
    /// Open connections (RESP), up and down.
    ConnectedClients,
    ConnectionsReceived,
    ConnectionsRejected,
    CommandsProcessed,
    ErrorReplies,
    ProtocolErrors,
    SlowClientsDisconnected,
}

/// How many [`InfoCounter`]s there are.
const INFO_COUNTERS: usize = 7;

/// The counters INFO reports, one atomic each.
#[derive(Default)]
pub(crate) struct InfoCounters {
    values: [AtomicU64; INFO_COUNTERS],
}

impl InfoCounters {
    /// Adds `n` to `counter`.
    pub(crate) fn add(&self, counter: InfoCounter, n: u64) {
        self.values[counter as usize].fetch_add(n, Relaxed);
    }

    /// Takes one off `counter` (only [`InfoCounter::ConnectedClients`] goes down).
    pub(crate) fn take_one(&self, counter: InfoCounter) {
        assert_eq!(counter, InfoCounter::ConnectedClients, "only the open connections go down");
        let before = self.values[counter as usize].fetch_sub(1, Relaxed);
        assert!(before > 0, "a connection closes only once it was counted open");
    }

    /// The current value of `counter`.
    pub(crate) fn get(&self, counter: InfoCounter) -> u64 {
        self.values[counter as usize].load(Relaxed)
    }
}
