//! Selective conjuncts first: a filter's `AND` is evaluated left to right, and once
//! the left side keeps few rows DataFusion evaluates the right side on those rows only
//! (its pre-selection). Planned filters list the view's own conditions first
//! (`verdict = 'forwarded' AND dst_pod IS NOT NULL AND …`) and the question's
//! `dst_pod = '…'` last, so every condition ran over every row. [`SelectiveFirst`]
//! reorders each `FilterExec`'s conjuncts: equalities on a pod, workload, service, IP
//! or DNS name (or on a value few rows hold, such as `verdict = 'dropped'`) first, then
//! namespaces, other comparisons with a literal, null checks, and everything else last
//! in its written order. It runs before filter pushdown, so a scan's row filter gets
//! the same order.
//!
//! Only conjuncts that cannot fail (a column compared with a literal, a null check, an
//! `IN` list of literals) move ahead; the others keep their order among themselves, so
//! a guard such as `x <> 0 AND y / x > 1` still runs before what it guards.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal,
};
use datafusion::physical_expr::{PhysicalExpr, conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::scalar::ScalarValue;

use crate::native_scan::RARE_VALUES;

/// Reorders the conjuncts of every `FilterExec`, most selective first.
#[derive(Debug, Default)]
pub struct SelectiveFirst;

/// Columns whose values each name one thing among many: an equality keeps few rows.
fn is_point_column(name: &str) -> bool {
    ["_pod", "_ip", "_workload", "_service"]
        .iter()
        .any(|s| name.ends_with(s))
        || name == flowlake_schemas::col::DNS_QUERY
}

fn column_name(e: &dyn PhysicalExpr) -> Option<&str> {
    if let Some(c) = e.downcast_ref::<Column>() {
        return Some(c.name());
    }
    e.downcast_ref::<CastExpr>()
        .and_then(|c| column_name(c.expr().as_ref()))
}

fn literal(e: &dyn PhysicalExpr) -> Option<&ScalarValue> {
    e.downcast_ref::<Literal>().map(Literal::value)
}

fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s),
        ScalarValue::LargeUtf8(Some(s)) => Some(s),
        ScalarValue::Dictionary(_, v) => text(v),
        _ => None,
    }
}

/// The rank of an equality (or `IN` list) of `column` with `values`.
fn equality_rank(column: &str, values: &[&ScalarValue]) -> u8 {
    let rare = RARE_VALUES.iter().any(|(c, rare)| {
        *c == column
            && values
                .iter()
                .all(|v| text(v).is_some_and(|v| rare.contains(&v)))
    });
    if rare || is_point_column(column) {
        0
    } else if column.ends_with("_namespace") {
        1
    } else {
        2
    }
}

/// Lower runs first; [`COMPLEX`] keeps its place among its kind, after the others.
const COMPLEX: u8 = 5;

fn rank(e: &Arc<dyn PhysicalExpr>) -> u8 {
    let any: &dyn PhysicalExpr = e.as_ref();
    if let Some(b) = any.downcast_ref::<BinaryExpr>() {
        let (l, r) = (b.left().as_ref(), b.right().as_ref());
        let (column, value) = match (column_name(l), literal(r), column_name(r), literal(l)) {
            (Some(c), Some(v), _, _) | (_, _, Some(c), Some(v)) => (c, v),
            _ => return COMPLEX,
        };
        return match b.op() {
            Operator::Eq => equality_rank(column, &[value]),
            Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => 3,
            _ => COMPLEX,
        };
    }
    if let Some(list) = any.downcast_ref::<InListExpr>() {
        let values: Option<Vec<&ScalarValue>> =
            list.list().iter().map(|v| literal(v.as_ref())).collect();
        return match (column_name(list.expr().as_ref()), values) {
            (Some(c), Some(values)) if !list.negated() && !values.is_empty() => {
                equality_rank(c, &values)
            }
            (Some(_), Some(_)) => 3,
            _ => COMPLEX,
        };
    }
    let null_check = any
        .downcast_ref::<IsNotNullExpr>()
        .map(|e| e.arg())
        .or_else(|| any.downcast_ref::<IsNullExpr>().map(|e| e.arg()));
    match null_check {
        Some(arg) if column_name(arg.as_ref()).is_some() => 4,
        _ => COMPLEX,
    }
}

/// `predicate` with its conjuncts ordered by [`rank`] (stable); None when the order
/// does not change.
pub(crate) fn reordered(predicate: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let conjuncts = split_conjunction(predicate);
    let mut ordered: Vec<(u8, &Arc<dyn PhysicalExpr>)> =
        conjuncts.iter().map(|e| (rank(e), *e)).collect();
    ordered.sort_by_key(|(r, _)| *r);
    let moved = ordered
        .iter()
        .zip(&conjuncts)
        .any(|((_, a), b)| !Arc::ptr_eq(a, b));
    moved.then(|| conjunction(ordered.into_iter().map(|(_, e)| Arc::clone(e))))
}

/// `plan` with the predicate of every `FilterExec` replaced where `rewrite` returns one.
pub(crate) fn rewrite_filters(
    plan: Arc<dyn ExecutionPlan>,
    rewrite: impl Fn(&FilterExec) -> Result<Option<Arc<dyn PhysicalExpr>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(predicate) = rewrite(filter)? else {
            return Ok(Transformed::no(node));
        };
        let rebuilt = FilterExecBuilder::from(filter)
            .with_predicate(predicate)
            .build()?;
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

impl PhysicalOptimizerRule for SelectiveFirst {
    fn name(&self) -> &str {
        "SelectiveFirst"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_filters(plan, |filter| Ok(reordered(filter.predicate())))
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "selective_first/tests.rs"]
mod tests;
