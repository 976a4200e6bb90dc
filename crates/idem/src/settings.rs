//! Settings of `idem serve`, layered: built-in defaults, then a TOML config
//! file (`--config FILE` or `IDEM_CONFIG`), then `IDEM_*` environment
//! variables, then command-line flags. Every bound has a documented default;
//! the README lists them.

use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Every setting of `idem serve`. Field names are the config-file keys and,
/// upper-cased with an `IDEM_` prefix, the environment variables.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on. Loopback by default: listening beyond it must be asked for.
    pub bind: String,
    /// RESP port.
    pub port: u16,
    /// HTTP/JSON port; 0 serves no HTTP.
    pub http_port: u16,
    /// Data directory of the embedded store.
    pub data: PathBuf,
    /// An external store URL (postgres://, mysql://, redis://, redis-cluster://); unset = embedded.
    pub store: Option<String>,
    /// `always` (default: every reply waits for its fdatasync) or `every-second` (opt-in, may lose ~1 s).
    pub fsync: String,
    /// Shards of the embedded store; 0 = 4 × cores.
    pub shards: usize,
    /// Write a snapshot (and drop the log it covers) after the log grows this many bytes.
    pub snapshot_after_bytes: u64,
    /// Preallocate (zero-fill ahead of use) 64 MiB log segments once the log
    /// has written this many bytes since start; 0 = from the start.
    pub prealloc_after_bytes: u64,
    /// Event loop threads serving RESP connections (default: half the
    /// cores, at least 1; at most 256); 0 serves them on the shared tokio
    /// runtime instead.
    pub event_loops: usize,
    /// Require AUTH with this password.
    pub password: Option<String>,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Largest bulk string in a request, bytes.
    pub bulk_bytes_max: usize,
    /// Most arguments in a request.
    pub args_max: usize,
    /// Most unprocessed request bytes per client, bytes.
    pub query_buffer_bytes_max: usize,
    /// The same before authentication, bytes.
    pub query_buffer_bytes_max_unauth: usize,
    /// Most pending reply bytes per client before it is disconnected.
    pub output_buffer_bytes_max: usize,
    /// A write stalled this long disconnects the client (ms; 0 = never).
    pub write_timeout_ms: u64,
    /// Close connections idle this long (ms; 0 = never).
    pub idle_timeout_ms: u64,
    /// Longest key, owner, scope, ... in bytes (at most 512).
    pub key_bytes_max: usize,
    /// Longest result or value in bytes.
    pub value_bytes_max: usize,
    /// Memory bound of the embedded store's records (estimate: key +
    /// payload + 64 bytes each); at it, commands that would create a
    /// record get OOM. 0 = no bound.
    pub maxmemory_bytes: u64,
    /// Most bytes the buffers of all clients together may hold; over it the
    /// client holding the most is disconnected.
    pub client_buffers_bytes_max: usize,
    /// Largest HTTP request body, bytes (a larger Content-Length gets 413 at once).
    pub http_body_bytes_max: usize,
    /// Time an HTTP client has to send a request head, ms.
    pub http_header_read_timeout_ms: u64,
    /// Time an HTTP client has to send a request body after its head, ms.
    pub http_body_read_timeout_ms: u64,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `idem_store=debug`.
    pub log: String,
    /// PEM certificate chain for TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates (mTLS).
    pub tls_ca: Option<PathBuf>,
    /// `none` (default), `optional` or `required`: client certificates, checked against `tls_ca`.
    pub tls_client_auth: String,
    /// RESP over TLS port; 0 = none.
    pub tls_port: u16,
    /// HTTP over TLS port; 0 = none.
    pub https_port: u16,
    /// Serve TLS only: `port` and `http_port` are not listened on.
    pub tls_only: bool,
    /// A TLS client that has not finished its handshake this long after
    /// connecting is disconnected, ms (at least 1).
    pub tls_handshake_timeout_ms: u64,
    /// ACL users: `[[user]]` tables in the config file.
    pub user: Vec<UserSettings>,
    /// Serve beyond loopback with no password and no ACL users (protected mode off).
    pub insecure_no_auth: bool,
}

/// One `[[user]]` table: `name`, `password_hash` (from `idem acl
/// hash-password`) and `rules` (docs/security.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// The user name.
    pub name: String,
    /// SHA-256 of the password, 64 hex digits.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// ACL rules, e.g. `on ~tenant-a:* +@idem -@admin`.
    #[serde(default)]
    pub rules: String,
}

impl Default for Settings {
    fn default() -> Self {
        let server = idem_server::ServerConfig::default();
        let limits = idem_core::Limits::default();
        Settings {
            bind: "127.0.0.1".into(),
            port: 7379,
            http_port: 7380,
            data: PathBuf::from("./idem-data"),
            store: None,
            fsync: "always".into(),
            shards: 0,
            snapshot_after_bytes: idem_store::StoreConfig::default().snapshot_after_bytes,
            prealloc_after_bytes: idem_store::wal::PREALLOC_AFTER_BYTES,
            event_loops: server.event_loops,
            password: None,
            max_connections: server.max_connections,
            bulk_bytes_max: server.bulk_bytes_max,
            args_max: server.args_max,
            query_buffer_bytes_max: server.query_buffer_bytes_max,
            query_buffer_bytes_max_unauth: server.query_buffer_bytes_max_unauth,
            output_buffer_bytes_max: server.output_buffer_bytes_max,
            write_timeout_ms: server.write_timeout_ms,
            idle_timeout_ms: server.idle_timeout_ms,
            key_bytes_max: limits.key_bytes_max,
            value_bytes_max: limits.value_bytes_max,
            maxmemory_bytes: idem_store::StoreConfig::default().maxmemory_bytes,
            client_buffers_bytes_max: server.client_buffers_bytes_max,
            http_body_bytes_max: server.http_body_bytes_max,
            http_header_read_timeout_ms: server.http_header_read_timeout_ms,
            http_body_read_timeout_ms: server.http_body_read_timeout_ms,
            log: "info".into(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_auth: "none".into(),
            tls_port: 0,
            https_port: 0,
            tls_only: false,
            tls_handshake_timeout_ms: server.tls_handshake_timeout_ms,
            user: Vec::new(),
            insecure_no_auth: false,
        }
    }
}

/// The TLS certificate flags `serve` and `gateway` share. As overrides of
/// the file and the environment, only flags the user gave are serialized.
#[derive(clap::Args, Clone, Debug, Default, Serialize)]
pub struct TlsFlags {
    /// PEM certificate chain for TLS.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates (mTLS).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificates: none, optional or required [default: none].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_auth: Option<String>,
}

/// Command-line overrides: only flags the user gave are set.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(flatten)]
    pub tls: TlsFlags,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_no_auth: Option<bool>,
}

/// Loads settings: defaults < config file < `IDEM_*` environment < flags.
pub fn load(config: Option<&PathBuf>, overrides: &Overrides) -> anyhow::Result<Settings> {
    let mut fig = Figment::from(Serialized::defaults(Settings::default()));
    let config = config.cloned().or_else(|| std::env::var_os("IDEM_CONFIG").map(PathBuf::from));
    if let Some(path) = config {
        if !path.exists() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        fig = fig.merge(Toml::file(path));
    }
    // Only `IDEM_*` variables that name a setting are read: the environment is
    // shared with other tools (and our own tests), so an unrelated
    // `IDEM_SOMETHING` must not stop the server. The config file, which is
    // ours alone, stays strict (`deny_unknown_fields`).
    let known: Vec<String> = Figment::from(Serialized::defaults(Settings::default()))
        .extract::<figment::value::Dict>()?
        .into_keys()
        .collect();
    let known_env = known.clone();
    for (name, _) in std::env::vars() {
        if let Some(rest) = name.strip_prefix("IDEM_") {
            if rest != "CONFIG" && !known.iter().any(|k| k.eq_ignore_ascii_case(rest)) {
                // Logging is not set up yet: its filter is one of the settings.
                eprintln!("idem: ignoring environment variable {name}: it names no setting");
            }
        }
    }
    let env = Env::prefixed("IDEM_").filter(move |k| known_env.iter().any(|n| k.as_str().eq_ignore_ascii_case(n)));
    fig = fig.merge(env).merge(Serialized::defaults(overrides));
    let s: Settings = fig.extract().map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
    s.validate()?;
    Ok(s)
}

impl Settings {
    /// Rejects settings that cannot work, with a message that says which and why.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !matches!(self.fsync.as_str(), "always" | "every-second") {
            anyhow::bail!("fsync must be 'always' or 'every-second', got '{}'", self.fsync);
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > idem_core::Limits::KEY_BYTES_CONTRACT_MAX {
            anyhow::bail!("key_bytes_max must be 1..={}", idem_core::Limits::KEY_BYTES_CONTRACT_MAX);
        }
        if self.value_bytes_max == 0 || self.value_bytes_max >= self.bulk_bytes_max {
            anyhow::bail!("value_bytes_max must be at least 1 and below bulk_bytes_max ({})", self.bulk_bytes_max);
        }
        if self.snapshot_after_bytes < 64 * 1024 {
            anyhow::bail!("snapshot_after_bytes must be at least 64 KiB, got {}", self.snapshot_after_bytes);
        }
        if self.max_connections == 0 {
            anyhow::bail!("max_connections must be at least 1");
        }
        if self.http_port != 0 && self.http_port == self.port {
            anyhow::bail!("http_port and port are both {}", self.port);
        }
        self.tls_client_auth()?;
        let tls_ports = self.tls_port != 0 || self.https_port != 0;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("tls_cert and tls_key go together: set both or neither");
        }
        if tls_ports && self.tls_cert.is_none() {
            anyhow::bail!("tls_port and https_port need tls_cert and tls_key");
        }
        if self.tls_cert.is_some() && !tls_ports {
            anyhow::bail!("tls_cert is set but no TLS port is: set tls_port (RESP) and/or https_port (HTTP)");
        }
        if self.tls_handshake_timeout_ms == 0 {
            anyhow::bail!("tls_handshake_timeout_ms must be at least 1");
        }
        if self.tls_only && self.tls_port == 0 {
            anyhow::bail!("tls_only needs tls_port: RESP must be served somewhere");
        }
        if self.tls_ca.is_some() && self.tls_client_auth == "none" {
            anyhow::bail!(
                "tls_ca is set but tls_client_auth is 'none': set it to 'required' or 'optional', or drop tls_ca"
            );
        }
        let ports = [
            ("port", self.port),
            ("http_port", self.http_port),
            ("tls_port", self.tls_port),
            ("https_port", self.https_port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if *pa != 0 && pa == pb {
                    anyhow::bail!("{a} and {b} are both {pa}");
                }
            }
        }
        Ok(())
    }

    /// The client certificate policy, parsed.
    pub fn tls_client_auth(&self) -> anyhow::Result<idem_server::TlsClientAuth> {
        parse_tls_client_auth(&self.tls_client_auth)
    }

    /// Whether every client must prove who it is: a password, ACL users, or
    /// TLS only with client certificates required.
    pub fn authenticates(&self) -> bool {
        self.password.is_some() || !self.user.is_empty() || (self.tls_only && self.tls_client_auth == "required")
    }

    /// Protected mode: listening beyond loopback needs a password, ACL
    /// users, or client certificates on a TLS-only server; otherwise an
    /// error that says how to proceed (`--insecure-no-auth` lifts it).
    pub fn check_protected(&self, ip: std::net::IpAddr) -> anyhow::Result<()> {
        if ip.is_loopback() || self.authenticates() || self.insecure_no_auth {
            return Ok(());
        }
        anyhow::bail!(
            "protected mode: refusing to listen on {ip} with no password and no ACL users, since anyone who can \
             reach it could run every command. Either set a password (--password, IDEM_PASSWORD or `password` in \
             the config file), or add [[user]] entries to the config file (docs/security.md), or require client \
             certificates (tls_only with tls_client_auth = \"required\"), or listen on 127.0.0.1 only; or, if the \
             network itself is trusted, pass --insecure-no-auth"
        )
    }
}

/// A `tls_client_auth` setting (`serve` and `gateway`), parsed.
pub fn parse_tls_client_auth(setting: &str) -> anyhow::Result<idem_server::TlsClientAuth> {
    Ok(match setting {
        "none" => idem_server::TlsClientAuth::None,
        "optional" => idem_server::TlsClientAuth::Optional,
        "required" => idem_server::TlsClientAuth::Required,
        other => anyhow::bail!("tls_client_auth must be 'none', 'optional' or 'required', got '{other}'"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("idem.toml");
        std::fs::write(&file, "port = 9000\nhttp_port = 9001\nmax_connections = 5\n").unwrap();
        let over = Overrides { port: Some(9100), ..Default::default() };
        let s = load(Some(&file), &over).unwrap();
        assert_eq!(s.port, 9100, "a flag beats the file");
        assert_eq!(s.http_port, 9001, "the file beats the default");
        assert_eq!(s.max_connections, 5);
        assert_eq!(s.bind, "127.0.0.1", "loopback unless asked");
    }

    #[test]
    fn environment_names_settings_and_unrelated_variables_are_ignored() {
        // Both variables are set for this test process only; no other test
        // in this binary reads them.
        std::env::set_var("IDEM_IDLE_TIMEOUT_MS", "1234");
        std::env::set_var("IDEM_TLS_HANDSHAKE_TIMEOUT_MS", "2500");
        std::env::set_var("IDEM_NOT_A_SETTING", "x");
        let s = load(None, &Overrides::default()).unwrap();
        std::env::remove_var("IDEM_IDLE_TIMEOUT_MS");
        std::env::remove_var("IDEM_TLS_HANDSHAKE_TIMEOUT_MS");
        std::env::remove_var("IDEM_NOT_A_SETTING");
        assert_eq!(s.idle_timeout_ms, 1234, "IDEM_IDLE_TIMEOUT_MS sets idle_timeout_ms");
        assert_eq!(s.tls_handshake_timeout_ms, 2500, "IDEM_TLS_HANDSHAKE_TIMEOUT_MS sets tls_handshake_timeout_ms");
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_with_a_reason() {
        let base = Settings::default();
        let cases: [(Settings, &str); 6] = [
            (Settings { tls_port: 7400, ..base.clone() }, "need tls_cert"),
            (Settings { tls_cert: Some("c.pem".into()), ..base.clone() }, "go together"),
            (Settings { tls_cert: Some("c.pem".into()), tls_key: Some("k.pem".into()), ..base.clone() }, "no TLS port"),
            (Settings { tls_only: true, ..base.clone() }, "tls_only needs tls_port"),
            (Settings { tls_client_auth: "sometimes".into(), ..base.clone() }, "tls_client_auth"),
            (Settings { tls_handshake_timeout_ms: 0, ..base.clone() }, "tls_handshake_timeout_ms must be at least 1"),
        ];
        for (s, why) in cases {
            let err = s.validate().expect_err(why).to_string();
            assert!(err.contains(why), "{err}");
        }
        let ca_unused = Settings {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_ca: Some("ca.pem".into()),
            tls_port: 7400,
            ..base.clone()
        };
        assert!(ca_unused.validate().unwrap_err().to_string().contains("tls_client_auth"));
        let same_port = Settings { tls_cert: Some("c".into()), tls_key: Some("k".into()), tls_port: 7379, ..base };
        assert!(same_port.validate().unwrap_err().to_string().contains("both 7379"));
    }

    #[test]
    fn protected_mode_needs_some_authentication_beyond_loopback() {
        let open = Settings::default();
        let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
        assert!(open.check_protected("127.0.0.1".parse().unwrap()).is_ok());
        assert!(open.check_protected("::1".parse().unwrap()).is_ok());
        assert!(open.check_protected(any).unwrap_err().to_string().contains("--insecure-no-auth"));
        assert!(Settings { password: Some("pw".into()), ..Settings::default() }.check_protected(any).is_ok());
        assert!(Settings { insecure_no_auth: true, ..Settings::default() }.check_protected(any).is_ok());
        let mtls = Settings { tls_only: true, tls_client_auth: "required".into(), ..Settings::default() };
        assert!(mtls.check_protected(any).is_ok(), "client certificates are authentication");
        assert!(mtls.authenticates(), "so the start-up warning does not call the server open");
        let optional = Settings { tls_only: true, tls_client_auth: "optional".into(), ..Settings::default() };
        assert!(optional.check_protected(any).is_err(), "optional certificates authenticate no one");
        assert!(!optional.authenticates() && !open.authenticates());
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("idem.toml");
        std::fs::write(&file, "fsync = \"sometimes\"\n").unwrap();
        let err = load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("fsync"), "{err}");
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        let err = load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("no_such_setting"), "{err}");
        let missing = dir.path().join("missing.toml");
        assert!(load(Some(&missing), &Overrides::default()).is_err());
    }
}
