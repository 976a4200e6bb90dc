//! `idem`: make operations happen exactly once under concurrency, replays and crashes.
//!
//! Subcommands: `serve` (the server, on the embedded durable store by default),
//! `check` (verify a data directory offline), `migrate` (create or upgrade the
//! schema of an external SQL store), `gateway` (the Idempotency-Key reverse
//! proxy). The scenarios S1–S5 are their own binary, `idem-scenario` (crate
//! `idem-scenarios`), so that the server links none of their engines' clients.

mod gateway;
mod observe;
mod settings;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use idem_core::Backend;

use crate::settings::{Overrides, Settings, TlsFlags};

/// jemalloc, the allocator Redis ships with, instead of the system's: a done
/// record is two small allocations, and glibc's 16-byte chunk headers and
/// size classes cost more memory per record than jemalloc's (the figures,
/// from `idem-bench --bin memory`, are in docs/benchmarks.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "idem",
    version,
    about = "Make operations happen exactly once under concurrency, replays and crashes."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve RESP (and HTTP/JSON) on the embedded durable store, or on an external one with --store.
    Serve(ServeArgs),
    /// Verify a data directory offline: headers, checksums, record sequence.
    Check {
        /// The data directory to verify.
        #[arg(long, default_value = "./idem-data")]
        data: PathBuf,
    },
    /// Create or upgrade idem's schema in an external store (postgres://, mysql://).
    Migrate {
        /// The store URL.
        #[arg(long)]
        store: String,
    },
    /// The Idempotency-Key gateway: a reverse proxy that makes an unchanged HTTP app idempotent.
    Gateway(gateway::GatewayArgs),
    /// ACL helpers: `idem acl hash-password` reads a password on stdin and prints its SHA-256 for `password_hash`.
    Acl {
        #[command(subcommand)]
        command: AclCmd,
    },
    /// Show what a running server holds under KEY (idempotency record with fence, lease left, attempt and waiters; lock; claim; counter; value; state).
    Inspect {
        /// The key (also a lock name, claim key, ...).
        key: String,
        /// The server's HTTP address.
        #[arg(long, default_value = "127.0.0.1:7380")]
        http: String,
        /// The server's password (also IDEM_PASSWORD).
        #[arg(long, env = "IDEM_PASSWORD")]
        password: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AclCmd {
    /// Read a password from stdin (one line) and print its SHA-256 in hex, for a [[user]]'s `password_hash`.
    HashPassword,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML config file (also IDEM_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1]. Anything beyond loopback must be asked for here.
    #[arg(long)]
    bind: Option<String>,
    /// RESP port [default: 7379].
    #[arg(long)]
    port: Option<u16>,
    /// HTTP/JSON port; 0 disables HTTP [default: 7380].
    #[arg(long)]
    http_port: Option<u16>,
    /// Data directory of the embedded store [default: ./idem-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// External store instead of the embedded one: postgres://…, mysql://…, redis://…, redis-cluster://h:p,h:p,…
    #[arg(long)]
    store: Option<String>,
    /// `always` (default; nothing is acknowledged before its fdatasync) or `every-second` (opt-in: a crash may lose about the last second).
    #[arg(long)]
    fsync: Option<String>,
    /// Shards of the embedded store [default: 4 × cores].
    #[arg(long)]
    shards: Option<usize>,
    /// Require AUTH with this password.
    #[arg(long)]
    password: Option<String>,
    /// Most concurrent connections [default: 10000].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Close connections idle this many milliseconds; 0 = never [default: 0].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Log filter, e.g. `info` or `idem_store=debug` [default: info].
    #[arg(long)]
    log: Option<String>,
    #[command(flatten)]
    tls: TlsFlags,
    /// RESP over TLS port; 0 = none [default: 0].
    #[arg(long)]
    tls_port: Option<u16>,
    /// HTTP over TLS port; 0 = none [default: 0].
    #[arg(long)]
    https_port: Option<u16>,
    /// Serve TLS only (no plain RESP or HTTP port).
    #[arg(long)]
    tls_only: bool,
    /// Serve beyond loopback without a password or ACL users (turns protected mode off).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum, default_value = "text")]
    log_format: observe::LogFormat,
    /// Skip the per-command figures (outcomes, duplicates, latency) of /metrics and INFO.
    #[arg(long)]
    no_metrics: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    #[cfg(feature = "seeded-bugs")]
    if let Some(bug) = idem_core::seeded::chosen().map_err(anyhow::Error::msg)? {
        eprintln!("idem: SEEDED BUG {} is active: this build is broken on purpose (docs/reliability.md)", bug.name());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Cmd::Serve(args) => {
            let overrides = Overrides {
                bind: args.bind,
                port: args.port,
                http_port: args.http_port,
                data: args.data,
                store: args.store,
                fsync: args.fsync,
                shards: args.shards,
                password: args.password,
                max_connections: args.max_connections,
                idle_timeout_ms: args.idle_timeout_ms,
                log: args.log,
                tls: args.tls,
                tls_port: args.tls_port,
                https_port: args.https_port,
                tls_only: args.tls_only.then_some(true),
                insecure_no_auth: args.insecure_no_auth.then_some(true),
            };
            let settings = settings::load(args.config.as_ref(), &overrides)?;
            observe::init_tracing(&settings.log, args.log_format);
            observe::install_recorder();
            runtime.block_on(serve(settings, !args.no_metrics))
        }
        Cmd::Check { data } => {
            init_tracing("info");
            let report = idem_store::wal::check(&data).with_context(|| format!("checking {}", data.display()))?;
            print_check(&data, &report);
            Ok(())
        }
        Cmd::Migrate { store } => {
            init_tracing("info");
            match runtime.block_on(idem_backends::migrate(&store)).with_context(|| "migration failed")? {
                idem_backends::Migrated::Schema => println!("schema is up to date in {}", redact(&store)),
                idem_backends::Migrated::NoSchema => {
                    println!("nothing to migrate: Redis keeps no schema ({} answered)", redact(&store))
                }
            }
            Ok(())
        }
        Cmd::Gateway(args) => {
            let settings = gateway::load(args)?;
            init_tracing(&settings.log);
            runtime.block_on(gateway::run(settings))
        }
        Cmd::Acl { command: AclCmd::HashPassword } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
            let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
            anyhow::ensure!(
                !password.is_empty(),
                "empty password: type it on stdin, e.g. `idem acl hash-password < file`"
            );
            println!("{}", idem_server::acl::hash_password(password.as_bytes()));
            Ok(())
        }
        Cmd::Inspect { key, http, password } => {
            println!("{}", observe::inspect(&http, &key, password.as_deref())?);
            Ok(())
        }
    }
}

fn print_check(data: &std::path::Path, r: &idem_store::wal::CheckReport) {
    println!("data directory {}: OK", data.display());
    match &r.snapshot {
        Some(p) => println!(
            "  snapshot       {} ({} records, covers LSN < {})",
            p.display(),
            r.snapshot_entries,
            r.snapshot_lsn
        ),
        None => println!("  snapshot       none"),
    }
    println!(
        "  log            {} segments, {} records, {} changes, {} bytes",
        r.segments, r.records, r.changes, r.log_bytes
    );
    println!("  fence records  {}", r.fence_records);
    println!("  resumes at     clock {} ms, fences above {}, next LSN {}", r.clock_ms, r.fence_high, r.next_lsn);
    if let Some((file, offset, bytes)) = &r.torn_tail {
        println!(
            "  torn tail      {} at offset {offset}: {bytes} bytes never acknowledged, cut on next start",
            file.display()
        );
    }
    for f in &r.leftovers {
        println!("  leftover       {} (removed on next start)", f.display());
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Hides a password in a URL before it is printed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn serve(s: Settings, metrics: bool) -> anyhow::Result<()> {
    let ip: IpAddr = s.bind.parse().with_context(|| format!("--bind {} is not an IP address", s.bind))?;
    s.check_protected(ip)?;
    let users: Vec<idem_server::acl::UserConfig> = s
        .user
        .iter()
        .map(|u| idem_server::acl::UserConfig {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            rules: u.rules.clone(),
        })
        .collect();
    // Checked before the store opens, so a typo in a rule costs no recovery.
    idem_server::acl::Acl::build(&users, s.password.as_deref())
        .map_err(|e| anyhow::anyhow!("invalid [[user]]: {e}"))?;
    if !ip.is_loopback() {
        let open = !s.authenticates();
        tracing::warn!(bind = %ip, "listening beyond loopback, as asked{}", if open { " (no authentication: --insecure-no-auth)" } else { "" });
    }
    let limits = idem_core::Limits {
        key_bytes_max: s.key_bytes_max,
        value_bytes_max: s.value_bytes_max,
        ..idem_core::Limits::default()
    };
    let backend: Arc<dyn Backend> = match &s.store {
        Some(url) => {
            tracing::info!(store = %redact(url), "connecting to external store");
            idem_backends::connect(url).await.with_context(|| format!("opening store {}", redact(url)))?
        }
        None => {
            let mut cfg = idem_store::StoreConfig {
                data_dir: Some(s.data.clone()),
                fsync: match s.fsync.as_str() {
                    "every-second" => idem_store::FsyncMode::EverySecond,
                    _ => idem_store::FsyncMode::Always,
                },
                limits: limits.clone(),
                snapshot_after_bytes: s.snapshot_after_bytes,
                prealloc_after_bytes: Some(s.prealloc_after_bytes),
                maxmemory_bytes: s.maxmemory_bytes,
                ..Default::default()
            };
            if s.shards > 0 {
                cfg.shards = s.shards;
            }
            if cfg.fsync == idem_store::FsyncMode::EverySecond {
                tracing::warn!("fsync = every-second: a crash may lose about the last second of acknowledged writes");
            }
            let started = std::time::Instant::now();
            let store =
                idem_store::Store::open(cfg).with_context(|| format!("opening data directory {}", s.data.display()))?;
            tracing::info!(data = %s.data.display(), elapsed_ms = started.elapsed().as_millis() as u64, "embedded store ready");
            store
        }
    };
    let config = idem_server::ServerConfig {
        bind: SocketAddr::new(ip, s.port),
        http_bind: (s.http_port != 0).then(|| SocketAddr::new(ip, s.http_port)),
        max_connections: s.max_connections,
        bulk_bytes_max: s.bulk_bytes_max,
        args_max: s.args_max,
        query_buffer_bytes_max: s.query_buffer_bytes_max,
        query_buffer_bytes_max_unauth: s.query_buffer_bytes_max_unauth,
        output_buffer_bytes_max: s.output_buffer_bytes_max,
        write_timeout_ms: s.write_timeout_ms,
        idle_timeout_ms: s.idle_timeout_ms,
        client_buffers_bytes_max: s.client_buffers_bytes_max,
        http_body_bytes_max: s.http_body_bytes_max,
        http_header_read_timeout_ms: s.http_header_read_timeout_ms,
        http_body_read_timeout_ms: s.http_body_read_timeout_ms,
        password: s.password.clone(),
        event_loops: s.event_loops,
        limits,
        users,
        tls: match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(idem_server::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                ca: s.tls_ca.clone(),
                client_auth: s.tls_client_auth()?,
            }),
            _ => None,
        },
        tls_bind: (s.tls_port != 0).then(|| SocketAddr::new(ip, s.tls_port)),
        https_bind: (s.https_port != 0).then(|| SocketAddr::new(ip, s.https_port)),
        tls_only: s.tls_only,
        tls_handshake_timeout_ms: s.tls_handshake_timeout_ms,
        ..Default::default()
    };
    let server =
        idem_server::Server::bind(config).await.context("starting the server (listeners, TLS)")?.metrics(metrics);
    tracing::info!(addr = %server.local_addr(), "idem is serving RESP");
    if let Some(addr) = server.tls_local_addr() {
        tracing::info!(%addr, "idem is serving RESP over TLS (certificates reload on SIGHUP)");
    }
    if let Some(addr) = server.https_local_addr() {
        tracing::info!(%addr, "idem is serving HTTPS");
    }
    server.run(backend, idem_server::shutdown_signal()).await;
    tracing::info!("shut down cleanly");
    Ok(())
}
