//! The idempotency window: client batch ids seen recently, with the rows each
//! acknowledged, kept in memory and in a CRC-framed journal so it survives restarts.
//!
//! Journal entries are written by the writer thread in the same group commit as the
//! WAL records, synced after them; a group whose entries fail is cut off the WAL
//! again. A crash between the two syncs leaves ids in WAL records only: replay
//! adds every id in the WAL back ([`DedupWindow::remember`]) before any segment
//! can be removed, so an id whose record is durable is never forgotten within
//! the window. The journal is rewritten with only live entries when it has grown
//! to several times the live set.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{IngestError, Result};
use crate::frame;
use crate::wal::{BatchId, sync_dir};

/// File name of the journal inside the WAL directory.
pub const JOURNAL_FILE: &str = "dedup.journal";

#[derive(Debug)]
pub struct DedupWindow {
    path: PathBuf,
    file: File,
    window: Duration,
    seen: HashMap<BatchId, u64>,
    order: VecDeque<(i64, BatchId)>,
    journal_entries: usize,
    pending: Vec<u8>,
    /// Length of the journal's whole entries (a failed append is cut back to it).
    len: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Wal {
        path: path.to_path_buf(),
        source,
    }
}

fn entry(at_ms: i64, rows: u64, id: &BatchId, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(16 + id.as_str().len());
    payload.extend_from_slice(&at_ms.to_le_bytes());
    payload.extend_from_slice(&rows.to_le_bytes());
    payload.extend_from_slice(id.as_str().as_bytes());
    frame::encode(&payload, out);
}

impl DedupWindow {
    /// Loads the journal in `dir`, dropping entries older than `window`, and
    /// rewrites it compactly.
    pub fn open(dir: &Path, window: Duration, now: DateTime<Utc>) -> Result<Self> {
        let path = dir.join(JOURNAL_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let decoded = frame::decode(&bytes);
        if decoded.torn_at.is_some() {
            tracing::warn!(journal = %path.display(), "dedup journal ends in a torn entry; skipped it");
        }
        let mut entries: Vec<(i64, u64, BatchId)> = decoded
            .records
            .iter()
            .filter_map(|p| {
                let at = i64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
                let rows = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
                let id = BatchId::parse(std::str::from_utf8(p.get(16..)?).ok()?).ok()?;
                Some((at, rows, id))
            })
            .collect();
        entries.sort_by_key(|e| e.0);
        let tmp = dir.join(format!("{JOURNAL_FILE}.tmp"));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut me = DedupWindow {
            path: path.clone(),
            file,
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
            journal_entries: 0,
            pending: Vec::new(),
            len: 0,
        };
        for (at, rows, id) in entries {
            me.insert(id, rows, at);
        }
        me.expire(now);
        me.rewrite(&tmp)?;
        Ok(me)
    }

    fn insert(&mut self, id: BatchId, rows: u64, at_ms: i64) {
        if self.seen.insert(id.clone(), rows).is_none() {
            self.order.push_back((at_ms, id));
        }
    }

    /// Writes the live entries to `tmp` and renames it over the journal.
    fn rewrite(&mut self, tmp: &Path) -> Result<()> {
        let mut out = Vec::new();
        for (at, id) in &self.order {
            entry(*at, self.seen[id], id, &mut out);
        }
        let mut file = File::create(tmp).map_err(io_err(tmp))?;
        file.write_all(&out).map_err(io_err(tmp))?;
        file.sync_all().map_err(io_err(tmp))?;
        std::fs::rename(tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        self.journal_entries = self.order.len();
        self.len = out.len() as u64;
        Ok(())
    }

    fn expire(&mut self, now: DateTime<Utc>) {
        let cutoff = now.timestamp_millis() - self.window.as_millis() as i64;
        while let Some((at, _)) = self.order.front() {
            if *at >= cutoff {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }

    /// Rows acknowledged for `id` if it was seen within the window.
    pub fn get(&self, id: &BatchId) -> Option<u64> {
        self.seen.get(id).copied()
    }

    /// Records `id` in memory and stages its journal entry for [`Self::sync`].
    pub fn record(&mut self, id: BatchId, rows: u64, now: DateTime<Utc>) {
        let at = now.timestamp_millis();
        entry(at, rows, &id, &mut self.pending);
        self.journal_entries += 1;
        self.insert(id, rows, at);
    }

    /// An id found in a WAL record on replay: remembered (and staged for the
    /// journal) unless it is already.
    pub fn remember(&mut self, id: &BatchId, rows: u64, now: DateTime<Utc>) {
        if self.get(id).is_none() {
            self.record(id.clone(), rows, now);
        }
    }

    /// Forgets staged entries whose WAL write failed, and cuts off whatever part
    /// of them reached the journal.
    pub fn discard_pending(&mut self, ids: &[BatchId]) {
        self.pending.clear();
        for id in ids {
            self.seen.remove(id);
            self.order.retain(|(_, i)| i != id);
        }
        let cut = self
            .file
            .set_len(self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = cut {
            // A torn tail is skipped on load; entries after it would be lost, so
            // nothing is appended until the cut succeeds (see `sync`).
            tracing::warn!(error = %e, journal = %self.path.display(), "could not cut a failed dedup journal append off");
        }
    }

    /// Makes staged entries durable; compacts the journal when it is mostly stale.
    pub fn sync(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let on_disk = self.file.metadata().map_err(io_err(&self.path))?.len();
        if on_disk != self.len {
            self.file.set_len(self.len).map_err(io_err(&self.path))?;
        }
        self.file
            .write_all(&self.pending)
            .and_then(|_| self.file.sync_data())
            .map_err(io_err(&self.path))?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        self.expire(now);
        if self.journal_entries > 4 * self.order.len() + 10_000 {
            let tmp = self.path.with_extension("journal.tmp");
            if let Err(e) = self.rewrite(&tmp) {
                // The appended journal is whole; compaction waits for space.
                tracing::warn!(error = %crate::error::error_chain(&e), "could not compact the dedup journal");
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let window = Duration::from_secs(60);
        let mut d = DedupWindow::open(dir.path(), window, t0).unwrap();
        let a = BatchId::parse("a").unwrap();
        let b = BatchId::parse("b").unwrap();
        d.record(a.clone(), 10, t0);
        d.record(b.clone(), 20, t0 + chrono::Duration::seconds(50));
        d.sync(t0 + chrono::Duration::seconds(50)).unwrap();
        drop(d);
        let d = DedupWindow::open(dir.path(), window, t0 + chrono::Duration::seconds(30)).unwrap();
        assert_eq!(d.get(&a), Some(10));
        assert_eq!(d.get(&b), Some(20));
        drop(d);
        // Past the window only b is remembered.
        let d = DedupWindow::open(dir.path(), window, t0 + chrono::Duration::seconds(90)).unwrap();
        assert_eq!(d.get(&a), None);
        assert_eq!(d.get(&b), Some(20));
        // A torn tail is skipped.
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9, 0, 0]);
        std::fs::write(&path, bytes).unwrap();
        let d = DedupWindow::open(dir.path(), window, t0 + chrono::Duration::seconds(90)).unwrap();
        assert_eq!(d.len(), 1);
    }
}
