//! Compaction and retention: merge the small files of closed partitions into one
//! file in the ingester's sort order ([`merge`]; one atomic Delta commit per
//! partition, so readers never see rows twice or missing), drop
//! partitions past retention (of the `losses` table beside it too), vacuum
//! removed files, and checkpoint the log.

mod merge;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake_core::kernel::Action;
use deltalake_core::protocol::DeltaOperation;
use flowlake_schemas::losses::LOSSES_DIR;
use flowlake_schemas::{PARTITION_COLUMNS, PartitionPath};
use tokio_util::sync::CancellationToken;

use crate::config::CompactConfig;
use crate::error::{Result, error_chain};
use crate::metrics::Metrics;
use crate::table::{Table, TableFile, is_txn_conflict};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactSummary {
    pub partitions_compacted: usize,
    pub files_removed: u64,
    pub files_added: u64,
    pub partitions_dropped: usize,
    pub files_dropped: usize,
    /// Hour partitions of the `losses` table dropped by the same retention.
    pub loss_partitions_dropped: usize,
    pub files_vacuumed: usize,
    pub checkpoint_version: Option<u64>,
}

fn partition_of(f: &TableFile) -> Option<PartitionPath> {
    format!("date={}/hour={}", f.date, f.hour).parse().ok()
}

/// One compaction + retention + vacuum + checkpoint pass at time `now`.
pub async fn compact_once(
    table: &mut Table,
    cfg: &CompactConfig,
    now: DateTime<Utc>,
) -> Result<CompactSummary> {
    table.refresh().await?;
    crate::exactly_once::ensure_txn_retention(table, cfg.txn_retention).await?;
    let mut summary = CompactSummary::default();
    let files = table.files()?;
    let mut by_partition: BTreeMap<PartitionPath, Vec<&TableFile>> = BTreeMap::new();
    for f in &files {
        if let Some(p) = partition_of(f) {
            by_partition.entry(p).or_default().push(f);
        }
    }

    // Retention first: no point compacting what is about to be dropped. An hour
    // partition goes once the hour ended more than the retention ago.
    let cutoff: Option<DateTime<Utc>> = cfg.retention().map(|r| now - r);
    let is_expired = |p: &PartitionPath| cutoff.is_some_and(|c| p.end() <= c);
    if let Some(cutoff) = cutoff {
        (summary.partitions_dropped, summary.files_dropped) = drop_expired(table, cutoff).await?;
    }
    let grace = chrono::Duration::from_std(cfg.grace).unwrap_or_default();
    for (partition, fs) in &by_partition {
        let closed = partition.end() + grace <= now;
        let expired = is_expired(partition);
        if !closed || expired || fs.len() < 2 {
            continue;
        }
        let merged = match merge::merge_partition(table, partition, fs, cfg.target_file_bytes).await
        {
            Ok(m) => m,
            Err(e) if is_txn_conflict(&e) => {
                tracing::info!(%partition, "another compaction merged this partition first");
                table.refresh().await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if merged.removed == 0 {
            continue;
        }
        summary.partitions_compacted += 1;
        summary.files_removed += merged.removed;
        summary.files_added += merged.added;
        tracing::info!(%partition, removed = merged.removed, added = merged.added, "compacted partition");
    }
    table.refresh().await?;

    summary.files_vacuumed = vacuum(table, cfg.vacuum_after).await?;

    // The losses table beside it keeps the same hours.
    if let Some(cutoff) = cutoff
        && let Some(mut losses) = table.beside(LOSSES_DIR).await?
    {
        (summary.loss_partitions_dropped, _) = drop_expired(&mut losses, cutoff).await?;
        vacuum(&mut losses, cfg.vacuum_after).await?;
    }

    deltalake_core::checkpoints::create_checkpoint(table.delta(), None).await?;
    summary.checkpoint_version = table.version();
    Ok(summary)
}

/// Drops the hour partitions of `table` that ended at or before `cutoff`, in
/// one commit; returns how many partitions and files went.
async fn drop_expired(table: &mut Table, cutoff: DateTime<Utc>) -> Result<(usize, usize)> {
    let files = table.files()?;
    let expired: Vec<&TableFile> = files
        .iter()
        .filter(|f| partition_of(f).is_some_and(|p| p.end() <= cutoff))
        .collect();
    if expired.is_empty() {
        return Ok((0, 0));
    }
    let partitions: BTreeSet<PartitionPath> =
        expired.iter().filter_map(|f| partition_of(f)).collect();
    let snapshot = table.delta().snapshot()?;
    let remove: Vec<Action> = snapshot
        .log_data()
        .into_iter()
        .filter(|f| expired.iter().any(|e| e.path == f.path()))
        .map(|f| Action::Remove(f.remove_action(true)))
        .collect();
    // Partitions starting before the cutoff's hour.
    let (date, hour) = (cutoff.format("%Y-%m-%d"), cutoff.format("%H"));
    let (d, h) = (PARTITION_COLUMNS[0], PARTITION_COLUMNS[1]);
    let predicate = format!("{d} < '{date}' OR ({d} = '{date}' AND {h} < '{hour}')");
    let version = table
        .commit(
            remove,
            Vec::new(),
            DeltaOperation::Delete {
                predicate: Some(predicate),
            },
        )
        .await?;
    tracing::info!(
        table = %table.url(),
        partitions = partitions.len(),
        files = expired.len(),
        version,
        "retention dropped partitions"
    );
    Ok((partitions.len(), expired.len()))
}

/// Deletes the files of `table` removed at least `after` ago; returns how many.
async fn vacuum(table: &mut Table, after: Duration) -> Result<usize> {
    let (delta, vacuumed) = table
        .delta()
        .clone()
        .vacuum()
        .with_retention_period(chrono::Duration::from_std(after).unwrap_or_default())
        .with_enforce_retention_duration(false)
        .await?;
    drop(delta);
    table.refresh().await?;
    Ok(vacuumed.files_deleted.len())
}

/// Runs [`compact_once`] every `every` until `stop` is cancelled.
pub async fn run_scheduled(
    mut table: Table,
    cfg: CompactConfig,
    every: Duration,
    metrics: Metrics,
    clock: crate::writer::Clock,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match compact_once(&mut table, &cfg, clock()).await {
            Ok(s) => {
                metrics.compactions.inc();
                metrics.compacted_files.inc_by(s.files_removed);
            }
            Err(e) => {
                metrics.error("compact");
                tracing::warn!(error = %error_chain(&e), "compaction pass failed");
            }
        }
    }
}
