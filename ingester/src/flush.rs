//! The flusher: decides when the buffer goes to the table, writes sorted Parquet,
//! commits it with the highest WAL sequence it holds, and only then lets the WAL
//! segments that commit covers and the memory go.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use deltalake_core::kernel::{Add, Transaction};
use futures::StreamExt;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Drained, FlushReason, MemoryBudget, SharedStats};
use crate::config::FlushPolicy;
use crate::error::{IngestError, Result, error_chain};
use crate::exactly_once::{self, Plan, SequencedId, TableTxns};
use crate::metrics::{Metrics, ReasonLabel};
use crate::quarantine::Quarantine;
use crate::sort::sort_plan;
use crate::table::{Appended, Table, is_txn_conflict};
use crate::wal::WalSeq;
use crate::writer::WriterHandle;

/// Times one flush plans again after a `txn` conflict before it fails (and is
/// retried as a whole, with backoff).
const TXN_CONFLICT_RETRIES: usize = 20;

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
    pub quarantine: Quarantine,
    /// When shutdown gives up committing (set by whoever cancels the flusher;
    /// `shutdown_grace` after the cancel when unset).
    pub give_up_at: Arc<OnceLock<Instant>>,
    pub shutdown_grace: Duration,
    /// The table's batch `txn`s, kept between flushes.
    pub txns: TableTxns,
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
    /// Flushes whenever the policy says so, and once more at shutdown. Fails only
    /// when shutdown could not commit everything: the WAL keeps it.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let tick =
            (self.policy.max_age / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            let reason = tokio::select! {
                () = shutdown.cancelled() => Some(FlushReason::Shutdown),
                () = self.flush_now.notified() => self.stats.get().due(&self.policy, Instant::now()),
                () = tokio::time::sleep(tick) => self.stats.get().due(&self.policy, Instant::now()),
            };
            if let Some(reason) = reason
                && let Err(e) = self.flush(reason, &shutdown).await
            {
                return Err(self.with_rest(e).await);
            }
            if reason == Some(FlushReason::Shutdown) {
                return Ok(());
            }
        }
    }

    /// Takes the buffer and commits it, retrying with backoff until it is in the
    /// table, or until shutdown's grace is over: then the records stay in the WAL
    /// (nothing is deleted that the table does not hold) and the error says so.
    async fn flush(&mut self, reason: FlushReason, shutdown: &CancellationToken) -> Result<()> {
        let mut drained = self.writer.drain().await?;
        if drained.records.is_empty() {
            return Ok(());
        }
        // The flush's sorted copy and Parquet pages count against the budget
        // while it runs.
        let held = drained.bytes;
        self.budget.force_reserve(held);
        let result = self
            .commit_with_retries(&mut drained, reason, shutdown)
            .await;
        self.budget.release(2 * held);
        self.metrics.buffer_bytes.set(self.budget.used() as i64);
        result
    }

    async fn commit_with_retries(
        &mut self,
        drained: &mut Drained,
        reason: FlushReason,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            // An attempt can hang as long as the store's own retries (minutes):
            // shutdown's grace ends it.
            let (give_up_at, grace) = (Arc::clone(&self.give_up_at), self.shutdown_grace);
            let over = grace_over(shutdown, &give_up_at, grace);
            let tried = tokio::select! {
                r = self.commit(drained, reason, attempt) => Some(r),
                () = over => None,
            };
            let e = match tried {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => e,
                None => return Err(self.give_up(drained)),
            };
            self.metrics.error("flush");
            tracing::warn!(error = %error_chain(&e), attempt, rows = drained.rows, "flush failed; retrying");
            if from_rows(&e) {
                match self.quarantine_unwritable(drained).await {
                    Ok(0) => {}
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::error!(error = %error_chain(&e), "could not quarantine; retrying the flush")
                    }
                }
            }
            attempt += 1;
            tokio::select! {
                () = tokio::time::sleep(backoff(attempt)) => {}
                () = grace_over(shutdown, &self.give_up_at, self.shutdown_grace) => {
                    return Err(self.give_up(drained));
                }
            }
        }
    }

    /// Shutdown's grace is over: what was drained stays in the WAL.
    fn give_up(&self, drained: &Drained) -> IngestError {
        let e = self.uncommitted(drained);
        tracing::error!(error = %error_chain(&e), "shutdown could not commit to the table");
        e
    }

    /// The shutdown error counting what was buffered after the failed drain too.
    async fn with_rest(&self, e: IngestError) -> IngestError {
        match (e, self.writer.drain().await) {
            (
                IngestError::Uncommitted {
                    rows,
                    first,
                    last,
                    wal_dir,
                },
                Ok(rest),
            ) => IngestError::Uncommitted {
                rows: rows + rest.rows,
                first,
                last: rest.last_seq.map_or(last, |s| s.0.max(last)),
                wal_dir,
            },
            (e, _) => e,
        }
    }

    fn uncommitted(&self, drained: &Drained) -> IngestError {
        IngestError::Uncommitted {
            rows: drained.rows,
            first: drained.records.first().map_or(0, |r| r.seq.0),
            last: drained.last_seq.map_or(0, |s| s.0),
            wal_dir: self.wal_dir.clone(),
        }
    }

    /// One attempt: the table read again (other replicas commit too), the
    /// files of the batches it does not hold yet, then the commit carrying the
    /// WAL sequence and the batches' `txn`s ([`crate::exactly_once`]); then
    /// the WAL segments the commit covers go. After a failed attempt, a commit
    /// that landed although its answer was lost is not made twice.
    async fn commit(&mut self, drained: &Drained, reason: FlushReason, attempt: u32) -> Result<()> {
        let Some(seq) = drained.last_seq else {
            return Ok(());
        };
        let started = Instant::now();
        self.table.refresh().await?;
        let already = if attempt > 0 {
            let done = self.table.app_version(self.writer_id.as_str()).await?;
            done.is_some_and(|v| v >= seq.0 as i64)
        } else {
            false
        };
        if already {
            tracing::info!(seq = seq.0, "an earlier attempt committed this flush");
        } else if drained.rows > 0 {
            let (done, plan) = self.commit_new(drained, seq).await?;
            let rows: usize = drained
                .records
                .iter()
                .zip(&plan.keep)
                .filter(|(_, keep)| **keep)
                .map(|(r, _)| r.rows)
                .sum();
            self.metrics
                .exactly_once("already_in_table", plan.committed);
            self.metrics.exactly_once("late", plan.late);
            self.metrics.exactly_once("unverifiable", plan.unverifiable);
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .flushes
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc();
            self.metrics.rows_committed.inc_by(rows as u64);
            self.metrics.files_committed.inc_by(done.files as u64);
            if plan.unverifiable > 0 {
                tracing::warn!(
                    batches = plan.unverifiable,
                    "stored batches whose slot in the table moved on to later batches; they may be stored twice"
                );
            }
            tracing::info!(
                reason = reason.as_str(),
                rows,
                already_in_table = plan.committed,
                late = plan.late,
                files = done.files,
                bytes = done.bytes,
                version = done.version,
                seq = seq.0,
                elapsed = ?started.elapsed(),
                "flushed"
            );
        }
        // Every record up to `seq` is in the table now (or quarantined).
        let removed = self.writer.committed(seq).await?;
        tracing::debug!(
            removed,
            seq = seq.0,
            "WAL segments covered by the commit removed"
        );
        Ok(())
    }

    /// Plans against the table's latest `txn`s, writes the files of the
    /// batches to store and commits; on a `txn` conflict (another replica
    /// committed batches of the same producers meanwhile) reads the table and
    /// plans again, keeping the files when the plan did not change.
    async fn commit_new(&mut self, drained: &Drained, seq: WalSeq) -> Result<(Appended, Plan)> {
        let ids: Vec<Option<SequencedId>> = drained
            .records
            .iter()
            .map(|r| r.batch_id.as_ref().and_then(SequencedId::parse))
            .collect();
        let mut written: Option<(Vec<bool>, Vec<Add>)> = None;
        let mut conflicts = 0;
        loop {
            self.txns.sync(&self.table).await?;
            let view = self.txns.view(&self.table, &ids).await?;
            let plan = exactly_once::plan(&ids, view, chrono::Utc::now().timestamp_millis());
            let adds = match &written {
                Some((keep, adds)) if *keep == plan.keep => adds.clone(),
                _ => {
                    let batches: Vec<RecordBatch> = drained
                        .records
                        .iter()
                        .zip(&plan.keep)
                        .filter(|(_, keep)| **keep)
                        .flat_map(|(r, _)| r.batches.iter().cloned())
                        .collect();
                    let adds = if batches.is_empty() {
                        Vec::new()
                    } else {
                        write_partitions(&self.table, batches).await?
                    };
                    written = Some((plan.keep.clone(), adds.clone()));
                    adds
                }
            };
            let mut txns = plan.txns.clone();
            txns.push(Transaction::new(self.writer_id.as_str(), seq.0 as i64));
            match self.table.commit_adds_with(adds, txns).await {
                Ok(done) => return Ok((done, plan)),
                Err(e) if is_txn_conflict(&e) && conflicts < TXN_CONFLICT_RETRIES => {
                    conflicts += 1;
                    self.metrics.exactly_once("txn_conflict", 1);
                    tracing::debug!(
                        conflicts,
                        "txn conflict with another replica; planning again"
                    );
                    self.table.refresh().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a flush failed for a reason in the rows: encodes each record alone
    /// and quarantines those that fail. Returns how many were set aside (none:
    /// the failure was not in any one record, and the flush is retried).
    async fn quarantine_unwritable(&mut self, drained: &mut Drained) -> Result<usize> {
        let mut bad = Vec::new();
        let mut reasons = Vec::new();
        for (i, record) in drained.records.iter().enumerate() {
            let (table, batches) = (self.table.clone(), record.batches.clone());
            let checked = tokio::task::spawn_blocking(move || {
                sort_plan(batches.into())
                    .into_iter()
                    .try_for_each(|run| table.encode_run(run).map(drop))
            })
            .await
            .unwrap_or_else(|e| Err(IngestError::Internal(format!("encoding panicked: {e}"))));
            if let Err(e) = checked {
                bad.push(i);
                reasons.push(e);
            }
        }
        for (record, reason) in drained.remove(&bad).into_iter().zip(reasons) {
            self.quarantine
                .batches(
                    record.seq,
                    record.batch_id.as_ref(),
                    &record.batches,
                    &reason,
                )
                .await?;
        }
        Ok(bad.len())
    }
}

/// Resolves when shutdown was requested and its grace is over (`give_up_at`, or
/// `grace` after the request when nobody set it).
async fn grace_over(shutdown: &CancellationToken, give_up_at: &OnceLock<Instant>, grace: Duration) {
    shutdown.cancelled().await;
    let at = *give_up_at.get_or_init(|| Instant::now() + grace);
    tokio::time::sleep_until(at.into()).await;
}

/// Whether a flush error may come from the rows (encoding), rather than from the
/// store or the table's log, which are retried as they are.
fn from_rows(e: &IngestError) -> bool {
    !matches!(
        e,
        IngestError::Table(_)
            | IngestError::ObjectStore(_)
            | IngestError::Wal { .. }
            | IngestError::ShuttingDown
    )
}
