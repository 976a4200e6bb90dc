//! `idem gateway`: the Idempotency-Key gateway, a reverse proxy in front of
//! an unchanged HTTP app. Settings are layered as for `serve`: defaults, a
//! TOML file (a `[[route]]` table per route), `IDEM_*` variables, then
//! flags. docs/gateway.md is the reference.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use http::HeaderName;
use idem_core::Backend;
use idem_gateway::route::{Concurrent, On5xx, OnTimeout, RouteDefaults, RouteTable};
use idem_gateway::tls::{TlsClientAuth, TlsConfig, TlsSource};
use idem_gateway::{IdempotencyLayer, LayerConfig, Listeners, Proxy, ProxyConfig, Route, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower::Layer;

use crate::settings::TlsFlags;

/// Default address the gateway listens on.
const LISTEN_DEFAULT: &str = "127.0.0.1:8080";
/// Default connections to a remote idem server (`--idem`); a duplicate
/// waiting for its first request holds one.
const IDEM_POOL_SIZE_DEFAULT: usize = 256;

/// Every setting of `idem gateway`; field names are the config-file keys
/// and, upper-cased with an `IDEM_` prefix, the environment variables.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Address to listen on (plain HTTP; not listened on with `tls_only`).
    pub listen: String,
    /// Address serving HTTPS (needs `tls_cert` and `tls_key`); unset: none.
    pub tls_listen: Option<String>,
    /// PEM certificate chain for TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates.
    pub tls_ca: Option<PathBuf>,
    /// `none` (default), `optional` or `required`: client certificates, checked against `tls_ca`.
    pub tls_client_auth: String,
    /// Serve HTTPS only: `listen` is not listened on (needs `tls_listen`).
    pub tls_only: bool,
    /// Time a client has to finish its TLS handshake, ms.
    pub tls_handshake_timeout_ms: u64,
    /// The app behind the gateway, `http://host:port[/prefix]`.
    pub upstream: String,
    /// Data directory of the embedded store.
    pub data: PathBuf,
    /// An external store URL instead (postgres://, mysql://, redis://, redis-cluster://).
    pub store: Option<String>,
    /// A running idem server instead (redis://host:port), shared by several gateways.
    pub idem: Option<String>,
    /// Connections to that idem server.
    pub idem_pool_size: usize,
    /// `always` (default) or `every-second`, for the embedded store.
    pub fsync: String,
    /// Idempotent routes; none = IETF mode.
    pub route: Vec<RouteTable>,
    /// Prefix of every stored key.
    pub key_prefix: String,
    /// Default client scope source (e.g. `header:Authorization`).
    pub scope: Option<String>,
    /// Default handling of concurrent duplicates: `wait` or `conflict`.
    pub concurrent: String,
    /// Default wait for a concurrent duplicate, ms.
    pub wait_ms: u64,
    /// Default retention of a stored response, ms.
    pub keep_ms: u64,
    /// Default 5xx policy: `abort` or `store`.
    pub on_5xx: String,
    /// Default unknown-outcome policy: `keep` or `abort`.
    pub on_timeout: String,
    /// Lease of a first request, ms; renewed at a third of itself while the upstream call runs.
    pub lease_ms: u64,
    /// Response headers stored and replayed (never Set-Cookie or Date).
    pub replay_headers: Vec<String>,
    /// Statuses never stored.
    pub release_statuses: Vec<u16>,
    /// Longest key part, bytes.
    pub key_bytes_max: usize,
    /// Largest idempotent request body, bytes.
    pub request_bytes_max: usize,
    /// Time a client has to send an idempotent request's body, ms.
    pub body_read_timeout_ms: u64,
    /// Largest stored response body, bytes.
    pub stored_body_bytes_max: usize,
    /// Time to read the first response's body for storing, ms.
    pub response_read_timeout_ms: u64,
    /// Bound on the upstream's response head, ms.
    pub upstream_timeout_ms: u64,
    /// Idle keep-alive connections kept to the upstream.
    pub upstream_idle_connections_max: usize,
    /// Time an idle upstream connection is kept, ms.
    pub upstream_idle_timeout_ms: u64,
    /// Single-threaded event loops serving the connections (each with its own upstream connections).
    pub event_loops: usize,
    /// Most open client connections.
    pub max_connections: usize,
    /// Largest request head, bytes.
    pub header_bytes_max: usize,
    /// Time a client has to send its request head, ms.
    pub header_read_timeout_ms: u64,
    /// Time in-flight requests get on shutdown, ms.
    pub shutdown_grace_ms: u64,
    /// Address serving `GET /metrics` (Prometheus text); unset: no metrics endpoint.
    pub metrics_listen: Option<String>,
    /// Log filter.
    pub log: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        let layer = LayerConfig::default();
        let proxy = ProxyConfig::new("");
        let server = ServerConfig::default();
        let d = RouteDefaults::default();
        GatewaySettings {
            listen: LISTEN_DEFAULT.into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_auth: "none".into(),
            tls_only: false,
            tls_handshake_timeout_ms: server.tls_handshake_timeout_ms,
            upstream: String::new(),
            data: PathBuf::from("./idem-gateway-data"),
            store: None,
            idem: None,
            idem_pool_size: IDEM_POOL_SIZE_DEFAULT,
            fsync: "always".into(),
            route: Vec::new(),
            key_prefix: layer.key_prefix,
            scope: None,
            concurrent: "wait".into(),
            wait_ms: d.wait_ms,
            keep_ms: d.keep_ms,
            on_5xx: "abort".into(),
            on_timeout: "keep".into(),
            lease_ms: layer.lease_ms,
            replay_headers: layer.replay_headers.iter().map(|h| h.as_str().to_string()).collect(),
            release_statuses: layer.release_statuses,
            key_bytes_max: layer.key_bytes_max,
            request_bytes_max: layer.request_bytes_max,
            body_read_timeout_ms: layer.body_read_timeout_ms,
            stored_body_bytes_max: layer.stored_body_bytes_max,
            response_read_timeout_ms: layer.response_read_timeout_ms,
            upstream_timeout_ms: proxy.upstream_timeout_ms,
            upstream_idle_connections_max: proxy.idle_connections_max,
            upstream_idle_timeout_ms: proxy.idle_timeout_ms,
            event_loops: idem_gateway::default_event_loops(),
            max_connections: server.max_connections,
            header_bytes_max: server.header_bytes_max,
            header_read_timeout_ms: server.header_read_timeout_ms,
            shutdown_grace_ms: server.shutdown_grace_ms,
            metrics_listen: None,
            log: "info".into(),
        }
    }
}

/// The flags of `idem gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// TOML config file (also IDEM_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Address serving HTTPS [default: none].
    #[arg(long)]
    tls_listen: Option<String>,
    #[command(flatten)]
    tls: TlsFlags,
    /// Serve HTTPS only (`--listen` is not listened on).
    #[arg(long)]
    tls_only: bool,
    /// The app behind the gateway: http://host:port[/prefix].
    #[arg(long)]
    upstream: Option<String>,
    /// Data directory of the embedded store [default: ./idem-gateway-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// External store instead: postgres://…, mysql://…, redis://…, redis-cluster://…
    #[arg(long)]
    store: Option<String>,
    /// A running idem server instead (redis://host:port), so several gateways share records.
    #[arg(long)]
    idem: Option<String>,
    /// An idempotent route, 'METHOD PATH key=SOURCE [option=value]...' (repeatable; replaces the file's routes).
    #[arg(long = "route")]
    routes: Vec<String>,
    /// Prefix of every stored key [default: gw:].
    #[arg(long)]
    key_prefix: Option<String>,
    /// Serve GET /metrics (Prometheus text) on this address [default: off].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Log filter [default: info].
    #[arg(long)]
    log: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_listen: Option<String>,
    #[serde(flatten)]
    tls: TlsFlags,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<Vec<RouteTable>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
}

/// Loads settings: defaults < config file < `IDEM_*` environment < flags.
pub fn load(args: GatewayArgs) -> anyhow::Result<GatewaySettings> {
    let routes = args
        .routes
        .iter()
        .map(|r| r.parse::<RouteTable>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--route: {e}"))?;
    let overrides = Overrides {
        listen: args.listen,
        tls_listen: args.tls_listen,
        tls: args.tls,
        tls_only: args.tls_only.then_some(true),
        upstream: args.upstream,
        data: args.data,
        store: args.store,
        idem: args.idem,
        route: (!routes.is_empty()).then_some(routes),
        key_prefix: args.key_prefix,
        metrics_listen: args.metrics_listen,
        log: args.log,
    };
    let mut fig = Figment::from(Serialized::defaults(GatewaySettings::default()));
    let config = args.config.or_else(|| std::env::var_os("IDEM_CONFIG").map(PathBuf::from));
    if let Some(path) = config {
        if !path.exists() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        fig = fig.merge(Toml::file(path));
    }
    // As for `serve`, only variables that name a setting are read: the
    // environment is shared with `idem serve` and other tools. Routes come
    // from the file or flags only.
    let known: Vec<String> = Figment::from(Serialized::defaults(GatewaySettings::default()))
        .extract::<figment::value::Dict>()?
        .into_keys()
        .filter(|k| k != "route")
        .collect();
    let env = Env::prefixed("IDEM_").filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n)));
    fig = fig.merge(env).merge(Serialized::defaults(overrides));
    let s: GatewaySettings = fig.extract().map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
    s.layer_config()?;
    s.validate()?;
    Ok(s)
}

impl GatewaySettings {
    fn validate(&self) -> anyhow::Result<()> {
        if self.upstream.is_empty() {
            anyhow::bail!("--upstream is required (the app behind the gateway, http://host:port)");
        }
        if self.store.is_some() && self.idem.is_some() {
            anyhow::bail!("--store and --idem are exclusive: the records live in one place");
        }
        if !matches!(self.fsync.as_str(), "always" | "every-second") {
            anyhow::bail!("fsync must be 'always' or 'every-second', got '{}'", self.fsync);
        }
        if self.event_loops > idem_gateway::EVENT_LOOPS_MAX {
            anyhow::bail!("event_loops must be at most {}", idem_gateway::EVENT_LOOPS_MAX);
        }
        for (name, v) in [
            ("event_loops", self.event_loops),
            ("max_connections", self.max_connections),
            ("upstream_idle_connections_max", self.upstream_idle_connections_max.max(1)),
            ("idem_pool_size", self.idem_pool_size),
        ] {
            if v == 0 {
                anyhow::bail!("{name} must be at least 1");
            }
        }
        if self.header_bytes_max < 1024
            || self.upstream_timeout_ms == 0
            || self.header_read_timeout_ms == 0
            || self.tls_handshake_timeout_ms == 0
        {
            anyhow::bail!(
                "header_bytes_max must be at least 1024, and upstream_timeout_ms, header_read_timeout_ms and \
                 tls_handshake_timeout_ms at least 1"
            );
        }
        self.tls_files()?;
        Proxy::new(&self.proxy_config()).context("--upstream")?;
        Ok(())
    }

    fn layer_config(&self) -> anyhow::Result<LayerConfig> {
        let defaults = RouteDefaults {
            wait_ms: self.wait_ms,
            keep_ms: self.keep_ms,
            concurrent: match self.concurrent.as_str() {
                "wait" => Concurrent::Wait,
                "conflict" => Concurrent::Conflict,
                o => anyhow::bail!("concurrent must be wait or conflict, got '{o}'"),
            },
            scope: self
                .scope
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| anyhow::anyhow!("scope: {e}"))?,
            on_5xx: match self.on_5xx.as_str() {
                "abort" => On5xx::Abort,
                "store" => On5xx::Store,
                o => anyhow::bail!("on_5xx must be abort or store, got '{o}'"),
            },
            on_timeout: match self.on_timeout.as_str() {
                "keep" => OnTimeout::Keep,
                "abort" => OnTimeout::Abort,
                o => anyhow::bail!("on_timeout must be keep or abort, got '{o}'"),
            },
        };
        // The gateway-wide defaults obey the route bounds too.
        Route::new(
            &RouteTable { method: "POST".into(), path: "/".into(), key: "query:k".into(), ..Default::default() },
            &defaults,
        )
        .map_err(|e| anyhow::anyhow!("wait_ms/keep_ms out of bounds: {e}"))?;
        let routes = self.route.iter().map(|t| Route::new(t, &defaults)).collect::<Result<Vec<_>, _>>()?;
        let replay_headers = self
            .replay_headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| anyhow::anyhow!("replay_headers: '{h}' is not a header name"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cfg = LayerConfig {
            routes,
            defaults,
            key_prefix: self.key_prefix.clone(),
            lease_ms: self.lease_ms,
            key_bytes_max: self.key_bytes_max,
            request_bytes_max: self.request_bytes_max,
            body_read_timeout_ms: self.body_read_timeout_ms,
            stored_body_bytes_max: self.stored_body_bytes_max,
            response_read_timeout_ms: self.response_read_timeout_ms,
            replay_headers,
            release_statuses: self.release_statuses.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The TLS files, when HTTPS is served; refuses settings that cannot work.
    fn tls_files(&self) -> anyhow::Result<Option<TlsConfig>> {
        let client_auth = crate::settings::parse_tls_client_auth(&self.tls_client_auth)?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("tls_cert and tls_key go together: set both or neither");
        }
        if self.tls_listen.is_some() && self.tls_cert.is_none() {
            anyhow::bail!("tls_listen needs tls_cert and tls_key");
        }
        if self.tls_cert.is_some() && self.tls_listen.is_none() {
            anyhow::bail!("tls_cert is set but tls_listen is not: set the address to serve HTTPS on");
        }
        if self.tls_only && self.tls_listen.is_none() {
            anyhow::bail!("tls_only needs tls_listen: the gateway must listen somewhere");
        }
        if self.tls_ca.is_some() && client_auth == TlsClientAuth::None {
            anyhow::bail!(
                "tls_ca is set but tls_client_auth is 'none': set it to 'required' or 'optional', or drop tls_ca"
            );
        }
        if self.tls_ca.is_none() && client_auth != TlsClientAuth::None {
            anyhow::bail!(
                "tls_client_auth '{}' needs tls_ca (the CA that signs client certificates)",
                self.tls_client_auth
            );
        }
        Ok(match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(TlsConfig { cert: cert.clone(), key: key.clone(), ca: self.tls_ca.clone(), client_auth })
            }
            _ => None,
        })
    }

    fn proxy_config(&self) -> ProxyConfig {
        ProxyConfig {
            upstream: self.upstream.clone(),
            upstream_timeout_ms: self.upstream_timeout_ms,
            idle_connections_max: self.upstream_idle_connections_max,
            idle_timeout_ms: self.upstream_idle_timeout_ms,
        }
    }
}

/// Opens the record store, builds the layer around the proxy and serves until a signal.
pub async fn run(s: GatewaySettings) -> anyhow::Result<()> {
    let backend: Arc<dyn Backend> = match (&s.store, &s.idem) {
        (Some(url), _) => {
            tracing::info!(store = %crate::redact(url), "records in an external store");
            idem_backends::connect(url).await.with_context(|| format!("opening store {}", crate::redact(url)))?
        }
        (None, Some(url)) => {
            tracing::info!(idem = %crate::redact(url), "records in a running idem server");
            let cfg = idem_client::Config::new(url.clone()).pool_size(s.idem_pool_size);
            let remote =
                idem_client::RemoteBackend::new(cfg).with_context(|| format!("--idem {}", crate::redact(url)))?;
            // Fail at start, not on the first request, when the server is not there.
            remote.dbsize().await.map_err(|e| anyhow::anyhow!("--idem {}: {e}", crate::redact(url)))?;
            Arc::new(remote)
        }
        (None, None) => {
            let cfg = idem_store::StoreConfig {
                data_dir: Some(s.data.clone()),
                fsync: match s.fsync.as_str() {
                    "every-second" => idem_store::FsyncMode::EverySecond,
                    _ => idem_store::FsyncMode::Always,
                },
                ..Default::default()
            };
            idem_store::Store::open(cfg).with_context(|| format!("opening data directory {}", s.data.display()))?
        }
    };
    // The exporter goes in before the layer registers its metric handles.
    let metrics_task = match &s.metrics_listen {
        None => None,
        Some(addr) => {
            if !idem_gateway::install_exporter() {
                anyhow::bail!("--metrics-listen: another metrics recorder is installed");
            }
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "serving GET /metrics");
            Some(tokio::spawn(async move {
                if let Err(e) = idem_gateway::serve_metrics(l).await {
                    tracing::error!(error = %e, "the metrics endpoint stopped");
                }
            }))
        }
    };
    let layer = IdempotencyLayer::new(backend.clone(), s.layer_config()?)?;
    let proxy_config = s.proxy_config();
    Proxy::new(&proxy_config)?;
    let listeners = bind(&s, backend.name()).await?;
    // Installed before serving: a SIGHUP then reloads, never ends the process.
    let reloader = listeners.1.clone().and_then(idem_gateway::tls::reload_on_sighup);
    let listeners = listeners.0;
    let server = ServerConfig {
        max_connections: s.max_connections,
        header_bytes_max: s.header_bytes_max,
        header_read_timeout_ms: s.header_read_timeout_ms,
        shutdown_grace_ms: s.shutdown_grace_ms,
        tls_handshake_timeout_ms: s.tls_handshake_timeout_ms,
    };
    // One proxy per loop: its pooled upstream connections stay on that loop's thread.
    let make_service = || layer.layer(Proxy::new(&proxy_config).expect("checked above"));
    idem_gateway::serve_on_loops(
        listeners,
        make_service,
        server,
        s.event_loops,
        backend.loop_hooks(),
        idem_server::shutdown_signal(),
    )
    .await
    .context("starting the event loops")?;
    for t in [metrics_task, reloader].into_iter().flatten() {
        t.abort();
    }
    backend.shutdown().await;
    tracing::info!("gateway shut down cleanly");
    Ok(())
}

/// Binds the plain and TLS listeners the settings ask for, and loads the
/// certificates; the [`TlsSource`] is returned to reload it.
async fn bind(s: &GatewaySettings, backend: &str) -> anyhow::Result<(Listeners, Option<Arc<TlsSource>>)> {
    let tls = match s.tls_files()? {
        None => None,
        Some(files) => Some(Arc::new(idem_gateway::tls::load(&files).map_err(|e| anyhow::anyhow!("TLS: {e}"))?)),
    };
    let mode = if s.route.is_empty() { "IETF mode".to_string() } else { format!("{} routes", s.route.len()) };
    let plain = match s.tls_only {
        true => None,
        false => {
            let l = TcpListener::bind(&s.listen).await.with_context(|| format!("binding {}", s.listen))?;
            tracing::info!(addr = %l.local_addr()?, upstream = %s.upstream, backend, %mode, event_loops = s.event_loops, "idem gateway is serving HTTP");
            Some(l)
        }
    };
    let secure = match (&s.tls_listen, &tls) {
        (Some(addr), Some(tls)) => {
            let l = TcpListener::bind(addr).await.with_context(|| format!("binding tls_listen {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, upstream = %s.upstream, backend, %mode, event_loops = s.event_loops, client_auth = %s.tls_client_auth, "idem gateway is serving HTTPS");
            Some((l, tls.clone()))
        }
        _ => None,
    };
    Ok((Listeners::new(plain, secure), tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(routes: &[&str]) -> GatewayArgs {
        GatewayArgs {
            config: None,
            listen: None,
            tls_listen: None,
            tls: TlsFlags::default(),
            tls_only: false,
            upstream: Some("http://127.0.0.1:9".into()),
            data: None,
            store: None,
            idem: None,
            routes: routes.iter().map(|r| r.to_string()).collect(),
            key_prefix: None,
            metrics_listen: None,
            log: None,
        }
    }

    #[test]
    fn routes_come_from_the_file_and_flags_replace_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            "upstream = \"http://127.0.0.1:7000\"\nwait_ms = 2000\n\n[[route]]\nmethod = \"POST\"\npath = \"/orders/{id}/pay\"\nkey = \"path:id\"\nconcurrent = \"conflict\"\n",
        )
        .unwrap();
        let mut a = args(&[]);
        a.upstream = None;
        a.config = Some(file.clone());
        let s = load(a).unwrap();
        assert_eq!(s.upstream, "http://127.0.0.1:7000");
        assert_eq!(s.wait_ms, 2000);
        assert_eq!(s.route.len(), 1);
        assert_eq!(s.route[0].concurrent.as_deref(), Some("conflict"));
        let mut a = args(&["POST /a key=query:k", "PATCH /b key=json:x.y"]);
        a.config = Some(file);
        let s = load(a).unwrap();
        assert_eq!(s.route.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/a", "/b"]);
        assert_eq!(s.upstream, "http://127.0.0.1:9", "a flag beats the file");
    }

    #[test]
    fn bad_settings_say_why() {
        assert!(load(args(&["POST /a"])).unwrap_err().to_string().contains("key=SOURCE"));
        let mut a = args(&[]);
        a.upstream = None;
        assert!(load(a).unwrap_err().to_string().contains("--upstream"));
        let mut a = args(&[]);
        a.store = Some("postgres://x".into());
        a.idem = Some("redis://x".into());
        assert!(load(a).unwrap_err().to_string().contains("exclusive"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        for (text, why) in [
            ("replay_headers = [\"set-cookie\"]\n", "never stored"),
            ("lease_ms = 10\n", "lease_ms"),
            ("concurrent = \"later\"\n", "wait or conflict"),
            ("no_such = 1\n", "no_such"),
            ("tls_listen = \"127.0.0.1:0\"\n", "tls_listen needs tls_cert"),
            ("tls_cert = \"c.pem\"\n", "tls_cert and tls_key go together"),
            ("tls_only = true\n", "tls_only needs tls_listen"),
            ("tls_client_auth = \"required\"\n", "needs tls_ca"),
            ("tls_ca = \"ca.pem\"\n", "tls_client_auth is 'none'"),
            ("tls_client_auth = \"maybe\"\n", "'none', 'optional' or 'required'"),
        ] {
            std::fs::write(&file, text).unwrap();
            let mut a = args(&[]);
            a.config = Some(file.clone());
            let e = load(a).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
