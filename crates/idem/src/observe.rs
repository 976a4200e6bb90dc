//! The binary's observability options: the log format, the metrics
//! recorder, and `idem inspect`, which asks a running server's HTTP port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Installs the tracing subscriber with `filter` (overridden by RUST_LOG).
pub fn init_tracing(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

/// Installs the process-wide metrics recorder `/metrics` prints, before
/// the server registers its handles.
pub fn install_recorder() {
    if !idem_server::install_recorder() {
        tracing::warn!("another metrics recorder is installed; /metrics shows idem's own figures only");
    }
}

/// How long `idem inspect` waits for the server.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response `idem inspect` reads; a key's state is a few hundred
/// bytes plus its value (at most `value_bytes_max`).
const INSPECT_RESPONSE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// `idem inspect KEY`: prints what the server at `addr` (host:port of its
/// HTTP port) holds under `key`, as JSON.
pub fn inspect(addr: &str, key: &str, password: Option<&str>) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to idem's HTTP port at {addr}"))?;
    stream.set_read_timeout(Some(INSPECT_TIMEOUT))?;
    stream.set_write_timeout(Some(INSPECT_TIMEOUT))?;
    let auth = password.map(|p| format!("Authorization: Bearer {p}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /v1/inspect/{} HTTP/1.1\r\nHost: {addr}\r\n{auth}Accept: application/json\r\nConnection: close\r\n\r\n",
        percent_encode(key)
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.take(INSPECT_RESPONSE_BYTES_MAX).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("unexpected chunked response (status {status})");
    }
    if status != "200" {
        bail!("server answered {status}: {body}");
    }
    let json: serde_json::Value = serde_json::from_str(body).context("server sent invalid JSON")?;
    Ok(serde_json::to_string_pretty(&json)?)
}

/// `key` as one URL path segment.
fn percent_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(super::percent_encode("order:1/2 x"), "order%3A1%2F2%20x");
    }
}
