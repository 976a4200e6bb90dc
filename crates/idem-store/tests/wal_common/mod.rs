//! Helpers shared by the write-ahead log tests: change generators, a
//! shadow model of the state that changes build, and log openers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use idem_core::{Change, IdemRecord, IdemState};
use idem_store::wal::sim::SimFs;
use idem_store::wal::{Log, LogOptions, Recovered, Storage};
use idem_store::{FsyncMode, StoreError};
use proptest::prelude::*;

pub fn opts() -> LogOptions {
    LogOptions { fsync: FsyncMode::Always, snapshot_after_bytes: 1 << 30 }
}

pub fn sim_storage(fs: &SimFs, segment_bytes_max: u64) -> Storage {
    // No preallocation helper thread: the crash tests enumerate sync points
    // deterministically (tests/wal_prealloc.rs covers preallocation).
    Storage { vfs: Arc::new(fs.clone()), segment_bytes_max, prealloc_after_bytes: None }
}

/// An opened log, what recovery reported, and the replayed `(time, change)` pairs.
pub type Opened = (Log, Recovered, Vec<(u64, Change)>);

/// Opens a log, collecting the replayed `(time, change)` pairs.
pub fn open_collect(dir: &Path, opts: &LogOptions, storage: &Storage) -> Result<Opened, StoreError> {
    let mut seen = Vec::new();
    let (log, rec) = Log::open_on(dir, opts, storage, &mut |t, c| seen.push((t, c)))?;
    Ok((log, rec, seen))
}

/// The values of replayed counter puts, in replay order (the tests log
/// nothing else).
pub fn counter_values(seen: &[(u64, Change)]) -> Vec<i64> {
    seen.iter()
        .map(|(_, c)| match c {
            Change::CounterPut { value, .. } => *value,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// A put of counter `key` to `value`: easy to recognise after replay.
pub fn counter(key: &str, value: i64) -> Change {
    Change::CounterPut { key: Bytes::copy_from_slice(key.as_bytes()), value }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The identity of the record a change writes; the model keeps the last
/// change per identity (every change is a full image of its record).
pub fn identity(c: &Change) -> (u8, Bytes, Bytes) {
    let e = Bytes::new();
    match c {
        Change::IdemPut { key, .. } | Change::IdemDel { key } => (1, key.clone(), e),
        Change::ClaimPut { key, .. } | Change::ClaimDel { key } => (2, key.clone(), e),
        Change::LockPut { name, .. } | Change::LockDel { name } => (3, name.clone(), e),
        Change::TokenPut { scope, token, .. } | Change::TokenDel { scope, token } => (4, scope.clone(), token.clone()),
        Change::CounterPut { key, .. } => (5, key.clone(), e),
        Change::CounterOpPut { key, op, .. } => (6, key.clone(), op.clone()),
        Change::ValuePut { key, .. } => (7, key.clone(), e),
        Change::FsmPut { key, .. } => (8, key.clone(), e),
        Change::SlotsReserve { resource, .. } | Change::SlotsRelease { resource, .. } => (9, resource.clone(), e),
    }
}

/// A shadow of the store's state: the live record per identity.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Model(pub BTreeMap<(u8, Bytes, Bytes), Change>);

impl Model {
    pub fn apply(&mut self, c: &Change) {
        let id = identity(c);
        match c {
            Change::IdemDel { .. } | Change::ClaimDel { .. } | Change::LockDel { .. } | Change::TokenDel { .. } => {
                self.0.remove(&id);
            }
            // Slot changes are ranges, not full images; the model does not use them.
            Change::SlotsReserve { .. } | Change::SlotsRelease { .. } => {}
            _ => {
                self.0.insert(id, c.clone());
            }
        }
    }
}

fn small_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn key() -> impl Strategy<Value = Bytes> {
    (0u8..6).prop_map(|k| Bytes::from(vec![b'k', b'0' + k]))
}

/// Any change, with arbitrary field values (for codec round trips).
pub fn any_change() -> impl Strategy<Value = Change> {
    let state =
        prop_oneof![
            (any::<u64>(), any::<u32>(), any::<u64>())
                .prop_map(|(fence, attempt, lease_until_ms)| IdemState::Running { fence, attempt, lease_until_ms }),
            (small_bytes(), any::<u64>()).prop_map(|(result, keep_until_ms)| IdemState::Done { result, keep_until_ms }),
        ];
    prop_oneof![
        (small_bytes(), proptest::option::of(small_bytes()), state)
            .prop_map(|(key, fingerprint, state)| Change::IdemPut { key, record: IdemRecord { fingerprint, state } }),
        small_bytes().prop_map(|key| Change::IdemDel { key }),
        (small_bytes(), small_bytes(), proptest::option::of(any::<u64>()))
            .prop_map(|(key, owner, expires_at_ms)| Change::ClaimPut { key, owner, expires_at_ms }),
        small_bytes().prop_map(|key| Change::ClaimDel { key }),
        (small_bytes(), small_bytes(), any::<u64>(), any::<u64>())
            .prop_map(|(name, owner, fence, lease_until_ms)| Change::LockPut { name, owner, fence, lease_until_ms }),
        small_bytes().prop_map(|name| Change::LockDel { name }),
        (small_bytes(), small_bytes(), any::<u64>()).prop_map(|(scope, token, expires_at_ms)| Change::TokenPut {
            scope,
            token,
            expires_at_ms
        }),
        (small_bytes(), small_bytes()).prop_map(|(scope, token)| Change::TokenDel { scope, token }),
        (small_bytes(), any::<i64>()).prop_map(|(key, value)| Change::CounterPut { key, value }),
        (small_bytes(), small_bytes(), any::<i64>(), any::<u64>())
            .prop_map(|(key, op, value, expires_at_ms)| Change::CounterOpPut { key, op, value, expires_at_ms }),
        (small_bytes(), small_bytes(), any::<u64>()).prop_map(|(key, value, version)| Change::ValuePut {
            key,
            value,
            version
        }),
        (small_bytes(), small_bytes()).prop_map(|(key, state)| Change::FsmPut { key, state }),
        (small_bytes(), any::<u32>(), any::<u32>(), any::<u32>(), small_bytes()).prop_map(
            |(resource, size, first, last, holder)| Change::SlotsReserve { resource, size, first, last, holder }
        ),
        (small_bytes(), any::<u32>(), any::<u32>(), small_bytes())
            .prop_map(|(resource, first, last, holder)| Change::SlotsRelease { resource, first, last, holder }),
    ]
}

/// A change on a small key space, so that puts and deletes collide (for model tests).
pub fn model_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (key(), 0u64..1000).prop_map(|(key, fence)| Change::IdemPut {
            key,
            record: IdemRecord {
                fingerprint: None,
                state: IdemState::Running { fence, attempt: 1, lease_until_ms: 5 }
            }
        }),
        key().prop_map(|key| Change::IdemDel { key }),
        (key(), small_bytes()).prop_map(|(key, owner)| Change::ClaimPut { key, owner, expires_at_ms: None }),
        key().prop_map(|key| Change::ClaimDel { key }),
        (key(), 0u64..1000).prop_map(|(name, fence)| Change::LockPut {
            name,
            owner: Bytes::from_static(b"o"),
            fence,
            lease_until_ms: 9
        }),
        key().prop_map(|name| Change::LockDel { name }),
        (key(), any::<i64>()).prop_map(|(key, value)| Change::CounterPut { key, value }),
        (key(), small_bytes(), any::<u64>()).prop_map(|(key, value, version)| Change::ValuePut { key, value, version }),
    ]
}
