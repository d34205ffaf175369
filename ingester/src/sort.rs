//! The sort order of every file, computed without concatenating the buffer.
//!
//! Each string sort column is replaced by the rank of its value among the distinct
//! values of the flush (one hash lookup per row, usually skipped because sorted
//! clients repeat the previous value), so sorting compares small fixed-size keys
//! instead of strings. The sorted rows are then gathered straight from the
//! buffered batches into one batch per partition (`interleave`): the rows are
//! copied once, where concatenating and then taking copied them twice.

use std::collections::HashMap;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use arrow::error::ArrowError;
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
    /// from), in order: string columns by [`gather_utf8`], the others by Arrow's
    /// `interleave`.
    pub fn gather(self, batches: &[RecordBatch]) -> Result<PartitionRun> {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => flowlake_schemas::flow_schema(),
        };
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                let strings: Option<Vec<&StringArray>> =
                    arrays.iter().map(|a| a.as_string_opt::<i32>()).collect();
                match strings {
                    Some(strings) if schema.field(c).data_type() == &DataType::Utf8 => {
                        gather_utf8(&strings, &self.rows)
                    }
                    _ => interleave(&arrays, &self.rows),
                }
            })
            .collect::<std::result::Result<Vec<_>, ArrowError>>()?;
        let batch = RecordBatch::try_new(schema, columns)?;
        Ok(PartitionRun {
            date: self.date,
            hour: self.hour,
            batch,
        })
    }
}

/// Values this long or shorter are copied as one fixed 16-byte move (the string
/// columns are mostly short names and addresses) instead of a `memcpy` call.
const SHORT: usize = 16;

/// `rows` (`(array, row)`) of string arrays, in order: the same result as Arrow's
/// `interleave`, with the value bytes of short strings copied as fixed 16-byte
/// moves (over-reading the source and over-writing the spare capacity of the
/// destination, both within bounds) rather than one `memcpy` call per value, and
/// no bounds checks per value: `rows` are checked once, up front.
fn gather_utf8(
    arrays: &[&StringArray],
    rows: &[(usize, usize)],
) -> std::result::Result<ArrayRef, ArrowError> {
    if let Some(&(a, r)) = rows
        .iter()
        .find(|&&(a, r)| a >= arrays.len() || r >= arrays[a].len())
    {
        return Err(ArrowError::InvalidArgumentError(format!(
            "gather: row {r} of array {a} does not exist"
        )));
    }
    let src: Vec<(&[i32], &[u8])> = arrays
        .iter()
        .map(|a| (a.value_offsets(), a.value_data()))
        .collect();
    // SAFETY (every `get_unchecked` below): `a < arrays.len() == src.len()` and
    // `r < arrays[a].len()` were checked above, a string array of length `n` has
    // `n + 1` offsets, and its offsets lie within its value data.
    let bounds = |a: usize, r: usize| unsafe {
        let (o, data) = src.get_unchecked(a);
        let start = *o.get_unchecked(r) as usize;
        let end = *o.get_unchecked(r + 1) as usize;
        (data, start, end)
    };
    let mut offsets: Vec<i32> = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    let mut len = 0usize;
    for &(a, r) in rows {
        let (_, start, end) = bounds(a, r);
        len += end - start;
        offsets.push(i32::try_from(len).map_err(|_| ArrowError::OffsetOverflowError(len))?);
    }
    // SHORT bytes of slack: a short value's 16-byte move may reach past `len`.
    let mut values: Vec<u8> = Vec::with_capacity(len + SHORT);
    let dst = values.as_mut_ptr();
    let mut at = 0usize;
    for &(a, r) in rows {
        let (data, start, end) = bounds(a, r);
        let n = end - start;
        // SAFETY: `at + n <= len` (the offsets pass summed the same lengths) and
        // the capacity is `len + SHORT`, so either write stays inside the
        // allocation; the 16-byte read is taken only when `start + SHORT` is
        // within `data`. Bytes written past `at + n` are overwritten by the next
        // value or cut off by `set_len`. Source and destination never overlap.
        unsafe {
            if n <= SHORT && start + SHORT <= data.len() {
                std::ptr::copy_nonoverlapping(data.as_ptr().add(start), dst.add(at), SHORT);
            } else {
                std::ptr::copy_nonoverlapping(data.as_ptr().add(start), dst.add(at), n);
            }
        }
        at += n;
    }
    debug_assert_eq!(at, len);
    // SAFETY: every byte in `0..len` was written above (each value's bytes at
    // its offset, in order).
    unsafe { values.set_len(len) };
    let nulls: Vec<Option<&BooleanBuffer>> = arrays
        .iter()
        .map(|a| a.nulls().map(NullBuffer::inner))
        .collect();
    let nulls = nulls.iter().any(Option::is_some).then(|| {
        NullBuffer::new(BooleanBuffer::collect_bool(rows.len(), |i| {
            // SAFETY: `i < rows.len()`; `a` and `r` were checked above and a
            // validity buffer covers its array.
            unsafe {
                let (a, r) = *rows.get_unchecked(i);
                nulls.get_unchecked(a).is_none_or(|b| b.value_unchecked(r))
            }
        }))
    });
    // SAFETY: the offsets are monotonic and end at `values.len()`; every value is
    // a copy of a whole value of a valid (UTF-8 checked) string array, so each
    // slice between offsets is valid UTF-8.
    let array = unsafe {
        StringArray::new_unchecked(
            OffsetBuffer::new_unchecked(offsets.into()),
            values.into(),
            nulls,
        )
    };
    Ok(Arc::new(array))
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

    /// The string gather gives exactly what Arrow's `interleave` gives, nulls,
    /// empty, short, 16-byte and long values, and values at the end of their
    /// source buffer included.
    #[test]
    fn string_gather_equals_interleave() {
        let a: StringArray = vec![
            Some("a"),
            None,
            Some(""),
            Some("exactly-16-bytes"),
            Some("a value longer than sixteen bytes"),
            Some("end"),
        ]
        .into_iter()
        .collect();
        let b: StringArray = vec![Some("x"), Some("0123456789abcdefg"), Some("tail")]
            .into_iter()
            .collect();
        let rows: Vec<(usize, usize)> = vec![
            (0, 5),
            (1, 2),
            (0, 1),
            (0, 3),
            (1, 1),
            (0, 4),
            (0, 0),
            (1, 0),
            (0, 2),
            (0, 5),
            (1, 2),
        ];
        let ours = gather_utf8(&[&a, &b], &rows).unwrap();
        let theirs = interleave(&[&a as &dyn Array, &b], &rows).unwrap();
        assert_eq!(ours.as_string::<i32>(), theirs.as_string::<i32>());
        assert_eq!(ours.null_count(), 1);
        assert!(gather_utf8(&[&a, &b], &[(1, 3)]).is_err());
        assert!(gather_utf8(&[&a, &b], &[(2, 0)]).is_err());
        let no_nulls = gather_utf8(&[&b], &[(0, 2), (0, 0), (0, 1)]).unwrap();
        assert_eq!(no_nulls.null_count(), 0);
        assert!(no_nulls.nulls().is_none());
        let values: Vec<_> = no_nulls.as_string::<i32>().iter().flatten().collect();
        assert_eq!(values, ["tail", "x", "0123456789abcdefg"]);
    }

    /// Every column of a gathered partition equals Arrow's `interleave` of it.
    #[test]
    fn gather_equals_interleave_record_batch() {
        let batch = crate::testdata::flows(2000, 2);
        let parts = [batch.slice(0, 700), batch.slice(700, 1300)];
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        for p in sort_plan(&parts) {
            let want = arrow::compute::interleave_record_batch(&refs, &p.rows).unwrap();
            assert_eq!(p.gather(&parts).unwrap().batch, want);
        }
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
