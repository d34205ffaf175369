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

/// Rows per row group: each row group opens a reader (and a ZSTD context) per column
/// read, so fewer, larger groups cost less per query; the page index, not the row
/// group statistics, narrows one pod's scans. 1 Mi rows made the exact questions 0.93×
/// of 256 Ki at 100 M rows (docs/BENCHMARKS.md, Step 11).
pub const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Columns with bloom filters: point lookups by pod name or IP address.
pub const BLOOM_COLUMNS: [&str; 4] = [col::SRC_POD, col::DST_POD, col::SRC_IP, col::DST_IP];

/// Every numeric column: no dictionary, so delta-encoded (`DELTA_BINARY_PACKED`,
/// the Parquet 2 fallback for integers). A dictionary hashes every value, and for
/// the nearly unique ones (times, counters, latencies) falls back when it outgrows
/// its page anyway; for the few-valued ones (ports, flags) the files came out no
/// larger with delta encoding and ZSTD (BENCHMARKS.md).
pub const DELTA_COLUMNS: [&str; flowlake_schemas::NUMERIC_COLUMNS.len()] =
    flowlake_schemas::NUMERIC_COLUMNS;

/// Columns queries name one value of (a pod, a workload, a namespace) and the rows per
/// data page each gets: the page index narrows a scan for one pod to the rows near it
/// (the other columns' pages are then read only where they overlap those rows). Their
/// dictionary keys take a few bytes per page.
///
/// The sending end leads the sort order: 4,096 rows let the talkers of the busiest pod
/// of the 10 M-row bench table read 1.31 M rows instead of 1.92 M, and 1,024 made the
/// questions over every pod slower (docs/BENCHMARKS.md, Step 9). The receiving end is
/// sorted within each sending pod's rows ([`crate::sort::SORT_COLUMNS`]), so one pod's
/// rows are short runs spread over the file: 1,024-row pages cut the receiving side of
/// talkers/pod 0.92× and latency/pod 0.87× at 100 M rows (Step 11).
pub const NARROW_PAGES: [(&str, usize); 6] = [
    (col::SRC_NAMESPACE, 4096),
    (col::SRC_POD, 4096),
    (col::SRC_WORKLOAD, 4096),
    (col::DST_NAMESPACE, 1024),
    (col::DST_POD, 1024),
    (col::DST_WORKLOAD, 1024),
];

/// Rows per data page of column `path`: the writer's limit, or less for the
/// [`NARROW_PAGES`].
pub fn data_page_rows(path: &ColumnPath, props: &WriterProperties) -> usize {
    let rows = props.data_page_row_count_limit();
    narrow_page_rows(&path.string())
        .map_or(rows, |narrow| rows.min(narrow))
        .max(1)
}

/// The rows per data page [`NARROW_PAGES`] gives column `name`, if any.
pub fn narrow_page_rows(name: &str) -> Option<usize> {
    NARROW_PAGES
        .iter()
        .find(|(column, _)| *column == name)
        .map(|(_, rows)| *rows)
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
