//! Interning a flush's columns: every string column into a dictionary sorted by
//! value, every map of strings whole maps at a time. The sort compares the ranks;
//! the gather hands the writer dictionary keys ([`crate::sort`]).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::compute::interleave;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use flowlake_schemas::fold_hash::{FoldState, MapInterner};

mod ranks;
pub(crate) use ranks::{BatchRanks, RowIds};

/// A column of the flush, interned: its distinct values (strings in sorted
/// order; maps in order of appearance), and per buffered batch each row's rank
/// among them (1-based; 0 is null).
#[derive(Debug)]
pub(crate) struct Interned {
    pub(crate) values: ArrayRef,
    pub(crate) batches: Vec<BatchRanks>,
}

impl Interned {
    /// A string column's value of `rank`.
    pub(crate) fn value(&self, rank: u32) -> &str {
        self.values.as_string::<i32>().value(rank as usize - 1)
    }

    /// The rank of row `r` of batch `b`.
    pub(crate) fn rank(&self, b: usize, r: usize) -> u32 {
        self.batches[b].rank(r)
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
    seed: FoldState,
}

impl<'a> StrTable<'a> {
    fn new(seed: FoldState) -> Self {
        StrTable {
            slots: vec![0; 64],
            hashes: Vec::new(),
            values: Vec::new(),
            seed,
        }
    }

    fn hash(&self, v: &str) -> u64 {
        self.seed.hash_str(v)
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

/// Interns string column `c` of every batch (one hash lookup per row, skipped when
/// a row repeats the previous row's value; one per distinct value of a
/// dictionary-encoded batch) and ranks the distinct values.
fn intern(batches: &[RecordBatch], c: usize, hasher: &FoldState) -> Interned {
    let mut table = StrTable::new(*hasher);
    // Per batch, the ids of its rows, or of its dictionary's values.
    let mut ids = Vec::with_capacity(batches.len());
    for batch in batches {
        if let Some(dict) = batch.column(c).as_any_dictionary_opt() {
            let values = dict.values().as_string::<i32>();
            let value_ids = (0..values.len())
                .map(|j| match values.is_null(j) {
                    true => 0,
                    false => table.id(values.value(j)),
                })
                .collect();
            ids.push(value_ids);
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
        ids.push(out);
    }
    let distinct = table.values;
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    order.sort_unstable_by_key(|&i| distinct[i as usize]);
    let mut rank = vec![0u32; distinct.len() + 1];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize + 1] = r as u32 + 1;
    }
    let batches = batch_ranks(batches, c, ids, rank.into());
    let values: StringArray = order.iter().map(|&i| Some(distinct[i as usize])).collect();
    Interned {
        values: Arc::new(values),
        batches,
    }
}

/// Column `c` of each batch as [`BatchRanks`], given the ids `ids[b]` of its
/// rows (or, for a dictionary-encoded batch, of its dictionary's values) and the
/// rank of every id, `rank[id]`.
fn batch_ranks(
    batches: &[RecordBatch],
    c: usize,
    ids: Vec<Vec<u32>>,
    rank: Arc<[u32]>,
) -> Vec<BatchRanks> {
    ids.into_iter()
        .zip(batches)
        .map(|(ids, batch)| {
            let column = batch.column(c);
            match column.as_any_dictionary_opt() {
                // Row ids are keys plus one; the table holds each value's rank.
                Some(_) => {
                    let table = std::iter::once(0).chain(ids.iter().map(|&id| rank[id as usize]));
                    BatchRanks::of_dictionary(column.as_ref(), table.collect())
                }
                None => BatchRanks::new(RowIds::U32(ids), Arc::clone(&rank)),
            }
        })
        .collect()
}

/// Interns map column `c` of every batch, whole maps at a time (the rows of one
/// pod share its labels): the distinct maps in order of appearance. A batch whose
/// maps arrived dictionary-encoded interns each of its distinct maps once, then
/// every row maps its key.
fn intern_maps(batches: &[RecordBatch], c: usize, hasher: &FoldState) -> Option<Interned> {
    let mut interner = MapInterner::new(*hasher);
    let mut first: Vec<(usize, usize)> = Vec::new();
    // Per batch, the maps its rows refer to: the column, or its dictionary's values.
    let mut sources: Vec<&dyn Array> = Vec::with_capacity(batches.len());
    // Per batch, the ids of its rows, or of its dictionary's values.
    let mut pending = Vec::with_capacity(batches.len());
    for (b, batch) in batches.iter().enumerate() {
        let column = batch.column(c);
        let source = match column.as_any_dictionary_opt() {
            Some(d) => d.values().as_ref(),
            None => column.as_ref(),
        };
        pending.push(interner.intern(source.as_map_opt()?, |r| first.push((b, r)))?);
        sources.push(source);
    }
    // A map's rank is its id: the table is the identity, with each dictionary
    // batch's values' ids behind its keys.
    let identity: Arc<[u32]> = (0..=first.len() as u32).collect();
    let batches = batch_ranks(batches, c, pending, identity);
    let values = interleave(&sources, &first).ok()?;
    Some(Interned { values, batches })
}

/// Interns every string column and every map of strings of the flush (`None`
/// for the other columns).
pub(crate) fn intern_columns(batches: &[RecordBatch]) -> Vec<Option<Interned>> {
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let hasher = FoldState::new();
    (0..first.num_columns())
        .map(|c| {
            let string = |t: &DataType| {
                flowlake_schemas::is_dictionary_encoded(&DataType::Utf8, t) || t == &DataType::Utf8
            };
            if batches.iter().all(|b| string(b.column(c).data_type())) {
                return Some(intern(batches, c, &hasher));
            }
            let map = |t: &DataType| match t {
                DataType::Dictionary(_, v) => matches!(**v, DataType::Map(..)),
                t => matches!(t, DataType::Map(..)),
            };
            if batches.iter().all(|b| map(b.column(c).data_type())) {
                return intern_maps(batches, c, &hasher);
            }
            None
        })
        .collect()
}
