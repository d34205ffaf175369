//! The write-ahead log: numbered segment files of CRC-framed records on local disk.
//!
//! Each record holds one accepted request body (still encoded as it arrived) with
//! its sequence number and client batch id. Appends are group-committed: the
//! writer thread writes every pending record and then `fdatasync`s once before any
//! of them is acknowledged. After a crash, [`Wal::open`] replays every segment; a
//! torn last record is detected by its length or checksum and skipped. Segments
//! are deleted only after the data they hold is committed to the table.

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
        let existing = segments(dir)?;
        for id in &existing {
            let path = dir.join(id.file_name());
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            replay.bytes += bytes.len() as u64;
            let decoded = frame::decode(&bytes);
            let mut torn = decoded.torn_at.is_some();
            for payload in decoded.records {
                match WalRecord::decode(payload) {
                    Some(r) => replay.records.push(r),
                    None => {
                        torn = true;
                        break;
                    }
                }
            }
            if torn {
                replay.torn_segments += 1;
                tracing::warn!(segment = %path.display(), "WAL segment ends in a torn record; skipped it");
            }
        }
        let next = SegmentId(existing.last().map_or(1, |s| s.0 + 1));
        let wal = Wal::create_segment(dir, next, segment_bytes)?;
        Ok((wal, replay))
    }

    fn create_segment(dir: &Path, id: SegmentId, segment_bytes: u64) -> Result<Wal> {
        let path = dir.join(id.file_name());
        let current = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            current,
            current_id: id,
            current_bytes: 0,
            segment_bytes,
        })
    }

    /// Writes already-framed records and makes them durable (one fdatasync).
    pub fn append_durable(&mut self, framed: &[u8]) -> Result<()> {
        self.append_durable_pieces(&[framed])
    }

    /// [`Wal::append_durable`] for framed records given in pieces, written in
    /// order without joining them first.
    pub fn append_durable_pieces<B: AsRef<[u8]>>(&mut self, pieces: &[B]) -> Result<()> {
        if self.current_bytes >= self.segment_bytes {
            self.rotate()?;
        }
        let path = self.dir.join(self.current_id.file_name());
        for piece in pieces {
            let piece = piece.as_ref();
            self.current.write_all(piece).map_err(io_err(&path))?;
            self.current_bytes += piece.len() as u64;
        }
        self.current.sync_data().map_err(io_err(&path))?;
        Ok(())
    }

    /// Starts a new segment; returns its id. Every segment before it is sealed.
    pub fn rotate(&mut self) -> Result<SegmentId> {
        if self.current_bytes == 0 {
            return Ok(self.current_id);
        }
        let next = SegmentId(self.current_id.0 + 1);
        *self = Wal::create_segment(&self.dir, next, self.segment_bytes)?;
        Ok(next)
    }

    /// Deletes every segment before `keep_from` (their data is in the table).
    pub fn remove_before(dir: &Path, keep_from: SegmentId) -> Result<usize> {
        let mut removed = 0;
        for id in segments(dir)?.into_iter().filter(|id| *id < keep_from) {
            let path = dir.join(id.file_name());
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(dir)?;
        }
        Ok(removed)
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
