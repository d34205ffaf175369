//! Hashing of the short strings and label maps that collectors and the ingester
//! deduplicate per batch and per flush: a seeded multiply-fold hash, much cheaper
//! per value than SipHash, and seeded per use (from `RandomState`), so a client
//! cannot choose values that collide.
//!
//! [`MapEntries`] is one row of a map of strings as a hash key, and
//! [`MapInterner`] deduplicates map columns whole maps at a time with it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use arrow::array::{Array, AsArray, MapArray, StringArray};

/// The hasher of [`FoldState`].
pub struct FoldHasher {
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

impl Hasher for FoldHasher {
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

/// A random seed for [`FoldHasher`]s: one per batch or flush.
#[derive(Debug, Clone, Copy)]
pub struct FoldState(u64);

impl FoldState {
    pub fn new() -> Self {
        FoldState(std::collections::hash_map::RandomState::new().hash_one(0u64) | 1)
    }

    /// The hash of one string.
    pub fn hash_str(&self, v: &str) -> u64 {
        let mut h = self.build_hasher();
        h.write(v.as_bytes());
        h.finish()
    }
}

impl Default for FoldState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for FoldState {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            seed: self.0,
            acc: self.0.rotate_left(17),
        }
    }
}

/// One row of a map of strings as a hash key: its entries' keys and values.
/// Two rows are equal when their entries are, in order (nulls among the values
/// included), whichever arrays they come from.
#[derive(Clone)]
pub struct MapEntries<'a> {
    pub keys: &'a StringArray,
    pub values: &'a StringArray,
    pub entries: std::ops::Range<usize>,
}

impl std::hash::Hash for MapEntries<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for e in self.entries.clone() {
            state.write(self.keys.value(e).as_bytes());
            match self.values.is_valid(e) {
                true => state.write(self.values.value(e).as_bytes()),
                false => state.write_u8(0xff),
            }
        }
    }
}

impl PartialEq for MapEntries<'_> {
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

impl Eq for MapEntries<'_> {}

/// The distinct maps of one or more map-of-strings arrays, whole maps at a time,
/// each with an id (1-based, in order of appearance; 0 is a null row).
pub struct MapInterner<'a> {
    ids: HashMap<MapEntries<'a>, u32, FoldState>,
    /// The previous row's map and id: the rows of one endpoint often follow
    /// each other, and comparing costs less than hashing.
    last: Option<(MapEntries<'a>, u32)>,
}

impl<'a> MapInterner<'a> {
    pub fn new(seed: FoldState) -> Self {
        MapInterner {
            ids: HashMap::with_hasher(seed),
            last: None,
        }
    }

    /// Number of distinct maps so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of every row of `maps`, calling `new_map(row)` for each row whose
    /// map is seen for the first time; `None` unless keys and values are strings.
    pub fn intern(
        &mut self,
        maps: &'a MapArray,
        mut new_map: impl FnMut(usize),
    ) -> Option<Vec<u32>> {
        let keys = maps.keys().as_string_opt::<i32>()?;
        let values = maps.values().as_string_opt::<i32>()?;
        let offsets = maps.value_offsets();
        let ids = (0..maps.len())
            .map(|r| {
                if maps.is_null(r) {
                    return 0;
                }
                let row = MapEntries {
                    keys,
                    values,
                    entries: offsets[r] as usize..offsets[r + 1] as usize,
                };
                if let Some((prev, id)) = &self.last
                    && *prev == row
                {
                    return *id;
                }
                let next = self.ids.len() as u32 + 1;
                let id = *self.ids.entry(row.clone()).or_insert_with(|| {
                    new_map(r);
                    next
                });
                self.last = Some((row, id));
                id
            })
            .collect();
        Some(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_hash_equal_and_seeds_differ() {
        let s = FoldState::new();
        for v in [
            "",
            "a",
            "pod-7f9c",
            "exactly-16-bytes",
            "a-name-longer-than-sixteen-bytes",
        ] {
            let copy = String::from(v);
            assert_eq!(s.hash_str(v), s.hash_str(copy.as_str()));
        }
        assert_ne!(s.hash_str("a"), s.hash_str("b"));
        assert_ne!(s.hash_str("ab"), s.hash_str("ab\0"));
        let (a, b) = (FoldState(3), FoldState(5));
        assert_ne!(a.hash_str("pod"), b.hash_str("pod"));
    }

    #[test]
    fn map_entries_compare_keys_values_and_nulls() {
        let keys = StringArray::from(vec!["app", "tier", "app", "tier", "app", "tier"]);
        let values = StringArray::from(vec![
            Some("web"),
            Some("1"),
            Some("web"),
            Some("1"),
            Some("web"),
            None,
        ]);
        let row = |r: usize| MapEntries {
            keys: &keys,
            values: &values,
            entries: 2 * r..2 * r + 2,
        };
        let s = FoldState::new();
        assert!(row(0) == row(1));
        assert_eq!(s.hash_one(row(0)), s.hash_one(row(1)));
        assert!(row(0) != row(2), "a null value differs from a value");
        let shorter = MapEntries {
            entries: 0..1,
            ..row(0)
        };
        assert!(row(0) != shorter);
    }
}
