//! Checks made before a request is acknowledged: everything a flush needs from
//! the rows themselves, so that no flush can fail because of what a client sent.
//!
//! The schema, types and required columns are checked by the decoder; here the
//! values: `interval_start` in a sane range, `interval_end` not before it, and the
//! partition columns `date`/`hour` equal to the partition of `interval_start`
//! (they name the directory a row is stored in, and time-ranged queries find a
//! row only there). A refusal names the column and the row (counted from 0
//! across the request's batches).

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use flowlake_schemas::{PartitionPath, col};

use crate::error::{IngestError, Result};

/// Earliest `interval_start` taken: 2000-01-01T00:00Z.
pub const EARLIEST_MICROS: i64 = 946_684_800_000_000;
/// How far past the ingester's clock a timestamp may be (clock skew).
pub const MAX_FUTURE_MICROS: i64 = 24 * 3_600_000_000;
const HOUR_MICROS: i64 = 3_600_000_000;

fn invalid(column: &'static str, row: usize, reason: String) -> IngestError {
    IngestError::Invalid {
        column,
        row,
        reason,
    }
}

/// A string column's values, plain or dictionary-encoded, by row.
enum Strings<'a> {
    Plain(&'a StringArray),
    Dictionary {
        keys: Vec<usize>,
        values: &'a StringArray,
    },
}

impl<'a> Strings<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(plain) = array.as_string_opt::<i32>() {
            return Some(Strings::Plain(plain));
        }
        let dict = array.as_any_dictionary_opt()?;
        Some(Strings::Dictionary {
            keys: dict.normalized_keys(),
            values: dict.values().as_string_opt::<i32>()?,
        })
    }

    /// The value of `row` and an id equal for rows that share it cheaply (the
    /// dictionary key), or `None` for plain strings.
    fn get(&self, row: usize) -> (&'a str, Option<usize>) {
        match self {
            Strings::Plain(a) => (a.value(row), None),
            Strings::Dictionary { keys, values } => {
                let k = keys[row];
                (values.value(k), Some(k))
            }
        }
    }
}

/// One partition column checked against the partition of each row's start.
struct PartitionColumn<'a> {
    name: &'static str,
    values: Strings<'a>,
    /// Last (dictionary key, hour) found equal.
    checked: Option<(usize, i64)>,
}

impl PartitionColumn<'_> {
    fn check(&mut self, row: usize, at: usize, hour: i64, want: &str) -> Result<()> {
        let (got, key) = self.values.get(row);
        if key.is_some() && key.zip(Some(hour)) == self.checked {
            return Ok(());
        }
        if got != want {
            return Err(invalid(
                self.name,
                at,
                format!("{got:?} is not the partition of interval_start ({want:?})"),
            ));
        }
        self.checked = key.zip(Some(hour));
        Ok(())
    }
}

/// Checks every row of a request's batches (conformed to the flow schema).
pub fn check_rows(batches: &[RecordBatch], now: DateTime<Utc>) -> Result<()> {
    let latest = now.timestamp_micros().saturating_add(MAX_FUTURE_MICROS);
    let mut first_row = 0;
    // The expected `date`/`hour` strings of the last hour seen.
    let mut expected: Option<(i64, String, String)> = None;
    for batch in batches {
        let column = |name: &'static str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| IngestError::Internal(format!("conformed batch lacks {name}")))
        };
        let starts = column(col::INTERVAL_START)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| IngestError::Internal("interval_start is not a timestamp".into()))?;
        let ends = column(col::INTERVAL_END)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| IngestError::Internal("interval_end is not a timestamp".into()))?;
        let strings = |name: &'static str| {
            Strings::of(column(name)?.as_ref())
                .map(|values| PartitionColumn {
                    name,
                    values,
                    checked: None,
                })
                .ok_or_else(|| IngestError::Internal(format!("{name} is not a string column")))
        };
        let (mut date, mut hour) = (strings(col::DATE)?, strings(col::HOUR)?);
        for row in 0..batch.num_rows() {
            let at = first_row + row;
            let (start, end) = (starts.value(row), ends.value(row));
            if !(EARLIEST_MICROS..=latest).contains(&start) {
                return Err(invalid(
                    col::INTERVAL_START,
                    at,
                    format!(
                        "{} is outside 2000-01-01T00:00Z ..= now + 24 h ({})",
                        show(start),
                        show(latest)
                    ),
                ));
            }
            let bucket = start.div_euclid(HOUR_MICROS);
            let (_, want_date, want_hour) = match &expected {
                Some(e) if e.0 == bucket => e,
                _ => {
                    let p = PartitionPath::for_micros(start);
                    expected.insert((bucket, p.date_value(), p.hour_value()))
                }
            };
            date.check(row, at, bucket, want_date)?;
            hour.check(row, at, bucket, want_hour)?;
            if end < start || end > latest {
                return Err(invalid(
                    col::INTERVAL_END,
                    at,
                    format!(
                        "{} is before interval_start ({}) or past now + 24 h",
                        show(end),
                        show(start)
                    ),
                ));
            }
        }
        first_row += batch.num_rows();
    }
    Ok(())
}

fn show(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| format!("{micros} µs"))
}

#[cfg(test)]
mod tests;
