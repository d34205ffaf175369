//! The sort order of every file, computed without concatenating the buffer.
//!
//! Every string column of the flush is interned: its distinct values are sorted
//! and each row gets the rank of its value (one hash lookup per row, skipped
//! when a row repeats the previous row's value). Sorting compares the ranks of
//! the sort columns, small fixed-size keys, instead of strings. The sorted rows
//! are then gathered straight from the buffered batches into one batch per
//! partition, the rows copied once: string columns as dictionary keys over the
//! sorted values, the others by `interleave`.

use std::collections::HashMap;
use std::hash::BuildHasher as _;

use std::sync::Arc;

use arrow::array::{
    AnyDictionaryArray, Array, ArrayRef, AsArray, DictionaryArray, StringArray, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Schema, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use flowlake_schemas::col;

use crate::error::{IngestError, Result};

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

/// One partition's rows, sorted. Its string columns are dictionaries
/// (`Dictionary(UInt32, Utf8)`) over the flush's distinct values in sorted order,
/// which [`crate::parquet::write_file`] writes without hashing or comparing a
/// string per row.
#[derive(Debug)]
pub struct PartitionRun {
    pub date: String,
    pub hour: String,
    pub batch: RecordBatch,
}

impl PartitionRun {
    /// The rows with plain string columns, in the flow schema.
    pub fn plain_batch(&self) -> Result<RecordBatch> {
        let schema = flowlake_schemas::flow_schema();
        let columns = schema
            .fields()
            .iter()
            .zip(self.batch.columns())
            .map(|(f, c)| match c.as_any_dictionary_opt() {
                Some(d) if !matches!(d.values().data_type(), DataType::Utf8) => {
                    arrow::compute::take(
                        d.values(),
                        &arrow::compute::cast(d.keys(), &DataType::UInt32)?,
                        None,
                    )
                }
                _ => arrow::compute::cast(c, f.data_type()),
            })
            .collect::<std::result::Result<Vec<_>, ArrowError>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// A row's sort key: ranks of the [`RANKED`] columns (0 is null), then time
/// (`None` is null, which sorts first).
type RowKey = ([u32; 5], Option<i64>);

/// A column of the flush, interned: its distinct values (strings in sorted
/// order; maps in order of appearance), and per buffered batch each row's rank
/// among them (1-based; 0 is null).
#[derive(Debug)]
pub(crate) struct Interned {
    values: ArrayRef,
    ranks: Vec<Vec<u32>>,
}

impl Interned {
    /// A string column's value of `rank`.
    fn value(&self, rank: u32) -> &str {
        self.values.as_string::<i32>().value(rank as usize - 1)
    }
}

/// A seeded multiply-fold hash of the short strings being interned: much cheaper
/// per value than SipHash, and seeded per flush (from `RandomState`), so a client
/// cannot choose values that collide.
struct FoldHasher {
    seed: u64,
    acc: u64,
}

impl FoldHasher {
    fn fold(x: u64, y: u64) -> u64 {
        let m = u128::from(x) * u128::from(y);
        (m as u64) ^ ((m >> 64) as u64)
    }

    /// Little-endian load of up to 8 bytes, zero-padded.
    fn load(bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    }
}

impl std::hash::Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let n = bytes.len();
        let key = self.seed ^ K;
        // Values up to 16 bytes (nearly all names and addresses) are two loads
        // and one fold; longer ones fold 16 bytes at a time.
        let (a, b) = if n <= 8 {
            (Self::load(bytes), 0)
        } else if n <= 16 {
            (Self::load(&bytes[..8]), Self::load(&bytes[8..]))
        } else {
            let mut chunks = bytes.chunks_exact(16);
            for c in &mut chunks {
                self.acc = Self::fold(self.acc ^ Self::load(&c[..8]), key ^ Self::load(&c[8..]));
            }
            let rest = chunks.remainder();
            let split = rest.len().min(8);
            (Self::load(&rest[..split]), Self::load(&rest[split..]))
        };
        self.acc = Self::fold(self.acc ^ a ^ ((n as u64) << 56), key ^ b);
    }

    fn finish(&self) -> u64 {
        Self::fold(self.acc, self.seed)
    }
}

/// The distinct strings of a column, in order of appearance, in an
/// open-addressing table (linear probing) of their ids; each value's hash is kept,
/// so a probe compares bytes only when the hashes match.
struct StrTable<'a> {
    /// `0` is an empty slot, else a value's id (1-based).
    slots: Vec<u32>,
    hashes: Vec<u64>,
    values: Vec<&'a str>,
    seed: u64,
}

impl<'a> StrTable<'a> {
    fn new(seed: u64) -> Self {
        StrTable {
            slots: vec![0; 64],
            hashes: Vec::new(),
            values: Vec::new(),
            seed,
        }
    }

    fn hash(&self, v: &str) -> u64 {
        let mut h = FoldState(self.seed).build_hasher();
        std::hash::Hasher::write(&mut h, v.as_bytes());
        std::hash::Hasher::finish(&h)
    }

    /// The id (1-based) of `v`, added if new.
    fn id(&mut self, v: &'a str) -> u32 {
        let h = self.hash(v);
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            match self.slots[i] {
                0 => break,
                id if self.hashes[id as usize - 1] == h && self.values[id as usize - 1] == v => {
                    return id;
                }
                _ => i = (i + 1) & mask,
            }
        }
        self.values.push(v);
        self.hashes.push(h);
        let id = self.values.len() as u32;
        self.slots[i] = id;
        if self.values.len() * 2 > self.slots.len() {
            self.grow();
        }
        id
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (j, &h) in self.hashes.iter().enumerate() {
            let mut i = h as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = j as u32 + 1;
        }
        self.slots = slots;
    }
}

#[derive(Clone)]
struct FoldState(u64);

impl FoldState {
    fn new() -> Self {
        use std::hash::BuildHasher;
        FoldState(std::collections::hash_map::RandomState::new().hash_one(0u64) | 1)
    }
}

impl std::hash::BuildHasher for FoldState {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            seed: self.0,
            acc: self.0.rotate_left(17),
        }
    }
}

/// Interns string column `c` of every batch (one hash lookup per row, skipped when
/// a row repeats the previous row's value) and ranks the distinct values.
fn intern(batches: &[RecordBatch], c: usize, hasher: &FoldState) -> Interned {
    let mut table = StrTable::new(hasher.0);
    let mut per_batch = Vec::with_capacity(batches.len());
    for batch in batches {
        if let Some(dict) = batch.column(c).as_any_dictionary_opt() {
            per_batch.push(intern_dictionary(dict, &mut table));
            continue;
        }
        let values = batch.column(c).as_string::<i32>();
        let (offsets, data) = (values.value_offsets(), values.value_data());
        let valid = values.nulls().filter(|n| n.null_count() > 0);
        let mut last: (&[u8], u32) = (&[], 0);
        let out: Vec<u32> = offsets
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                if valid.is_some_and(|n| n.is_null(i)) {
                    return 0;
                }
                let v = &data[w[0] as usize..w[1] as usize];
                if last.1 == 0 || last.0 != v {
                    // SAFETY: `v` is one whole value of a string array, which
                    // arrow validated as UTF-8.
                    last = (v, table.id(unsafe { std::str::from_utf8_unchecked(v) }));
                }
                last.1
            })
            .collect();
        per_batch.push(out);
    }
    let distinct = table.values;
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
    let values: StringArray = order.iter().map(|&i| Some(distinct[i as usize])).collect();
    Interned {
        values: Arc::new(values),
        ranks: per_batch,
    }
}

/// The ids of a dictionary-encoded string column's rows: each distinct value of
/// the batch is interned once, then every row maps its key.
fn intern_dictionary<'a>(dict: &'a dyn AnyDictionaryArray, table: &mut StrTable<'a>) -> Vec<u32> {
    let values = dict.values().as_string::<i32>();
    if values.is_empty() {
        return vec![0; dict.len()];
    }
    let ids: Vec<u32> = (0..values.len())
        .map(|j| match values.is_null(j) {
            true => 0,
            false => table.id(values.value(j)),
        })
        .collect();
    let keys = dict.normalized_keys();
    match dict.keys().nulls().filter(|n| n.null_count() > 0) {
        None => keys.iter().map(|&k| ids[k]).collect(),
        Some(nulls) => keys
            .iter()
            .zip(nulls.iter())
            .map(|(&k, valid)| if valid { ids[k] } else { 0 })
            .collect(),
    }
}

/// One row's map as a hash key: its entries' keys and values.
#[derive(Clone)]
struct MapKey<'a> {
    keys: &'a StringArray,
    values: &'a StringArray,
    entries: std::ops::Range<usize>,
}

impl std::hash::Hash for MapKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for e in self.entries.clone() {
            state.write(self.keys.value(e).as_bytes());
            match self.values.is_valid(e) {
                true => state.write(self.values.value(e).as_bytes()),
                false => state.write_u8(0xff),
            }
        }
    }
}

impl PartialEq for MapKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .clone()
                .zip(other.entries.clone())
                .all(|(a, b)| {
                    self.keys.value(a) == other.keys.value(b)
                        && match (self.values.is_valid(a), other.values.is_valid(b)) {
                            (true, true) => self.values.value(a) == other.values.value(b),
                            (va, vb) => va == vb,
                        }
                })
    }
}

impl Eq for MapKey<'_> {}

/// Interns map column `c` of every batch, whole maps at a time (the rows of one
/// pod share its labels): the distinct maps in order of appearance.
fn intern_maps(batches: &[RecordBatch], c: usize, hasher: &FoldState) -> Option<Interned> {
    let mut ids: HashMap<MapKey, u32, FoldState> = HashMap::with_hasher(hasher.clone());
    let mut first: Vec<(usize, usize)> = Vec::new();
    let mut per_batch = Vec::with_capacity(batches.len());
    for (b, batch) in batches.iter().enumerate() {
        let maps = batch.column(c).as_map_opt()?;
        let keys = maps.keys().as_string_opt::<i32>()?;
        let values = maps.values().as_string_opt::<i32>()?;
        let offsets = maps.value_offsets();
        let mut out = Vec::with_capacity(maps.len());
        let mut last: Option<(MapKey, u32)> = None;
        for r in 0..maps.len() {
            if maps.is_null(r) {
                out.push(0);
                continue;
            }
            let key = MapKey {
                keys,
                values,
                entries: offsets[r] as usize..offsets[r + 1] as usize,
            };
            let id = match &last {
                Some((prev, id)) if *prev == key => *id,
                _ => {
                    let id = *ids.entry(key.clone()).or_insert_with(|| {
                        first.push((b, r));
                        first.len() as u32
                    });
                    last = Some((key, id));
                    id
                }
            };
            out.push(id);
        }
        per_batch.push(out);
    }
    let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
    let values = interleave(&arrays, &first).ok()?;
    Some(Interned {
        values,
        ranks: per_batch,
    })
}

/// Interns every string column and every map of strings of the flush (`None`
/// for the other columns).
fn intern_columns(batches: &[RecordBatch]) -> Vec<Option<Interned>> {
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let hasher = FoldState::new();
    (0..first.num_columns())
        .map(|c| {
            let kind = first.column(c).data_type();
            let string = |t: &DataType| {
                flowlake_schemas::is_dictionary_string(&DataType::Utf8, t) || t == &DataType::Utf8
            };
            if batches.iter().all(|b| string(b.column(c).data_type())) {
                return Some(intern(batches, c, &hasher));
            }
            if batches.iter().any(|b| b.column(c).data_type() != kind) {
                return None;
            }
            match kind {
                DataType::Map(..) => intern_maps(batches, c, &hasher),
                _ => None,
            }
        })
        .collect()
}

/// One partition's rows in sort order, as positions in the buffered batches.
#[derive(Debug)]
pub struct SortedPartition {
    pub date: String,
    pub hour: String,
    /// `(batch, row)` of each row, in file order.
    rows: Vec<(usize, usize)>,
    /// The flush's interned string columns, shared by its partitions.
    interned: Arc<Vec<Option<Interned>>>,
}

impl SortedPartition {
    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Copies the partition's rows out of `batches` (the slice the plan was made
    /// from), in order: string columns as dictionary keys ([`gather_keys`]), the
    /// others by Arrow's `interleave`.
    pub fn gather(self, batches: &[RecordBatch]) -> Result<PartitionRun> {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => flowlake_schemas::flow_schema(),
        };
        let mut fields = Vec::with_capacity(schema.fields().len());
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (c, field) in schema.fields().iter().enumerate() {
            match self.interned.get(c).and_then(Option::as_ref) {
                Some(interned) => {
                    let keys = gather_keys(interned, &self.rows)?;
                    let values = Arc::clone(&interned.values);
                    if values.len() >= u32::MAX as usize {
                        return Err(IngestError::Internal("dictionary too large".into()));
                    }
                    // SAFETY: `try_new` would accept these keys: every key not under a
                    // null is a rank − 1 of `values` (ranks run from 1 to `values.len()`),
                    // and keys under nulls are not checked (they are 0).
                    let column = unsafe { DictionaryArray::new_unchecked(keys, values) };
                    fields.push(
                        field
                            .as_ref()
                            .clone()
                            .with_data_type(column.data_type().clone()),
                    );
                    columns.push(Arc::new(column) as ArrayRef);
                }
                None => {
                    let arrays: Vec<&dyn Array> =
                        batches.iter().map(|b| b.column(c).as_ref()).collect();
                    fields.push(field.as_ref().clone());
                    columns.push(interleave(&arrays, &self.rows)?);
                }
            }
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let batch = RecordBatch::try_new(schema, columns)?;
        Ok(PartitionRun {
            date: self.date,
            hour: self.hour,
            batch,
        })
    }
}

/// The dictionary keys (rank − 1; null where the rank is 0) of `rows`.
fn gather_keys(
    interned: &Interned,
    rows: &[(usize, usize)],
) -> std::result::Result<UInt32Array, ArrowError> {
    let mut keys = Vec::with_capacity(rows.len());
    let mut nulls = 0;
    for &(b, r) in rows {
        let rank = *interned
            .ranks
            .get(b)
            .and_then(|ranks| ranks.get(r))
            .ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!(
                    "gather: row {r} of batch {b} does not exist"
                ))
            })?;
        nulls += usize::from(rank == 0);
        keys.push(rank.wrapping_sub(1));
    }
    let validity = (nulls > 0).then(|| {
        NullBuffer::new(BooleanBuffer::collect_bool(keys.len(), |i| {
            keys[i] != u32::MAX
        }))
    });
    for k in keys.iter_mut().filter(|k| **k == u32::MAX) {
        *k = 0;
    }
    Ok(UInt32Array::new(keys.into(), validity))
}

/// The order of every row by [`SORT_COLUMNS`], split by `date`/`hour` partition.
pub fn sort_plan(batches: &[RecordBatch]) -> Vec<SortedPartition> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total == 0 {
        return Vec::new();
    }
    let interned = Arc::new(intern_columns(batches));
    let schema = batches[0].schema();
    let ranked: Vec<&Interned> = RANKED
        .iter()
        .map(|c| {
            let i = schema.index_of(c).expect("flow schema column");
            interned[i].as_ref().expect("sort columns are strings")
        })
        .collect();
    let mut rows: Vec<(RowKey, u32, u32)> = Vec::with_capacity(total);
    for (b, batch) in batches.iter().enumerate() {
        let time = batch
            .column_by_name(SORT_COLUMNS[5])
            .expect("flow schema column")
            .as_primitive::<TimestampMicrosecondType>();
        for (r, t) in time.iter().enumerate() {
            let key = std::array::from_fn(|c| ranked[c].ranks[b][r]);
            rows.push(((key, t), b as u32, r as u32));
        }
    }
    rows.sort_unstable_by_key(|row| row.0);

    let value = |c: usize, rank: u32| match rank {
        0 => String::new(),
        rank => ranked[c].value(rank).to_string(),
    };
    let mut partitions = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let partition = &rows[start].0.0[..2];
        let end = start + rows[start..].partition_point(|r| &r.0.0[..2] == partition);
        partitions.push(SortedPartition {
            date: value(0, partition[0]),
            hour: value(1, partition[1]),
            rows: rows[start..end]
                .iter()
                .map(|&(_, b, r)| (b as usize, r as usize))
                .collect(),
            interned: Arc::clone(&interned),
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
        let nulled: arrow::array::StringArray = pods
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 3 == 0 { None } else { v })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[idx] = std::sync::Arc::new(nulled);
        let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
        let runs = sort_into_partitions(std::slice::from_ref(&batch)).unwrap();
        let ours: Vec<RecordBatch> = runs.iter().map(|r| r.plain_batch().unwrap()).collect();
        let ours = concat_batches(&flow_schema(), &ours).unwrap();
        assert_eq!(sort_keys(&ours), sort_keys(&lexsorted(&[batch])));
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
        for run in sort_into_partitions(std::slice::from_ref(&batch)).unwrap() {
            // Maps are dictionaries of the flush's distinct maps.
            let maps = run
                .batch
                .column(labels)
                .as_dictionary::<arrow::datatypes::UInt32Type>();
            assert!(maps.values().len() < 100, "{} maps", maps.values().len());
            assert!(maps.values().as_map_opt().is_some());
            let dict = run
                .batch
                .column(idx)
                .as_dictionary::<arrow::datatypes::UInt32Type>();
            let values = dict.values().as_string::<i32>();
            assert_eq!(values.null_count(), 0);
            let sorted: Vec<&str> = values.iter().flatten().collect();
            assert!(sorted.windows(2).all(|w| w[0] < w[1]), "{sorted:?}");
            assert!(dict.null_count() > 0);
            assert!(
                gather_keys(
                    &Interned {
                        values: Arc::new(values.clone()),
                        ranks: vec![vec![1]],
                    },
                    &[(0, 1)]
                )
                .is_err()
            );
        }
    }

    /// Every column of a gathered partition equals Arrow's `interleave` of it.
    #[test]
    fn gather_equals_interleave_record_batch() {
        let batch = crate::testdata::flows(2000, 2);
        let parts = [batch.slice(0, 700), batch.slice(700, 1300)];
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        for p in sort_plan(&parts) {
            let want = arrow::compute::interleave_record_batch(&refs, &p.rows).unwrap();
            assert_eq!(p.gather(&parts).unwrap().plain_batch().unwrap(), want);
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
        let a = sort_into_partitions(&plain).unwrap();
        let b = sort_into_partitions(&mixed).unwrap();
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(&b) {
            assert_eq!((&a.date, &a.hour), (&b.date, &b.hour));
            assert_eq!(a.plain_batch().unwrap(), b.plain_batch().unwrap());
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
