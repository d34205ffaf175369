//! Records → Arrow `RecordBatch`es, flushed by size and age.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use flowlake_schemas::{FlowBatchBuilder, FlowRecord};

/// Why a batch was cut (also the `reason` label of `batches_flushed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// The batch reached its row limit.
    Rows,
    /// The oldest record waited the maximum age.
    Age,
    /// The shipper is stopping.
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Age => "age",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

/// When to cut a batch.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    pub max_rows: usize,
    pub max_age: Duration,
}

/// Accumulates records in the schema's builder.
pub struct Batcher {
    builder: FlowBatchBuilder,
    policy: FlushPolicy,
    oldest: Option<DateTime<Utc>>,
}

impl Batcher {
    pub fn new(policy: FlushPolicy) -> Self {
        Batcher {
            builder: FlowBatchBuilder::with_capacity(policy.max_rows.min(65_536)),
            policy: FlushPolicy {
                max_rows: policy.max_rows.max(1),
                ..policy
            },
            oldest: None,
        }
    }

    /// Appends `records` (received at `now`); returns the batches that filled up.
    pub fn push(
        &mut self,
        records: &[FlowRecord],
        now: DateTime<Utc>,
    ) -> Vec<(RecordBatch, FlushReason)> {
        let mut out = Vec::new();
        for r in records {
            if self.builder.is_empty() {
                self.oldest = Some(now);
            }
            self.builder.append(r);
            if self.builder.len() >= self.policy.max_rows {
                out.push((self.cut(), FlushReason::Rows));
            }
        }
        out
    }

    /// The batch, if its oldest record has waited `max_age` by `now`.
    pub fn poll_age(&mut self, now: DateTime<Utc>) -> Option<(RecordBatch, FlushReason)> {
        let oldest = self.oldest?;
        let age = (now - oldest).to_std().unwrap_or_default();
        (age >= self.policy.max_age).then(|| (self.cut(), FlushReason::Age))
    }

    /// Whatever is buffered, at shutdown.
    pub fn finish(&mut self) -> Option<(RecordBatch, FlushReason)> {
        (!self.builder.is_empty()).then(|| (self.cut(), FlushReason::Shutdown))
    }

    /// Rows waiting.
    pub fn len(&self) -> usize {
        self.builder.len()
    }

    pub fn is_empty(&self) -> bool {
        self.builder.is_empty()
    }

    fn cut(&mut self) -> RecordBatch {
        self.oldest = None;
        self.builder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<FlowRecord> {
        let dir = std::env::temp_dir();
        let mut cfg = flowlake_gen::GenConfig::for_tests(dir);
        cfg.duration = chrono::Duration::seconds(600);
        let mut all = flowlake_gen::records(&cfg);
        all.truncate(n);
        assert_eq!(all.len(), n);
        all
    }

    #[test]
    fn flushes_by_rows_then_age_then_shutdown() {
        let t0 = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let mut b = Batcher::new(FlushPolicy {
            max_rows: 100,
            max_age: Duration::from_secs(5),
        });
        let recs = records(250);
        let full = b.push(&recs, t0);
        assert_eq!(full.len(), 2);
        assert!(
            full.iter()
                .all(|(rb, why)| rb.num_rows() == 100 && *why == FlushReason::Rows)
        );
        assert_eq!(b.len(), 50);
        assert!(b.poll_age(t0 + chrono::Duration::seconds(4)).is_none());
        let (rb, why) = b.poll_age(t0 + chrono::Duration::seconds(5)).unwrap();
        assert_eq!((rb.num_rows(), why), (50, FlushReason::Age));
        assert!(b.finish().is_none());
        b.push(&recs[..7], t0);
        let (rb, why) = b.finish().unwrap();
        assert_eq!((rb.num_rows(), why), (7, FlushReason::Shutdown));
        assert_eq!(rb.schema(), flowlake_schemas::flow_schema());
    }
}
