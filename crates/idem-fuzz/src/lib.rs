//! # idem-fuzz
//!
//! The bodies of idem's fuzz targets. Each takes arbitrary bytes, feeds
//! them to one decoder that faces untrusted input, and asserts what must
//! hold whatever the bytes are; a panic is a finding.
//!
//! - RESP framing (`idem_server::resp`): [`resp_framer`];
//! - `idem_core::Command::parse`: [`command_parser`];
//! - the write-ahead log's record decoder: [`wal_record`];
//! - recovery's walk over a damaged log segment: [`wal_recovery`];
//! - the HTTP bodies of `/v1/command` and API v1: [`http_json`];
//! - the gateway's key and fingerprint extraction: [`gateway_extract`].
//!
//! cargo-fuzz runs them from `fuzz/` (its own workspace, nightly); the
//! test `tests/corpus.rs` replays every file of `fuzz/corpus/<target>/`
//! through them on stable, in the default suite. docs/security.md has the
//! commands and the figures of the long runs.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use idem_core::{Command, Limits};
use idem_gateway::extract::{Extractor, RequestView};
use idem_gateway::{Route, RouteDefaults};
use idem_server::resp::{self, FrameLimits};
use idem_store::wal::io::Vfs;
use idem_store::wal::sim::SimFs;

/// The body of a fuzz target.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("resp_framer", resp_framer),
    ("command_parser", command_parser),
    ("wal_record", wal_record),
    ("wal_recovery", wal_recovery),
    ("http_json", http_json),
    ("gateway_extract", gateway_extract),
];

/// Small framing bounds, so that the fuzzer reaches every bound with short inputs.
const FRAME_LIMITS: FrameLimits =
    FrameLimits { bulk_bytes_max: 64, args_max: 8, inline_bytes_max: 64, frame_bytes_max: 256 };

/// Frames `data` as the server does, whole and then cut in two at a point
/// the first byte chooses: framing never depends on how the bytes arrived
/// (partial input is "not yet", never an error), every request it takes
/// keeps within the bounds, and `check` agrees with `take_request` (but
/// for an inline request's quoting, which only the parse checks).
pub fn resp_framer(data: &[u8]) {
    let whole = frame_all(&[data]);
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    assert_eq!(frame_all(&[a, b]), whole, "framing depends on where the input was cut");
}

/// The requests (or the protocol error that stopped framing) of `parts`
/// arriving one after the other, and the bytes left over.
fn frame_all(parts: &[&[u8]]) -> (Vec<Vec<Bytes>>, Option<String>, Vec<u8>) {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            let checked = resp::check(&buf, &FRAME_LIMITS);
            let inline = buf.first() != Some(&b'*');
            let mut args = Vec::new();
            match resp::take_request(&mut buf, &FRAME_LIMITS, &mut args) {
                Ok(true) => {
                    assert!(matches!(checked, Ok(Some(_))), "take_request took what check did not prove: {checked:?}");
                    assert!(args.len() <= FRAME_LIMITS.args_max, "{} arguments", args.len());
                    for a in &args {
                        assert!(a.len() <= FRAME_LIMITS.bulk_bytes_max.max(FRAME_LIMITS.inline_bytes_max));
                    }
                    requests.push(args);
                }
                Ok(false) => {
                    assert!(matches!(checked, Ok(None)), "check proved a request take_request did not take");
                    assert!(buf.len() <= FRAME_LIMITS.frame_bytes_max, "{} bytes buffered", buf.len());
                    break;
                }
                Err(e) => {
                    // `check` proves an inline request whole; its quoting is
                    // only split, and refused, by the parse.
                    let whole_inline = inline && matches!(checked, Ok(Some(_)));
                    assert!(
                        checked.is_err() || whole_inline,
                        "take_request failed ({e}) where check did not ({checked:?})"
                    );
                    return (requests, Some(e.to_string()), Vec::new());
                }
            }
        }
    }
    (requests, None, buf.to_vec())
}

/// Parses `data`, split at NUL bytes into arguments, as a primitive
/// command: a command that parses names itself and keeps its keys within
/// the key bound.
pub fn command_parser(data: &[u8]) {
    let args: Vec<Bytes> = data.split(|b| *b == 0).map(Bytes::copy_from_slice).collect();
    let limits = Limits { key_bytes_max: 16, value_bytes_max: 64, ..Limits::default() };
    if let Ok(c) = Command::parse(&args, &limits) {
        assert!(args[0].eq_ignore_ascii_case(c.name().as_bytes()), "{:?} parsed as {}", args[0], c.name());
        for k in c.keys() {
            assert!(k.len() <= limits.key_bytes_max, "a key of {} bytes", k.len());
        }
        assert_eq!(Command::parse(&args, &limits).map(|c| c.name()), Ok(c.name()), "parsing is not deterministic");
    }
}

/// Decodes `data` as a framed log record (as recovery reads one), and its
/// tail as a payload of every kind: a payload that decodes re-encodes to
/// the same changes.
pub fn wal_record(data: &[u8]) {
    let _ = idem_store::wal::decode_record_for_test(data);
    if let Ok(changes) = idem_store::wal::decode_changes_for_test(data) {
        let again = idem_store::wal::encode_changes_for_test(&changes);
        assert_eq!(idem_store::wal::decode_changes_for_test(&again).as_ref(), Ok(&changes), "re-encoding changed them");
    }
    if let Some((kind, payload)) = data.split_first() {
        // With a valid checksum, so that the decoder behind it is reached.
        let framed = idem_store::wal::frame_record_for_test(1, *kind, payload);
        let _ = idem_store::wal::decode_record_for_test(&framed);
    }
}

/// Checks a log directory holding one damaged segment, as recovery would
/// read it. The first byte chooses: bit 0, fix every frame's checksum (so
/// that the walk reaches the LSN and payload checks); bit 1, the rest of
/// `data` is the whole file, header included (else a valid header comes
/// first). Whatever the bytes, the check answers (a report or `Corrupt`),
/// and a report never claims more than the file holds.
pub fn wal_recovery(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut file = if flags & 2 != 0 { Vec::new() } else { idem_store::wal::segment_header_for_test(1) };
    let header_len = idem_store::wal::segment_header_for_test(1).len();
    file.extend_from_slice(rest);
    if flags & 1 != 0 {
        fix_checksums(&mut file, header_len);
    }
    // One simulated file system per thread, its segment overwritten by each
    // input: the check only reads (and releases its lock), so no state
    // carries from one input to the next, and building the file system is
    // not repeated for every execution.
    thread_local! {
        static FS: (SimFs, PathBuf) = {
            let fs = SimFs::new();
            let seg = Path::new(RECOVERY_DIR).join(format!("wal-{:020}.log", 1));
            drop(fs.create_new(&seg).expect("a fresh simulated file"));
            (fs, seg)
        };
    }
    let len = file.len() as u64;
    let checked = FS.with(|(fs, seg)| {
        fs.overwrite(seg, file);
        idem_store::wal::check_with(fs, Path::new(RECOVERY_DIR))
    });
    if let Ok(report) = checked {
        assert!(report.log_bytes <= len, "{} valid bytes in a file of {len}", report.log_bytes);
        assert!(report.next_lsn >= 1);
    }
}

/// The simulated data directory of [`wal_recovery`].
const RECOVERY_DIR: &str = "/fuzz";

/// Walks the frames of a segment from `at` by their length fields and
/// rewrites each checksum to match.
fn fix_checksums(file: &mut [u8], mut at: usize) {
    while at + 8 <= file.len() {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|e| *e <= file.len()) else { return };
        let mut h = crc32fast::Hasher::new();
        h.update(&file[at..at + 4]);
        h.update(&file[at + 8..end]);
        file[at + 4..at + 8].copy_from_slice(&h.finalize().to_le_bytes());
        at = end;
    }
}

/// Decodes `data` as an HTTP body. The first byte chooses: 0, a
/// `POST /v1/command` body; else the API v1 route of that number (modulo
/// their count). Arguments that decode are at least one and at most the
/// bound; API v1 arguments go on to the command parser.
pub fn http_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    const ARGS_MAX: usize = 8;
    if which == 0 {
        match idem_server::fuzz::command_body(body, ARGS_MAX) {
            Ok(args) => {
                assert!(!args.is_empty() && args.len() <= ARGS_MAX, "{} arguments", args.len());
                let _ = Command::parse(&args, &Limits::default());
            }
            Err((code, _)) => assert!(code == "ERR" || code == "LIMIT", "unexpected code {code}"),
        }
        return;
    }
    let route = which as usize - 1;
    if let Ok(args) = idem_server::fuzz::v1_body(route, Some("k"), body) {
        assert!(!args.is_empty());
        let _ = Command::parse(&args, &Limits::default());
    }
}

/// The route the gateway target uses when the input's own route does not
/// parse: every kind of key source and the default fingerprint.
const GATEWAY_ROUTE: &str = "POST /orders/{id} key=header:Idempotency-Key+json:a.b+query:q+path:id";

/// Extracts a gateway key and fingerprint from a request built of `data`'s
/// parts (split at 0xFF): a route spec, an `Idempotency-Key` header, a
/// query, a path tail, a `Content-Type`, and the body. A key, when there is
/// one, is the prefix and 64 hex digits, and extraction is deterministic.
pub fn gateway_extract(data: &[u8]) {
    let mut parts = data.splitn(6, |b| *b == 0xff);
    let mut next = || parts.next().unwrap_or_default();
    let (spec, key, query, tail, content_type, body) = (next(), next(), next(), next(), next(), next());
    let defaults = RouteDefaults::default();
    let parsed = std::str::from_utf8(spec).ok().and_then(|s| Route::parse(s, &defaults).ok());
    // The fixed route is parsed once per process, not for every input without
    // a valid spec: that setup tests nothing new and slowed every execution.
    static FIXED: OnceLock<Route> = OnceLock::new();
    let route = parsed.as_ref().unwrap_or_else(|| {
        FIXED.get_or_init(|| Route::parse(GATEWAY_ROUTE, &RouteDefaults::default()).expect("the fixed route parses"))
    });
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(key) {
        headers.insert(HeaderName::from_static("idempotency-key"), v);
    }
    if let Ok(v) = HeaderValue::from_bytes(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    let path = format!("/orders/{}", String::from_utf8_lossy(tail));
    let query = std::str::from_utf8(query).ok();
    let params = route.matches(&Method::POST, &path).unwrap_or_default();
    let identity = |headers: &HeaderMap| {
        let view = RequestView { method: &Method::POST, path: &path, query, headers, body, params: &params };
        Extractor::new(view, 64).identity(route, b"gw:")
    };
    let first = identity(&headers);
    if let Ok(Some(id)) = &first {
        assert_eq!(id.key.len(), 3 + 64, "key {:?}", String::from_utf8_lossy(&id.key));
        assert!(id.key[3..].iter().all(|b| b.is_ascii_hexdigit()));
        if let Some(fp) = &id.fingerprint {
            assert_eq!(fp.len(), 64);
        }
    }
    assert_eq!(identity(&headers), first, "extraction is not deterministic");
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let canonical = idem_gateway::canonical::canonical(&v);
        let back: serde_json::Value = serde_json::from_slice(&canonical).expect("canonical JSON parses");
        assert_eq!(idem_gateway::canonical::canonical(&back), canonical, "canonical form is not stable");
    }
}
