//! The loss record: what a node's collector or the ingester could not count or
//! store, per node and interval — the `losses` table beside the flow table.
//!
//! The flow table says what was seen; this one says where that is incomplete.
//! Collectors ship loss batches like flow batches (through the same spool, to
//! `POST /api/v1/losses`); the ingester adds a row for every batch it refuses.
//! The table is a Delta table of its own under `_losses/` of the flow table's
//! root, partitioned `date`/`hour` like it. Column meanings: `docs/schema.md`.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::error::{Result, SchemaError};
use crate::partition::PartitionPath;
use crate::schema::{SCHEMA_VERSION, SCHEMA_VERSION_KEY, col, timestamp_type};
use crate::validate::same_shape;

/// Name the table is queried by.
pub const LOSSES_TABLE: &str = "losses";
/// Directory of the losses table under the flow table's root.
pub const LOSSES_DIR: &str = "_losses";

/// Columns of the loss record (the time, place and partition columns are the
/// flow record's: [`col`]).
pub mod loss_col {
    pub const COMPONENT: &str = "component";
    pub const KIND: &str = "kind";
    pub const UNIT: &str = "unit";
    pub const LOST: &str = "lost";
    pub const LOST_BYTES: &str = "lost_bytes";
    pub const DETAIL: &str = "detail";
}

/// Where a loss happened (the `component` column).
pub mod component {
    /// An eBPF map or ring buffer of the node was full.
    pub const KERNEL: &str = "kernel";
    /// The collector's own userspace: its channel, its DNS reader.
    pub const COLLECTOR: &str = "collector";
    /// On the way to the ingester: spool limit, damaged or unwritable spool.
    pub const SHIPPER: &str = "shipper";
    /// The ingester refused or set aside rows.
    pub const INGESTER: &str = "ingester";
}

fn build() -> Schema {
    let metadata = [(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())]
        .into_iter()
        .collect();
    Schema::new_with_metadata(
        vec![
            Field::new(col::INTERVAL_START, timestamp_type(), false),
            Field::new(col::INTERVAL_END, timestamp_type(), false),
            Field::new(col::CLUSTER, DataType::Utf8, true),
            Field::new(col::NODE, DataType::Utf8, true),
            Field::new(loss_col::COMPONENT, DataType::Utf8, false),
            Field::new(loss_col::KIND, DataType::Utf8, false),
            Field::new(loss_col::UNIT, DataType::Utf8, false),
            Field::new(loss_col::LOST, DataType::Int64, false),
            Field::new(loss_col::LOST_BYTES, DataType::Int64, true),
            Field::new(loss_col::DETAIL, DataType::Utf8, true),
            Field::new(col::DATE, DataType::Utf8, false),
            Field::new(col::HOUR, DataType::Utf8, false),
        ],
        metadata,
    )
}

static LOSS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| Arc::new(build()));

/// The loss-record schema.
pub fn loss_schema() -> SchemaRef {
    Arc::clone(&LOSS_SCHEMA)
}

/// One row of the `losses` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossRow {
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    /// `None` where the ingester could not read it from a refused body.
    pub cluster: Option<String>,
    pub node: Option<String>,
    /// One of [`component`].
    pub component: String,
    /// The cause (`flow_map_full`, `spool_full`, `rejected`, …).
    pub kind: String,
    /// What `lost` counts: `packets`, `events`, `records`, `messages`, `batches`.
    pub unit: String,
    pub lost: i64,
    pub lost_bytes: Option<i64>,
    /// Free text: the ingester's refusal reason.
    pub detail: Option<String>,
}

/// Loss rows as one batch of [`loss_schema`].
pub fn losses_to_batch(rows: &[LossRow]) -> Result<RecordBatch> {
    let ts = |f: fn(&LossRow) -> DateTime<Utc>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| Some(f(r).timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let text = |f: fn(&LossRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let partition = |r: &LossRow| PartitionPath::for_timestamp(r.interval_start);
    let columns: Vec<ArrayRef> = vec![
        ts(|r| r.interval_start),
        ts(|r| r.interval_end),
        text(|r| r.cluster.as_deref()),
        text(|r| r.node.as_deref()),
        text(|r| Some(&r.component)),
        text(|r| Some(&r.kind)),
        text(|r| Some(&r.unit)),
        Arc::new(rows.iter().map(|r| r.lost).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.lost_bytes).collect::<Int64Array>()),
        text(|r| r.detail.as_deref()),
        Arc::new(
            rows.iter()
                .map(|r| Some(partition(r).date_value()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(partition(r).hour_value()))
                .collect::<StringArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(loss_schema(), columns)?)
}

/// Checks a batch against [`loss_schema`] (every column, by name and type; no
/// nulls where required) and reads its rows.
pub fn batch_to_losses(batch: &RecordBatch) -> Result<Vec<LossRow>> {
    let expected = loss_schema();
    let incoming = batch.schema();
    for field in incoming.fields() {
        if expected.field_with_name(field.name()).is_err() {
            return Err(SchemaError::UnknownColumn {
                column: field.name().clone(),
                version: SCHEMA_VERSION,
            });
        }
    }
    let mut columns = Vec::with_capacity(expected.fields().len());
    for want in expected.fields() {
        let Ok((i, got)) = incoming
            .column_with_name(want.name())
            .ok_or(())
            .map(|(i, f)| (i, f.clone()))
        else {
            return Err(SchemaError::MissingColumn {
                column: want.name().clone(),
            });
        };
        if !same_shape(want.data_type(), got.data_type()) {
            return Err(SchemaError::TypeMismatch {
                column: want.name().clone(),
                expected: want.data_type().clone(),
                actual: got.data_type().clone(),
            });
        }
        let column = batch.column(i);
        if !want.is_nullable() && column.null_count() > 0 {
            return Err(SchemaError::NullsInRequiredColumn {
                column: want.name().clone(),
                nulls: column.null_count(),
            });
        }
        columns.push(column);
    }
    let ts = |c: &ArrayRef, row| {
        DateTime::from_timestamp_micros(c.as_primitive::<TimestampMicrosecondType>().value(row))
            .unwrap_or_default()
    };
    let text = |c: &ArrayRef, row| {
        let a = c.as_string::<i32>();
        a.is_valid(row).then(|| a.value(row).to_string())
    };
    let int = |c: &ArrayRef, row| {
        let a = c.as_primitive::<Int64Type>();
        a.is_valid(row).then(|| a.value(row))
    };
    let rows = (0..batch.num_rows())
        .map(|row| {
            let r = LossRow {
                interval_start: ts(columns[0], row),
                interval_end: ts(columns[1], row),
                cluster: text(columns[2], row),
                node: text(columns[3], row),
                component: text(columns[4], row).unwrap_or_default(),
                kind: text(columns[5], row).unwrap_or_default(),
                unit: text(columns[6], row).unwrap_or_default(),
                lost: int(columns[7], row).unwrap_or_default(),
                lost_bytes: int(columns[8], row),
                detail: text(columns[9], row),
            };
            let p = PartitionPath::for_timestamp(r.interval_start);
            let (date, hour) = (text(columns[10], row), text(columns[11], row));
            if date.as_deref() != Some(&p.date_value()) || hour.as_deref() != Some(&p.hour_value())
            {
                return Err(SchemaError::InvalidValue {
                    column: col::DATE,
                    value: format!("{date:?}/{hour:?} for interval_start {}", r.interval_start),
                });
            }
            if r.interval_end < r.interval_start || r.lost < 0 {
                return Err(SchemaError::InvalidValue {
                    column: loss_col::LOST,
                    value: format!(
                        "{} lost over {}..{}",
                        r.lost, r.interval_start, r.interval_end
                    ),
                });
            }
            Ok(r)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, lost: i64) -> LossRow {
        LossRow {
            interval_start: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            interval_end: DateTime::from_timestamp(1_767_225_660, 0).unwrap(),
            cluster: Some("c".into()),
            node: Some("n1".into()),
            component: component::KERNEL.into(),
            kind: kind.into(),
            unit: "packets".into(),
            lost,
            lost_bytes: Some(lost * 100),
            detail: None,
        }
    }

    #[test]
    fn rows_round_trip_and_bad_rows_are_refused() {
        let rows = vec![row("flow_map_full", 7), row("dns_ringbuf_full", 1)];
        let batch = losses_to_batch(&rows).unwrap();
        assert_eq!(batch.schema(), loss_schema());
        assert_eq!(batch_to_losses(&batch).unwrap(), rows);
        assert!(
            !loss_schema()
                .fields()
                .iter()
                .any(|f| f.data_type().is_unsigned_integer())
        );

        // A flow batch is not a loss batch.
        let flows = crate::records_to_batch(&[]);
        assert!(batch_to_losses(&flows).is_err());
        // Negative counts and a partition that is not interval_start's are refused.
        let negative = losses_to_batch(&[row("x", -1)]).unwrap();
        assert!(batch_to_losses(&negative).is_err());
        let mut columns = batch.columns().to_vec();
        columns[11] = Arc::new(StringArray::from(vec!["03", "03"]));
        let moved = RecordBatch::try_new(loss_schema(), columns).unwrap();
        let err = batch_to_losses(&moved).unwrap_err().to_string();
        assert!(err.contains("date"), "{err}");
    }
}
