//! Merging one partition's files into one, in the ingester's sort order
//! ([`crate::sort::SORT_COLUMNS`]), written by the ingester's own Parquet writer
//! (same statistics, bloom filters and page index), and swapped in by one
//! commit: the new file's `add` and the old files' `remove`s, all with
//! `dataChange = false` (no row changed, so incremental exports skip them).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use deltalake_core::kernel::{Action, Transaction};
use deltalake_core::protocol::DeltaOperation;
use flowlake_schemas::{PARTITION_COLUMNS, PartitionPath};
use object_store::ObjectStoreExt as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{IngestError, Result};
use crate::sort::{PartitionRun, sort_plan};
use crate::table::{Table, TableFile};

/// Prefix of the app id of a partition's compaction `txn`.
pub const COMPACT_APP_PREFIX: &str = "flowlake-compact/";

/// Files removed and added by one merge.
pub struct Merged {
    pub removed: u64,
    pub added: u64,
}

/// Reads `files` (all of `partition`), sorts their rows, writes them as one
/// file (several consecutive ones in the order when the input is larger than
/// `target_bytes`) and commits the swap.
pub async fn merge_partition(
    table: &mut Table,
    partition: &PartitionPath,
    files: &[&TableFile],
    target_bytes: u64,
) -> Result<Merged> {
    let (date, hour) = (partition.date_value(), partition.hour_value());
    // Another replica may have merged (or retention dropped) these files since
    // the pass listed them.
    table.refresh().await?;
    if active_removes(table, files)?.len() != files.len() {
        tracing::info!(%partition, "files changed since the pass began; left to the next pass");
        return Ok(Merged {
            removed: 0,
            added: 0,
        });
    }
    let store = table.delta().object_store();
    let mut batches = Vec::new();
    for f in files {
        let path = object_store::path::Path::from(f.path.as_str());
        let bytes = store.get(&path).await?.bytes().await?;
        let (date, hour) = (date.clone(), hour.clone());
        let read = tokio::task::spawn_blocking(move || read_file(bytes, &date, &hour))
            .await
            .map_err(|e| IngestError::Internal(format!("read task: {e}")))??;
        batches.extend(read);
    }
    let runs = tokio::task::spawn_blocking(move || sort_plan(batches.into()))
        .await
        .map_err(|e| IngestError::Internal(format!("sort task: {e}")))?;
    let input: u64 = files.iter().map(|f| f.size.max(0) as u64).sum();
    let rows: usize = runs.iter().map(PartitionRun::num_rows).sum();
    let per_file = (rows as u128 * u128::from(target_bytes.max(1)) / u128::from(input.max(1)))
        .clamp(1, usize::MAX as u128) as usize;
    let mut adds = Vec::new();
    for run in runs.into_iter().flat_map(|r| split(r, per_file)) {
        for mut add in table.write_run(run).await? {
            add.data_change = false;
            adds.push(add);
        }
    }
    // The commit's snapshot must still hold every input file: later commits are
    // then checked by the conflict checker (the `txn` below, retention's removes).
    let removes = active_removes(table, files)?;
    if removes.len() != files.len() {
        return Err(IngestError::Internal(format!(
            "{partition}: input files removed while merging; the merged file is not committed"
        )));
    }
    let merged = Merged {
        removed: removes.len() as u64,
        added: adds.len() as u64,
    };
    let mut actions = removes;
    actions.extend(adds.into_iter().map(Action::Add));
    let predicate = format!(
        "{} = '{date}' AND {} = '{hour}'",
        PARTITION_COLUMNS[0], PARTITION_COLUMNS[1]
    );
    // Removes with dataChange = false do not conflict in deltalake's checker,
    // so two replicas compacting the same partition at once would both commit
    // (every row twice). A `txn` per partition makes them conflict: the second
    // fails with ConcurrentTransaction and leaves the partition to the first.
    let read = table.version().unwrap_or(0);
    let txn = Transaction::new_with_last_update(
        format!("{COMPACT_APP_PREFIX}{partition}"),
        read as i64 + 1,
        Some(chrono::Utc::now().timestamp_millis()),
    );
    table
        .commit(
            actions,
            vec![txn],
            DeltaOperation::Optimize {
                predicate: Some(predicate),
                target_size: 0,
            },
        )
        .await?;
    Ok(merged)
}

/// `remove` actions (dataChange = false) of those of `files` active in the
/// table's snapshot.
fn active_removes(table: &Table, files: &[&TableFile]) -> Result<Vec<Action>> {
    let snapshot = table.delta().snapshot()?;
    Ok(snapshot
        .log_data()
        .into_iter()
        .filter(|f| files.iter().any(|e| e.path == f.path()))
        .map(|f| Action::Remove(f.remove_action(false)))
        .collect())
}

/// `run` as consecutive runs of at most `rows` rows each.
fn split(run: PartitionRun, rows: usize) -> Vec<PartitionRun> {
    if run.num_rows() <= rows {
        return vec![run];
    }
    run.rows
        .chunks(rows)
        .map(|chunk| PartitionRun {
            date: run.date.clone(),
            hour: run.hour.clone(),
            rows: chunk.to_vec(),
            batches: Arc::clone(&run.batches),
            interned: Arc::clone(&run.interned),
        })
        .collect()
}

/// A data file's rows in the flow schema (its partition values as columns).
fn read_file(bytes: bytes::Bytes, date: &str, hour: &str) -> Result<Vec<RecordBatch>> {
    let internal =
        |e: &dyn std::fmt::Display| IngestError::Internal(format!("reading a data file: {e}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| internal(&e))?
        .build()
        .map_err(|e| internal(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| internal(&e))?;
        let n = batch.num_rows();
        let mut fields = batch.schema().fields().to_vec();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (name, value) in PARTITION_COLUMNS.iter().zip([date, hour]) {
            fields.push(Arc::new(Field::new(*name, DataType::Utf8, false)));
            columns.push(Arc::new(StringArray::from(vec![value; n])));
        }
        let full = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| internal(&e))?;
        out.push(flowlake_schemas::conform_batch(&full).map_err(|e| internal(&e))?);
    }
    Ok(out)
}
