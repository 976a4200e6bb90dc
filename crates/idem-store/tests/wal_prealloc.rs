//! Segment preallocation on the real file system: a helper thread zero-fills
//! the next segment, the writer switches to it, records overwrite its zeros,
//! and recovery reads a preallocated segment's unused space as free space.

mod wal_common;

use std::path::Path;

use idem_store::wal::{self, Storage};
use wal_common::*;

const SEGMENT: u64 = 64 << 10;

fn storage() -> Storage {
    Storage { segment_bytes_max: SEGMENT, prealloc_after_bytes: Some(0), ..Storage::default() }
}

fn segment_lens(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .filter(|(n, _)| n.starts_with("wal-"))
        .collect();
    v.sort();
    v
}

/// Appends values `range` in groups of 25 (one durable wait per group).
fn write_values(log: &wal::Log, range: std::ops::Range<i64>) {
    let rt = runtime();
    let values: Vec<i64> = range.collect();
    for group in values.chunks(25) {
        let mut last = None;
        for v in group {
            last = Some(log.append(0, &[counter(&format!("key-{v:08}"), *v)]).unwrap());
        }
        rt.block_on(log.durable(last.unwrap())).unwrap();
    }
}

#[test]
fn the_writer_moves_to_preallocated_segments_and_recovery_continues_in_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (log, _, _) = open_collect(dir, &opts(), &storage()).unwrap();
        write_values(&log, 0..4000);
        let stats = log.stats();
        assert!(stats.prealloc_rotations >= 2, "{stats:?}");
    }
    let lens = segment_lens(dir);
    assert!(
        !lens.iter().any(|(n, _)| n == "wal-prep.tmp"),
        "an unused preallocated file is removed at close: {lens:?}"
    );
    // Preallocated segments have the full size from the start. (A rotation
    // that comes before the helper is done starts an appending segment; the
    // writer leaves it as soon as the preallocated one is ready.)
    let full = lens.iter().filter(|(_, len)| *len == SEGMENT).count();
    assert!(full >= 2, "{lens:?}");
    let report = wal::check(dir).unwrap();
    assert_eq!(report.torn_tail, None);
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);

    // Recovery reads the zeros as free space and writing continues over them.
    {
        let (log, _, seen) = open_collect(dir, &opts(), &storage()).unwrap();
        assert_eq!(counter_values(&seen), (0..4000).collect::<Vec<_>>());
        write_values(&log, 4000..4100);
    }
    let lens_after = segment_lens(dir);
    let last = lens.last().unwrap();
    assert!(lens_after.contains(last), "the last segment neither grew nor was replaced: {lens:?} -> {lens_after:?}");
    let (_log, _, seen) = open_collect(dir, &opts(), &storage()).unwrap();
    assert_eq!(counter_values(&seen), (0..4100).collect::<Vec<_>>());
}

#[test]
fn a_small_log_never_preallocates() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _, _) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    write_values(&log, 0..200);
    assert_eq!(log.stats().prealloc_rotations, 0);
    drop(log);
    let lens = segment_lens(tmp.path());
    assert_eq!(lens.len(), 1, "{lens:?}");
    assert!(lens[0].1 < 64 << 10, "{lens:?}");
}

#[test]
fn a_leftover_preallocation_file_is_reported_and_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (log, _, _) = open_collect(dir, &opts(), &storage()).unwrap();
        write_values(&log, 0..10);
    }
    let leftover = dir.join("wal-prep.tmp");
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
    let report = wal::check(dir).unwrap();
    assert_eq!(report.leftovers, vec![leftover.clone()]);
    let (_log, _, seen) = open_collect(dir, &opts(), &storage()).unwrap();
    assert_eq!(counter_values(&seen), (0..10).collect::<Vec<_>>());
    assert!(!leftover.exists());
}
