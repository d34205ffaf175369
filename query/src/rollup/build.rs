//! Builds the rollups of closed hours that have none for the current snapshot, and
//! deletes rollups that no snapshot needs any more.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

pub use super::policy::RollupPolicy;
use super::{RollupPath, RollupSpec};
use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};
use crate::metrics::QueryMetrics;
use crate::questions::{Question, TimeRange};

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Rollup files written.
    pub built: usize,
    /// (hour, question) pairs whose rollup was already current.
    pub current: usize,
    /// Hours not closed yet.
    pub open_hours: usize,
    /// Hours whose files changed while their rollup was computed (tried again next pass).
    pub changed: usize,
    /// Stale rollup files deleted.
    pub deleted: usize,
}

fn parquet_bytes(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, Arc::clone(schema), Some(props))?;
    for batch in batches {
        let batch = RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())?;
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(out)
}

/// One pass over the table at its newest snapshot (`now` decides which hours are closed).
pub async fn build_rollups(
    engine: &QueryEngine,
    now: DateTime<Utc>,
    policy: RollupPolicy,
) -> Result<BuildReport> {
    let mut report = BuildReport::default();
    let outcome = build_pass(engine, now, policy, &mut report).await;
    let metrics = engine.metrics();
    QueryMetrics::count(&metrics.rollup_files, "built", report.built);
    QueryMetrics::count(&metrics.rollup_files, "deleted", report.deleted);
    let kind = if outcome.is_ok() { "ok" } else { "error" };
    QueryMetrics::count(&metrics.rollup_passes, kind, 1);
    outcome.map(|()| report)
}

async fn build_pass(
    engine: &QueryEngine,
    now: DateTime<Utc>,
    policy: RollupPolicy,
    report: &mut BuildReport,
) -> Result<()> {
    let Some(store) = engine.rollups() else {
        return Ok(());
    };
    engine.table().refresh_if_stale().await?;
    let Some(fingerprints) = engine.table().snapshot().fingerprints else {
        return Ok(());
    };
    store.list().await?;
    let grace = chrono::Duration::from_std(policy.grace)
        .map_err(|e| QueryError::Config(format!("rollup grace: {e}")))?;
    let mut partitions: Vec<_> = fingerprints.iter().map(|(p, f)| (*p, *f)).collect();
    partitions.sort_unstable();
    for (partition, fingerprint) in partitions {
        if partition.end() + grace > now {
            report.open_hours += 1;
            continue;
        }
        let hour = TimeRange {
            from: partition.start(),
            to: partition.end(),
        };
        for question in Question::ALL {
            let path = RollupPath {
                question,
                partition,
                fingerprint,
            };
            if store.exists(&path) {
                report.current += 1;
                continue;
            }
            let sql = RollupSpec::of(question).partial_sql(question, &hour.predicate());
            let batches = engine
                .plan(&sql)
                .await?
                .collect()
                .await
                .map_err(QueryError::Execution)?;
            // The rows must come from the files the fingerprint names.
            let now_current = engine.table().snapshot().fingerprints;
            if now_current.and_then(|f| f.get(&partition).copied()) != Some(fingerprint) {
                report.changed += 1;
                break;
            }
            let bytes = parquet_bytes(&store.schema(question), &batches)?;
            store.put(path, bytes).await?;
            report.built += 1;
        }
    }
    let keep = chrono::Duration::from_std(policy.keep_stale)
        .map_err(|e| QueryError::Config(format!("rollup keep_stale: {e}")))?;
    let current = engine
        .table()
        .snapshot()
        .fingerprints
        .unwrap_or(fingerprints);
    for (path, meta) in store.files() {
        let stale = current.get(&path.partition) != Some(&path.fingerprint);
        if stale && meta.last_modified + keep <= now {
            store.delete(&path).await?;
            report.deleted += 1;
        }
    }
    if report.built + report.deleted > 0 {
        tracing::info!(
            built = report.built,
            deleted = report.deleted,
            current = report.current,
            open_hours = report.open_hours,
            "rollups updated"
        );
    }
    Ok(())
}
