//! Map columns (the endpoints' labels) written from the flush's distinct maps.
//!
//! A flush interns each row's map as a whole ([`crate::sort`]): the rows of a pod
//! share one map, so a partition's map column is a dictionary of a few hundred
//! distinct maps and a key per row. The two leaves (`key`, `value`) are written by
//! [`super::dict::encode_leaf`] with dictionaries of the distinct keys and values,
//! and levels per row from the row's map: Parquet's nesting of a nullable map of
//! required keys and nullable values.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, DictionaryArray, MapArray, StringArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::UInt32Type;
use parquet::basic::Repetition;
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnDescPtr;

use super::dict::{EncodedChunk, Leaf, encode_leaf, out_of_range};
use super::rle;

/// No value: the entry's value is null.
const NONE: u32 = u32::MAX;

/// The key and value leaves of a map column chunk.
pub fn encode_map(
    key: ColumnDescPtr,
    value: ColumnDescPtr,
    column: &DictionaryArray<UInt32Type>,
    props: &WriterProperties,
) -> Result<[EncodedChunk; 2]> {
    let maps = column
        .values()
        .as_map_opt()
        .ok_or_else(|| ParquetError::General(format!("{}: not a map column", key.name())))?;
    let rows = column.keys();
    let nulls = rows.nulls().filter(|n| n.null_count() > 0).cloned();
    let rows = rows.values();
    let (entry_keys, entry_values) = strings(maps, key.name())?;

    // The maps the chunk uses, and the sorted distinct keys and values in them.
    let mut used = vec![false; maps.len()];
    for (i, &m) in rows.iter().enumerate() {
        if nulls.as_ref().is_none_or(|n| n.is_valid(i)) {
            *used.get_mut(m as usize).ok_or_else(|| {
                ParquetError::General(format!("{}: map {m} out of range", key.name()))
            })? = true;
        }
    }
    let offsets = maps.value_offsets();
    let mut key_set = BTreeSet::new();
    let mut value_set = BTreeSet::new();
    for m in (0..maps.len()).filter(|&m| used[m]) {
        for e in offsets[m] as usize..offsets[m + 1] as usize {
            key_set.insert(entry_keys.value(e));
            if entry_values.is_valid(e) {
                value_set.insert(entry_values.value(e));
            }
        }
    }
    let key_dict: StringArray = key_set.iter().map(Some).collect();
    let value_dict: StringArray = value_set.iter().map(Some).collect();
    let key_sorted: Vec<&str> = key_set.into_iter().collect();
    let value_sorted: Vec<&str> = value_set.into_iter().collect();
    let mut entries = vec![(NONE, NONE); entry_keys.len()];
    for m in (0..maps.len()).filter(|&m| used[m]) {
        let range = offsets[m] as usize..offsets[m + 1] as usize;
        for (e, slot) in range.clone().zip(&mut entries[range]) {
            let k = key_sorted
                .binary_search(&entry_keys.value(e))
                .unwrap_or_default();
            let v = match entry_values.is_valid(e) {
                true => value_sorted
                    .binary_search(&entry_values.value(e))
                    .unwrap_or_default() as u32,
                false => NONE,
            };
            *slot = (k as u32, v);
        }
    }
    let leaf = |descr: &ColumnDescPtr, value: bool| -> Result<MapLeaf> {
        let max_def = descr.max_def_level();
        let optional = descr.self_type().get_basic_info().repetition() == Repetition::OPTIONAL;
        let entry_def = max_def - i16::from(optional);
        if descr.max_rep_level() != 1 || entry_def < 1 {
            return Err(ParquetError::General(format!(
                "{}: not a map leaf (def {max_def}, rep {})",
                descr.name(),
                descr.max_rep_level()
            )));
        }
        Ok(MapLeaf {
            rows,
            nulls: nulls.clone(),
            offsets,
            entries: &entries,
            used: &used,
            value,
            max_def,
            entry_def,
        })
    };
    let key_leaf = leaf(&key, false)?;
    let value_leaf = leaf(&value, true)?;
    Ok([
        encode_leaf(key, &key_dict, &key_leaf, props)?,
        encode_leaf(value, &value_dict, &value_leaf, props)?,
    ])
}

fn strings<'a>(maps: &'a MapArray, name: &str) -> Result<(&'a StringArray, &'a StringArray)> {
    match (maps.keys().as_string_opt(), maps.values().as_string_opt()) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(ParquetError::General(format!(
            "{name}: map keys and values must be strings"
        ))),
    }
}

/// One leaf of a map column: the key or the value of each entry of each row's map.
struct MapLeaf<'a> {
    /// Per row, the row's map (an index into the distinct maps).
    rows: &'a [u32],
    nulls: Option<NullBuffer>,
    /// Entry range of each distinct map.
    offsets: &'a [i32],
    /// Per entry, the key's and the value's id (the value's [`NONE`] when null).
    entries: &'a [(u32, u32)],
    /// The distinct maps some row of the chunk has.
    used: &'a [bool],
    /// This leaf is the value (not the key).
    value: bool,
    max_def: i16,
    /// Definition level of an entry (one less than `max_def` when the leaf is
    /// nullable and the entry's value is null); an empty map is one less, a null
    /// map two less.
    entry_def: i16,
}

impl MapLeaf<'_> {
    fn id(&self, entry: usize) -> u32 {
        let (k, v) = self.entries[entry];
        if self.value { v } else { k }
    }
}

impl Leaf for MapLeaf<'_> {
    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn mark_used(&self, used: &mut [bool]) -> Result<()> {
        for m in (0..self.used.len()).filter(|&m| self.used[m]) {
            for e in self.offsets[m] as usize..self.offsets[m + 1] as usize {
                match self.id(e) {
                    NONE => {}
                    id => *used.get_mut(id as usize).ok_or_else(|| out_of_range(id))? = true,
                }
            }
        }
        Ok(())
    }

    fn page(
        &self,
        rows: std::ops::Range<usize>,
        local: &[u32],
        ids: &mut Vec<u32>,
        reps: &mut Vec<u8>,
        defs: &mut Vec<u8>,
    ) -> Result<usize> {
        // Each used map's levels and value ids, once; then per row a copy.
        let maps = self.used.len();
        let mut spans = vec![(0u32, 0u32, 0u32, 0u32); maps];
        let (mut map_levels, mut map_ids) = (Vec::new(), Vec::new());
        for m in (0..maps).filter(|&m| self.used[m]) {
            let entries = self.offsets[m] as usize..self.offsets[m + 1] as usize;
            let (l0, i0) = (map_levels.len() as u32, map_ids.len() as u32);
            if entries.is_empty() {
                map_levels.push((0, (self.entry_def - 1) as u32));
            }
            let first = entries.start;
            for e in entries {
                match self.id(e) {
                    NONE => map_levels.push((u32::from(e > first), self.entry_def as u32)),
                    id => {
                        map_levels.push((u32::from(e > first), self.max_def as u32));
                        map_ids.push(local[id as usize]);
                    }
                }
            }
            spans[m] = (l0, map_levels.len() as u32, i0, map_ids.len() as u32);
        }
        let (mut rep, mut def) = (Vec::new(), Vec::new());
        for row in rows {
            if self.nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                if self.entry_def < 2 {
                    return Err(ParquetError::General("null in a required map".into()));
                }
                rep.push(0);
                def.push((self.entry_def - 2) as u32);
                continue;
            }
            let (l0, l1, i0, i1) = spans[self.rows[row] as usize];
            for &(r, d) in &map_levels[l0 as usize..l1 as usize] {
                rep.push(r);
                def.push(d);
            }
            ids.extend_from_slice(&map_ids[i0 as usize..i1 as usize]);
        }
        rle::encode(&rep, 1, reps);
        rle::encode(&def, rle::bit_width(self.max_def as u32), defs);
        Ok(def.len())
    }
}
