//! Distinct texts kept once per batch, with rows referring to them by id; `columns`
//! writes the Utf8 columns in one tight pass over the rows.
//!
//! An entry holds `K` texts that belong together (the seven identity texts of one
//! pod, or a partition's date and hour), so one pass over the rows writes all `K`
//! columns.

use arrow::array::StringArray;
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};

/// The id of every dictionary's all-null entry.
pub(super) const NULL_ID: u32 = 0;

/// Bytes copied at once when writing a column: a fixed-size copy is a few
/// instructions, a `memcpy` call per row is dozens.
const CHUNK: usize = 16;

#[derive(Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Clone, Copy)]
struct Entry<const K: usize> {
    spans: [Span; K],
    /// Bit `c` set: text `c` of this entry is null.
    nulls: u32,
}

/// Rows of `K` Utf8 columns stored as ids of distinct entries. Every `push` adds an
/// entry, so callers intern (see `text::Interner`) before pushing.
pub(super) struct Dict<const K: usize> {
    /// Entry 0 is all-null.
    entries: Vec<Entry<K>>,
    bytes: Vec<u8>,
}

impl<const K: usize> Default for Dict<K> {
    fn default() -> Self {
        const { assert!(K <= 32, "null bits fit in a u32") };
        Dict {
            entries: vec![Entry {
                spans: [Span::default(); K],
                nulls: u32::MAX,
            }],
            bytes: Vec::new(),
        }
    }
}

/// `n` as a dictionary position.
fn pos32(n: usize) -> u32 {
    u32::try_from(n).expect("dictionary under 4 GiB and 4G entries")
}

impl<const K: usize> Dict<K> {
    /// Adds an entry and returns its id.
    pub(super) fn push(&mut self, texts: [Option<&str>; K]) -> u32 {
        let mut nulls = 0;
        let spans = std::array::from_fn(|c| match texts[c] {
            Some(t) => {
                let start = pos32(self.bytes.len());
                self.bytes.extend_from_slice(t.as_bytes());
                Span {
                    start,
                    len: pos32(t.len()),
                }
            }
            None => {
                nulls |= 1 << c;
                Span::default()
            }
        });
        self.entries.push(Entry { spans, nulls });
        pos32(self.entries.len() - 1)
    }

    /// Number of entries, the all-null one included.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets every entry but the all-null one.
    pub(super) fn clear(&mut self) {
        self.entries.truncate(1);
        self.bytes.clear();
    }

    /// The `K` columns whose row `i` is entry `rows[i]` (ids from `push`), written in
    /// one pass over the rows.
    pub(super) fn columns(&self, rows: &[u32]) -> [StringArray; K] {
        let entries = self.entries.as_slice();
        let mut totals = [0usize; K];
        for &id in rows {
            for (total, span) in totals.iter_mut().zip(&entries[id as usize].spans) {
                *total += span.len as usize;
            }
        }
        // The source is padded so the last chunk of the last text can be read; each
        // output has room for a chunk written past its end.
        let mut src = Vec::with_capacity(self.bytes.len() + CHUNK);
        src.extend_from_slice(&self.bytes);
        src.resize(self.bytes.len() + CHUNK, 0);
        let mut values: [Vec<u8>; K] = std::array::from_fn(|c| {
            offset(totals[c]);
            Vec::with_capacity(totals[c] + CHUNK)
        });
        let mut offsets: [Vec<i32>; K] = std::array::from_fn(|_| vec![0; rows.len() + 1]);
        let ends: [*mut i32; K] = std::array::from_fn(|c| offsets[c][1..].as_mut_ptr());
        let from = src.as_ptr();
        let to: [*mut u8; K] = std::array::from_fn(|c| values[c].as_mut_ptr());
        let mut at = [0usize; K];
        for (row, &id) in rows.iter().enumerate() {
            let e = &entries[id as usize];
            for c in 0..K {
                let Span { start, len } = e.spans[c];
                let (start, len) = (start as usize, len as usize);
                // SAFETY: `start + len <= self.bytes.len()` (spans are made by `push`)
                // and `src` has CHUNK more bytes, so every chunk read below stays inside
                // `src`; `at[c] + len <= totals[c]` and `values[c]` has room for
                // `totals[c] + CHUNK` bytes, so every chunk written stays inside it.
                unsafe {
                    // Most texts fit one chunk: copy it without a loop.
                    std::ptr::copy_nonoverlapping(from.add(start), to[c].add(at[c]), CHUNK);
                    let mut done = CHUNK;
                    while done < len {
                        std::ptr::copy_nonoverlapping(
                            from.add(start + done),
                            to[c].add(at[c] + done),
                            CHUNK,
                        );
                        done += CHUNK;
                    }
                }
                at[c] += len;
                // SAFETY: `ends[c]` points at `rows.len()` offsets and `row < rows.len()`.
                // The cast cannot truncate: `at[c] <= totals[c]`, checked to fit an i32.
                unsafe { *ends[c].add(row) = at[c] as i32 };
            }
        }
        let mut nulls = self.nulls(rows);
        std::array::from_fn(|c| {
            let mut v = std::mem::take(&mut values[c]);
            debug_assert_eq!(at[c], totals[c]);
            // SAFETY: every byte below `totals[c]` was written: each row writes from
            // its start offset at least up to its end offset, the rows cover
            // `0..totals[c]` in order, and the first write started at the buffer's start.
            unsafe { v.set_len(totals[c]) };
            utf8_array(std::mem::take(&mut offsets[c]), v, nulls[c].take())
        })
    }

    /// Validity of each column, `None` for a column whose rows are all valid.
    fn nulls(&self, rows: &[u32]) -> [Option<NullBuffer>; K] {
        // Null bits that occur at all: entry 0 only counts if a row uses it.
        let mut seen = self.entries[1..].iter().fold(0, |acc, e| acc | e.nulls);
        if rows.contains(&NULL_ID) {
            seen = u32::MAX;
        }
        if seen == 0 {
            return std::array::from_fn(|_| None);
        }
        let entries = self.entries.as_slice();
        let masks: Vec<u32> = rows.iter().map(|&id| entries[id as usize].nulls).collect();
        // The null bits the rows actually have.
        let used = masks.iter().fold(0, |acc, m| acc | m);
        std::array::from_fn(|c| {
            let bit = 1 << c;
            (used & bit != 0).then(|| {
                NullBuffer::new(BooleanBuffer::collect_bool(masks.len(), |i| {
                    masks[i] & bit == 0
                }))
            })
        })
    }
}

impl Dict<1> {
    /// A dictionary holding `texts` as ids 1, 2, … in order.
    pub(super) fn with_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d = Dict::default();
        for t in texts {
            d.push([Some(t)]);
        }
        d
    }

    /// The column whose row `i` is entry `rows[i]`.
    pub(super) fn column(&self, rows: &[u32]) -> StringArray {
        let [c] = self.columns(rows);
        c
    }
}

/// Offset of the end of `len` bytes, as Arrow's 32-bit offsets.
pub(super) fn offset(len: usize) -> i32 {
    i32::try_from(len).expect("string column exceeds 2 GiB in one batch")
}

/// Builds a `StringArray` from offsets and values written by this builder.
pub(super) fn utf8_array(
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: Option<NullBuffer>,
) -> StringArray {
    debug_assert!(std::str::from_utf8(&values).is_ok());
    debug_assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    debug_assert_eq!(offsets.last().map(|&o| o as usize), Some(values.len()));
    // SAFETY: `values` is a concatenation of whole `&str`s (or ASCII), so it is UTF-8
    // and every offset falls on a character boundary; offsets start at 0, never
    // decrease and end at `values.len()` because each one is the length written so far.
    unsafe {
        let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets));
        StringArray::new_unchecked(offsets, Buffer::from_vec(values), nulls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn column_repeats_entries_and_marks_nulls() {
        let mut d = Dict::<1>::default();
        let a = d.push([Some("alpha")]);
        let b = d.push([Some("")]);
        let n = d.push([None]);
        let col = d.column(&[a, NULL_ID, b, a, n]);
        assert_eq!(
            col.iter().collect::<Vec<_>>(),
            [Some("alpha"), None, Some(""), Some("alpha"), None]
        );
        assert!(d.column(&[a, b]).nulls().is_none());
    }

    #[test]
    fn entries_of_several_texts_write_each_column() {
        let long = "a-text-longer-than-one-copy-chunk-of-sixteen-bytes";
        let mut d = Dict::<3>::default();
        let x = d.push([Some("ns"), None, Some(long)]);
        let y = d.push([Some("other"), Some("pod-1"), Some("z")]);
        let [c0, c1, c2] = d.columns(&[y, x, NULL_ID, x]);
        assert_eq!(
            c0.iter().collect::<Vec<_>>(),
            [Some("other"), Some("ns"), None, Some("ns")]
        );
        assert_eq!(
            c1.iter().collect::<Vec<_>>(),
            [Some("pod-1"), None, None, None]
        );
        assert_eq!(
            c2.iter().collect::<Vec<_>>(),
            [Some("z"), Some(long), None, Some(long)]
        );
        d.clear();
        assert_eq!(d.len(), 1);
        assert_eq!(d.columns(&[]).map(|c| c.len()), [0, 0, 0]);
    }
}
