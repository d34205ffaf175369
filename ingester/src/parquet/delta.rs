//! Integer and timestamp column chunks written `DELTA_BINARY_PACKED`.
//!
//! The flow schema's numeric columns (times, ports, counters, latencies) are
//! written with dictionaries off, so parquet-rs would delta-encode them: this
//! writes the same encoding and layout in a few instructions per value instead
//! of parquet-rs's generic column writer (per value: a level, a statistics
//! update, an encoder call). Pages are v2 of at most `data_page_row_count_limit`
//! rows, definition levels from the validity bitmap, values in blocks of four
//! miniblocks (32 values for INT32, 64 for INT64, as parquet-rs), ZSTD; exact
//! chunk and page statistics, a column index and an offset index.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use parquet::basic::{Compression, Encoding, EncodingMask, PageType, Type};
use parquet::column::page::PageWriter;
use parquet::errors::Result;
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use super::pages::{DataPage, EncodedChunk, PageLog, write_data_page};
use super::rle;

/// A physical integer type of Parquet, with the wrapping arithmetic the
/// encoding is defined in.
trait Physical: Copy + Ord + Default {
    const TYPE: Type;
    /// Values per miniblock (four miniblocks per block).
    const MINIBLOCK: usize;
    /// `self - prev`, wrapping in the type's width.
    fn delta(self, prev: Self) -> Self;
    /// `self - min` as an unsigned number of the type's width (wrapping).
    fn offset(self, min: Self) -> u64;
    fn to_i64(self) -> i64;
    fn le_bytes(self) -> Vec<u8>;
    fn statistics(min_max: Option<(Self, Self)>, nulls: u64) -> Statistics;
}

impl Physical for i32 {
    const TYPE: Type = Type::INT32;
    const MINIBLOCK: usize = 32;
    fn delta(self, prev: Self) -> Self {
        self.wrapping_sub(prev)
    }
    fn offset(self, min: Self) -> u64 {
        u64::from(self.wrapping_sub(min) as u32)
    }
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn le_bytes(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
    fn statistics(min_max: Option<(Self, Self)>, nulls: u64) -> Statistics {
        let (min, max) = min_max.unzip();
        Statistics::Int32(ValueStatistics::new(min, max, None, Some(nulls), false))
    }
}

impl Physical for i64 {
    const TYPE: Type = Type::INT64;
    const MINIBLOCK: usize = 64;
    fn delta(self, prev: Self) -> Self {
        self.wrapping_sub(prev)
    }
    fn offset(self, min: Self) -> u64 {
        self.wrapping_sub(min) as u64
    }
    fn to_i64(self) -> i64 {
        self
    }
    fn le_bytes(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
    fn statistics(min_max: Option<(Self, Self)>, nulls: u64) -> Statistics {
        let (min, max) = min_max.unzip();
        Statistics::Int64(ValueStatistics::new(min, max, None, Some(nulls), false))
    }
}

/// Whether [`encode_numeric`] writes `column` of `descr` exactly as parquet-rs
/// would under `props`: an integer or timestamp column without a dictionary,
/// bloom filter or explicit encoding, page statistics, ZSTD.
pub fn delta_encoded(descr: &ColumnDescPtr, column: &ArrayRef, props: &WriterProperties) -> bool {
    let path = descr.path();
    let physical = match column.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 => Type::INT32,
        DataType::Int64 | DataType::Timestamp(..) => Type::INT64,
        _ => return false,
    };
    descr.physical_type() == physical
        && descr.max_rep_level() == 0
        && descr.max_def_level() <= 1
        && !props.dictionary_enabled(path)
        && props.encoding(path).is_none()
        && props.bloom_filter_properties(path).is_none()
        && props.statistics_enabled(path) == EnabledStatistics::Page
        && matches!(props.compression(path), Compression::ZSTD(_))
        && props.writer_version() == parquet::file::properties::WriterVersion::PARQUET_2_0
}

/// Encodes `column` (see [`delta_encoded`]) as one column chunk of `descr`.
pub fn encode_numeric(
    descr: ColumnDescPtr,
    column: &ArrayRef,
    props: &WriterProperties,
) -> Result<EncodedChunk> {
    let nulls = column.nulls().filter(|n| n.null_count() > 0);
    let widened: Vec<i32>;
    match column.data_type() {
        DataType::Int8 => {
            widened = widen(column.as_primitive::<Int8Type>().values());
            encode(descr, &widened, nulls, props)
        }
        DataType::Int16 => {
            widened = widen(column.as_primitive::<Int16Type>().values());
            encode(descr, &widened, nulls, props)
        }
        DataType::Int32 => encode(
            descr,
            column.as_primitive::<Int32Type>().values(),
            nulls,
            props,
        ),
        DataType::Int64 => encode(
            descr,
            column.as_primitive::<Int64Type>().values(),
            nulls,
            props,
        ),
        DataType::Timestamp(unit, _) => {
            use arrow::datatypes::TimeUnit::*;
            let values = match unit {
                Second => column.as_primitive::<TimestampSecondType>().values(),
                Millisecond => column.as_primitive::<TimestampMillisecondType>().values(),
                Microsecond => column.as_primitive::<TimestampMicrosecondType>().values(),
                Nanosecond => column.as_primitive::<TimestampNanosecondType>().values(),
            };
            encode(descr, values, nulls, props)
        }
        other => Err(parquet::errors::ParquetError::General(format!(
            "{}: {other} is not delta-encoded here",
            descr.name()
        ))),
    }
}

fn widen<T: Copy + Into<i32>>(values: &[T]) -> Vec<i32> {
    values.iter().map(|&v| v.into()).collect()
}

fn encode<T: Physical>(
    descr: ColumnDescPtr,
    values: &[T],
    nulls: Option<&NullBuffer>,
    props: &WriterProperties,
) -> Result<EncodedChunk> {
    let path = descr.path().clone();
    let compression = props.compression(&path);
    let Compression::ZSTD(level) = compression else {
        unreachable!("checked by delta_encoded");
    };
    let level = level.compression_level();
    let max_def = descr.max_def_level();
    if max_def == 0 && nulls.is_some() {
        return Err(parquet::errors::ParquetError::General(format!(
            "{}: nulls in a required column",
            descr.name()
        )));
    }

    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let page_rows = super::data_page_rows(descr.path(), props);
    let mut log = PageLog::<T>::new(T::TYPE);
    let (mut present, mut defs, mut buf) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..values.len()).step_by(page_rows) {
        let rows = page_rows.min(values.len() - start);
        let page = &values[start..start + rows];
        let valid = nulls.map(|n| n.inner().slice(start, rows));
        let page_values: &[T] = match &valid {
            Some(v) if v.count_set_bits() < rows => {
                present.clear();
                present.extend(v.set_indices().map(|i| page[i]));
                &present
            }
            _ => page,
        };
        let page_nulls = rows - page_values.len();
        defs.clear();
        if max_def > 0 {
            match &valid {
                Some(v) if page_nulls > 0 => rle::encode_bits(v, &mut defs),
                _ => rle::encode_run(1, rows, 1, &mut defs),
            }
        }
        buf.clear();
        let bounds = encode_page(page_values, &mut buf);
        let spec = write_data_page(
            &mut pages,
            DataPage {
                reps: &[],
                defs: &defs,
                values: &buf,
                encoding: Encoding::DELTA_BINARY_PACKED,
                slots: rows,
                nulls: page_nulls,
                rows,
            },
            level,
        )?;
        log.record(&spec, rows, page_nulls, bounds, |lo, hi| {
            (lo.le_bytes(), hi.le_bytes())
        });
    }
    pages.close()?;

    // parquet-rs lists RLE (the levels' encoding) for required columns too.
    let encodings = [Encoding::DELTA_BINARY_PACKED, Encoding::RLE];
    let bytes_written = sink.bytes_written() as u64;
    let metadata = ColumnChunkMetaData::builder(Arc::clone(&descr))
        .set_compression(compression)
        .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
        .set_page_encoding_stats(vec![PageEncodingStats {
            page_type: PageType::DATA_PAGE_V2,
            encoding: Encoding::DELTA_BINARY_PACKED,
            count: log.pages,
        }])
        .set_total_compressed_size(bytes_written as i64)
        .set_total_uncompressed_size(log.uncompressed as i64)
        .set_num_values(values.len() as i64)
        .set_data_page_offset(log.first_offset.unwrap_or(0) as i64)
        .set_statistics(T::statistics(log.chunk_bounds(), log.nulls))
        .build()?;
    log.chunk(sink.into_inner()?, values.len(), metadata, None)
}

/// Appends `values` in the `DELTA_BINARY_PACKED` encoding to `out`; returns
/// their smallest and largest value.
fn encode_page<T: Physical>(values: &[T], out: &mut Vec<u8>) -> Option<(T, T)> {
    let block = 4 * T::MINIBLOCK;
    put_uleb(block as u64, out);
    put_uleb(4, out);
    put_uleb(values.len() as u64, out);
    put_uleb(zigzag(values.first().map_or(0, |v| v.to_i64())), out);
    let first = *values.first()?;
    let (mut lo, mut hi, mut prev) = (first, first, first);
    let mut deltas = [T::default(); 256];
    for chunk in values[1..].chunks(block) {
        let mut min = chunk[0].delta(prev);
        for (d, &v) in deltas.iter_mut().zip(chunk) {
            *d = v.delta(prev);
            prev = v;
            min = min.min(*d);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        put_uleb(zigzag(min.to_i64()), out);
        // Miniblocks past the last value keep width 0 and no bytes.
        let widths_at = out.len();
        out.extend_from_slice(&[0; 4]);
        for (m, mini) in deltas[..chunk.len()].chunks(T::MINIBLOCK).enumerate() {
            // The last miniblock is padded with zeros to its full length.
            let mut offsets = [0u64; 64];
            let mut all = 0u64;
            for (o, &d) in offsets.iter_mut().zip(mini) {
                *o = d.offset(min);
                all |= *o;
            }
            let width = 64 - all.leading_zeros();
            out[widths_at + m] = width as u8;
            rle::bit_pack(offsets[..T::MINIBLOCK].iter().copied(), width, out);
        }
    }
    Some((lo, hi))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_uleb(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Int8Array, Int16Array, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Schema, SchemaRef};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;

    use super::*;
    use crate::parquet::{write_file, writer_properties};

    /// Columns of every integer width, nullable and not, with extremes whose
    /// deltas wrap, runs, all-null pages and single-value pages.
    fn columns(n: usize) -> (SchemaRef, Vec<ArrayRef>) {
        let wild = |i: usize| match i % 9 {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => 0,
            3 => -1,
            _ => (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as i64,
        };
        // Null on the first 1,000 rows (whole pages of 500 rows), then on every third.
        let null = |i: usize| i < 1000 || i.is_multiple_of(3);
        let fields = vec![
            Field::new("i8", DataType::Int8, true),
            Field::new("i16", DataType::Int16, false),
            Field::new("i32", DataType::Int32, true),
            Field::new("i32_wild", DataType::Int32, false),
            Field::new("i64", DataType::Int64, false),
            Field::new("i64_wild", DataType::Int64, true),
            Field::new(
                "ts",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("constant", DataType::Int64, false),
        ];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::from_iter(
                (0..n).map(|i| (!null(i)).then_some((i % 250) as i8)),
            )),
            Arc::new(Int16Array::from_iter_values(
                (0..n).map(|i| (i as i16).wrapping_mul(7919)),
            )),
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| (!null(i)).then_some(i as i32 * 3 - 5000)),
            )),
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| wild(i) as i32))),
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| (i as i64) << 20),
            )),
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (!null(i)).then_some(wild(i))),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..n).map(|i| 1_764_000_000_000_000 + (i as i64 / 3) * 1_000_000),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values((0..n).map(|_| 42))),
        ];
        (Arc::new(Schema::new(fields)), columns)
    }

    fn props() -> WriterProperties {
        let mut b = writer_properties()
            .into_builder()
            .set_data_page_row_count_limit(500)
            .set_max_row_group_row_count(Some(3001));
        for c in [
            "i8", "i16", "i32", "i32_wild", "i64", "i64_wild", "ts", "constant",
        ] {
            b = b.set_column_dictionary_enabled(c.into(), false);
        }
        b.build()
    }

    fn read(bytes: bytes::Bytes) -> (RecordBatch, ParquetMetaData) {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let builder =
            ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options).unwrap();
        let metadata = builder.metadata().as_ref().clone();
        let schema = builder.schema().clone();
        let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        (
            arrow::compute::concat_batches(&schema, &batches).unwrap(),
            metadata,
        )
    }

    /// Every column reads back as written, with the chunk statistics, value
    /// counts and encodings parquet-rs's own writer gives the same rows, and each
    /// page's column index bounds are the min and max of that page's values.
    #[test]
    fn reads_back_with_parquet_rs_statistics() {
        let n = 7_777;
        let (schema, columns) = columns(n);
        for (f, c) in schema.fields().iter().zip(&columns) {
            let descr = parquet::arrow::ArrowSchemaConverter::new()
                .convert(&schema)
                .unwrap()
                .columns()
                .iter()
                .find(|d| d.name() == f.name())
                .cloned()
                .unwrap();
            assert!(delta_encoded(&descr, c, &props()), "{}", f.name());
        }
        let ours = write_file(&schema, &columns, props()).unwrap();
        let mut reference = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut reference, Arc::clone(&schema), Some(props())).unwrap();
        writer
            .write(&RecordBatch::try_new(Arc::clone(&schema), columns.clone()).unwrap())
            .unwrap();
        writer.close().unwrap();

        let (got, metadata) = read(ours.bytes.clone());
        assert_eq!(got.columns(), columns.as_slice());
        let (_, theirs) = read(reference.into());
        assert_eq!(metadata.num_row_groups(), 3);
        let column_index = metadata.column_index().unwrap();
        let offset_index = metadata.offset_index().unwrap();
        let mut start = 0;
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let rows = group.num_rows() as usize;
            for (c, chunk) in group.columns().iter().enumerate() {
                let other = theirs.row_group(g).column(c);
                let name = chunk.column_path().string();
                assert_eq!(chunk.statistics(), other.statistics(), "{name}");
                assert_eq!(chunk.num_values(), other.num_values(), "{name}");
                assert_eq!(chunk.encodings_mask(), other.encodings_mask(), "{name}");
                let values = arrow::compute::cast(&columns[c], &DataType::Int64).unwrap();
                let values = values.as_primitive::<Int64Type>();
                let pages = &offset_index[g][c].page_locations;
                for (p, page) in pages.iter().enumerate() {
                    let first = start + page.first_row_index as usize;
                    let end = pages
                        .get(p + 1)
                        .map_or(start + rows, |n| start + n.first_row_index as usize);
                    let present: Vec<i64> = (first..end)
                        .filter(|&i| values.is_valid(i))
                        .map(|i| values.value(i))
                        .collect();
                    let bounds = |index: &ColumnIndexMetaData| match index {
                        ColumnIndexMetaData::INT32(x) => (
                            x.null_count(p),
                            x.min_value(p).map(|&v| i64::from(v)),
                            x.max_value(p).map(|&v| i64::from(v)),
                        ),
                        ColumnIndexMetaData::INT64(x) => (
                            x.null_count(p),
                            x.min_value(p).copied(),
                            x.max_value(p).copied(),
                        ),
                        other => panic!("{name}: {other:?}"),
                    };
                    assert_eq!(
                        bounds(&column_index[g][c]),
                        (
                            Some((end - first - present.len()) as i64),
                            present.iter().min().copied(),
                            present.iter().max().copied()
                        ),
                        "{name} row group {g} page {p}"
                    );
                }
            }
            start += rows;
        }
    }

    /// The encoding of a few values byte for byte: header, one block, the
    /// miniblock widths, zero padding of the last miniblock.
    #[test]
    fn one_block_byte_for_byte() {
        let mut out = Vec::new();
        assert_eq!(encode_page::<i32>(&[7, 5, 6, 9], &mut out), Some((5, 9)));
        // block 128, 4 miniblocks, 4 values, first 7 (zigzag 14); min delta -2
        // (zigzag 3); deltas -2, 1, 3 as 0, 3, 5: width 3, 32 values of 3 bits.
        let mut want = vec![128, 1, 4, 4, 14, 3, 3, 0, 0, 0];
        let packed: u32 = 3 << 3 | 5 << 6;
        want.extend_from_slice(&packed.to_le_bytes()[..2]);
        want.extend_from_slice(&[0; 10]);
        assert_eq!(out, want);

        out.clear();
        assert_eq!(encode_page::<i64>(&[], &mut out), None);
        assert_eq!(out, [128, 2, 4, 0, 0]);
        out.clear();
        assert_eq!(encode_page::<i64>(&[-3], &mut out), Some((-3, -3)));
        assert_eq!(out, [128, 2, 4, 1, 5]);
    }
}
