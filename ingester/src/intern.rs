//! Interning a flush's columns: every string column into a dictionary sorted by
//! value, every map of strings whole maps at a time. The sort compares the ranks;
//! the gather hands the writer dictionary keys ([`crate::sort`]).

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use arrow::array::{AnyDictionaryArray, Array, ArrayRef, AsArray, StringArray};
use arrow::compute::interleave;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

/// A column of the flush, interned: its distinct values (strings in sorted
/// order; maps in order of appearance), and per buffered batch each row's rank
/// among them (1-based; 0 is null).
#[derive(Debug)]
pub(crate) struct Interned {
    pub(crate) values: ArrayRef,
    pub(crate) ranks: Vec<Vec<u32>>,
}

impl Interned {
    /// A string column's value of `rank`.
    pub(crate) fn value(&self, rank: u32) -> &str {
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
pub(crate) fn intern_columns(batches: &[RecordBatch]) -> Vec<Option<Interned>> {
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
