//! One string column chunk written straight from a sorted dictionary and its keys.
//!
//! The flush has already interned every string column into a dictionary sorted
//! by value ([`crate::sort`]), so a chunk needs no hashing and no string
//! comparisons per value: the chunk's dictionary page is the used subset of the
//! flush's dictionary (still sorted), data pages are the RLE / bit-packed keys,
//! every page's min and max are the values of its smallest and largest key, and
//! the bloom filter gets each distinct value once. The layout is what parquet-rs
//! writes for the same properties: a PLAIN dictionary page, `RLE_DICTIONARY`
//! data pages (v2) of at most `data_page_row_count_limit` rows, ZSTD, chunk and
//! page statistics truncated like parquet-rs's, a column index, an offset index
//! and the bloom filter when the column has one.

use std::sync::Arc;

use arrow::array::{Array, AsArray, DictionaryArray, StringArray};
use arrow::datatypes::UInt32Type;
use parquet::basic::{Compression, Encoding, EncodingMask, PageType, Type};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::data_type::ByteArray;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

pub use super::pages::EncodedChunk;
use super::pages::{DataPage, PageLog, compress, write_data_page};
use super::rle;

/// One leaf column of a chunk, as the encoder reads it: ids into a dictionary of
/// sorted distinct strings, and the levels of each row.
pub(super) trait Leaf {
    /// Rows in the chunk.
    fn rows(&self) -> usize;
    /// Sets `used[id]` for the dictionary id of every value (not null) of the
    /// chunk; an id out of range is an error.
    fn mark_used(&self, used: &mut [bool]) -> Result<()>;
    /// Rows `start..end`: appends their values' ids, mapped through `local`, to
    /// `ids`, and their repetition and definition levels (RLE) to `reps` and `defs`.
    /// Returns the number of level slots (values and nulls).
    fn page(
        &self,
        rows: std::ops::Range<usize>,
        local: &[u32],
        ids: &mut Vec<u32>,
        reps: &mut Vec<u8>,
        defs: &mut Vec<u8>,
    ) -> Result<usize>;
}

/// The error of a dictionary id past the end of the dictionary.
pub(super) fn out_of_range(id: u32) -> ParquetError {
    ParquetError::General(format!("dictionary id {id} out of range"))
}

/// A flat string column: one dictionary key per row, null or not.
struct FlatLeaf<'a> {
    keys: &'a [u32],
    nulls: Option<arrow::buffer::NullBuffer>,
    max_def: i16,
}

impl Leaf for FlatLeaf<'_> {
    fn rows(&self) -> usize {
        self.keys.len()
    }

    fn mark_used(&self, used: &mut [bool]) -> Result<()> {
        let mut mark = |k: u32| match used.get_mut(k as usize) {
            Some(u) => {
                *u = true;
                Ok(())
            }
            None => Err(out_of_range(k)),
        };
        match &self.nulls {
            None => self.keys.iter().try_for_each(|&k| mark(k)),
            Some(n) => n.valid_indices().try_for_each(|i| mark(self.keys[i])),
        }
    }

    fn page(
        &self,
        rows: std::ops::Range<usize>,
        local: &[u32],
        ids: &mut Vec<u32>,
        _reps: &mut Vec<u8>,
        defs: &mut Vec<u8>,
    ) -> Result<usize> {
        let n = rows.len();
        let keys = &self.keys[rows.clone()];
        let valid = self.nulls.as_ref().map(|v| v.inner().slice(rows.start, n));
        let before = ids.len();
        match &valid {
            None => ids.extend(keys.iter().map(|&k| local[k as usize])),
            Some(v) => ids.extend(v.set_indices().map(|j| local[keys[j] as usize])),
        }
        let nulls = n - (ids.len() - before);
        if self.max_def > 0 {
            match &valid {
                Some(v) if nulls > 0 => rle::encode_bits(v, defs),
                _ => rle::encode_run(1, n, 1, defs),
            }
        } else if nulls > 0 {
            return Err(ParquetError::General("nulls in a required column".into()));
        }
        Ok(n)
    }
}

/// Encodes `column` (a dictionary whose values are sorted and distinct) as one
/// column chunk of `descr`.
pub fn encode_chunk(
    descr: ColumnDescPtr,
    column: &DictionaryArray<UInt32Type>,
    props: &WriterProperties,
) -> Result<EncodedChunk> {
    let values = column.values().as_string_opt::<i32>().ok_or_else(|| {
        ParquetError::General(format!(
            "{}: dictionary values are not strings",
            descr.name()
        ))
    })?;
    let keys = column.keys();
    let leaf = FlatLeaf {
        keys: keys.values(),
        nulls: keys.nulls().filter(|n| n.null_count() > 0).cloned(),
        max_def: descr.max_def_level(),
    };
    encode_leaf(descr, values, &leaf, props)
}

/// Encodes one leaf column chunk of `descr` whose values are ids into `values`
/// (sorted, distinct).
pub fn encode_leaf(
    descr: ColumnDescPtr,
    values: &StringArray,
    leaf: &dyn Leaf,
    props: &WriterProperties,
) -> Result<EncodedChunk> {
    let path = descr.path().clone();
    let level = match props.compression(&path) {
        Compression::ZSTD(level) => level.compression_level(),
        other => {
            return Err(ParquetError::General(format!(
                "{}: the dictionary writer writes ZSTD, not {other}",
                descr.name()
            )));
        }
    };

    // The chunk's dictionary: the used keys, renumbered in (sorted) value order.
    let mut is_used = vec![false; values.len()];
    leaf.mark_used(&mut is_used)
        .map_err(|e| ParquetError::General(format!("{}: {e}", descr.name())))?;
    let mut local = vec![u32::MAX; values.len()];
    let mut used: Vec<u32> = Vec::new();
    for (g, _) in is_used.iter().enumerate().filter(|(_, u)| **u) {
        local[g] = used.len() as u32;
        used.push(g as u32);
    }
    let lengths: Vec<i64> = used
        .iter()
        .map(|&g| values.value_length(g as usize) as i64)
        .collect();
    let value = |l: u32| values.value(used[l as usize] as usize).as_bytes();
    let width = rle::bit_width((used.len() as u32).saturating_sub(1));

    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let mut unencoded_bytes = 0i64;

    let mut dict_plain = Vec::new();
    for l in 0..used.len() as u32 {
        let v = value(l);
        dict_plain.extend_from_slice(&(v.len() as u32).to_le_bytes());
        dict_plain.extend_from_slice(v);
    }
    let dict_spec = pages.write_page(CompressedPage::new(
        Page::DictionaryPage {
            buf: compress(&dict_plain, level)?,
            num_values: used.len() as u32,
            encoding: Encoding::PLAIN,
            is_sorted: true,
        },
        dict_plain.len(),
    ))?;

    let page_rows = super::data_page_rows(&path, props);
    let truncate_index = props.column_index_truncate_length();
    let mut log = PageLog::<u32>::new(Type::BYTE_ARRAY);
    let (mut ids, mut reps, mut defs, mut buf) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut num_values = 0i64;
    for start in (0..leaf.rows()).step_by(page_rows) {
        let end = (start + page_rows).min(leaf.rows());
        let rows = end - start;
        ids.clear();
        reps.clear();
        defs.clear();
        let slots = leaf.page(start..end, &local, &mut ids, &mut reps, &mut defs)?;
        num_values += slots as i64;
        let page_bytes: i64 = ids.iter().map(|&l| lengths[l as usize]).sum();
        let page_nulls = slots - ids.len();
        buf.clear();
        buf.push(width);
        rle::encode(&ids, width, &mut buf);
        let spec = write_data_page(
            &mut pages,
            DataPage {
                reps: &reps,
                defs: &defs,
                values: &buf,
                encoding: Encoding::RLE_DICTIONARY,
                slots,
                nulls: page_nulls,
                rows,
            },
            level,
        )?;
        unencoded_bytes += page_bytes;
        let bounds = ids
            .iter()
            .min()
            .zip(ids.iter().max())
            .map(|(&lo, &hi)| (lo, hi));
        log.record(&spec, rows, page_nulls, bounds, |lo, hi| {
            (
                truncate_min(value(lo), truncate_index).0,
                truncate_max(value(hi), truncate_index).0,
            )
        });
        log.record_unencoded_bytes(page_bytes);
    }
    pages.close()?;

    let statistics = match log.chunk_bounds() {
        None => ValueStatistics::<ByteArray>::new(None, None, None, Some(log.nulls), false),
        Some((chunk_min, chunk_max)) => {
            let truncate = props.statistics_truncate_length();
            let (min, min_cut) = truncate_min(value(chunk_min), truncate);
            let (max, max_cut) = truncate_max(value(chunk_max), truncate);
            ValueStatistics::new(
                Some(ByteArray::from(min)),
                Some(ByteArray::from(max)),
                None,
                Some(log.nulls),
                false,
            )
            .with_min_is_exact(!min_cut)
            .with_max_is_exact(!max_cut)
        }
    };
    let bloom_filter = match props.bloom_filter_properties(&path) {
        Some(bp) => {
            let mut sbbf = Sbbf::new_with_ndv_fpp((used.len() as u64).max(1), bp.fpp())?;
            for l in 0..used.len() as u32 {
                sbbf.insert(value(l));
            }
            Some(sbbf)
        }
        None => None,
    };

    let bytes_written = sink.bytes_written() as u64;
    let metadata = ColumnChunkMetaData::builder(Arc::clone(&descr))
        .set_compression(props.compression(&path))
        .set_encodings_mask(EncodingMask::new_from_encodings(
            [Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY].iter(),
        ))
        .set_page_encoding_stats(vec![
            PageEncodingStats {
                page_type: PageType::DICTIONARY_PAGE,
                encoding: Encoding::PLAIN,
                count: 1,
            },
            PageEncodingStats {
                page_type: PageType::DATA_PAGE_V2,
                encoding: Encoding::RLE_DICTIONARY,
                count: log.pages,
            },
        ])
        .set_total_compressed_size(bytes_written as i64)
        .set_total_uncompressed_size((dict_spec.uncompressed_size as u64 + log.uncompressed) as i64)
        .set_num_values(num_values)
        .set_dictionary_page_offset(Some(dict_spec.offset as i64))
        .set_data_page_offset(log.first_offset.unwrap_or(dict_spec.offset) as i64)
        .set_statistics(Statistics::ByteArray(statistics))
        .set_unencoded_byte_array_data_bytes(Some(unencoded_bytes))
        .build()?;
    log.chunk(sink.into_inner()?, leaf.rows(), metadata, bloom_filter)
}

/// A lower bound of `v` at most `limit` bytes long (a prefix ending on a
/// character boundary), and whether it was cut; parquet-rs's rule.
fn truncate_min(v: &[u8], limit: Option<usize>) -> (Vec<u8>, bool) {
    match (limit, std::str::from_utf8(v)) {
        (Some(l), Ok(s)) if v.len() > l => match floor_boundary(s, l) {
            0 => (v.to_vec(), false),
            cut => (v[..cut].to_vec(), true),
        },
        _ => (v.to_vec(), false),
    }
}

/// An upper bound of `v` at most `limit` bytes long: a prefix whose last
/// character is incremented (dropping characters that cannot be), or `v` itself
/// when no such prefix exists; parquet-rs's rule.
fn truncate_max(v: &[u8], limit: Option<usize>) -> (Vec<u8>, bool) {
    let (Some(l), Ok(s)) = (limit, std::str::from_utf8(v)) else {
        return (v.to_vec(), false);
    };
    if v.len() <= l {
        return (v.to_vec(), false);
    }
    let mut prefix: Vec<char> = s[..floor_boundary(s, l)].chars().collect();
    while let Some(last) = prefix.pop() {
        let bumped = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(c) = bumped {
            prefix.push(c);
            let out: String = prefix.into_iter().collect();
            if out.len() <= l {
                return (out.into_bytes(), true);
            }
            return (v.to_vec(), false);
        }
    }
    (v.to_vec(), false)
}

fn floor_boundary(s: &str, limit: usize) -> usize {
    (0..=limit.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_matches_parquet_rules() {
        assert_eq!(truncate_min(b"abcdef", Some(3)), (b"abc".to_vec(), true));
        assert_eq!(truncate_max(b"abcdef", Some(3)), (b"abd".to_vec(), true));
        assert_eq!(truncate_min(b"abc", Some(3)), (b"abc".to_vec(), false));
        assert_eq!(truncate_max(b"abc", None), (b"abc".to_vec(), false));
        // A multi-byte character is never split.
        let s = "aé…".as_bytes();
        assert_eq!(truncate_min(s, Some(2)), (b"a".to_vec(), true));
        assert_eq!(truncate_max(s, Some(2)), (b"b".to_vec(), true));
    }
}
