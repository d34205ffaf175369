//! The sort order of every file, computed without concatenating the buffer.
//!
//! Each string sort column is replaced by the rank of its value among the distinct
//! values of the flush (one hash lookup per row, usually skipped because sorted
//! clients repeat the previous value), so sorting compares small fixed-size keys
//! instead of strings. The sorted rows are then gathered straight from the
//! buffered batches into one batch per partition (`interleave`): the rows are
//! copied once, where concatenating and then taking copied them twice.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use flowlake_schemas::col;

use crate::error::Result;

/// The sort order of rows inside each file: partition, then the columns queries
/// filter on most, then time. Nulls first, ascending, as Arrow's default order.
pub const SORT_COLUMNS: [&str; 6] = [
    col::DATE,
    col::HOUR,
    col::SRC_NAMESPACE,
    col::SRC_POD,
    col::DST_NAMESPACE,
    col::INTERVAL_START,
];

/// The string columns of [`SORT_COLUMNS`], ranked; the last sort column is time.
const RANKED: [&str; 5] = [
    SORT_COLUMNS[0],
    SORT_COLUMNS[1],
    SORT_COLUMNS[2],
    SORT_COLUMNS[3],
    SORT_COLUMNS[4],
];

/// One partition's rows, sorted.
#[derive(Debug)]
pub struct PartitionRun {
    pub date: String,
    pub hour: String,
    pub batch: RecordBatch,
}

/// A row's sort key: ranks of the [`RANKED`] columns (0 is null), then time
/// (`None` is null, which sorts first).
type RowKey = ([u32; 5], Option<i64>);

/// Per batch, per row: the rank of the row's value in column `name` among the
/// distinct values of all `batches` (1-based; 0 for null).
fn column_ranks(batches: &[RecordBatch], name: &str) -> Vec<Vec<u32>> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut distinct: Vec<&str> = Vec::new();
    let mut per_batch = Vec::with_capacity(batches.len());
    for batch in batches {
        let values = batch
            .column_by_name(name)
            .expect("flow schema column")
            .as_string::<i32>();
        let mut out = Vec::with_capacity(values.len());
        let mut last: Option<(&str, u32)> = None;
        for i in 0..values.len() {
            if values.is_null(i) {
                out.push(0);
                continue;
            }
            let v = values.value(i);
            let id = match last {
                Some((prev, id)) if prev == v => id,
                _ => {
                    let id = *ids.entry(v).or_insert_with(|| {
                        distinct.push(v);
                        distinct.len() as u32
                    });
                    last = Some((v, id));
                    id
                }
            };
            out.push(id);
        }
        per_batch.push(out);
    }
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    order.sort_unstable_by_key(|&i| distinct[i as usize]);
    let mut rank = vec![0u32; distinct.len() + 1];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize + 1] = r as u32 + 1;
    }
    for out in &mut per_batch {
        for id in out.iter_mut() {
            *id = rank[*id as usize];
        }
    }
    per_batch
}

/// One partition's rows in sort order, as positions in the buffered batches.
#[derive(Debug)]
pub struct SortedPartition {
    pub date: String,
    pub hour: String,
    /// `(batch, row)` of each row, in file order.
    rows: Vec<(usize, usize)>,
}

impl SortedPartition {
    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Copies the partition's rows out of `batches` (the slice the plan was made
    /// from), in order.
    pub fn gather(self, batches: &[RecordBatch]) -> Result<PartitionRun> {
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let batch = interleave_record_batch(&refs, &self.rows)?;
        Ok(PartitionRun {
            date: self.date,
            hour: self.hour,
            batch,
        })
    }
}

/// The order of every row by [`SORT_COLUMNS`], split by `date`/`hour` partition.
pub fn sort_plan(batches: &[RecordBatch]) -> Vec<SortedPartition> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total == 0 {
        return Vec::new();
    }
    let ranks: Vec<Vec<Vec<u32>>> = RANKED.iter().map(|c| column_ranks(batches, c)).collect();
    let mut rows: Vec<(RowKey, u32, u32)> = Vec::with_capacity(total);
    for (b, batch) in batches.iter().enumerate() {
        let time = batch
            .column_by_name(SORT_COLUMNS[5])
            .expect("flow schema column")
            .as_primitive::<TimestampMicrosecondType>();
        for (r, t) in time.iter().enumerate() {
            let key = std::array::from_fn(|c| ranks[c][b][r]);
            rows.push(((key, t), b as u32, r as u32));
        }
    }
    drop(ranks);
    rows.sort_unstable_by_key(|row| row.0);

    let value = |name: &str, (b, r): (u32, u32)| {
        let a = batches[b as usize]
            .column_by_name(name)
            .expect("flow schema column")
            .as_string::<i32>();
        if a.is_null(r as usize) {
            String::new()
        } else {
            a.value(r as usize).to_string()
        }
    };
    let mut partitions = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let partition = &rows[start].0.0[..2];
        let end = start + rows[start..].partition_point(|r| &r.0.0[..2] == partition);
        let first = (rows[start].1, rows[start].2);
        partitions.push(SortedPartition {
            date: value(col::DATE, first),
            hour: value(col::HOUR, first),
            rows: rows[start..end]
                .iter()
                .map(|&(_, b, r)| (b as usize, r as usize))
                .collect(),
        });
        start = end;
    }
    partitions
}

/// Sorts the buffered batches by [`SORT_COLUMNS`] and splits them into one batch
/// per `date`/`hour` partition.
pub fn sort_into_partitions(batches: &[RecordBatch]) -> Result<Vec<PartitionRun>> {
    sort_plan(batches)
        .into_iter()
        .map(|p| p.gather(batches))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
    use flowlake_schemas::flow_schema;

    /// The reference order: concatenate, lexsort by [`SORT_COLUMNS`], take.
    fn lexsorted(batches: &[RecordBatch]) -> RecordBatch {
        let all = concat_batches(&flow_schema(), batches).unwrap();
        let keys: Vec<SortColumn> = SORT_COLUMNS
            .iter()
            .map(|c| SortColumn {
                values: all.column_by_name(c).unwrap().clone(),
                options: None,
            })
            .collect();
        take_record_batch(&all, &lexsort_to_indices(&keys, None).unwrap()).unwrap()
    }

    fn sort_keys(batch: &RecordBatch) -> RecordBatch {
        let idx: Vec<usize> = SORT_COLUMNS
            .iter()
            .map(|c| batch.schema().index_of(c).unwrap())
            .collect();
        batch.project(&idx).unwrap()
    }

    #[test]
    fn same_order_as_lexsort_and_split_by_hour() {
        let batch = crate::testdata::flows(3000, 3);
        let parts = [batch.slice(0, 1000), batch.slice(1000, 2000)];
        let runs = sort_into_partitions(&parts).unwrap();
        assert!(runs.len() >= 3, "{} runs", runs.len());
        let ours: Vec<RecordBatch> = runs.iter().map(|r| r.batch.clone()).collect();
        let ours = concat_batches(&flow_schema(), &ours).unwrap();
        // Ties on the sort key may come in any order: compare the keys row by row,
        // and the multiset of whole rows by sums of a value column.
        assert_eq!(sort_keys(&ours), sort_keys(&lexsorted(&parts)));
        assert_eq!(ours.num_rows(), 3000);
        for run in &runs {
            let dates = run
                .batch
                .column_by_name(col::DATE)
                .unwrap()
                .as_string::<i32>();
            let hours = run
                .batch
                .column_by_name(col::HOUR)
                .unwrap()
                .as_string::<i32>();
            assert!(dates.iter().all(|d| d == Some(run.date.as_str())));
            assert!(hours.iter().all(|h| h == Some(run.hour.as_str())));
        }
        let bytes = |b: &RecordBatch| -> i64 {
            arrow::compute::sum(
                b.column_by_name(col::BYTES)
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>(),
            )
            .unwrap_or(0)
        };
        assert_eq!(bytes(&ours), bytes(&batch));
    }

    #[test]
    fn nulls_sort_first_like_lexsort() {
        let batch = crate::testdata::flows(500, 7);
        let idx = batch.schema().index_of(col::SRC_POD).unwrap();
        let pods = batch.column(idx).as_string::<i32>();
        let nulled: arrow::array::StringArray = pods
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 3 == 0 { None } else { v })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[idx] = std::sync::Arc::new(nulled);
        let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
        let runs = sort_into_partitions(std::slice::from_ref(&batch)).unwrap();
        let ours: Vec<RecordBatch> = runs.into_iter().map(|r| r.batch).collect();
        let ours = concat_batches(&flow_schema(), &ours).unwrap();
        assert_eq!(sort_keys(&ours), sort_keys(&lexsorted(&[batch])));
    }

    #[test]
    fn empty_input_has_no_runs() {
        assert!(sort_into_partitions(&[]).unwrap().is_empty());
        let batch = crate::testdata::flows(10, 1);
        assert!(
            sort_into_partitions(&[batch.slice(0, 0)])
                .unwrap()
                .is_empty()
        );
    }
}
