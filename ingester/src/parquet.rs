//! The one owner of Parquet writer properties, and the sort order of every file.

use arrow::array::{Array, AsArray};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use flowlake_schemas::{col, flow_schema};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::error::Result;

/// Rows per row group: large enough for good compression, small enough that
/// statistics and the page index prune usefully.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Columns with bloom filters: point lookups by pod name or IP address.
pub const BLOOM_COLUMNS: [&str; 4] = [col::SRC_POD, col::DST_POD, col::SRC_IP, col::DST_IP];

/// The sort order of rows inside each file: partition, then the columns queries
/// filter on most, then time.
pub const SORT_COLUMNS: [&str; 6] = [
    col::DATE,
    col::HOUR,
    col::SRC_NAMESPACE,
    col::SRC_POD,
    col::DST_NAMESPACE,
    col::INTERVAL_START,
];

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
        .set_created_by("flowlake-ingester".into());
    for c in BLOOM_COLUMNS {
        let path = ColumnPath::from(c);
        b = b
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(path, 50_000);
    }
    b.build()
}

/// One partition's rows, sorted.
#[derive(Debug)]
pub struct PartitionRun {
    pub date: String,
    pub hour: String,
    pub batch: RecordBatch,
}

/// Concatenates, sorts by [`SORT_COLUMNS`] and splits into one batch per partition.
pub fn sort_into_partitions(batches: &[RecordBatch]) -> Result<Vec<PartitionRun>> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let all = concat_batches(&flow_schema(), batches)?;
    let keys: Vec<SortColumn> = SORT_COLUMNS
        .iter()
        .map(|c| SortColumn {
            values: all.column_by_name(c).expect("flow schema column").clone(),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&keys, None)?;
    let sorted = take_record_batch(&all, &order)?;
    let dates = sorted
        .column_by_name(col::DATE)
        .expect("date column")
        .as_string::<i32>()
        .clone();
    let hours = sorted
        .column_by_name(col::HOUR)
        .expect("hour column")
        .as_string::<i32>()
        .clone();
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.num_rows() {
        let boundary = i == sorted.num_rows()
            || dates.value(i) != dates.value(start)
            || hours.value(i) != hours.value(start);
        if boundary {
            runs.push(PartitionRun {
                date: dates.value(start).to_string(),
                hour: hours.value(start).to_string(),
                batch: sorted.slice(start, i - start),
            });
            start = i;
        }
    }
    debug_assert_eq!(
        runs.iter().map(|r| r.batch.num_rows()).sum::<usize>(),
        dates.len()
    );
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_sorted_and_split_by_hour() {
        let batch = crate::testdata::flows(3000, 3);
        let runs = sort_into_partitions(&[batch.slice(0, 1000), batch.slice(1000, 2000)]).unwrap();
        assert!(runs.len() >= 3, "{} runs", runs.len());
        assert_eq!(runs.iter().map(|r| r.batch.num_rows()).sum::<usize>(), 3000);
        for run in &runs {
            let pods = run.batch.column_by_name(col::SRC_NAMESPACE).unwrap();
            let ns = pods.as_string::<i32>();
            for i in 1..ns.len() {
                assert!(ns.value(i - 1) <= ns.value(i) || ns.is_null(i - 1) || ns.is_null(i));
            }
        }
        let props = writer_properties();
        assert!(
            props
                .bloom_filter_properties(&ColumnPath::from(col::SRC_POD))
                .is_some()
        );
        assert!(
            props
                .bloom_filter_properties(&ColumnPath::from(col::BYTES))
                .is_none()
        );
    }
}
