//! Each buffered batch's rows of an interned column, as small ids and a table
//! from id to rank: a dictionary-encoded batch keeps one byte per row for
//! dictionaries of up to 255 values (its key plus one, 0 for null) and a table
//! of its distinct values' ranks, instead of four bytes of rank per row.

use std::sync::Arc;

use arrow::array::{Array, DictionaryArray, downcast_dictionary_array};
use arrow::datatypes::{ArrowDictionaryKeyType, ArrowNativeType as _};

/// Per row, an index into a [`BatchRanks`] table.
#[derive(Debug)]
pub(crate) enum RowIds {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

/// One batch's rows of an interned column: the rank of row `r` (1-based among
/// the flush's distinct values; 0 is null) is `ranks[ids[r]]`.
#[derive(Debug)]
pub(crate) struct BatchRanks {
    ids: RowIds,
    ranks: Arc<[u32]>,
}

impl BatchRanks {
    /// Rows whose ids index `ranks`; every id must be below `ranks.len()`.
    pub(crate) fn new(ids: RowIds, ranks: Arc<[u32]>) -> Self {
        let max = match &ids {
            RowIds::U8(v) => v.iter().max().map(|&m| m as usize),
            RowIds::U16(v) => v.iter().max().map(|&m| m as usize),
            RowIds::U32(v) => v.iter().max().map(|&m| m as usize),
        };
        assert!(
            max.is_none_or(|m| m < ranks.len()),
            "row id past its rank table"
        );
        BatchRanks { ids, ranks }
    }

    /// The rows of a dictionary-encoded column: id 0 for a null row, the key
    /// plus one otherwise; `ranks[k + 1]` must be the rank of dictionary value `k`.
    pub(crate) fn of_dictionary(column: &dyn Array, ranks: Arc<[u32]>) -> Self {
        let ids = downcast_dictionary_array!(
            column => dictionary_ids(column, ranks.len()),
            _ => RowIds::U32(vec![0; column.len()]),
        );
        // Every id is below the table's length (`dictionary_ids`).
        BatchRanks { ids, ranks }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.ids {
            RowIds::U8(v) => v.len(),
            RowIds::U16(v) => v.len(),
            RowIds::U32(v) => v.len(),
        }
    }

    /// The rank of row `r`.
    pub(crate) fn rank(&self, r: usize) -> u32 {
        let id = match &self.ids {
            RowIds::U8(v) => v[r] as usize,
            RowIds::U16(v) => v[r] as usize,
            RowIds::U32(v) => v[r] as usize,
        };
        self.ranks[id]
    }

    /// Calls `f(r, rank)` for every row in order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, u32)) {
        let ranks = &self.ranks[..];
        match &self.ids {
            RowIds::U8(v) => v
                .iter()
                .enumerate()
                .for_each(|(r, &i)| f(r, ranks[i as usize])),
            RowIds::U16(v) => v
                .iter()
                .enumerate()
                .for_each(|(r, &i)| f(r, ranks[i as usize])),
            RowIds::U32(v) => v
                .iter()
                .enumerate()
                .for_each(|(r, &i)| f(r, ranks[i as usize])),
        }
    }

    pub(crate) fn ids(&self) -> &RowIds {
        &self.ids
    }

    pub(crate) fn table(&self) -> &[u32] {
        &self.ranks
    }
}

/// Ids of a dictionary's rows for a table of `table_len` entries: the narrowest
/// width that holds them.
fn dictionary_ids<K: ArrowDictionaryKeyType>(
    dict: &DictionaryArray<K>,
    table_len: usize,
) -> RowIds {
    let keys = dict.keys();
    let valid = keys.nulls().filter(|n| n.null_count() > 0);
    // A key out of the table (arrow checked keys, but not those under nulls) is null.
    let id = |r: usize, k: K::Native| -> usize {
        let id = k.as_usize().wrapping_add(1);
        match valid.is_none_or(|v| v.is_valid(r)) && id < table_len {
            true => id,
            false => 0,
        }
    };
    let values = keys.values().iter().enumerate();
    if table_len <= 1 << 8 {
        RowIds::U8(values.map(|(r, &k)| id(r, k) as u8).collect())
    } else if table_len <= 1 << 16 {
        RowIds::U16(values.map(|(r, &k)| id(r, k) as u16).collect())
    } else {
        RowIds::U32(values.map(|(r, &k)| id(r, k) as u32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int8Array, Int32Array, StringArray};

    #[test]
    fn dictionary_rows_map_through_their_values_ranks() {
        let values = Arc::new(StringArray::from(vec![Some("b"), None, Some("a")]));
        let keys = Int8Array::from(vec![Some(0), None, Some(2), Some(1), Some(0)]);
        let dict = DictionaryArray::try_new(keys, values).unwrap();
        // Value 0 ("b") ranks 2, value 1 is null, value 2 ("a") ranks 1.
        let ranks = BatchRanks::of_dictionary(&dict, vec![0, 2, 0, 1].into());
        assert!(matches!(ranks.ids(), RowIds::U8(_)));
        let mut got = Vec::new();
        ranks.for_each(|r, rank| got.push((r, rank)));
        assert_eq!(got, [(0, 2), (1, 0), (2, 1), (3, 0), (4, 2)]);
        assert_eq!(ranks.rank(2), 1);
        assert_eq!(ranks.len(), 5);
    }

    #[test]
    fn wide_dictionaries_get_wide_ids() {
        let values = Arc::new(StringArray::from_iter_values(
            (0..300).map(|i| format!("v{i}")),
        ));
        let keys = Int32Array::from(vec![299, 0]);
        let dict = DictionaryArray::try_new(keys, values).unwrap();
        let table: Vec<u32> = (0..301).collect();
        let ranks = BatchRanks::of_dictionary(&dict, table.into());
        assert!(matches!(ranks.ids(), RowIds::U16(_)));
        assert_eq!((ranks.rank(0), ranks.rank(1)), (300, 1));
    }

    #[test]
    #[should_panic(expected = "row id past its rank table")]
    fn ids_must_stay_in_their_table() {
        BatchRanks::new(RowIds::U8(vec![0, 3]), vec![0, 1, 2].into());
    }
}
