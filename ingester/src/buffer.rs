//! The in-memory buffer between the WAL and the table, its hard memory budget, and
//! the reasons it is flushed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arrow::record_batch::RecordBatch;

use crate::config::FlushPolicy;
use crate::wal::{BatchId, WalSeq};

/// Why a buffer was written to the table (also a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushReason {
    Rows,
    Bytes,
    Age,
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

/// Size and age of what is buffered, shared with the flusher.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferStats {
    pub rows: usize,
    pub bytes: usize,
    pub oldest: Option<Instant>,
}

impl BufferStats {
    /// The reason to flush now, if any.
    pub fn due(&self, policy: &FlushPolicy, now: Instant) -> Option<FlushReason> {
        if self.rows >= policy.max_rows {
            Some(FlushReason::Rows)
        } else if self.bytes >= policy.max_bytes {
            Some(FlushReason::Bytes)
        } else if self
            .oldest
            .is_some_and(|t| now.saturating_duration_since(t) >= policy.max_age)
        {
            Some(FlushReason::Age)
        } else {
            None
        }
    }
}

/// Batches acknowledged but not yet in the table.
#[derive(Debug, Default)]
pub struct Buffer {
    drained: Drained,
    oldest: Option<Instant>,
}

/// One WAL record's batches in the buffer.
#[derive(Debug, Clone)]
pub struct BufferedRecord {
    pub seq: WalSeq,
    pub batch_id: Option<BatchId>,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Memory held, as counted in the budget.
    pub bytes: usize,
}

/// What a flush takes out of the buffer: whole WAL records, in sequence order.
#[derive(Debug, Default)]
pub struct Drained {
    pub records: Vec<BufferedRecord>,
    pub rows: usize,
    pub bytes: usize,
    /// Highest WAL sequence number taken: once the table's commit carries it,
    /// every record up to it is in the table (or in the quarantine).
    pub last_seq: Option<WalSeq>,
}

impl Drained {
    /// Every batch of every record, in order.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.records
            .iter()
            .flat_map(|r| r.batches.iter().cloned())
            .collect()
    }

    /// Takes the records at `positions` out (to quarantine them); `last_seq`
    /// stays, so the commit of the rest still covers them.
    pub fn remove(&mut self, positions: &[usize]) -> Vec<BufferedRecord> {
        let mut out = Vec::new();
        for &i in positions.iter().rev() {
            let r = self.records.remove(i);
            self.rows -= r.rows;
            self.bytes -= r.bytes;
            out.push(r);
        }
        out.reverse();
        out
    }
}

impl Buffer {
    pub fn push(&mut self, record: BufferedRecord, now: Instant) {
        let d = &mut self.drained;
        d.rows += record.rows;
        d.bytes += record.bytes;
        d.last_seq = d.last_seq.max(Some(record.seq));
        d.records.push(record);
        self.oldest.get_or_insert(now);
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            rows: self.drained.rows,
            bytes: self.drained.bytes,
            oldest: self.oldest,
        }
    }

    pub fn take(&mut self) -> Drained {
        std::mem::take(self).drained
    }
}

/// The hard limit on memory held by accepted-but-uncommitted data. Requests that
/// would pass it are refused (503), so memory never grows without bound.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        MemoryBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Reserves `bytes`, or returns false when the budget is exhausted. A single
    /// request larger than the whole budget is admitted only when nothing is held.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    /// Counts `bytes` that are already held (WAL replay), even past the limit.
    pub fn force_reserve(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    pub fn release(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Buffer statistics published by the writer thread for the flusher.
#[derive(Debug, Default)]
pub struct SharedStats(Mutex<BufferStats>);

impl SharedStats {
    pub fn set(&self, stats: BufferStats) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }

    pub fn get(&self) -> BufferStats {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_refuses_past_the_limit_and_recovers() {
        let b = MemoryBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(50));
        assert!(b.try_reserve(40));
        b.release(60);
        assert!(b.try_reserve(50));
        b.release(90);
        assert_eq!(b.used(), 0);
        // An oversized request passes only alone.
        assert!(b.try_reserve(500));
        assert!(!b.try_reserve(1));
    }

    #[test]
    fn due_names_the_reason() {
        let policy = FlushPolicy {
            max_rows: 10,
            max_bytes: 1000,
            max_age: Duration::from_secs(5),
        };
        let t = Instant::now();
        let mut s = BufferStats::default();
        assert_eq!(s.due(&policy, t), None);
        s.oldest = Some(t);
        s.rows = 3;
        assert_eq!(s.due(&policy, t + Duration::from_secs(1)), None);
        assert_eq!(
            s.due(&policy, t + Duration::from_secs(5)),
            Some(FlushReason::Age)
        );
        s.bytes = 1000;
        assert_eq!(s.due(&policy, t), Some(FlushReason::Bytes));
        s.rows = 10;
        assert_eq!(s.due(&policy, t), Some(FlushReason::Rows));
    }
}
