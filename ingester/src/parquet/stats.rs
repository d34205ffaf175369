//! The Delta `Add` statistics of a data file, from its Parquet footer.
//!
//! The same rules as deltalake's own writer, so a file written by
//! [`super::file`] is described in the log exactly as deltalake would describe
//! it: the first `delta.dataSkippingNumIndexedCols` top-level columns (32 by
//! default; a nested column takes one slot) or the `delta.dataSkippingStatsColumns`
//! named; min and max from the row groups' statistics; repeated (map and list)
//! leaves skipped; timestamps in UTC at millisecond precision.

use std::collections::HashMap;

use chrono::Timelike;
use deltalake_core::protocol::{ColumnCountStat, ColumnValueStat, Stats};
use parquet::basic::{LogicalType, TimeUnit, Type};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::Value;

/// Which columns get statistics (table properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsColumns {
    /// The first N top-level columns (`delta.dataSkippingNumIndexedCols`).
    First(usize),
    /// Every column (`delta.dataSkippingNumIndexedCols = -1`).
    All,
    /// Leaf columns by name (`delta.dataSkippingStatsColumns`).
    Named(Vec<String>),
}

impl StatsColumns {
    /// Delta's default: the first 32 columns.
    pub const DEFAULT: StatsColumns = StatsColumns::First(32);

    /// From the table's configuration.
    pub fn from_config(config: &HashMap<String, String>) -> StatsColumns {
        if let Some(named) = config.get("delta.dataSkippingStatsColumns") {
            return StatsColumns::Named(
                named
                    .split(',')
                    .map(|c| c.trim().trim_matches('`').to_string())
                    .collect(),
            );
        }
        match config
            .get("delta.dataSkippingNumIndexedCols")
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(-1) => StatsColumns::All,
            Some(n) if n >= 0 => StatsColumns::First(n as usize),
            _ => StatsColumns::DEFAULT,
        }
    }
}

/// One value of a column's statistics, ordered like deltalake's.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Scalar {
    Int32(i32),
    Int64(i64),
    Timestamp(chrono::NaiveDateTime),
    TimestampNtz(chrono::NaiveDateTime),
    String(String),
}

impl Scalar {
    fn of(stats: &Statistics, logical: Option<&LogicalType>, min: bool) -> Option<Scalar> {
        match (stats, logical) {
            (Statistics::Int32(v), _) => {
                Some(Scalar::Int32(*pick(min, v.min_opt()?, v.max_opt()?)))
            }
            (Statistics::Int64(v), Some(LogicalType::Timestamp(t))) => {
                let v = *pick(min, v.min_opt()?, v.max_opt()?);
                let time = match t.unit {
                    TimeUnit::MILLIS => chrono::DateTime::from_timestamp_millis(v),
                    TimeUnit::MICROS => chrono::DateTime::from_timestamp_micros(v),
                    TimeUnit::NANOS => Some(chrono::DateTime::from_timestamp_nanos(v)),
                }?
                .naive_utc();
                Some(if t.is_adjusted_to_u_t_c {
                    Scalar::Timestamp(time)
                } else {
                    Scalar::TimestampNtz(time)
                })
            }
            (Statistics::Int64(v), _) => {
                Some(Scalar::Int64(*pick(min, v.min_opt()?, v.max_opt()?)))
            }
            (Statistics::ByteArray(v), Some(LogicalType::String)) => {
                let b = pick(min, v.min_bytes_opt()?, v.max_bytes_opt()?);
                String::from_utf8(b.to_vec()).ok().map(Scalar::String)
            }
            _ => None,
        }
    }

    fn json(self) -> Value {
        match self {
            Scalar::Int32(v) => v.into(),
            Scalar::Int64(v) => v.into(),
            Scalar::Timestamp(t) => {
                let format = if t.nanosecond() == 0 {
                    "%Y-%m-%dT%H:%M:%SZ"
                } else {
                    "%Y-%m-%dT%H:%M:%S%.3fZ"
                };
                t.format(format).to_string().into()
            }
            Scalar::TimestampNtz(t) => {
                let format = if t.nanosecond() == 0 {
                    "%Y-%m-%d %H:%M:%S"
                } else {
                    "%Y-%m-%d %H:%M:%S%.3f"
                };
                t.format(format).to_string().into()
            }
            Scalar::String(s) => s.into(),
        }
    }
}

fn pick<T>(min: bool, lo: T, hi: T) -> T {
    if min { lo } else { hi }
}

/// The leaf columns that get statistics.
fn indexed_leaves(metadata: &ParquetMetaData, columns: &StatsColumns) -> Vec<usize> {
    let schema = metadata.file_metadata().schema_descr();
    let leaves = schema.columns().iter().enumerate();
    match columns {
        StatsColumns::All => leaves.map(|(i, _)| i).collect(),
        StatsColumns::Named(names) => leaves
            .filter(|(_, c)| names.iter().any(|n| n == c.name()))
            .map(|(i, _)| i)
            .collect(),
        StatsColumns::First(n) => {
            let mut tops: Vec<&str> = Vec::new();
            let mut out = Vec::new();
            for (i, c) in leaves {
                let Some(top) = c.path().parts().first() else {
                    continue;
                };
                if !tops.contains(&top.as_str()) {
                    if tops.len() >= *n {
                        break;
                    }
                    tops.push(top);
                }
                out.push(i);
            }
            out
        }
    }
}

/// The `stats` JSON of the file's `Add` action.
pub fn add_stats(metadata: &ParquetMetaData, columns: &StatsColumns) -> serde_json::Result<String> {
    let schema = metadata.file_metadata().schema_descr();
    let mut stats = Stats {
        num_records: metadata.file_metadata().num_rows(),
        ..Stats::default()
    };
    for leaf in indexed_leaves(metadata, columns) {
        let descr = schema.column(leaf);
        let logical = descr.logical_type_ref();
        // Repeated leaves (maps, lists) get none; the flow schema has no structs,
        // whose leaves deltalake nests by path.
        if descr.max_rep_level() > 0
            || descr.path().parts().len() != 1
            || (descr.physical_type() == Type::BYTE_ARRAY
                && !matches!(logical, Some(LogicalType::String)))
        {
            continue;
        }
        let mut seen = false;
        let (mut min, mut max, mut nulls) = (None::<Scalar>, None::<Scalar>, 0i64);
        for group in metadata.row_groups() {
            let Some(s) = group.column(leaf).statistics() else {
                continue;
            };
            seen = true;
            nulls += s.null_count_opt().unwrap_or_default() as i64;
            if s.min_bytes_opt().is_none() || s.max_bytes_opt().is_none() {
                continue;
            }
            if let Some(v) = Scalar::of(s, logical, true) {
                min = Some(match min {
                    Some(m) if m < v => m,
                    _ => v,
                });
            }
            if let Some(v) = Scalar::of(s, logical, false) {
                max = Some(match max {
                    Some(m) if m > v => m,
                    _ => v,
                });
            }
        }
        if !seen {
            continue;
        }
        let name = descr.name().to_string();
        if let Some(v) = min {
            stats
                .min_values
                .insert(name.clone(), ColumnValueStat::Value(v.json()));
        }
        if let Some(v) = max {
            stats
                .max_values
                .insert(name.clone(), ColumnValueStat::Value(v.json()));
        }
        stats.null_count.insert(name, ColumnCountStat::Value(nulls));
    }
    serde_json::to_string(&stats)
}
