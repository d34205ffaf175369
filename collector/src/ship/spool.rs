//! The bounded on-disk spool: one file per batch, replayed in order.
//!
//! File `<seq, 20 digits>.batch`:
//! `FLSPOOL1` | crc32c (u32 LE) of the rest | seq u64 | batch id (16 bytes) |
//! records u64 | created (unix ms, i64) | Arrow IPC stream bytes. Written to a
//! temporary name, fsynced, renamed, and the directory fsynced, so a file either
//! exists whole or not at all. When the limit is reached the oldest batches are
//! deleted and counted as dropped (`spool_full`), never silently. Loss batches
//! (`<seq>.losses`, same format) are never deleted for room, nor delete others
//! for theirs: they say what was lost, the count of deleted flow batches among
//! it; one is cut at most once per report interval (and one at shutdown) and
//! holds a few rows.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::DateTime;

use super::encode::{BatchId, BatchKind, BatchSeq, EncodedBatch};
use super::error::{Result, ShipError};
use super::metrics::{DropReason, ShipMetrics};

const MAGIC: &[u8; 8] = b"FLSPOOL1";
const HEADER: usize = 8 + 4 + 8 + 16 + 8 + 8;
const SUFFIX: &str = "batch";
const LOSSES_SUFFIX: &str = "losses";

fn suffix(kind: BatchKind) -> &'static str {
    match kind {
        BatchKind::Flows => SUFFIX,
        BatchKind::Losses => LOSSES_SUFFIX,
    }
}

#[derive(Debug, Clone)]
struct Entry {
    kind: BatchKind,
    path: PathBuf,
    bytes: u64,
    records: u64,
}

/// The spool directory and what it holds.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: BTreeMap<BatchSeq, Entry>,
    total_bytes: u64,
    /// The batch being sent: never evicted under the sender's feet.
    in_flight: Option<BatchSeq>,
    metrics: ShipMetrics,
}

fn file_bytes(b: &EncodedBatch) -> Vec<u8> {
    let mut body = Vec::with_capacity(HEADER + b.ipc.len());
    body.extend_from_slice(&b.seq.0.to_le_bytes());
    body.extend_from_slice(&b.id.as_bytes());
    body.extend_from_slice(&b.records.to_le_bytes());
    body.extend_from_slice(&b.created.timestamp_millis().to_le_bytes());
    body.extend_from_slice(&b.ipc);
    let mut out = Vec::with_capacity(HEADER + b.ipc.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn parse(path: &Path, kind: BatchKind, data: &[u8]) -> Result<EncodedBatch> {
    let corrupt = |reason| ShipError::SpoolCorrupt {
        path: path.to_path_buf(),
        reason,
    };
    if data.len() < HEADER || &data[..8] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let crc = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    let body = &data[12..];
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    Ok(EncodedBatch {
        kind,
        seq: BatchSeq(u64_at(0)),
        id: BatchId::from_bytes(body[8..24].try_into().expect("16 bytes")),
        records: u64_at(24),
        created: DateTime::from_timestamp_millis(u64_at(32) as i64).unwrap_or_default(),
        ipc: Bytes::copy_from_slice(&body[40..]),
    })
}

impl Spool {
    /// Opens (creating) the spool in `dir` and indexes what a previous run left.
    /// Damaged files are removed and counted as dropped (`corrupt`).
    pub fn open(dir: &Path, max_bytes: u64, metrics: ShipMetrics) -> Result<Self> {
        fs::create_dir_all(dir).map_err(ShipError::io(dir))?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            entries: BTreeMap::new(),
            total_bytes: 0,
            in_flight: None,
            metrics,
        };
        for item in fs::read_dir(dir).map_err(ShipError::io(dir))? {
            let path = item.map_err(ShipError::io(dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(".tmp-") {
                // A write that never completed: nothing was acknowledged for it.
                let _ = fs::remove_file(&path);
                continue;
            }
            let kind = match path.extension().and_then(|e| e.to_str()) {
                Some(SUFFIX) => BatchKind::Flows,
                Some(LOSSES_SUFFIX) => BatchKind::Losses,
                _ => continue,
            };
            let data = fs::read(&path).map_err(ShipError::io(&path))?;
            match parse(&path, kind, &data) {
                Ok(b) => {
                    spool.total_bytes += data.len() as u64;
                    spool.entries.insert(
                        b.seq,
                        Entry {
                            kind,
                            path,
                            bytes: data.len() as u64,
                            records: b.records,
                        },
                    );
                }
                Err(e) => {
                    // The record count is in the (unverified) header when it is long enough.
                    let records = data
                        .get(36..44)
                        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                    tracing::error!(error = %e, records, "dropping a damaged spool file");
                    spool.metrics.dropped(DropReason::Corrupt, records);
                    let _ = fs::remove_file(&path);
                }
            }
        }
        if !spool.entries.is_empty() {
            tracing::info!(dir = %dir.display(), batches = spool.entries.len(), bytes = spool.total_bytes, "replaying spool");
        }
        spool.update_gauges();
        Ok(spool)
    }

    /// The sequence number after the newest spooled batch.
    pub fn next_seq(&self) -> BatchSeq {
        BatchSeq(self.entries.keys().next_back().map_or(0, |s| s.0 + 1))
    }

    /// Writes `b` durably, evicting the oldest batches (counted) to stay within the limit.
    pub fn write(&mut self, b: &EncodedBatch) -> Result<()> {
        let data = file_bytes(b);
        let size = data.len() as u64;
        // A loss batch deletes nothing for its room (it may take the spool a
        // few hundred bytes over the limit): a deletion it caused would be
        // counted after its own rows, in a report that may never come.
        while self.total_bytes + size > self.max_bytes && b.kind == BatchKind::Flows {
            let Some(oldest) =
                self.entries.keys().copied().find(|s| {
                    Some(*s) != self.in_flight && self.entries[s].kind == BatchKind::Flows
                })
            else {
                break;
            };
            let e = self.entries.remove(&oldest).expect("listed");
            self.total_bytes -= e.bytes;
            let _ = fs::remove_file(&e.path);
            self.metrics.dropped(DropReason::SpoolFull, e.records);
            tracing::warn!(
                seq = oldest.0,
                records = e.records,
                "spool full: oldest batch dropped"
            );
        }
        if self.total_bytes + size > self.max_bytes && b.kind == BatchKind::Flows {
            self.metrics.dropped(DropReason::SpoolFull, b.records);
            tracing::warn!(
                seq = b.seq.0,
                records = b.records,
                "spool full: batch larger than the room left, dropped"
            );
            return Ok(());
        }
        let path = self.dir.join(format!("{:020}.{}", b.seq.0, suffix(b.kind)));
        let tmp = self.dir.join(format!(".tmp-{:020}", b.seq.0));
        let mut f = fs::File::create(&tmp).map_err(ShipError::io(&tmp))?;
        f.write_all(&data).map_err(ShipError::io(&tmp))?;
        f.sync_all().map_err(ShipError::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(ShipError::io(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(ShipError::io(&self.dir))?;
        self.total_bytes += size;
        self.entries.insert(
            b.seq,
            Entry {
                kind: b.kind,
                path,
                bytes: size,
                records: b.records,
            },
        );
        self.metrics.batches_spooled.inc();
        self.update_gauges();
        Ok(())
    }

    /// Reads the oldest batch and marks it in flight. Damaged files are dropped (counted).
    pub fn take_oldest(&mut self) -> Option<EncodedBatch> {
        while let Some((&seq, e)) = self.entries.iter().next() {
            let read = fs::read(&e.path).map_err(ShipError::io(&e.path));
            match read.and_then(|d| parse(&e.path, e.kind, &d)) {
                Ok(b) => {
                    self.in_flight = Some(seq);
                    return Some(b);
                }
                Err(err) => {
                    tracing::error!(error = %err, "dropping an unreadable spool file");
                    let records = e.records;
                    self.remove(seq);
                    self.metrics.dropped(DropReason::Corrupt, records);
                }
            }
        }
        None
    }

    /// The in-flight batch goes back to waiting.
    pub fn release(&mut self) {
        self.in_flight = None;
    }

    /// Deletes a batch (acknowledged, or rejected as poison).
    pub fn remove(&mut self, seq: BatchSeq) {
        if self.in_flight == Some(seq) {
            self.in_flight = None;
        }
        if let Some(e) = self.entries.remove(&seq) {
            self.total_bytes -= e.bytes;
            if let Err(err) = fs::remove_file(&e.path) {
                tracing::warn!(path = %e.path.display(), error = %err, "cannot delete spool file");
            }
        }
        self.update_gauges();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    fn update_gauges(&self) {
        self.metrics.spool_bytes.set(self.total_bytes as i64);
        self.metrics.spool_batches.set(self.entries.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, size: usize) -> EncodedBatch {
        EncodedBatch {
            kind: BatchKind::Flows,
            seq: BatchSeq(seq),
            id: BatchId::random(),
            records: 10,
            created: DateTime::from_timestamp_millis(1_767_225_600_000).unwrap(),
            ipc: Bytes::from(vec![seq as u8; size]),
        }
    }

    #[test]
    fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = ShipMetrics::default();
        let mut s = Spool::open(dir.path(), 1 << 20, m.clone()).unwrap();
        let (a, b) = (batch(3, 100), batch(4, 100));
        s.write(&a).unwrap();
        s.write(&b).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20, m).unwrap();
        assert_eq!(s.next_seq(), BatchSeq(5));
        let got = s.take_oldest().unwrap();
        assert_eq!(
            (got.seq, got.id, got.ipc.clone()),
            (a.seq, a.id, a.ipc.clone())
        );
        s.remove(got.seq);
        assert_eq!(s.take_oldest().unwrap().id, b.id);
    }

    #[test]
    fn limit_drops_oldest_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = ShipMetrics::default();
        let per_file = (HEADER + 1000) as u64;
        let mut s = Spool::open(dir.path(), per_file * 2, m.clone()).unwrap();
        for seq in 0..3 {
            s.write(&batch(seq, 1000)).unwrap();
        }
        assert_eq!(s.len(), 2);
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 10);
        assert_eq!(s.take_oldest().unwrap().seq, BatchSeq(1));
    }

    #[test]
    fn loss_batches_are_never_evicted_and_keep_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let m = ShipMetrics::default();
        let per_file = (HEADER + 1000) as u64;
        let mut s = Spool::open(dir.path(), per_file * 2, m.clone()).unwrap();
        let losses = EncodedBatch {
            kind: BatchKind::Losses,
            ..batch(0, 1000)
        };
        s.write(&losses).unwrap();
        for seq in 1..4 {
            s.write(&batch(seq, 1000)).unwrap();
        }
        // Room for two: the loss batch and the newest flow batch stay.
        assert_eq!(s.len(), 2);
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 20);
        drop(s);
        let mut s = Spool::open(dir.path(), per_file * 2, m).unwrap();
        let first = s.take_oldest().unwrap();
        assert_eq!((first.seq, first.kind), (BatchSeq(0), BatchKind::Losses));
        s.remove(first.seq);
        let next = s.take_oldest().unwrap();
        assert_eq!((next.seq, next.kind), (BatchSeq(3), BatchKind::Flows));
    }

    #[test]
    fn damaged_file_is_dropped_on_replay() {
        let dir = tempfile::tempdir().unwrap();
        let m = ShipMetrics::default();
        let mut s = Spool::open(dir.path(), 1 << 20, m.clone()).unwrap();
        s.write(&batch(0, 100)).unwrap();
        s.write(&batch(1, 100)).unwrap();
        let p = dir.path().join(format!("{:020}.{SUFFIX}", 0));
        let mut data = fs::read(&p).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&p, data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, m.clone()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(m.dropped_count(DropReason::Corrupt), 10);
        assert_eq!(s.take_oldest().unwrap().seq, BatchSeq(1));
    }
}
