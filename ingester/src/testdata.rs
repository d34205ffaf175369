//! Flow batches from the `flowlake gen` workload, for unit tests.

use arrow::record_batch::RecordBatch;

/// `rows` flow records spread over `hours` hours from 2026-01-01T00:00Z.
pub fn flows(rows: u64, hours: i64) -> RecordBatch {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.duration = chrono::Duration::hours(hours);
    cfg.rate = rows as f64 / (hours * 3600) as f64;
    let records = flowlake_gen::records(&cfg);
    assert_eq!(records.len() as u64, rows);
    flowlake_schemas::records_to_batch(&records)
}
