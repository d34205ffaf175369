//! Time pruning: `interval_start` bounds in a query's filters become `date`/`hour`
//! partition predicates, which the Delta scan evaluates on partition values before
//! any data file is read.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, col, lit};
use flowlake_schemas::{PartitionPath, col as c};

/// Inclusive bounds on `interval_start`, in microseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeBounds {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeBounds {
    fn lower(&mut self, v: i64) {
        self.from = Some(self.from.map_or(v, |f| f.max(v)));
    }
    fn upper(&mut self, v: i64) {
        self.to = Some(self.to.map_or(v, |t| t.min(v)));
    }
}

fn micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampMicrosecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampNanosecond(Some(x), _) => Some(x.div_euclid(1000)),
        ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1000),
        ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000),
        _ => None,
    }
}

fn literal_micros(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => micros(v),
        Expr::Cast(cast) => literal_micros(&cast.expr),
        Expr::TryCast(cast) => literal_micros(&cast.expr),
        _ => None,
    }
}

fn is_interval_start(e: &Expr) -> bool {
    match e {
        Expr::Column(column) => column.name == c::INTERVAL_START,
        _ => false,
    }
}

/// `left op right` as `interval_start <op> value`, the column on the left (the operator
/// turned around when it was on the right); None when neither side is the column.
pub(crate) fn interval_start_comparison<'a>(
    left: &'a Expr,
    op: Operator,
    right: &'a Expr,
) -> Option<(Operator, &'a Expr)> {
    if is_interval_start(left) {
        Some((op, right))
    } else if is_interval_start(right) {
        Some((op.swap()?, left))
    } else {
        None
    }
}

/// Adds the bounds one predicate implies (conjunctions are walked; anything else is
/// ignored, which is always safe: pruning only ever removes what cannot match).
fn collect(e: &Expr, b: &mut TimeBounds) {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                collect(left, b);
                collect(right, b);
                return;
            }
            let Some((op, value)) = interval_start_comparison(left, *op, right) else {
                return;
            };
            let Some(v) = literal_micros(value) else {
                return;
            };
            match op {
                Operator::Gt | Operator::GtEq => b.lower(v),
                Operator::Lt | Operator::LtEq => b.upper(v),
                Operator::Eq => {
                    b.lower(v);
                    b.upper(v);
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_interval_start(expr) => {
            if let Some(v) = literal_micros(low) {
                b.lower(v);
            }
            if let Some(v) = literal_micros(high) {
                b.upper(v);
            }
        }
        _ => {}
    }
}

/// The `interval_start` bounds implied by a scan's filters.
pub fn time_bounds(filters: &[Expr]) -> TimeBounds {
    let mut b = TimeBounds::default();
    for f in filters {
        collect(f, &mut b);
    }
    b
}

/// `(date, hour) >= p` or `<= p` as plain comparisons on the partition columns
/// (fixed-width strings compare like the times they name).
fn partition_bound(p: PartitionPath, lower: bool) -> Expr {
    let (date, hour) = (col(c::DATE), col(c::HOUR));
    let (d, h) = (lit(p.date_value()), lit(p.hour_value()));
    if lower {
        date.clone().gt(d.clone()).or(date.eq(d).and(hour.gt_eq(h)))
    } else {
        date.clone().lt(d.clone()).or(date.eq(d).and(hour.lt_eq(h)))
    }
}

/// Partition predicates equivalent to the `interval_start` bounds in `filters`.
pub fn partition_filters(filters: &[Expr]) -> Vec<Expr> {
    let b = time_bounds(filters);
    let mut out = Vec::new();
    if let Some(from) = b.from {
        out.push(partition_bound(PartitionPath::for_micros(from), true));
    }
    if let Some(to) = b.to {
        out.push(partition_bound(PartitionPath::for_micros(to), false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Expr {
        let t = chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros();
        lit(ScalarValue::TimestampMicrosecond(
            Some(t),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn ranges_become_partition_bounds() {
        let f = col(c::INTERVAL_START)
            .gt_eq(ts("2026-01-01T10:30:00Z"))
            .and(col(c::INTERVAL_START).lt(ts("2026-01-02T01:00:00Z")));
        let b = time_bounds(std::slice::from_ref(&f));
        assert_eq!(
            PartitionPath::for_micros(b.from.unwrap()).to_string(),
            "date=2026-01-01/hour=10"
        );
        assert_eq!(
            PartitionPath::for_micros(b.to.unwrap()).to_string(),
            "date=2026-01-02/hour=01"
        );
        let p = partition_filters(&[f]);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].to_string(),
            "date > Utf8(\"2026-01-01\") OR date = Utf8(\"2026-01-01\") AND hour >= Utf8(\"10\")"
        );
    }

    #[test]
    fn flipped_between_and_unrelated_filters() {
        let f = ts("2026-01-01T05:00:00Z").lt_eq(col(c::INTERVAL_START));
        assert!(time_bounds(&[f]).from.is_some());
        let between =
            col(c::INTERVAL_START).between(ts("2026-01-01T05:00:00Z"), ts("2026-01-01T06:00:00Z"));
        let b = time_bounds(&[between]);
        assert!(b.from.is_some() && b.to.is_some());
        let other = col(c::BYTES)
            .gt(lit(5i64))
            .or(col(c::INTERVAL_START).gt(ts("2026-01-01T05:00:00Z")));
        assert_eq!(
            time_bounds(&[other]),
            TimeBounds::default(),
            "OR gives no bound"
        );
        assert!(partition_filters(&[]).is_empty());
    }
}
