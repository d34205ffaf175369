use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::DataType;

use super::*;
use crate::testdata;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .unwrap()
        .to_utc()
}

/// `batch` with row `row` of `column` replaced by `value`.
fn with_string(batch: &RecordBatch, column: &str, row: usize, value: &str) -> RecordBatch {
    let i = batch.schema().index_of(column).unwrap();
    let old = arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap();
    let old = old.as_string::<i32>();
    let new: StringArray = (0..old.len())
        .map(|r| Some(if r == row { value } else { old.value(r) }))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(new) as ArrayRef;
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields[i] = Arc::new(fields[i].as_ref().clone().with_data_type(DataType::Utf8));
    let schema =
        arrow::datatypes::Schema::new_with_metadata(fields, batch.schema().metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

fn with_time(batch: &RecordBatch, column: &str, row: usize, micros: i64) -> RecordBatch {
    let i = batch.schema().index_of(column).unwrap();
    let old = batch.column(i).as_primitive::<TimestampMicrosecondType>();
    let new: TimestampMicrosecondArray = (0..old.len())
        .map(|r| Some(if r == row { micros } else { old.value(r) }))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(new.with_timezone("UTC")) as ArrayRef;
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

fn refused(batches: &[RecordBatch]) -> (String, usize, String) {
    match check_rows(batches, now()).unwrap_err() {
        IngestError::Invalid {
            column,
            row,
            reason,
        } => (column.to_string(), row, reason),
        e => panic!("not an invalid value: {e}"),
    }
}

#[test]
fn generated_rows_pass_plain_and_dictionary_encoded() {
    let batch = testdata::flows(3000, 3);
    check_rows(std::slice::from_ref(&batch), now()).unwrap();
    let dict = flowlake_schemas::dictionary_encode(&batch).unwrap();
    assert!(matches!(
        dict.column_by_name(col::DATE).unwrap().data_type(),
        DataType::Dictionary(..)
    ));
    check_rows(&[batch, dict], now()).unwrap();
}

#[test]
fn partition_values_must_be_the_partition_of_interval_start() {
    let batch = testdata::flows(500, 2);
    let second = testdata::flows(100, 1);
    for (column, value) in [
        (col::DATE, "\"026-01-01"),
        (col::DATE, "9999-99-99"),
        (col::DATE, "2026-01-02"),
        (col::HOUR, "99"),
        (col::HOUR, "1"),
        (col::HOUR, "../x"),
    ] {
        let bad = with_string(&second, column, 42, value);
        let (c, row, reason) = refused(&[batch.clone(), bad.clone()]);
        assert_eq!((c.as_str(), row), (column, 500 + 42), "{value}: {reason}");
        assert!(reason.contains(value.trim_start_matches('"')), "{reason}");
        // Dictionary-encoded the same.
        let dict = flowlake_schemas::dictionary_encode(&bad).unwrap();
        let (c, row, _) = refused(&[dict]);
        assert_eq!((c.as_str(), row), (column, 42), "{value}");
    }
}

#[test]
fn timestamps_must_be_in_a_sane_range() {
    let batch = testdata::flows(200, 1);
    let start = batch
        .column_by_name(col::INTERVAL_START)
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .value(7);
    let cases = [
        (col::INTERVAL_START, -1),
        (col::INTERVAL_START, EARLIEST_MICROS - 1),
        (col::INTERVAL_START, i64::MAX),
        (
            col::INTERVAL_START,
            now().timestamp_micros() + MAX_FUTURE_MICROS + 1,
        ),
        (col::INTERVAL_END, start - 1),
        (col::INTERVAL_END, i64::MAX),
    ];
    for (column, micros) in cases {
        let (c, row, reason) = refused(&[with_time(&batch, column, 7, micros)]);
        assert_eq!((c.as_str(), row), (column, 7), "{micros}: {reason}");
    }
}
