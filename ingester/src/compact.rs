//! Compaction and retention: merge the small files of closed partitions (one atomic
//! Delta commit per partition, so readers never see rows twice or missing), drop
//! partitions past retention, vacuum removed files, and checkpoint the log.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake_core::kernel::Action;
use deltalake_core::kernel::transaction::CommitProperties;
use deltalake_core::protocol::DeltaOperation;
use deltalake_core::{FilterOp, FilterValue};
use flowlake_schemas::{PARTITION_COLUMNS, PartitionPath};
use tokio_util::sync::CancellationToken;

use crate::config::CompactConfig;
use crate::error::{Result, error_chain};
use crate::metrics::Metrics;
use crate::parquet::writer_properties;
use crate::table::{COMMIT_RETRIES, Table, TableFile};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactSummary {
    pub partitions_compacted: usize,
    pub files_removed: u64,
    pub files_added: u64,
    pub partitions_dropped: usize,
    pub files_dropped: usize,
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
    let mut summary = CompactSummary::default();
    let files = table.files()?;
    let mut by_partition: BTreeMap<PartitionPath, Vec<&TableFile>> = BTreeMap::new();
    for f in &files {
        if let Some(p) = partition_of(f) {
            by_partition.entry(p).or_default().push(f);
        }
    }

    // Retention first: no point compacting what is about to be dropped.
    let cutoff: Option<NaiveDate> = cfg
        .retention_days
        .map(|d| (now - chrono::Duration::days(i64::from(d))).date_naive());
    let expired: Vec<&TableFile> = by_partition
        .iter()
        .filter(|(p, _)| cutoff.is_some_and(|c| p.date() < c))
        .flat_map(|(_, fs)| fs.iter().copied())
        .collect();
    if let Some(cutoff) = cutoff
        && !expired.is_empty()
    {
        summary.partitions_dropped = by_partition.keys().filter(|p| p.date() < cutoff).count();
        summary.files_dropped = expired.len();
        let snapshot = table.delta().snapshot()?;
        let remove: Vec<Action> = snapshot
            .log_data()
            .into_iter()
            .filter(|f| expired.iter().any(|e| e.path == f.path()))
            .map(|f| Action::Remove(f.remove_action(true)))
            .collect();
        let predicate = format!("{} < '{}'", PARTITION_COLUMNS[0], cutoff.format("%Y-%m-%d"));
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
            partitions = summary.partitions_dropped,
            files = summary.files_dropped,
            version,
            "retention dropped partitions"
        );
    }

    let grace = chrono::Duration::from_std(cfg.grace).unwrap_or_default();
    for (partition, fs) in &by_partition {
        let closed = partition.end() + grace <= now;
        let expired = cutoff.is_some_and(|c| partition.date() < c);
        if !closed || expired || fs.len() < 2 {
            continue;
        }
        let date = partition.date_value();
        let hour = partition.hour_value();
        let filters = [
            (
                PARTITION_COLUMNS[0],
                FilterOp::Eq,
                FilterValue::Scalar(date.as_str()),
            ),
            (
                PARTITION_COLUMNS[1],
                FilterOp::Eq,
                FilterValue::Scalar(hour.as_str()),
            ),
        ];
        let (delta, metrics) = table
            .delta()
            .clone()
            .optimize()
            .with_filters(&filters)
            .with_target_size(NonZeroU64::new(cfg.target_file_bytes.max(1)).expect("positive"))
            .with_writer_properties(writer_properties())
            .with_commit_properties(CommitProperties::default().with_max_retries(COMMIT_RETRIES))
            .await?;
        drop(delta);
        summary.partitions_compacted += 1;
        summary.files_removed += metrics.num_files_removed;
        summary.files_added += metrics.num_files_added;
        tracing::info!(%partition, removed = metrics.num_files_removed, added = metrics.num_files_added, "compacted partition");
    }
    table.refresh().await?;

    let (delta, vacuumed) = table
        .delta()
        .clone()
        .vacuum()
        .with_retention_period(chrono::Duration::from_std(cfg.vacuum_after).unwrap_or_default())
        .with_enforce_retention_duration(false)
        .await?;
    drop(delta);
    summary.files_vacuumed = vacuumed.files_deleted.len();
    table.refresh().await?;

    deltalake_core::checkpoints::create_checkpoint(table.delta(), None).await?;
    summary.checkpoint_version = table.version();
    Ok(summary)
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
