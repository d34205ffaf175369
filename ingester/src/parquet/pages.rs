//! What the column chunk writers of [`super::dict`] and [`super::delta`] share:
//! writing a v2 data page, ZSTD with a context kept per thread, and the
//! bookkeeping of a chunk's pages (offsets, sizes, the column and offset index,
//! the chunk's null count and bounds).

use std::cell::RefCell;

use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Encoding, Type};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::{CompressedPage, Page, PageWriteSpec, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder};

/// One encoded column chunk: its bytes (dictionary page first, offsets relative
/// to the start of `bytes`) and what the row group writer needs to splice it in.
pub struct EncodedChunk {
    pub bytes: Bytes,
    pub close: ColumnCloseResult,
}

/// One v2 data page: levels (RLE, stored as they are) and encoded values.
pub(super) struct DataPage<'a> {
    pub reps: &'a [u8],
    pub defs: &'a [u8],
    pub values: &'a [u8],
    pub encoding: Encoding,
    /// Level slots: values and nulls.
    pub slots: usize,
    pub nulls: usize,
    pub rows: usize,
}

/// Writes `page` with its values compressed by ZSTD at `level`.
pub(super) fn write_data_page(
    pages: &mut dyn PageWriter,
    page: DataPage,
    level: i32,
) -> Result<PageWriteSpec> {
    let compressed = compress(page.values, level)?;
    let levels = page.reps.len() + page.defs.len();
    let mut buf = Vec::with_capacity(levels + compressed.len());
    buf.extend_from_slice(page.reps);
    buf.extend_from_slice(page.defs);
    buf.extend_from_slice(&compressed);
    pages.write_page(CompressedPage::new(
        Page::DataPageV2 {
            buf: buf.into(),
            num_values: page.slots as u32,
            encoding: page.encoding,
            num_nulls: page.nulls as u32,
            num_rows: page.rows as u32,
            def_levels_byte_len: page.defs.len() as u32,
            rep_levels_byte_len: page.reps.len() as u32,
            is_compressed: true,
            statistics: None,
        },
        levels + page.values.len(),
    ))
}

thread_local! {
    /// This thread's ZSTD context and its level: a context is a few hundred
    /// kilobytes to set up, and a file has hundreds of pages.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// `data` compressed with ZSTD at `level`.
pub(super) fn compress(data: &[u8], level: i32) -> Result<Bytes> {
    COMPRESSOR
        .with_borrow_mut(|slot| {
            let compressor = match slot {
                Some((l, c)) if *l == level => c,
                _ => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
            };
            compressor.compress(data)
        })
        .map(Bytes::from)
        .map_err(|e| ParquetError::External(Box::new(e)))
}

/// A chunk's data pages as they are written: where they are, their sizes and
/// rows, the column index, and the chunk's null count and value bounds (`T`:
/// the chunk's values, or dictionary ids ordered like them).
pub(super) struct PageLog<T> {
    column_index: ColumnIndexBuilder,
    offset_index: OffsetIndexBuilder,
    bounds: Vec<Option<(T, T)>>,
    pub first_offset: Option<u64>,
    pub pages: i32,
    pub uncompressed: u64,
    pub nulls: u64,
}

impl<T: PartialOrd + Copy> PageLog<T> {
    pub fn new(physical: Type) -> Self {
        PageLog {
            column_index: ColumnIndexBuilder::new(physical),
            offset_index: OffsetIndexBuilder::new(),
            bounds: Vec::new(),
            first_offset: None,
            pages: 0,
            uncompressed: 0,
            nulls: 0,
        }
    }

    /// Records a written page of `rows` rows, `nulls` of them null, whose
    /// smallest and largest values are `bounds`, written in the column index as
    /// `index_bounds` (plain-encoded, truncated as the index wants).
    pub fn record(
        &mut self,
        spec: &PageWriteSpec,
        rows: usize,
        nulls: usize,
        bounds: Option<(T, T)>,
        index_bounds: impl FnOnce(T, T) -> (Vec<u8>, Vec<u8>),
    ) {
        self.first_offset.get_or_insert(spec.offset);
        self.pages += 1;
        self.uncompressed += spec.uncompressed_size as u64;
        self.nulls += nulls as u64;
        match bounds {
            Some((lo, hi)) => {
                let (min, max) = index_bounds(lo, hi);
                self.column_index.append(false, min, max, nulls as i64);
            }
            None => self
                .column_index
                .append(true, Vec::new(), Vec::new(), nulls as i64),
        }
        self.bounds.push(bounds);
        self.offset_index
            .append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        self.offset_index.append_row_count(rows as i64);
    }

    /// A byte-array page's unencoded bytes, for the offset index.
    pub fn record_unencoded_bytes(&mut self, bytes: i64) {
        self.offset_index
            .append_unencoded_byte_array_data_bytes(Some(bytes));
    }

    /// The smallest and largest value of the whole chunk.
    pub fn chunk_bounds(&self) -> Option<(T, T)> {
        self.bounds
            .iter()
            .flatten()
            .copied()
            .reduce(|(a, b), (c, d)| (min(a, c), max(b, d)))
    }

    /// The written chunk: its `bytes` (pages from offset 0), `rows`, its
    /// metadata, bloom filter and indexes.
    pub fn chunk(
        mut self,
        bytes: Vec<u8>,
        rows: usize,
        metadata: ColumnChunkMetaData,
        bloom_filter: Option<Sbbf>,
    ) -> Result<EncodedChunk> {
        self.column_index
            .set_boundary_order(boundary_order(&self.bounds));
        Ok(EncodedChunk {
            close: ColumnCloseResult {
                bytes_written: bytes.len() as u64,
                rows_written: rows as u64,
                metadata,
                bloom_filter,
                column_index: Some(self.column_index.build()?),
                offset_index: Some(self.offset_index.build()),
            },
            bytes: bytes.into(),
        })
    }
}

fn min<T: PartialOrd>(a: T, b: T) -> T {
    if b < a { b } else { a }
}

fn max<T: PartialOrd>(a: T, b: T) -> T {
    if b > a { b } else { a }
}

/// Ascending when every page's min and max are at least the previous page's
/// (pages sorted by this column), otherwise unordered; all-null pages are skipped.
fn boundary_order<T: PartialOrd + Copy>(pages: &[Option<(T, T)>]) -> BoundaryOrder {
    let bounds: Vec<(T, T)> = pages.iter().flatten().copied().collect();
    if bounds
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
    {
        BoundaryOrder::ASCENDING
    } else {
        BoundaryOrder::UNORDERED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_order_of_sorted_pages() {
        assert_eq!(
            boundary_order(&[Some((0, 1)), None, Some((1, 3))]),
            BoundaryOrder::ASCENDING
        );
        assert_eq!(
            boundary_order(&[Some((2, 3)), Some((0, 1))]),
            BoundaryOrder::UNORDERED
        );
    }

    #[test]
    fn compressed_pages_decompress_at_every_level() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        for level in [3, 1, 3] {
            let packed = compress(&data, level).unwrap();
            assert!(packed.len() < data.len() / 4);
            assert_eq!(zstd::bulk::decompress(&packed, data.len()).unwrap(), data);
        }
    }
}
