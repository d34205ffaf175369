//! The flusher: decides when the buffer goes to the table, writes sorted Parquet,
//! commits it, and only then lets the WAL segments and memory go.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use deltalake_core::kernel::Add;
use futures::StreamExt;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Drained, FlushReason, MemoryBudget, SharedStats};
use crate::config::FlushPolicy;
use crate::error::{IngestError, Result, error_chain};
use crate::metrics::{Metrics, ReasonLabel};
use crate::sort::sort_plan;
use crate::table::Table;
use crate::wal::Wal;
use crate::writer::WriterHandle;

/// Identity of this ingester in the table's application transactions; kept in
/// the WAL directory so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterId(String);

impl WriterId {
    const FILE: &'static str = "ingester.id";

    /// Reads the id from `wal_dir`, creating it on first start.
    pub fn load_or_create(wal_dir: &std::path::Path) -> Result<Self> {
        let path = wal_dir.join(Self::FILE);
        let io = |source| crate::error::IngestError::Wal {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(wal_dir).map_err(io)?;
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(WriterId(s.trim().to_string())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let id = format!("flowlake-ingester-{}", uuid::Uuid::new_v4());
        let tmp = wal_dir.join("ingester.id.tmp");
        std::fs::write(&tmp, &id)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io)?;
        crate::wal::sync_dir(wal_dir)?;
        Ok(WriterId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct Flusher {
    pub writer: WriterHandle,
    pub table: Table,
    pub writer_id: WriterId,
    pub wal_dir: PathBuf,
    pub stats: Arc<SharedStats>,
    pub policy: FlushPolicy,
    pub flush_now: Arc<Notify>,
    pub budget: Arc<MemoryBudget>,
    pub metrics: Metrics,
    pub retries_on_shutdown: usize,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(7))).min(Duration::from_secs(10))
}

/// Sorts the drained rows and writes one Parquet file per partition, several
/// partitions at once on blocking threads (gathering rows and encoding Parquet are
/// seconds of CPU per flush: they must not hold up the runtime's workers, which
/// keep serving and acknowledging requests meanwhile).
async fn write_partitions(table: &Table, batches: Vec<RecordBatch>) -> Result<Vec<Add>> {
    let batches: Arc<[RecordBatch]> = batches.into();
    let started = Instant::now();
    let plan = tokio::task::spawn_blocking(move || sort_plan(batches))
        .await
        .map_err(|e| IngestError::Internal(format!("sort task: {e}")))?;
    tracing::debug!(partitions = plan.len(), elapsed = ?started.elapsed(), "flush sorted");
    let handle = Handle::current();
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        // A current-thread runtime (unit tests) cannot drive IO from other threads.
        let mut adds = Vec::new();
        for run in plan {
            adds.extend(table.write_run(run).await?);
        }
        return Ok(adds);
    }
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    let written: Vec<Result<Vec<Add>>> = futures::stream::iter(plan)
        .map(|run| {
            let (table, handle) = (table.clone(), handle.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let (rows, hour) = (run.num_rows(), run.hour.clone());
                    let adds = handle.block_on(table.write_run(run));
                    tracing::debug!(rows, hour, elapsed = ?started.elapsed(), "partition written");
                    adds
                })
                .await
                .map_err(|e| IngestError::Internal(format!("write task: {e}")))?
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut adds = Vec::new();
    for w in written {
        adds.extend(w?);
    }
    Ok(adds)
}

impl Flusher {
    /// Flushes whenever the policy says so, and once more at shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tick =
            (self.policy.max_age / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            let reason = tokio::select! {
                () = shutdown.cancelled() => Some(FlushReason::Shutdown),
                () = self.flush_now.notified() => self.stats.get().due(&self.policy, Instant::now()),
                () = tokio::time::sleep(tick) => self.stats.get().due(&self.policy, Instant::now()),
            };
            if let Some(reason) = reason {
                self.flush(reason, &shutdown).await;
            }
            if reason == Some(FlushReason::Shutdown) {
                break;
            }
        }
    }

    /// Takes the buffer and commits it, retrying with backoff until it is in the
    /// table (or, at shutdown, leaving it to the WAL after a few attempts).
    async fn flush(&mut self, reason: FlushReason, shutdown: &CancellationToken) {
        let drained = match self.writer.drain().await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "could not drain the buffer");
                return;
            }
        };
        let mut attempt = 0;
        loop {
            match self.commit(&drained, reason).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.error("flush");
                    tracing::warn!(error = %error_chain(&e), attempt, rows = drained.rows, "flush failed; retrying");
                    attempt += 1;
                    if shutdown.is_cancelled() && attempt as usize > self.retries_on_shutdown {
                        tracing::error!(
                            rows = drained.rows,
                            "giving up at shutdown; the WAL keeps the data for the next start"
                        );
                        return;
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    if let Err(e) = self.table.refresh().await {
                        tracing::warn!(error = %error_chain(&e), "table refresh failed");
                    }
                }
            }
        }
    }

    async fn commit(&mut self, drained: &Drained, reason: FlushReason) -> Result<()> {
        let started = Instant::now();
        if let Some(seq) = drained.last_seq.filter(|_| drained.rows > 0) {
            let adds = write_partitions(&self.table, drained.batches.clone()).await?;
            let done = self
                .table
                .commit_adds(adds, Some((self.writer_id.as_str(), seq.0 as i64)))
                .await?;
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .flushes
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc();
            self.metrics.rows_committed.inc_by(drained.rows as u64);
            self.metrics.files_committed.inc_by(done.files as u64);
            tracing::info!(
                reason = reason.as_str(),
                rows = drained.rows,
                files = done.files,
                bytes = done.bytes,
                version = done.version,
                elapsed = ?started.elapsed(),
                "flushed"
            );
        }
        let removed = Wal::remove_before(&self.wal_dir, drained.seal)?;
        self.budget.release(drained.bytes);
        self.metrics.buffer_bytes.set(self.budget.used() as i64);
        self.metrics
            .wal_bytes
            .set(Wal::disk_bytes(&self.wal_dir) as i64);
        tracing::debug!(removed, "WAL segments removed after commit");
        Ok(())
    }
}
