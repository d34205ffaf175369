//! One Parquet data file of the table, written in memory.
//!
//! String columns that arrive as sorted dictionaries ([`crate::sort`]) are written
//! by [`super::dict`], integer and timestamp columns by [`super::delta`]; the
//! others (the DNS answers list) by parquet-rs's own column writers. Both
//! kinds of chunk are spliced into the same row groups of one
//! `SerializedFileWriter`, under the one set of [`super::writer_properties`], and
//! the file carries the table's Arrow schema (plain strings) like any file
//! parquet-rs's `ArrowWriter` writes.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, SchemaRef, UInt32Type};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;

use super::delta::{delta_encoded, encode_numeric};
use super::dict::encode_chunk;
use super::map::encode_map;

/// The columns of a file, asked for a row group at a time: column `field` (of
/// the file's schema) of rows `rows`, in the field's type or, for a string or
/// map of strings field, as a `Dictionary(UInt32, _)` of it (sorted distinct
/// strings; distinct maps).
pub trait FileColumns {
    fn num_rows(&self) -> usize;
    fn column(&self, field: usize, rows: Range<usize>) -> Result<ArrayRef>;
}

/// Columns already in memory.
impl FileColumns for Vec<ArrayRef> {
    fn num_rows(&self) -> usize {
        self.first().map_or(0, |c| c.len())
    }

    fn column(&self, field: usize, rows: Range<usize>) -> Result<ArrayRef> {
        let column = self
            .get(field)
            .ok_or_else(|| ParquetError::General(format!("no column {field}")))?;
        Ok(column.slice(rows.start, rows.len()))
    }
}

/// A written file: its bytes and its footer.
pub struct WrittenFile {
    pub bytes: bytes::Bytes,
    pub metadata: ParquetMetaData,
}

/// Writes `columns` (one per field of `schema`) as one Parquet file of row
/// groups of at most `props.max_row_group_row_count()` rows.
pub fn write_file(
    schema: &SchemaRef,
    columns: &dyn FileColumns,
    props: WriterProperties,
) -> Result<WrittenFile> {
    let rows = columns.num_rows();
    let group_rows = props.max_row_group_row_count().unwrap_or(rows).max(1);
    let mut out = Vec::new();
    let writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props.clone()))?;
    let (mut file, factory) = writer.into_serialized_writer()?;
    let descr = Arc::new(file.schema_descr().clone());
    for (group, start) in (0..rows).step_by(group_rows).enumerate() {
        let len = group_rows.min(rows - start);
        let mut writers = factory.create_column_writers(group)?.into_iter();
        let mut row_group = file.next_row_group()?;
        let mut leaf = 0;
        for (f, field) in schema.fields().iter().enumerate() {
            let column = columns.column(f, start..start + len)?;
            match column.data_type() {
                DataType::Dictionary(key, value)
                    if **key == DataType::UInt32
                        && field.data_type() == value.as_ref()
                        && matches!(**value, DataType::Utf8 | DataType::Map(..)) =>
                {
                    let column = column.as_dictionary::<UInt32Type>();
                    let chunks = match **value {
                        DataType::Utf8 => vec![encode_chunk(descr.column(leaf), column, &props)?],
                        _ => {
                            encode_map(descr.column(leaf), descr.column(leaf + 1), column, &props)?
                                .into()
                        }
                    };
                    for chunk in chunks {
                        writers.next();
                        row_group.append_column(&chunk.bytes, chunk.close)?;
                        leaf += 1;
                    }
                }
                _ if delta_encoded(&descr.column(leaf), &column, &props) => {
                    let chunk = encode_numeric(descr.column(leaf), &column, &props)?;
                    writers.next();
                    row_group.append_column(&chunk.bytes, chunk.close)?;
                    leaf += 1;
                }
                _ => {
                    for values in compute_leaves(field, &column)? {
                        let mut writer = writers.next().ok_or_else(|| {
                            ParquetError::General(format!("no column writer for {}", field.name()))
                        })?;
                        writer.write(&values)?;
                        writer.close()?.append_to_row_group(&mut row_group)?;
                        leaf += 1;
                    }
                }
            }
        }
        row_group.close()?;
    }
    let metadata = file.close()?;
    Ok(WrittenFile {
        bytes: out.into(),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use arrow::array::{MapBuilder, RecordBatch, StringArray, StringBuilder};
    use arrow::compute::{cast, concat_batches};
    use arrow::datatypes::Schema;
    use flowlake_schemas::{PARTITION_COLUMNS, col, flow_schema};
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::serialized_reader::ReadOptionsBuilder;
    use parquet::file::statistics::Statistics;

    use super::*;
    use crate::parquet::{BLOOM_COLUMNS, sort_into_partitions, writer_properties};

    /// A run's file columns: the flow schema without the partition columns,
    /// strings still dictionaries.
    pub(super) fn file_columns(run: &crate::parquet::PartitionRun) -> (SchemaRef, Vec<ArrayRef>) {
        let schema = flow_schema();
        let batch = run.batch().unwrap();
        let (fields, columns): (Vec<_>, Vec<_>) = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| !PARTITION_COLUMNS.contains(&f.name().as_str()))
            .map(|(f, c)| (Arc::clone(f), Arc::clone(c)))
            .unzip();
        (Arc::new(Schema::new(fields)), columns)
    }

    pub(super) fn plain(schema: &SchemaRef, columns: &[ArrayRef]) -> RecordBatch {
        let columns = schema
            .fields()
            .iter()
            .zip(columns)
            .map(|(f, c)| cast(c, f.data_type()).unwrap())
            .collect();
        RecordBatch::try_new(Arc::clone(schema), columns).unwrap()
    }

    fn read(bytes: &bytes::Bytes) -> (RecordBatch, ParquetMetaData) {
        let options = ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
        let builder =
            ParquetRecordBatchReaderBuilder::try_new_with_options(bytes.clone(), options).unwrap();
        let metadata = builder.metadata().as_ref().clone();
        let schema = builder.schema().clone();
        let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        (concat_batches(&schema, &batches).unwrap(), metadata)
    }

    /// A run with nulls in a string column, a long value that statistics truncate,
    /// and several pages and row groups.
    pub(super) fn run() -> crate::parquet::PartitionRun {
        let batch = crate::testdata::flows(30_000, 1);
        let schema = batch.schema();
        let mut columns = batch.columns().to_vec();
        let idx = schema.index_of(col::DNS_QUERY).unwrap();
        let long = format!("{}.svc.cluster.local", "q".repeat(80));
        let queries: StringArray = (0..batch.num_rows())
            .map(|i| match i % 7 {
                0 => None,
                1 => Some(long.clone()),
                _ => Some(format!("svc-{}.default", i % 13)),
            })
            .collect();
        columns[idx] = Arc::new(queries);
        // A column of nulls only, and one of a single (empty) value.
        let n = batch.num_rows();
        columns[schema.index_of(col::DNS_RCODE).unwrap()] =
            Arc::new(StringArray::from(vec![None::<&str>; n]));
        columns[schema.index_of(col::INTERFACE).unwrap()] =
            Arc::new(StringArray::from(vec![Some(""); n]));
        // Label maps that are null, empty, with a null value, non-ASCII and long.
        let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for i in 0..n {
            match i % 11 {
                0 => labels.append(false).unwrap(),
                1 => labels.append(true).unwrap(),
                k => {
                    labels.keys().append_value("app");
                    labels.values().append_value(format!("web-{}", i % 5));
                    labels.keys().append_value(format!("tier-é{k}"));
                    match k {
                        2 => labels.values().append_null(),
                        3 => labels.values().append_value("ünïcödé"),
                        4 => labels.values().append_value("v".repeat(90)),
                        _ => labels.values().append_value(format!("t{}", i % 3)),
                    }
                    labels.append(true).unwrap();
                }
            }
        }
        let labels = labels.finish();
        let field = schema.field_with_name(col::DST_LABELS).unwrap();
        let labels = cast(&labels, field.data_type()).unwrap();
        columns[schema.index_of(col::DST_LABELS).unwrap()] = labels;
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let mut runs = sort_into_partitions(&[batch]);
        runs.sort_by_key(|r| std::cmp::Reverse(r.num_rows()));
        runs.remove(0)
    }

    /// Small pages and row groups, so one run spans several of each.
    /// The rows of each page of a column chunk of `rows` rows, by its offset index.
    fn page_rows(
        index: &parquet::file::page_index::offset_index::OffsetIndexMetaData,
        rows: usize,
    ) -> impl Iterator<Item = Range<usize>> + '_ {
        let firsts = index
            .page_locations
            .iter()
            .map(|p| p.first_row_index as usize);
        firsts
            .clone()
            .zip(firsts.skip(1).chain([rows]))
            .map(|(first, end)| first..end)
    }

    pub(super) fn props() -> WriterProperties {
        writer_properties()
            .into_builder()
            .set_data_page_row_count_limit(1000)
            .set_max_row_group_row_count(Some(7000))
            .build()
    }

    /// The file reads back as the rows written, parquet-rs's own writer would
    /// write the same chunk statistics, and each string page's column index
    /// bounds are exactly the min and max of the rows of that page.
    #[test]
    fn reads_back_with_the_statistics_parquet_rs_writes() {
        let run = run();
        assert!(run.num_rows() > 14_000, "{}", run.num_rows());
        let (schema, columns) = file_columns(&run);
        let ours = write_file(&schema, &columns, props()).unwrap();
        let want = plain(&schema, &columns);
        let mut reference = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut reference, Arc::clone(&schema), Some(props())).unwrap();
        writer.write(&want).unwrap();
        writer.close().unwrap();

        let (got, metadata) = read(&ours.bytes);
        assert_eq!(got.columns(), want.columns());
        assert_eq!(got.schema().fields(), want.schema().fields());
        let kv = metadata.file_metadata().key_value_metadata().unwrap();
        assert!(
            kv.iter()
                .any(|e| e.key == flowlake_schemas::SCHEMA_VERSION_KEY)
        );
        let (_, theirs) = read(&bytes::Bytes::from(reference));
        assert_eq!(metadata.num_row_groups(), run.num_rows().div_ceil(7000));
        assert_eq!(metadata.num_row_groups(), theirs.num_row_groups());
        let descr = metadata.file_metadata().schema_descr();
        let (mut dictionary_columns, mut numeric_columns) = (0, 0);
        for (g, group) in metadata.row_groups().iter().enumerate() {
            for (c, chunk) in group.columns().iter().enumerate() {
                let other = theirs.row_group(g).column(c);
                assert_eq!(
                    chunk.num_values(),
                    other.num_values(),
                    "{}",
                    chunk.column_path()
                );
                if let Some(Statistics::Int32(_) | Statistics::Int64(_)) = chunk.statistics() {
                    // Integer and timestamp columns, delta-encoded by `super::delta`.
                    assert_eq!(chunk.statistics(), other.statistics());
                    assert_eq!(chunk.encodings_mask(), other.encodings_mask());
                    numeric_columns += 1;
                    continue;
                }
                let (Some(Statistics::ByteArray(a)), Some(Statistics::ByteArray(b))) =
                    (chunk.statistics(), other.statistics())
                else {
                    continue;
                };
                dictionary_columns += 1;
                assert_eq!(a.min_opt(), b.min_opt(), "{}", chunk.column_path());
                assert_eq!(a.max_opt(), b.max_opt(), "{}", chunk.column_path());
                assert_eq!(a.null_count_opt(), b.null_count_opt());
                assert_eq!(
                    a.max_is_exact(),
                    b.max_is_exact(),
                    "{}",
                    chunk.column_path()
                );
                assert_eq!(a.min_is_exact(), b.min_is_exact());
            }
        }
        assert!(dictionary_columns >= 25 * 3, "{dictionary_columns}");
        assert_eq!(
            numeric_columns,
            flowlake_schemas::NUMERIC_COLUMNS.len() * metadata.num_row_groups()
        );
        // The label maps' leaves are written from the distinct maps.
        for g in 0..metadata.num_row_groups() {
            for c in 0..descr.num_columns() {
                if descr.column(c).path().parts()[0].ends_with("_labels") {
                    let chunk = metadata.row_group(g).column(c);
                    assert!(chunk.dictionary_page_offset().is_some());
                    assert!(metadata.column_index().unwrap()[g][c] != ColumnIndexMetaData::NONE);
                    assert_eq!(
                        chunk.num_values(),
                        theirs.row_group(g).column(c).num_values()
                    );
                }
            }
        }

        // The page index of every string column against the rows themselves.
        let column_index = metadata.column_index().expect("column index");
        let offset_index = metadata.offset_index().expect("offset index");
        let mut start = 0;
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let rows = group.num_rows() as usize;
            for (c, field) in schema.fields().iter().enumerate() {
                if field.data_type() != &DataType::Utf8 {
                    continue;
                }
                let leaf = (0..descr.num_columns())
                    .find(|&l| descr.column(l).path().parts()[0] == *field.name())
                    .unwrap();
                let ColumnIndexMetaData::BYTE_ARRAY(index) = &column_index[g][leaf] else {
                    panic!("{} has no byte array column index", field.name());
                };
                let values = got.column(c).as_string::<i32>();
                for (p, page) in page_rows(&offset_index[g][leaf], rows).enumerate() {
                    let (first, end) = (start + page.start, start + page.end);
                    let page_values: Vec<&str> = (first..end)
                        .filter(|&i| values.is_valid(i))
                        .map(|i| values.value(i))
                        .collect();
                    let nulls = (end - first - page_values.len()) as i64;
                    assert_eq!(
                        index.null_count(p),
                        Some(nulls),
                        "{} page {p}",
                        field.name()
                    );
                    let (Some(min), Some(max)) =
                        (page_values.iter().min(), page_values.iter().max())
                    else {
                        assert!(index.is_null_page(p));
                        continue;
                    };
                    let cut = |v: &str| v.as_bytes()[..v.len().min(64)].to_vec();
                    assert_eq!(index.min_value(p).unwrap(), cut(min));
                    assert!(index.max_value(p).unwrap() >= cut(max).as_slice());
                }
            }
            start += rows;
        }
    }

    /// The pod, workload and namespace columns have pages of at most the rows
    /// `NARROW_PAGES` gives them; the other columns the writer's limit.
    #[test]
    fn narrow_pages_on_the_columns_queries_name_one_value_of() {
        use crate::parquet::{NARROW_PAGES, narrow_page_rows};
        let run = run();
        let (schema, columns) = file_columns(&run);
        let limit = 2 * NARROW_PAGES.iter().map(|(_, rows)| rows).max().unwrap();
        assert!(run.num_rows() > limit, "{}", run.num_rows());
        let props = writer_properties()
            .into_builder()
            .set_data_page_row_count_limit(limit)
            .build();
        let (got, metadata) = read(&write_file(&schema, &columns, props).unwrap().bytes);
        assert_eq!(got.num_rows(), run.num_rows());
        let descr = metadata.file_metadata().schema_descr();
        let rows = metadata.row_group(0).num_rows() as usize;
        let mut narrow = 0;
        for (leaf, index) in metadata.offset_index().unwrap()[0].iter().enumerate() {
            let name = descr.column(leaf).path().string();
            if name.ends_with("_labels.key_value.key") || name.ends_with("_labels.key_value.value")
            {
                continue; // map leaves: values per page, not rows
            }
            let sizes: Vec<usize> = page_rows(index, rows).map(|p| p.len()).collect();
            let want = match narrow_page_rows(&name) {
                Some(rows) => {
                    narrow += 1;
                    rows
                }
                None => limit,
            };
            let (last, full) = sizes.split_last().unwrap();
            assert!(full.iter().all(|&n| n == want), "{name}: {sizes:?}");
            assert!(*last <= want, "{name}: {sizes:?}");
        }
        assert_eq!(narrow, NARROW_PAGES.len());
    }

    /// Bloom filters on the pod and IP columns hold every value of the chunk.
    #[test]
    fn bloom_filters_hold_every_value() {
        let run = run();
        let (schema, columns) = file_columns(&run);
        let ours = write_file(&schema, &columns, props()).unwrap();
        let (got, _) = read(&ours.bytes);
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let reader = SerializedFileReader::new_with_options(ours.bytes.clone(), options).unwrap();
        let descr = reader.metadata().file_metadata().schema_descr_ptr();
        let mut start = 0;
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).unwrap();
            let rows = group.metadata().num_rows() as usize;
            for name in BLOOM_COLUMNS {
                let leaf = (0..descr.num_columns())
                    .find(|&l| descr.column(l).name() == name)
                    .unwrap();
                let filter = group.get_column_bloom_filter(leaf).expect(name);
                let values = got.column_by_name(name).unwrap().as_string::<i32>();
                let present: HashSet<&str> = (start..start + rows)
                    .filter(|&i| values.is_valid(i))
                    .map(|i| values.value(i))
                    .collect();
                assert!(present.iter().all(|v| filter.check(v)), "{name}");
                let absent = (0..1000)
                    .filter(|i| filter.check(&format!("no-such-{i}").as_str()))
                    .count();
                assert!(absent < 50, "{name}: {absent} false positives in 1000");
            }
            start += rows;
        }
    }
}

#[cfg(test)]
mod other_readers {
    use arrow::array::{Array, AsArray};

    use super::tests::{file_columns, plain, props, run};
    use super::*;

    const READ: &str = r#"
import sys, json, duckdb, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
labels = t.column("dst_labels").combine_chunks()
rows = [None if v is None else [[k, x] for k, x in v] for v in labels.to_pylist()]
strings = {f.name: t.column(f.name).to_pylist() for f in t.schema if str(f.type) == "string"}
numbers = {f.name: t.column(f.name).cast("int64").to_pylist() for f in t.schema
           if str(f.type).startswith(("int", "timestamp"))}
con = duckdb.connect()
maps, entries = con.execute("select count(dst_labels), sum(cardinality(dst_labels)) from read_parquet(?)", [sys.argv[1]]).fetchone()
duck_sums = con.execute("select sum(bytes), sum(packets), sum(tcp_srtt_us), sum(src_port), count(icmp_type), sum(ip_version), min(epoch_us(interval_start)), max(epoch_us(interval_start)) from read_parquet(?)", [sys.argv[1]]).fetchone()
print(json.dumps({"labels": rows, "strings": strings, "numbers": numbers, "duck_maps": maps, "duck_entries": int(entries), "duck_sums": [int(x) for x in duck_sums]}))
"#;

    /// pyarrow and DuckDB read the dictionary-written string and map columns —
    /// null, empty and long values, null and empty maps, null map values — and
    /// the delta-encoded integer and timestamp columns as the rows that were
    /// written.
    #[test]
    fn pyarrow_and_duckdb_read_the_rows() {
        let Some(mut python) = flowlake_testkit::python_with("pyarrow, duckdb") else {
            return;
        };
        let run = run();
        let (schema, columns) = file_columns(&run);
        let written = write_file(&schema, &columns, props()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        std::fs::write(&path, &written.bytes).unwrap();
        let got = flowlake_testkit::json_output(python.args(["-c", READ, path.to_str().unwrap()]));

        let want = plain(&schema, &columns);
        let labels = want.column_by_name("dst_labels").unwrap().as_map();
        let rows: Vec<serde_json::Value> = (0..labels.len())
            .map(|i| {
                if labels.is_null(i) {
                    return serde_json::Value::Null;
                }
                let entry = labels.value(i);
                let (k, v) = (
                    entry.column(0).as_string::<i32>(),
                    entry.column(1).as_string::<i32>(),
                );
                (0..k.len())
                    .map(|j| serde_json::json!([k.value(j), v.is_valid(j).then(|| v.value(j))]))
                    .collect::<Vec<_>>()
                    .into()
            })
            .collect();
        assert_eq!(got["labels"], serde_json::Value::Array(rows));
        assert!(
            got["labels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.is_null())
        );
        for (f, c) in schema.fields().iter().zip(want.columns()) {
            if let Some(s) = c.as_string_opt::<i32>() {
                let values: Vec<Option<&str>> = s.iter().collect();
                assert_eq!(
                    got["strings"][f.name()],
                    serde_json::json!(values),
                    "{}",
                    f.name()
                );
            }
        }
        // Integer and timestamp columns, delta-encoded, as pyarrow and DuckDB read them.
        let mut numbers = 0;
        for (f, c) in schema.fields().iter().zip(want.columns()) {
            if !matches!(
                c.data_type(),
                DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::Timestamp(..)
            ) {
                continue;
            }
            let c = arrow::compute::cast(c, &DataType::Int64).unwrap();
            let values: Vec<Option<i64>> = c
                .as_primitive::<arrow::datatypes::Int64Type>()
                .iter()
                .collect();
            assert_eq!(
                got["numbers"][f.name()],
                serde_json::json!(values),
                "{}",
                f.name()
            );
            numbers += 1;
        }
        assert_eq!(numbers, flowlake_schemas::NUMERIC_COLUMNS.len());
        let sum = |name: &str| -> i64 {
            let c = want.column_by_name(name).unwrap();
            let c = arrow::compute::cast(c, &DataType::Int64).unwrap();
            c.as_primitive::<arrow::datatypes::Int64Type>()
                .iter()
                .flatten()
                .sum()
        };
        let icmp_types = want.column_by_name("icmp_type").unwrap();
        let times = want
            .column_by_name("interval_start")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let time = |min: bool| match min {
            true => arrow::compute::min(times).unwrap(),
            false => arrow::compute::max(times).unwrap(),
        };
        let duck_want = [
            sum("bytes"),
            sum("packets"),
            sum("tcp_srtt_us"),
            sum("src_port"),
            (icmp_types.len() - icmp_types.null_count()) as i64,
            sum("ip_version"),
            time(true),
            time(false),
        ];
        assert_eq!(got["duck_sums"], serde_json::json!(duck_want));
        let live = labels.len() - labels.null_count();
        assert_eq!(got["duck_maps"], live);
        let entries = labels.value_offsets()[labels.len()] - labels.value_offsets()[0];
        assert_eq!(got["duck_entries"], entries);
    }
}
