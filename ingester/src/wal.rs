//! The write-ahead log: numbered segment files of CRC-framed records on local disk.
//!
//! Each record holds one accepted request body (still encoded as it arrived) with
//! its sequence number and client batch id. Appends are group-committed: the
//! writer thread writes every pending record and then `fdatasync`s once before any
//! of them is acknowledged. After a crash, [`Wal::open`] replays every segment; a
//! torn last record is detected by its length or checksum and skipped.
//!
//! A group that fails to be written (a full disk) is cut off again before anything
//! else is appended, so no partial record stays in the middle of a segment; if the
//! cut itself fails the log refuses appends until it succeeds. A segment is deleted
//! only when the table provably holds every record in it: the highest sequence
//! number the segment holds is at most the WAL sequence of the table's last commit
//! by this ingester ([`Wal::remove_covered`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::decode::BodyEncoding;
use crate::error::{IngestError, Result};
use crate::frame;

/// Number of a WAL segment file (`00000000000000000042.wal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

impl SegmentId {
    pub fn file_name(self) -> String {
        format!("{:020}.wal", self.0)
    }

    pub fn parse(name: &str) -> Option<Self> {
        let digits = name.strip_suffix(".wal")?;
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok().map(SegmentId))
            .flatten()
    }
}

/// Sequence number of a WAL record; also the Delta application-transaction version
/// committed with the data, which makes replay after a crash exactly-once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WalSeq(pub u64);

/// Client-chosen idempotency key of a request (`Flowlake-Batch-Id` header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(String);

impl BatchId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self> {
        let ok =
            !s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(BatchId(s.to_string()))
        } else {
            Err(IngestError::BadBatchId(format!(
                "must be 1-{} printable ASCII characters",
                Self::MAX_LEN
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One logged request.
#[derive(Debug, Clone, PartialEq)]
pub struct WalRecord {
    pub seq: WalSeq,
    pub batch_id: Option<BatchId>,
    pub encoding: BodyEncoding,
    pub body: Bytes,
}

impl WalRecord {
    /// `seq u64 | encoding u8 | id_len u16 | id | body`, framed.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for piece in self.frame() {
            out.extend_from_slice(&piece);
        }
    }

    /// The framed record as two pieces to write in order: the frame header with
    /// the record's own header, then the body (shared, not copied).
    pub fn frame(&self) -> [Bytes; 2] {
        let id = self.batch_id.as_ref().map(BatchId::as_str).unwrap_or("");
        let mut head = Vec::with_capacity(11 + id.len());
        head.extend_from_slice(&self.seq.0.to_le_bytes());
        head.push(self.encoding.as_byte());
        head.extend_from_slice(&(id.len() as u16).to_le_bytes());
        head.extend_from_slice(id.as_bytes());
        let mut framed = frame::header(&[&head, &self.body]).to_vec();
        framed.extend_from_slice(&head);
        [Bytes::from(framed), self.body.clone()]
    }

    pub fn decode(payload: &[u8]) -> Option<Self> {
        let seq = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
        let encoding = BodyEncoding::from_byte(*payload.get(8)?)?;
        let id_len = u16::from_le_bytes(payload.get(9..11)?.try_into().ok()?) as usize;
        let id = std::str::from_utf8(payload.get(11..11 + id_len)?).ok()?;
        let batch_id = if id.is_empty() {
            None
        } else {
            Some(BatchId::parse(id).ok()?)
        };
        Some(WalRecord {
            seq: WalSeq(seq),
            batch_id,
            encoding,
            body: Bytes::copy_from_slice(payload.get(11 + id_len..)?),
        })
    }
}

/// What a replay found on disk.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<WalRecord>,
    /// Segments that ended in a torn or corrupt record.
    pub torn_segments: usize,
    pub bytes: u64,
}

/// The open log: the segment being appended to and the directory of older ones.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    current: File,
    current_id: SegmentId,
    current_bytes: u64,
    segment_bytes: u64,
    /// Highest sequence number in each segment on disk (`None`: no whole record).
    last_seq: BTreeMap<SegmentId, Option<WalSeq>>,
    /// A failed append left bytes past `current_bytes` that are not cut off yet.
    dirty: bool,
}

/// Where the log ends before a group is appended, to undo the group.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    segment: SegmentId,
    bytes: u64,
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Wal {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a directory entry change (create, delete, rename) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn segments(dir: &Path) -> Result<Vec<SegmentId>> {
    let mut ids: Vec<SegmentId> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| SegmentId::parse(&e.file_name().to_string_lossy()))
        .collect();
    ids.sort();
    Ok(ids)
}

impl Wal {
    /// Opens the log in `dir`, replaying every existing segment, and starts a new
    /// segment for appends.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Wal, Replay)> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut replay = Replay::default();
        let mut last_seq = BTreeMap::new();
        let existing = segments(dir)?;
        for id in &existing {
            let path = dir.join(id.file_name());
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            replay.bytes += bytes.len() as u64;
            let decoded = frame::decode(&bytes);
            let mut torn = decoded.torn_at.is_some();
            let mut last = None;
            for payload in decoded.records {
                match WalRecord::decode(payload) {
                    Some(r) => {
                        last = last.max(Some(r.seq));
                        replay.records.push(r);
                    }
                    None => {
                        torn = true;
                        break;
                    }
                }
            }
            last_seq.insert(*id, last);
            if torn {
                replay.torn_segments += 1;
                tracing::warn!(segment = %path.display(), "WAL segment ends in a torn record; skipped it");
            }
        }
        let next = SegmentId(existing.last().map_or(1, |s| s.0 + 1));
        let (current, current_id) = Wal::create_segment(dir, next)?;
        last_seq.insert(current_id, None);
        let wal = Wal {
            dir: dir.to_path_buf(),
            current,
            current_id,
            current_bytes: 0,
            segment_bytes,
            last_seq,
            dirty: false,
        };
        Ok((wal, replay))
    }

    /// Opens segment `id` for appends: a new file, or an empty one a failed
    /// rotation left behind.
    fn create_segment(dir: &Path, id: SegmentId) -> Result<(File, SegmentId)> {
        let path = dir.join(id.file_name());
        let current = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = current.metadata().map_err(io_err(&path))?.len();
        if len != 0 {
            return Err(IngestError::Internal(format!(
                "new WAL segment {} is not empty",
                path.display()
            )));
        }
        sync_dir(dir)?;
        Ok((current, id))
    }

    /// Writes already-framed records and makes them durable (one fdatasync).
    pub fn append_durable(&mut self, framed: &[u8]) -> Result<()> {
        self.append_durable_pieces(&[framed])
    }

    /// [`Wal::append_durable`] for framed records given in pieces, written in
    /// order without joining them first. On failure nothing of the pieces stays
    /// in the log (see [`Wal::undo`]).
    pub fn append_durable_pieces<B: AsRef<[u8]>>(&mut self, pieces: &[B]) -> Result<()> {
        self.cut_dirty_tail()?;
        if self.current_bytes >= self.segment_bytes {
            self.rotate()?;
        }
        let mark = self.mark();
        let path = self.dir.join(self.current_id.file_name());
        let written = pieces.iter().try_for_each(|piece| {
            let piece = piece.as_ref();
            self.current.write_all(piece)?;
            self.current_bytes += piece.len() as u64;
            Ok(())
        });
        if let Err(source) = written.and_then(|()| self.current.sync_data()) {
            self.undo(mark);
            return Err(IngestError::Wal { path, source });
        }
        Ok(())
    }

    /// Where the log ends now.
    pub fn mark(&self) -> Mark {
        Mark {
            segment: self.current_id,
            bytes: self.current_bytes,
        }
    }

    /// Records that `seq` was appended to the current segment (the writer calls
    /// this once the group holding it is durable).
    pub fn note_appended(&mut self, seq: WalSeq) {
        let last = self.last_seq.entry(self.current_id).or_default();
        *last = (*last).max(Some(seq));
    }

    /// Cuts the log back to `mark`: what was appended since is gone (a group that
    /// failed to be written, or whose dedup journal entries failed). When the cut
    /// fails, appends are refused until it succeeds.
    pub fn undo(&mut self, mark: Mark) {
        if mark.segment != self.current_id {
            // A rotation happened after the mark: the new segment holds only the
            // group being undone.
            self.current_bytes = 0;
        } else {
            self.current_bytes = mark.bytes;
        }
        self.dirty = true;
        if let Err(e) = self.cut_dirty_tail() {
            tracing::error!(error = %crate::error::error_chain(&e), "could not cut a failed WAL append off; appends are refused until it succeeds");
        }
    }

    /// Truncates the current segment to `current_bytes` after a failed append.
    fn cut_dirty_tail(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.dir.join(self.current_id.file_name());
        self.current
            .set_len(self.current_bytes)
            .and_then(|()| self.current.sync_data())
            .map_err(io_err(&path))?;
        self.dirty = false;
        Ok(())
    }

    /// Whether the log can take appends again: any failed append is cut off and a
    /// small file can be written and synced in the WAL directory.
    pub fn probe(&mut self) -> Result<()> {
        self.cut_dirty_tail()?;
        let path = self.dir.join("probe.tmp");
        let wrote = File::create(&path)
            .and_then(|mut f| f.write_all(&[0; 64 << 10]).and_then(|()| f.sync_data()));
        let _ = std::fs::remove_file(&path);
        wrote.map_err(io_err(&path))
    }

    /// Starts a new segment; returns its id. Every segment before it is sealed.
    pub fn rotate(&mut self) -> Result<SegmentId> {
        self.cut_dirty_tail()?;
        if self.current_bytes == 0 {
            return Ok(self.current_id);
        }
        let next = SegmentId(self.current_id.0 + 1);
        let (current, id) = Wal::create_segment(&self.dir, next)?;
        self.current = current;
        self.current_id = id;
        self.current_bytes = 0;
        self.last_seq.insert(id, None);
        Ok(next)
    }

    /// Deletes every sealed segment whose records all have a sequence number at
    /// most `committed` (the WAL sequence of the table's last commit by this
    /// ingester): the table holds all of them. Returns how many were deleted.
    pub fn remove_covered(&mut self, committed: WalSeq) -> Result<usize> {
        let covered: Vec<SegmentId> = self
            .last_seq
            .iter()
            .filter(|(id, last)| **id != self.current_id && last.is_none_or(|s| s <= committed))
            .map(|(id, _)| *id)
            .collect();
        for id in &covered {
            let path = self.dir.join(id.file_name());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(IngestError::Wal { path, source }),
            }
            self.last_seq.remove(id);
        }
        if !covered.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(covered.len())
    }

    /// Total bytes of all segment files.
    pub fn disk_bytes(dir: &Path) -> u64 {
        segments(dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|id| std::fs::metadata(dir.join(id.file_name())).ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests;
