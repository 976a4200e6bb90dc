//! `/metrics` with idem's exporter installed, as the binary runs it: the
//! server's own figures and the series recorded through the `metrics`
//! facade in one valid exposition (each name typed once, every sample
//! under its family), on a durable store, so that the WAL, snapshot,
//! recovery, connection and memory figures show in `/metrics` and in
//! INFO's sections alike.

mod common;

use std::collections::HashSet;

use common::{http, Raw, TestServer, V};
use idem_metrics::broker;
use idem_server::ServerConfig;

/// Checks the text exposition format strictly enough to catch a name
/// exported twice or a sample outside its family; returns the families.
fn check_exposition(text: &str) -> HashSet<String> {
    let mut typed = HashSet::new();
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "{name} typed twice");
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "{line}");
        let name = series.split('{').next().unwrap();
        let (fam, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        let ok = if kind == "histogram" {
            ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(fam))
        } else {
            name == fam
        };
        assert!(ok, "{line} is not in family {fam} ({kind})");
    }
    typed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_shows_the_server_and_the_facade_in_one_exposition() {
    // Before the server registers its handles, as the binary does.
    assert!(idem_server::install_recorder());
    let handle = metrics::histogram!(broker::HANDLE_SECONDS, broker::BROKER => broker::brokers::NATS, broker::OUTCOME => broker::outcome::PROCESSED);
    handle.record(0.002);
    handle.record(0.2);

    let dir = tempfile::tempdir().unwrap();
    // A snapshot after the first bytes logged, so that its figures exist.
    let store = idem_store::Store::open(idem_store::StoreConfig {
        data_dir: Some(dir.path().to_path_buf()),
        snapshot_after_bytes: 1,
        ..idem_store::StoreConfig::default()
    })
    .expect("open store");
    let config = ServerConfig { http_bind: Some("127.0.0.1:0".parse().unwrap()), ..ServerConfig::default() };
    let srv = TestServer::start(config, store).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    assert_eq!(c.cmd(&["CLAIM", "u:1", "a"]).await.as_array()[0], V::bulk("claimed"));
    assert_eq!(c.cmd(&["CLAIM", "u:1", "b"]).await.as_array()[0], V::bulk("held"));

    // The snapshot runs in the background: wait (bounded) until INFO shows it.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let wal = loop {
        let V::Bulk(wal) = c.cmd(&["INFO", "wal"]).await else { panic!("INFO is a bulk string") };
        let wal = String::from_utf8(wal).unwrap();
        if !wal.contains("\r\nsnapshots:0\r\n") || tokio::time::Instant::now() > deadline {
            break wal;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for field in [
        "log_records:",
        "log_records_per_sync:",
        "log_bytes:",
        "snapshot_bytes_last:",
        "snapshot_ms_last:",
        "recovery_ms:",
    ] {
        assert!(wal.contains(&format!("\r\n{field}")), "INFO wal lacks {field}:\n{wal}");
    }
    assert!(!wal.contains("\r\nsnapshots:0\r\n"), "no snapshot was written:\n{wal}");
    let V::Bulk(info) = c.cmd(&["INFO"]).await else { panic!("INFO is a bulk string") };
    let info = String::from_utf8(info).unwrap();
    for field in [
        "# Duplicates",
        "duplicates_absorbed_claim:1",
        "# Records",
        "records_claims:1",
        "# Memory",
        "used_memory_rss:",
        "connected_clients:1",
    ] {
        assert!(info.contains(field), "INFO lacks {field}:\n{info}");
    }

    // Two idle HTTP connections, accepted before the scrape's (the accept
    // loop takes connections in arrival order): the gauge counts them and
    // the scrape, and not the permit the accept loop holds while it waits.
    let idle = [
        tokio::net::TcpStream::connect(srv.http.unwrap()).await.unwrap(),
        tokio::net::TcpStream::connect(srv.http.unwrap()).await.unwrap(),
    ];
    let (status, head, body) = http(srv.http.unwrap(), "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8(body).expect("utf-8");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("idem_http_connections 3\n"), "{text}");
    drop(idle);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let families = check_exposition(&text);
    for name in [
        "idem_duplicates_absorbed_total",
        "idem_command_duration_seconds",
        "idem_commands_total",
        "idem_protocol_errors_total",
        "idem_connections",
        "idem_resp_connections",
        "idem_http_connections",
        "process_resident_memory_bytes",
        "idem_wal_sync_duration_seconds",
        "idem_wal_records_per_sync",
        "idem_wal_bytes_total",
        "idem_snapshot_duration_seconds_last",
        "idem_snapshot_bytes_last",
        "idem_recovery_duration_seconds",
        "idem_live_records",
        broker::HANDLE_SECONDS,
        idem_metrics::exporter::DROPPED_SERIES_TOTAL,
    ] {
        assert!(families.contains(name), "{name} missing:\n{text}");
    }
    assert!(text.contains("idem_duplicates_absorbed_total{primitive=\"claim\"} 1\n"), "{text}");
    assert!(text.contains("idem_commands_total{command=\"PING\",transport=\"resp\"} 1\n"), "{text}");
    assert!(text.contains("idem_commands_total{command=\"CLAIM\",transport=\"resp\"} 2\n"), "{text}");
    assert!(text.contains("# HELP idem_commands_total "), "{text}");
    let bucket =
        format!("{}_bucket{{broker=\"nats\",outcome=\"processed\",le=\"0.0025\"}} 1\n", broker::HANDLE_SECONDS);
    assert!(text.contains(&bucket), "{text}");
    let count = format!("{}_count{{broker=\"nats\",outcome=\"processed\"}} 2\n", broker::HANDLE_SECONDS);
    assert!(text.contains(&count), "{text}");
    assert!(text.contains("idem_metrics_series_dropped_total 0\n"), "{text}");
    assert!(text.contains("idem_resp_connections 1\n"), "{text}");
    assert!(text.contains("idem_live_records{primitive=\"claims\"} 1\n"), "{text}");
    assert!(!text.contains("idem_snapshot_bytes_last 0\n"), "{text}");
    srv.stop().await;
}
