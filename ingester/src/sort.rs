//! The sort order of every file, computed without concatenating the buffer.
//!
//! The flush's string and map columns are interned first ([`crate::intern`]):
//! each row gets the rank of its value. Sorting compares the ranks of the sort
//! columns, small fixed-size keys, instead of strings. Each partition's rows are
//! then a [`PartitionRun`]: positions in the buffered batches, in file order,
//! gathered as the file is written.

use std::sync::Arc;

use arrow::array::{Array, AsArray, PrimitiveArray};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use flowlake_schemas::col;

use crate::gather::RowRef;
use crate::intern::{Interned, intern_columns};
pub use crate::run::PartitionRun;

/// The sort order of rows inside each file: partition, then the columns queries
/// filter on most, then time. Nulls first, ascending, as Arrow's default order.
pub const SORT_COLUMNS: [&str; RANKED + 1] = [
    col::DATE,
    col::HOUR,
    col::SRC_NAMESPACE,
    col::SRC_POD,
    col::DST_NAMESPACE,
    col::DST_POD,
    col::INTERVAL_START,
];

/// How many of the [`SORT_COLUMNS`] are strings, ranked; the last one is time.
const RANKED: usize = 6;

/// The order of every row by [`SORT_COLUMNS`], split by `date`/`hour` partition.
pub fn sort_plan(batches: Arc<[RecordBatch]>) -> Vec<PartitionRun> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total == 0 {
        return Vec::new();
    }
    let interned = Arc::new(intern_columns(&batches));
    let schema = batches[0].schema();
    let ranked: Vec<&Interned> = SORT_COLUMNS[..RANKED]
        .iter()
        .map(|c| {
            let i = schema.index_of(c).expect("flow schema column");
            interned[i].as_ref().expect("sort columns are strings")
        })
        .collect();
    let times: Vec<&PrimitiveArray<TimestampMicrosecondType>> = batches
        .iter()
        .map(|b| {
            b.column_by_name(SORT_COLUMNS[RANKED])
                .expect("flow schema column")
                .as_primitive()
        })
        .collect();
    let key = SortKey::new(&ranked, &times);
    let rows = match key.packed() {
        Some(shifts) => sort_packed(&key, &shifts, &ranked, &times),
        None => sort_wide(&ranked, &times),
    };

    let value = |c: usize, rank: u32| match rank {
        0 => String::new(),
        rank => ranked[c].value(rank).to_string(),
    };
    let partition_of = |&(b, r): &RowRef| {
        let (b, r) = (b as usize, r as usize);
        [ranked[0].rank(b, r), ranked[1].rank(b, r)]
    };
    let mut partitions = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let partition = partition_of(&rows[start]);
        let end = start + rows[start..].partition_point(|r| partition_of(r) == partition);
        partitions.push(PartitionRun {
            date: value(0, partition[0]),
            hour: value(1, partition[1]),
            rows: rows[start..end].to_vec(),
            batches: Arc::clone(&batches),
            interned: Arc::clone(&interned),
        });
        start = end;
    }
    partitions
}

/// The bits of each sort column's key: the ranks of the [`RANKED`] string columns
/// (0 is null) and the time after the flush's earliest (0 is null); and the bits of
/// a row's position in the flush (its batch, its row in the batch).
struct SortKey {
    rank_bits: [u32; RANKED],
    time_bits: u32,
    earliest: i64,
    batch_bits: u32,
    row_bits: u32,
}

impl SortKey {
    fn new(ranked: &[&Interned], times: &[&PrimitiveArray<TimestampMicrosecondType>]) -> Self {
        let rank_bits = std::array::from_fn(|c| bits(ranked[c].values.len() as u64));
        let bounds = times
            .iter()
            .filter_map(|t| arrow::compute::min(*t).zip(arrow::compute::max(*t)))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        let (earliest, latest) = bounds.unwrap_or((0, 0));
        let longest = times.iter().map(|t| t.len()).max().unwrap_or(0);
        SortKey {
            rank_bits,
            // Times shift by one so that 0 is left for null.
            time_bits: bits(latest.abs_diff(earliest).saturating_add(1)),
            earliest,
            batch_bits: bits(times.len().saturating_sub(1) as u64),
            row_bits: bits(longest.saturating_sub(1) as u64),
        }
    }

    /// The shifts of the ranks and the time in one 128-bit integer above the row's
    /// position, when they fit.
    fn packed(&self) -> Option<[u32; RANKED + 1]> {
        let total: u32 =
            self.rank_bits.iter().sum::<u32>() + self.time_bits + self.batch_bits + self.row_bits;
        if total > 128 {
            return None;
        }
        let mut shifts = [0u32; RANKED + 1];
        let mut at = total;
        for (c, bits) in self.rank_bits.iter().chain([&self.time_bits]).enumerate() {
            at -= bits;
            shifts[c] = at;
        }
        Some(shifts)
    }
}

/// Bits to store every number in `0..=max`.
fn bits(max: u64) -> u32 {
    64 - max.leading_zeros()
}

/// Every row in sort order, keys packed with the row's position into one `u128`
/// per row (`shifts` from [`SortKey::packed`]) and sorted as integers. Ties keep
/// buffer order.
fn sort_packed(
    key: &SortKey,
    shifts: &[u32; RANKED + 1],
    ranked: &[&Interned],
    times: &[&PrimitiveArray<TimestampMicrosecondType>],
) -> Vec<RowRef> {
    let total: usize = times.iter().map(|t| t.len()).sum();
    let mut keys: Vec<u128> = Vec::with_capacity(total);
    let time_key = |t: i64| u128::from(t.wrapping_sub(key.earliest) as u64 + 1) << shifts[RANKED];
    let row_bits = key.row_bits;
    let row = |k: u128, b: usize, r: usize| k | ((b as u128) << row_bits) | r as u128;
    for (b, time) in times.iter().enumerate() {
        let start = keys.len();
        let values = time.values().iter().enumerate();
        match time.nulls().filter(|n| n.null_count() > 0) {
            None => keys.extend(values.map(|(r, &t)| row(time_key(t), b, r))),
            Some(valid) => keys.extend(
                values
                    .zip(valid.iter())
                    .map(|((r, &t), v)| row(if v { time_key(t) } else { 0 }, b, r)),
            ),
        }
        for (c, ranks) in ranked.iter().enumerate() {
            if key.rank_bits[c] == 0 {
                continue; // a column of nulls only: every rank is 0
            }
            let shift = shifts[c];
            let keys = &mut keys[start..];
            ranks.batches[b].for_each(|r, rank| keys[r] |= u128::from(rank) << shift);
        }
    }
    keys.sort_unstable();
    let mask = |bits: u32| (1u128 << bits) - 1;
    let (batch_mask, row_mask) = (mask(key.batch_bits), mask(row_bits));
    keys.into_iter()
        .map(|k| (((k >> row_bits) & batch_mask) as u32, (k & row_mask) as u32))
        .collect()
}

/// Every row in sort order, keys compared column by column: for flushes whose
/// ranks, time span and positions do not fit 128 bits.
fn sort_wide(
    ranked: &[&Interned],
    times: &[&PrimitiveArray<TimestampMicrosecondType>],
) -> Vec<RowRef> {
    type RowKey = ([u32; RANKED], Option<i64>);
    let total: usize = times.iter().map(|t| t.len()).sum();
    let mut rows: Vec<(RowKey, u32, u32)> = Vec::with_capacity(total);
    for (b, time) in times.iter().enumerate() {
        for (r, t) in time.iter().enumerate() {
            let key = std::array::from_fn(|c| ranked[c].rank(b, r));
            rows.push(((key, t), b as u32, r as u32));
        }
    }
    rows.sort_unstable_by_key(|row| (row.0, row.1, row.2));
    rows.into_iter().map(|(_, b, r)| (b, r)).collect()
}

/// Sorts `batches` by [`SORT_COLUMNS`] and splits them into one run per
/// `date`/`hour` partition.
pub fn sort_into_partitions(batches: &[RecordBatch]) -> Vec<PartitionRun> {
    sort_plan(batches.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
    use arrow::datatypes::DataType;
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
        let runs = sort_into_partitions(&parts);
        assert!(runs.len() >= 3, "{} runs", runs.len());
        let ours: Vec<RecordBatch> = runs.iter().map(|r| r.plain_batch().unwrap()).collect();
        let ours = concat_batches(&flow_schema(), &ours).unwrap();
        // Ties on the sort key may come in any order: compare the keys row by row,
        // and the multiset of whole rows by sums of a value column.
        assert_eq!(sort_keys(&ours), sort_keys(&lexsorted(&parts)));
        assert_eq!(ours.num_rows(), 3000);
        for run in &runs {
            let plain = run.plain_batch().unwrap();
            let dates = plain.column_by_name(col::DATE).unwrap().as_string::<i32>();
            let hours = plain.column_by_name(col::HOUR).unwrap().as_string::<i32>();
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
        // Every third pod null; then every pod null (a sort column with no value).
        for every in [3, 1] {
            let nulled: arrow::array::StringArray = pods
                .iter()
                .enumerate()
                .map(|(i, v)| if i % every == 0 { None } else { v })
                .collect();
            let mut columns = batch.columns().to_vec();
            columns[idx] = std::sync::Arc::new(nulled);
            let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
            let runs = sort_into_partitions(std::slice::from_ref(&batch));
            let ours: Vec<RecordBatch> = runs.iter().map(|r| r.plain_batch().unwrap()).collect();
            let ours = concat_batches(&flow_schema(), &ours).unwrap();
            assert_eq!(sort_keys(&ours), sort_keys(&lexsorted(&[batch])));
        }
    }

    /// String columns are dictionaries over the flush's sorted distinct values,
    /// nulls included; keys point at the row's value.
    #[test]
    fn strings_become_sorted_dictionaries() {
        let batch = crate::testdata::flows(600, 4);
        let idx = batch.schema().index_of(col::DST_POD).unwrap();
        let pods = batch.column(idx).as_string::<i32>();
        let nulled: StringArray = pods
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 5 == 0 { None } else { v })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[idx] = Arc::new(nulled);
        let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
        let labels = batch.schema().index_of(col::SRC_LABELS).unwrap();
        for run in sort_into_partitions(std::slice::from_ref(&batch)) {
            let gathered = run.batch().unwrap();
            // Maps are dictionaries of the flush's distinct maps.
            let maps = gathered
                .column(labels)
                .as_dictionary::<arrow::datatypes::UInt32Type>();
            assert!(maps.values().len() < 100, "{} maps", maps.values().len());
            assert!(maps.values().as_map_opt().is_some());
            let dict = gathered
                .column(idx)
                .as_dictionary::<arrow::datatypes::UInt32Type>();
            let values = dict.values().as_string::<i32>();
            assert_eq!(values.null_count(), 0);
            let sorted: Vec<&str> = values.iter().flatten().collect();
            assert!(sorted.windows(2).all(|w| w[0] < w[1]), "{sorted:?}");
            assert!(dict.null_count() > 0);
        }
    }

    /// Packed keys give the order column-by-column comparison gives, also when the
    /// key is wider than 64 bits (times spread over decades); keys wider than 128
    /// bits are left to the column-by-column sort.
    #[test]
    fn packed_keys_sort_like_wide_ones() {
        let batch = crate::testdata::flows(3000, 3);
        let spread = {
            let i = batch.schema().index_of(SORT_COLUMNS[RANKED]).unwrap();
            let times: &PrimitiveArray<TimestampMicrosecondType> = batch.column(i).as_primitive();
            // Times up to 2^50 µs apart.
            let spread: PrimitiveArray<TimestampMicrosecondType> = times
                .iter()
                .enumerate()
                .map(|(r, t)| t.map(|t| t + (((r as i64 * 7919) % 1024) << 40)))
                .collect();
            let mut columns = batch.columns().to_vec();
            columns[i] = Arc::new(spread.with_timezone_opt(times.timezone()));
            RecordBatch::try_new(batch.schema(), columns).unwrap()
        };
        for (batch, wider_than_64) in [(batch, false), (spread, true)] {
            let parts = [batch.slice(0, 1200), batch.slice(1200, 1800)];
            let interned = intern_columns(&parts);
            let ranked: Vec<&Interned> = SORT_COLUMNS[..RANKED]
                .iter()
                .map(|c| {
                    interned[batch.schema().index_of(c).unwrap()]
                        .as_ref()
                        .unwrap()
                })
                .collect();
            let times: Vec<&PrimitiveArray<TimestampMicrosecondType>> = parts
                .iter()
                .map(|b| {
                    b.column_by_name(SORT_COLUMNS[RANKED])
                        .unwrap()
                        .as_primitive()
                })
                .collect();
            let key = SortKey::new(&ranked, &times);
            let width = key.rank_bits.iter().sum::<u32>() + key.time_bits;
            assert_eq!(width > 64, wider_than_64, "{width} bits");
            let shifts = key.packed().expect("test data fits 128 bits");
            assert_eq!(
                sort_packed(&key, &shifts, &ranked, &times),
                sort_wide(&ranked, &times)
            );
            // Ranks of 30 bits each (a billion distinct pods) would not fit.
            let wide = SortKey {
                rank_bits: [1, 5, 30, 30, 30, 30],
                ..key
            };
            assert!(wide.packed().is_none());
        }
    }

    /// Every column of a gathered partition equals Arrow's `interleave` of it.
    #[test]
    fn gather_equals_interleave_record_batch() {
        let batch = crate::testdata::flows(2000, 2);
        let parts = [batch.slice(0, 700), batch.slice(700, 1300)];
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        for p in sort_into_partitions(&parts) {
            let rows: Vec<(usize, usize)> = p
                .rows
                .iter()
                .map(|&(b, r)| (b as usize, r as usize))
                .collect();
            let want = arrow::compute::interleave_record_batch(&refs, &rows).unwrap();
            assert_eq!(p.plain_batch().unwrap(), want);
        }
    }

    /// Batches whose string columns arrived dictionary-encoded (collectors send
    /// them so), mixed with plain ones, sort and gather to the same rows.
    #[test]
    fn dictionary_encoded_batches_sort_like_plain_ones() {
        let batch = crate::testdata::flows(2000, 2);
        let plain = [batch.slice(0, 900), batch.slice(900, 1100)];
        let mixed = [
            flowlake_schemas::dictionary_encode(&plain[0]).unwrap(),
            plain[1].clone(),
        ];
        assert!(matches!(
            mixed[0].column_by_name(col::SRC_POD).unwrap().data_type(),
            DataType::Dictionary(..)
        ));
        let a = sort_into_partitions(&plain);
        let b = sort_into_partitions(&mixed);
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(&b) {
            assert_eq!((&a.date, &a.hour), (&b.date, &b.hour));
            assert_eq!(a.plain_batch().unwrap(), b.plain_batch().unwrap());
        }
    }

    #[test]
    fn empty_input_has_no_runs() {
        assert!(sort_into_partitions(&[]).is_empty());
        let batch = crate::testdata::flows(10, 1);
        assert!(sort_into_partitions(&[batch.slice(0, 0)]).is_empty());
    }
}
