//! On-disk formats: file headers, record frames and the encoding of a
//! [`Change`]. docs/durability.md has the same layouts with the reasoning.
//!
//! All integers are little-endian. Every checksum is CRC-32 (IEEE, the
//! `crc32fast` crate).
//!
//! ## Segment file `wal-<base lsn, 20 digits>.log`
//! ```text
//! header (32 bytes)
//!   0   8  magic  "IDEMWAL\0"
//!   8   4  format version (1)
//!   12  4  header length (32)
//!   16  8  base LSN: the LSN of the first record in this file
//!   24  4  reserved, zero
//!   28  4  CRC-32 of bytes 0..28
//! records, back to back, from offset 32:
//!   0   4  len: bytes after this 8-byte frame head (25 + payload)
//!   4   4  CRC-32 of bytes 0..4 followed by bytes 8..8+len
//!   8   8  LSN (the previous record's + 1; the first is the base LSN)
//!   16  8  synced LSN: every record up to it was on stable storage before
//!          this one was encoded (lets recovery tell a torn tail from damage)
//!   24  8  engine time in ms
//!   32  1  kind: 1 changes | 2 fence high-water | 3 mark
//!   33  .. payload
//!          kind 1: u32 count, then `count` changes (below)
//!          kind 2: u64 fence high-water mark
//!          kind 3: nothing (attests the synced LSN; written at shutdown)
//! ```
//!
//! ## Snapshot file `snap-<lsn, 20 digits>.snap`
//! ```text
//! header (64 bytes)
//!   0   8  magic  "IDEMSNAP"
//!   8   4  format version (1)
//!   12  4  header length (64)
//!   16  8  LSN L: the snapshot reflects every record below L
//!   24  8  fence high-water mark
//!   32  8  engine time in ms
//!   40  8  number of entries
//!   48  12 reserved, zero
//!   60  4  CRC-32 of bytes 0..60
//! entries, back to back, exactly `number of entries`, then end of file:
//!   0   4  len of the encoded change
//!   4   4  CRC-32 of bytes 0..4 followed by the change
//!   8   .. one change (below)
//! ```
//!
//! ## A change
//! One tag byte, then its fields in order. `bytes` = u32 length + data;
//! `opt u64` = one byte 0/1, then the u64 when 1; `opt bytes` likewise.
//! ```text
//!   1  IdemPut       key, opt fingerprint, state: 0 running (u64 fence, u32 attempt,
//!                    u64 lease_until_ms) | 1 done (bytes result, u64 keep_until_ms)
//!   2  IdemDel       key
//!   3  ClaimPut      key, owner, opt u64 expires_at_ms
//!   4  ClaimDel      key
//!   5  LockPut       name, owner, u64 fence, u64 lease_until_ms
//!   6  LockDel       name
//!   7  TokenPut      scope, token, u64 expires_at_ms
//!   8  TokenDel      scope, token
//!   9  CounterPut    key, i64 value
//!   10 CounterOpPut  key, op, i64 value, u64 expires_at_ms
//!   11 ValuePut      key, value, u64 version
//!   12 FsmPut        key, state
//!   13 SlotsReserve  resource, u32 size, u32 first, u32 last, holder
//!   14 SlotsRelease  resource, u32 first, u32 last, holder
//! ```

use std::sync::LazyLock;

use bytes::Bytes;
use idem_core::{Change, IdemRecord, IdemState};

/// The format version written in every file header; a reader refuses others.
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"IDEMWAL\0";
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;

pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"IDEMSNAP";
pub(crate) const SNAPSHOT_HEADER_LEN: usize = 64;

/// The frame head: `len` and `crc`.
pub(crate) const FRAME_HEAD_LEN: usize = 8;
/// The record fields after the frame head and before the payload: lsn,
/// synced lsn, time, kind.
pub(crate) const RECORD_FIXED_LEN: usize = 25;

/// The largest record or snapshot entry body accepted. It bounds what one
/// append may buffer and what recovery trusts a length field for; a command's
/// changes stay far below it (values are limited to 1 MiB by default).
pub(crate) const RECORD_BYTES_MAX: usize = 64 << 20;

pub(crate) const KIND_CHANGES: u8 = 1;
pub(crate) const KIND_FENCE_HIGH: u8 = 2;
pub(crate) const KIND_MARK: u8 = 3;

// ---------------------------------------------------------------- headers

/// Encodes a segment header for a file whose first record has LSN `base`.
pub(crate) fn segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment header, returning its base LSN.
pub(crate) fn parse_segment_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err(format!("segment header is {} bytes, expected {SEGMENT_HEADER_LEN}", h.len()));
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("not an idem log segment (bad magic)".into());
    }
    if crc32fast::hash(&h[0..28]) != u32_at(h, 28) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32_at(h, 8);
    if version != FORMAT_VERSION {
        return Err(format!("segment format version {version}, this idem reads {FORMAT_VERSION}"));
    }
    Ok(u64_at(h, 16))
}

/// The fields of a snapshot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotHeader {
    pub lsn: u64,
    pub fence_high: u64,
    pub clock_ms: u64,
    pub entries: u64,
}

pub(crate) fn snapshot_header(s: &SnapshotHeader) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut h = [0u8; SNAPSHOT_HEADER_LEN];
    h[0..8].copy_from_slice(SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SNAPSHOT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&s.lsn.to_le_bytes());
    h[24..32].copy_from_slice(&s.fence_high.to_le_bytes());
    h[32..40].copy_from_slice(&s.clock_ms.to_le_bytes());
    h[40..48].copy_from_slice(&s.entries.to_le_bytes());
    let crc = crc32fast::hash(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(crate) fn parse_snapshot_header(h: &[u8]) -> Result<SnapshotHeader, String> {
    if h.len() < SNAPSHOT_HEADER_LEN {
        return Err(format!("snapshot header is {} bytes, expected {SNAPSHOT_HEADER_LEN}", h.len()));
    }
    if &h[0..8] != SNAPSHOT_MAGIC {
        return Err("not an idem snapshot (bad magic)".into());
    }
    if crc32fast::hash(&h[0..60]) != u32_at(h, 60) {
        return Err("snapshot header checksum mismatch".into());
    }
    let version = u32_at(h, 8);
    if version != FORMAT_VERSION {
        return Err(format!("snapshot format version {version}, this idem reads {FORMAT_VERSION}"));
    }
    Ok(SnapshotHeader {
        lsn: u64_at(h, 16),
        fence_high: u64_at(h, 24),
        clock_ms: u64_at(h, 32),
        entries: u64_at(h, 40),
    })
}

// ---------------------------------------------------------------- records

/// The payload of a record, encoded outside the log's lock together with the
/// running checksum of its bytes.
pub(crate) struct Payload<'a> {
    pub kind: u8,
    pub bytes: &'a [u8],
    /// The payload's checksum, when the caller computed it (outside the
    /// tail's lock, for large payloads); `None` hashes the payload here.
    pub crc: Option<&'a crc32fast::Hasher>,
}

/// Payloads up to this size are hashed while the record is framed: hashing
/// a few hundred bytes costs less than combining two checksums (a
/// `crc32fast::Hasher::combine` is thousands of instructions).
pub(crate) const INLINE_CRC_BYTES_MAX: usize = 4096;

/// A new CRC-32 state, cloned per record: `crc32fast::Hasher::new` detects
/// the CPU's features each time it is called.
static CRC_FRESH: LazyLock<crc32fast::Hasher> = LazyLock::new(crc32fast::Hasher::new);

/// Appends one framed record to `out`. A large payload's checksum is
/// computed by the caller outside the lock and combined in, so the time
/// under the lock does not grow with the payload's size beyond one memcpy.
///
/// The record is laid out in `out` first and its checksum taken over the
/// bytes in place: the fixed fields and a small payload are then one
/// contiguous run, which the CRC's vector code hashes in one call, where
/// hashing them piece by piece pays its setup and tail handling per piece.
pub(crate) fn put_record(out: &mut Vec<u8>, lsn: u64, synced_lsn: u64, time_ms: u64, payload: &Payload<'_>) {
    let len = (RECORD_FIXED_LEN + payload.bytes.len()) as u32;
    let start = out.len();
    out.reserve(FRAME_HEAD_LEN + len as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, written once computed
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&synced_lsn.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.push(payload.kind);
    let body = start + FRAME_HEAD_LEN;
    let mut h = CRC_FRESH.clone();
    h.update(&out[start..start + 4]);
    match payload.crc {
        Some(crc) => {
            h.update(&out[body..]);
            h.combine(crc);
            out.extend_from_slice(payload.bytes);
        }
        None => {
            out.extend_from_slice(payload.bytes);
            h.update(&out[body..]);
        }
    }
    debug_assert_eq!(out.len() - start, FRAME_HEAD_LEN + len as usize, "a record is its frame head and its body");
    out[start + 4..body].copy_from_slice(&h.finalize().to_le_bytes());
}

/// A record that passed its checksum.
#[derive(Debug)]
pub(crate) struct RawRecord<'a> {
    pub lsn: u64,
    pub synced_lsn: u64,
    pub time_ms: u64,
    pub kind: u8,
    pub payload: &'a [u8],
    /// Bytes the whole record takes, frame head included.
    pub size: usize,
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes remain than the frame claims (or than a frame head).
    Short,
    /// The length field is below the record's fixed part or above the bound.
    /// No `String`: recovery's search for a later valid record tries every
    /// offset of a damaged segment, so a miss must not allocate.
    Length(usize),
    /// The checksum does not match.
    Checksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short => f.write_str("cut short by the end of the file"),
            FrameError::Length(len) => write!(f, "implausible length {len}"),
            FrameError::Checksum => f.write_str("checksum mismatch"),
        }
    }
}

/// Reads the record starting at `buf[0]`.
pub(crate) fn read_record(buf: &[u8]) -> Result<RawRecord<'_>, FrameError> {
    let body = read_frame(buf, RECORD_FIXED_LEN)?;
    Ok(RawRecord {
        lsn: u64_at(body, 0),
        synced_lsn: u64_at(body, 8),
        time_ms: u64_at(body, 16),
        kind: body[24],
        payload: &body[RECORD_FIXED_LEN..],
        size: FRAME_HEAD_LEN + body.len(),
    })
}

/// Checks the frame at `buf[0]` and returns its body.
pub(crate) fn read_frame(buf: &[u8], body_len_min: usize) -> Result<&[u8], FrameError> {
    if buf.len() < FRAME_HEAD_LEN {
        return Err(FrameError::Short);
    }
    let len = u32_at(buf, 0) as usize;
    if len < body_len_min || len > RECORD_BYTES_MAX {
        return Err(FrameError::Length(len));
    }
    if buf.len() < FRAME_HEAD_LEN + len {
        return Err(FrameError::Short);
    }
    let body = &buf[FRAME_HEAD_LEN..FRAME_HEAD_LEN + len];
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[0..4]);
    h.update(body);
    if h.finalize() != u32_at(buf, 4) {
        return Err(FrameError::Checksum);
    }
    Ok(body)
}

/// Appends one framed snapshot entry holding `change`'s encoding (already in `enc`).
pub(crate) fn put_entry(out: &mut Vec<u8>, enc: &[u8]) {
    let len = enc.len() as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(enc);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(enc);
}

// ---------------------------------------------------------------- changes

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends the encoding of one change to `out` (no allocation besides `out` growing).
pub(crate) fn put_change(out: &mut Vec<u8>, change: &Change) {
    match change {
        Change::IdemPut { key, record } => {
            out.push(1);
            put_bytes(out, key);
            match &record.fingerprint {
                None => out.push(0),
                Some(fp) => {
                    out.push(1);
                    put_bytes(out, fp);
                }
            }
            match &record.state {
                IdemState::Running { fence, attempt, lease_until_ms } => {
                    out.push(0);
                    put_u64(out, *fence);
                    put_u32(out, *attempt);
                    put_u64(out, *lease_until_ms);
                }
                IdemState::Done { result, keep_until_ms } => {
                    out.push(1);
                    put_bytes(out, result);
                    put_u64(out, *keep_until_ms);
                }
            }
        }
        Change::IdemDel { key } => {
            out.push(2);
            put_bytes(out, key);
        }
        Change::ClaimPut { key, owner, expires_at_ms } => {
            out.push(3);
            put_bytes(out, key);
            put_bytes(out, owner);
            match expires_at_ms {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    put_u64(out, *t);
                }
            }
        }
        Change::ClaimDel { key } => {
            out.push(4);
            put_bytes(out, key);
        }
        Change::LockPut { name, owner, fence, lease_until_ms } => {
            out.push(5);
            put_bytes(out, name);
            put_bytes(out, owner);
            put_u64(out, *fence);
            put_u64(out, *lease_until_ms);
        }
        Change::LockDel { name } => {
            out.push(6);
            put_bytes(out, name);
        }
        Change::TokenPut { scope, token, expires_at_ms } => {
            out.push(7);
            put_bytes(out, scope);
            put_bytes(out, token);
            put_u64(out, *expires_at_ms);
        }
        Change::TokenDel { scope, token } => {
            out.push(8);
            put_bytes(out, scope);
            put_bytes(out, token);
        }
        Change::CounterPut { key, value } => {
            out.push(9);
            put_bytes(out, key);
            put_u64(out, *value as u64);
        }
        Change::CounterOpPut { key, op, value, expires_at_ms } => {
            out.push(10);
            put_bytes(out, key);
            put_bytes(out, op);
            put_u64(out, *value as u64);
            put_u64(out, *expires_at_ms);
        }
        Change::ValuePut { key, value, version } => {
            out.push(11);
            put_bytes(out, key);
            put_bytes(out, value);
            put_u64(out, *version);
        }
        Change::FsmPut { key, state } => {
            out.push(12);
            put_bytes(out, key);
            put_bytes(out, state);
        }
        Change::SlotsReserve { resource, size, first, last, holder } => {
            out.push(13);
            put_bytes(out, resource);
            put_u32(out, *size);
            put_u32(out, *first);
            put_u32(out, *last);
            put_bytes(out, holder);
        }
        Change::SlotsRelease { resource, first, last, holder } => {
            out.push(14);
            put_bytes(out, resource);
            put_u32(out, *first);
            put_u32(out, *last);
            put_bytes(out, holder);
        }
    }
}

/// A cursor over an encoded payload. Every read is bounds-checked: a record
/// that passed its checksum but does not decode is reported as corrupt, never
/// a panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("payload ends early at byte {} (needs {n} more)", self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64_at(self.take(8)?, 0))
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    fn opt_flag(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("bad option flag {b}")),
        }
    }

    /// Decodes one change. Fields are copied out (replay allocates; the hot
    /// path never decodes) so that no key pins a whole segment buffer in memory.
    pub(crate) fn change(&mut self) -> Result<Change, String> {
        let tag = self.u8()?;
        Ok(match tag {
            1 => {
                let key = self.bytes()?;
                let fingerprint = if self.opt_flag()? { Some(self.bytes()?) } else { None };
                let state = match self.u8()? {
                    0 => IdemState::Running { fence: self.u64()?, attempt: self.u32()?, lease_until_ms: self.u64()? },
                    1 => IdemState::Done { result: self.bytes()?, keep_until_ms: self.u64()? },
                    s => return Err(format!("bad idempotency state {s}")),
                };
                Change::IdemPut { key, record: IdemRecord { fingerprint, state } }
            }
            2 => Change::IdemDel { key: self.bytes()? },
            3 => {
                let key = self.bytes()?;
                let owner = self.bytes()?;
                let expires_at_ms = if self.opt_flag()? { Some(self.u64()?) } else { None };
                Change::ClaimPut { key, owner, expires_at_ms }
            }
            4 => Change::ClaimDel { key: self.bytes()? },
            5 => Change::LockPut {
                name: self.bytes()?,
                owner: self.bytes()?,
                fence: self.u64()?,
                lease_until_ms: self.u64()?,
            },
            6 => Change::LockDel { name: self.bytes()? },
            7 => Change::TokenPut { scope: self.bytes()?, token: self.bytes()?, expires_at_ms: self.u64()? },
            8 => Change::TokenDel { scope: self.bytes()?, token: self.bytes()? },
            9 => Change::CounterPut { key: self.bytes()?, value: self.u64()? as i64 },
            10 => Change::CounterOpPut {
                key: self.bytes()?,
                op: self.bytes()?,
                value: self.u64()? as i64,
                expires_at_ms: self.u64()?,
            },
            11 => Change::ValuePut { key: self.bytes()?, value: self.bytes()?, version: self.u64()? },
            12 => Change::FsmPut { key: self.bytes()?, state: self.bytes()? },
            13 => Change::SlotsReserve {
                resource: self.bytes()?,
                size: self.u32()?,
                first: self.u32()?,
                last: self.u32()?,
                holder: self.bytes()?,
            },
            14 => Change::SlotsRelease {
                resource: self.bytes()?,
                first: self.u32()?,
                last: self.u32()?,
                holder: self.bytes()?,
            },
            t => return Err(format!("unknown change tag {t}")),
        })
    }
}

/// What a checksummed log record holds.
#[derive(Debug)]
pub(crate) enum Body {
    Changes(Vec<Change>),
    FenceHigh(u64),
    Mark,
}

/// Decodes a record's payload.
pub(crate) fn decode_body(kind: u8, payload: &[u8]) -> Result<Body, String> {
    let mut r = Reader::new(payload);
    let body = match kind {
        KIND_CHANGES => {
            let count = r.u32()? as usize;
            // A count is trusted only as far as the payload can hold it (each
            // change takes at least 5 bytes), so a bad count cannot make us
            // reserve huge memory.
            let mut changes = Vec::with_capacity(count.min(payload.len() / 5));
            for _ in 0..count {
                changes.push(r.change()?);
            }
            Body::Changes(changes)
        }
        KIND_FENCE_HIGH => Body::FenceHigh(r.u64()?),
        KIND_MARK => Body::Mark,
        k => return Err(format!("unknown record kind {k}")),
    };
    if !r.is_empty() {
        return Err("trailing bytes after the record's payload".into());
    }
    Ok(body)
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Encodes `changes` as a record payload, for tests of the codec.
#[cfg(feature = "testing")]
pub fn encode_changes_for_test(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for c in changes {
        put_change(&mut out, c);
    }
    out
}

/// Decodes a payload made by [`encode_changes_for_test`].
#[cfg(feature = "testing")]
pub fn decode_changes_for_test(payload: &[u8]) -> Result<Vec<Change>, String> {
    match decode_body(KIND_CHANGES, payload)? {
        Body::Changes(c) => Ok(c),
        _ => unreachable!("kind is changes"),
    }
}

/// Reads the framed record at the start of `buf` and decodes its payload,
/// as recovery does, for the fuzz targets: the record's LSN and what it holds.
#[cfg(feature = "testing")]
pub fn decode_record_for_test(buf: &[u8]) -> Result<(u64, Vec<Change>), String> {
    let raw = read_record(buf).map_err(|e| e.to_string())?;
    match decode_body(raw.kind, raw.payload)? {
        Body::Changes(c) => Ok((raw.lsn, c)),
        Body::FenceHigh(_) | Body::Mark => Ok((raw.lsn, Vec::new())),
    }
}

/// Frames `payload` as a record of `kind` at `lsn` (synced LSN and time 0)
/// with a valid checksum, for the fuzz targets.
#[cfg(feature = "testing")]
pub fn frame_record_for_test(lsn: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_record(&mut out, lsn, 0, 0, &Payload { kind, bytes: payload, crc: None });
    out
}

/// A segment header for base LSN `base`, for the fuzz targets.
#[cfg(feature = "testing")]
pub fn segment_header_for_test(base: u64) -> Vec<u8> {
    segment_header(base).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame's checksum is CRC-32 of `len` then the body, however the
    /// record was laid out: hashed in place, with a precomputed payload
    /// checksum combined in, and after other records in the buffer. A
    /// different value would make every log written before unreadable.
    #[test]
    fn record_checksum_is_the_documented_crc() {
        for payload_len in [0usize, 3, 7, 40, 103, 200, 5000] {
            let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 + 7) as u8).collect();
            let mut pre = crc32fast::Hasher::new();
            pre.update(&payload);
            let mut inline = vec![0xAB; 13];
            put_record(&mut inline, 9, 8, 77, &Payload { kind: KIND_CHANGES, bytes: &payload, crc: None });
            let mut combined = vec![0xAB; 13];
            put_record(&mut combined, 9, 8, 77, &Payload { kind: KIND_CHANGES, bytes: &payload, crc: Some(&pre) });
            assert_eq!(inline, combined, "payload of {payload_len} bytes");
            let rec = &inline[13..];
            let len = u32_at(rec, 0) as usize;
            assert_eq!(len, RECORD_FIXED_LEN + payload_len);
            let mut whole = rec[0..4].to_vec();
            whole.extend_from_slice(&rec[FRAME_HEAD_LEN..]);
            assert_eq!(u32_at(rec, 4), crc32fast::hash(&whole), "payload of {payload_len} bytes");
            let raw = read_record(rec).expect("a framed record reads back");
            assert_eq!((raw.lsn, raw.synced_lsn, raw.time_ms, raw.kind), (9, 8, 77, KIND_CHANGES));
            assert_eq!(raw.payload, &payload[..]);
            assert_eq!(raw.size, rec.len());
        }
    }
}
