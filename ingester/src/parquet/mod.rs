//! The one owner of Parquet writer properties (the sort order of every file is in
//! [`crate::sort`]).

use flowlake_schemas::{SCHEMA_VERSION, SCHEMA_VERSION_KEY, col};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

mod delta;
mod dict;
mod file;
mod map;
mod pages;
mod rle;
mod stats;

pub use crate::sort::{PartitionRun, SORT_COLUMNS, sort_into_partitions};
pub use file::{FileColumns, WrittenFile, write_file};
pub use stats::{StatsColumns, add_stats};

/// Rows per row group: large enough for good compression, small enough that
/// statistics and the page index prune usefully.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Columns with bloom filters: point lookups by pod name or IP address.
pub const BLOOM_COLUMNS: [&str; 4] = [col::SRC_POD, col::DST_POD, col::SRC_IP, col::DST_IP];

/// Every numeric column: no dictionary, so delta-encoded (`DELTA_BINARY_PACKED`,
/// the Parquet 2 fallback for integers). A dictionary hashes every value, and for
/// the nearly unique ones (times, counters, latencies) falls back when it outgrows
/// its page anyway; for the few-valued ones (ports, flags) the files came out no
/// larger with delta encoding and ZSTD (BENCHMARKS.md).
pub const DELTA_COLUMNS: [&str; flowlake_schemas::NUMERIC_COLUMNS.len()] =
    flowlake_schemas::NUMERIC_COLUMNS;

/// Columns queries name one value of (a pod, a workload, a namespace): their pages
/// hold at most [`NARROW_PAGE_ROWS`] rows, so the page index narrows a scan for one
/// pod to the rows near it (the other columns' pages are then read only where they
/// overlap those rows). Their dictionary keys take a few bytes per page.
pub const NARROW_PAGE_COLUMNS: [&str; 6] = [
    col::SRC_NAMESPACE,
    col::SRC_POD,
    col::SRC_WORKLOAD,
    col::DST_NAMESPACE,
    col::DST_POD,
    col::DST_WORKLOAD,
];

/// Rows per data page of the [`NARROW_PAGE_COLUMNS`]: the talkers of the busiest pod
/// of the 10 M-row bench table read 5.95 M rows instead of 8.08 M on the receiving
/// side and 1.31 M instead of 1.92 M on the sending side; 1,024 made the questions
/// over every pod slower (docs/BENCHMARKS.md, Step 9).
pub const NARROW_PAGE_ROWS: usize = 4096;

/// Rows per data page of column `path`: the writer's limit, or less for the
/// [`NARROW_PAGE_COLUMNS`].
pub fn data_page_rows(path: &ColumnPath, props: &WriterProperties) -> usize {
    let rows = props.data_page_row_count_limit();
    match NARROW_PAGE_COLUMNS.contains(&path.string().as_str()) {
        true => rows.min(NARROW_PAGE_ROWS),
        false => rows,
    }
    .max(1)
}

/// Writer properties of every Parquet file Flowlake writes (ingest and compaction).
pub fn writer_properties() -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("flowlake-ingester".into())
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_VERSION_KEY.to_string(),
            SCHEMA_VERSION.to_string(),
        )]));
    for c in DELTA_COLUMNS {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    for c in BLOOM_COLUMNS {
        let path = ColumnPath::from(c);
        b = b
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(path, 50_000);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_carry_the_schema_version() {
        let kv = writer_properties().key_value_metadata().cloned().unwrap();
        assert!(
            kv.iter()
                .any(|e| e.key == SCHEMA_VERSION_KEY && e.value.as_deref() == Some("1"))
        );
    }

    #[test]
    fn bloom_filters_on_pod_and_ip_columns_only() {
        let props = writer_properties();
        for c in BLOOM_COLUMNS {
            assert!(
                props
                    .bloom_filter_properties(&ColumnPath::from(c))
                    .is_some()
            );
        }
        assert!(
            props
                .bloom_filter_properties(&ColumnPath::from(col::BYTES))
                .is_none()
        );
    }
}
