//! The configuration: the documented defaults agree with the code, and a
//! configuration that breaks a rule the server relies on is refused at bind.

use std::path::Path;

use idem_server::{Server, ServerConfig, ServerError};

/// The rows `| `field` | default | ...` of every Markdown table in `text`
/// (lines may carry a `//! ` prefix, as in the crate docs).
fn table_rows(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.trim_start_matches("//!").trim())
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let field = cells.first()?.split('`').nth(1)?.to_string();
            Some((field, cells.get(1)?.to_string()))
        })
        .collect()
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A cell agrees with a default when it is the default, or the default
/// followed by a remark: `0 (never)`, `0 = never`.
fn agrees(cell: &str, default: &str) -> bool {
    cell == default || cell.strip_prefix(default).is_some_and(|rest| rest.starts_with(' '))
}

#[test]
fn every_documented_default_is_the_one_in_code() {
    let defaults = ServerConfig::documented_defaults();
    // The crate docs and docs/server.md list every server bound (the
    // command limits live with the commands); the README lists the ones an
    // operator sets most. `None`: no row is required.
    let limits: &[&str] = &["key_bytes_max", "value_bytes_max"];
    let docs: [(&str, Option<&[&str]>); 3] = [
        ("src/lib.rs", Some(limits)),
        ("../../docs/server.md", Some(&["key_bytes_max", "value_bytes_max", "event_loops"])),
        ("../../README.md", None),
    ];
    for (doc, not_required) in docs {
        let rows = table_rows(&read(doc));
        let mut checked = 0;
        for (field, default) in &defaults {
            let cells: Vec<&String> = rows.iter().filter(|(f, _)| f == field).map(|(_, c)| c).collect();
            for cell in &cells {
                assert!(
                    agrees(cell, default),
                    "{doc}: `{field}` is documented as `{cell}`, the code's default is `{default}`"
                );
            }
            checked += cells.len();
            if let Some(exempt) = not_required {
                assert!(!cells.is_empty() || exempt.contains(field), "{doc} has no row for `{field}`");
            }
        }
        assert!(checked >= 8, "{doc}: only {checked} rows checked; has its table moved?");
    }
}

#[test]
fn the_defaults_are_written_as_the_docs_write_them() {
    let defaults: std::collections::HashMap<_, _> = ServerConfig::documented_defaults().into_iter().collect();
    assert_eq!(defaults["max_connections"], "10,000");
    assert_eq!(defaults["bulk_bytes_max"], "2 MiB");
    assert_eq!(defaults["query_buffer_bytes_max_unauth"], "16 KiB");
    assert_eq!(defaults["idle_timeout_ms"], "0");
    assert_eq!(defaults["key_bytes_max"], "512");
}

#[tokio::test]
async fn a_bulk_bound_not_above_the_value_bound_is_refused() {
    let mut config = ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    config.bulk_bytes_max = config.limits.value_bytes_max;
    match Server::bind(config.clone()).await {
        Err(ServerError::Config(why)) => {
            assert!(why.contains("bulk_bytes_max") && why.contains("value_bytes_max"), "{why}")
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    config.bulk_bytes_max = config.limits.value_bytes_max + 1;
    assert!(Server::bind(config).await.is_ok(), "one byte above the value bound is enough");
}
