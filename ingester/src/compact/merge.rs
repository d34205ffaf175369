//! Merging one partition's files into one, in the ingester's sort order
//! ([`crate::sort::SORT_COLUMNS`]), written by the ingester's own Parquet writer
//! (same statistics, bloom filters and page index), and swapped in by one
//! commit: the new file's `add` and the old files' `remove`s, all with
//! `dataChange = false` (no row changed, so incremental exports skip them).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use deltalake_core::kernel::Action;
use deltalake_core::protocol::DeltaOperation;
use flowlake_schemas::{PARTITION_COLUMNS, PartitionPath};
use object_store::ObjectStoreExt as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{IngestError, Result};
use crate::sort::{PartitionRun, sort_plan};
use crate::table::{Table, TableFile};

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
    let snapshot = table.delta().snapshot()?;
    let removes: Vec<Action> = snapshot
        .log_data()
        .into_iter()
        .filter(|f| files.iter().any(|e| e.path == f.path()))
        .map(|f| Action::Remove(f.remove_action(false)))
        .collect();
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
    table
        .commit(
            actions,
            Vec::new(),
            DeltaOperation::Optimize {
                predicate: Some(predicate),
                target_size: 0,
            },
        )
        .await?;
    Ok(merged)
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
