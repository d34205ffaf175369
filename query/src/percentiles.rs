//! Several `percentile_cont` of one column, computed by one aggregate.
//!
//! `latency` asks p50, p95 and p99 of three columns: nine `percentile_cont`, each of
//! which keeps its own copy of every value of its group, ships it between the partial
//! and the final aggregate as a list, and selects its rank in it. [`MergePercentiles`]
//! rewrites the `percentile_cont` calls of an aggregate that read the same value into
//! one [`percentiles_cont`](PercentilesCont) call: one copy of the values, one state
//! list, and the ranks of all its fractions selected in one pass over the copy (each
//! selection searches only above the previous rank). A projection above the aggregate
//! takes each fraction's field out of the struct it returns, under the name the
//! `percentile_cont` had, so the plan above sees the same schema.
//!
//! Answers are those of `percentile_cont`: the same ranks (`p · (n − 1)`), the same
//! quantised interpolation between the two ranks around it, total order on floats,
//! NULL for a group without values. `DESC` orderings become `1 − p` as there. Calls
//! with `DISTINCT`, a `FILTER` or a non-literal fraction are left as they are.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, Aggregate, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, ExprSchemable,
    GroupsAccumulator, LogicalPlan, Projection, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// `percentile_cont`'s interpolation weight is quantised to millionths.
const INTERPOLATION_PRECISION: f64 = 1_000_000.0;

/// The values of one group at `fractions`, as `percentile_cont` computes each.
/// Reorders `values`.
fn percentiles(values: &mut [f64], fractions: &[f64]) -> Vec<Option<f64>> {
    let len = values.len();
    if len == 0 {
        return vec![None; fractions.len()];
    }
    let bounds = |p: f64| {
        let index = p * (len - 1) as f64;
        (index, index.floor() as usize, index.ceil() as usize)
    };
    let mut ranks: Vec<usize> = fractions
        .iter()
        .flat_map(|&p| {
            let (_, lower, upper) = bounds(p);
            [lower, upper]
        })
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    // Ranks ascending: after selecting rank r, everything above it is not smaller,
    // so the next rank is searched for above r only.
    let mut ranked = Vec::with_capacity(ranks.len());
    let mut start = 0;
    for &rank in &ranks {
        let (_, value, _) = values[start..].select_nth_unstable_by(rank - start, f64::total_cmp);
        ranked.push((rank, *value));
        start = rank + 1;
    }
    let at = |rank: usize| {
        let i = ranks.binary_search(&rank).expect("every rank was selected");
        ranked[i].1
    };
    fractions
        .iter()
        .map(|&p| {
            let (index, lower, upper) = bounds(p);
            let low = at(lower);
            if len == 1 || lower == upper {
                return Some(low);
            }
            let scaled = ((index - lower as f64) * INTERPOLATION_PRECISION) as usize;
            let weight = scaled as f64 / INTERPOLATION_PRECISION;
            Some(low + (at(upper) - low) * weight)
        })
        .collect()
}

/// `percentiles_cont(value)` with its fractions fixed: a struct of one Float64 field
/// per fraction (`p0`, `p1`, …). Planned only by [`MergePercentiles`].
#[derive(Debug)]
pub struct PercentilesCont {
    fractions: Vec<f64>,
    signature: Signature,
}

impl PercentilesCont {
    pub fn new(fractions: Vec<f64>) -> Self {
        PercentilesCont {
            fractions,
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
        }
    }

    fn fields(&self) -> Fields {
        (0..self.fractions.len())
            .map(|i| Field::new(field_name(i), DataType::Float64, true))
            .collect()
    }

    /// One struct row per group, from the per-fraction answers.
    fn to_struct(&self, answers: Vec<Vec<Option<f64>>>) -> StructArray {
        let columns: Vec<ArrayRef> = (0..self.fractions.len())
            .map(|i| {
                let column: Float64Array = answers.iter().map(|a| a[i]).collect();
                Arc::new(column) as ArrayRef
            })
            .collect();
        StructArray::new(self.fields(), columns, None)
    }
}

fn field_name(i: usize) -> String {
    format!("p{i}")
}

impl PartialEq for PercentilesCont {
    fn eq(&self, other: &Self) -> bool {
        let bits = |f: &[f64]| f.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        bits(&self.fractions) == bits(&other.fractions)
    }
}

impl Eq for PercentilesCont {}

impl Hash for PercentilesCont {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for p in &self.fractions {
            p.to_bits().hash(state);
        }
    }
}

impl AggregateUDFImpl for PercentilesCont {
    fn name(&self) -> &str {
        "percentiles_cont"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Field::new_list_field(DataType::Float64, true);
        Ok(vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            DataType::List(Arc::new(item)),
            true,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ValuesAccumulator {
            udaf: PercentilesCont::new(self.fractions.clone()),
            values: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(GroupValues {
            udaf: PercentilesCont::new(self.fractions.clone()),
            groups: Vec::new(),
        }))
    }
}

/// Every group's values in one list array (the state both accumulators ship).
fn to_list(groups: Vec<Vec<f64>>) -> ListArray {
    let offsets = OffsetBuffer::from_lengths(groups.iter().map(Vec::len));
    let values: Vec<f64> = groups.into_iter().flatten().collect();
    ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        offsets,
        Arc::new(Float64Array::new(ScalarBuffer::from(values), None)),
        None,
    )
}

/// The values of each group (the grouped form).
#[derive(Debug)]
struct GroupValues {
    udaf: PercentilesCont,
    groups: Vec<Vec<f64>>,
}

impl GroupsAccumulator for GroupValues {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let values = values[0].as_primitive::<Float64Type>();
        let nulls = values.logical_nulls();
        for (row, (&group, &value)) in group_indices.iter().zip(values.values()).enumerate() {
            let valid = nulls.as_ref().is_none_or(|n| n.is_valid(row))
                && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if valid {
                self.groups[group].push(value);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let answers = emit_to
            .take_needed(&mut self.groups)
            .iter_mut()
            .map(|values| percentiles(values, &self.udaf.fractions))
            .collect();
        Ok(Arc::new(self.udaf.to_struct(answers)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(to_list(
            emit_to.take_needed(&mut self.groups),
        ))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let lists = values[0].as_list::<i32>();
        for (&group, list) in group_indices.iter().zip(lists.iter()) {
            if let Some(list) = list {
                let list = list.as_primitive::<Float64Type>();
                self.groups[group].extend(list.iter().flatten());
            }
        }
        Ok(())
    }

    /// Each row a group of its own: a list of its one value, or NULL where the value
    /// is NULL or filtered out (what the partial aggregate ships when it skips grouping).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<Float64Type>();
        let valid: NullBuffer = (0..values.len())
            .map(|row| {
                values.is_valid(row) && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row))
            })
            .collect();
        let list = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::from_lengths(std::iter::repeat_n(1, values.len())),
            Arc::new(Float64Array::new(values.values().clone(), None)),
            Some(valid),
        );
        Ok(vec![Arc::new(list)])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<Vec<f64>>()
            + self
                .groups
                .iter()
                .map(|g| g.capacity() * size_of::<f64>())
                .sum::<usize>()
    }
}

/// The values of the one group (an aggregate without `GROUP BY`).
#[derive(Debug)]
struct ValuesAccumulator {
    udaf: PercentilesCont,
    values: Vec<f64>,
}

impl Accumulator for ValuesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Float64Type>();
        self.values.extend(values.iter().flatten());
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let answers = percentiles(&mut self.values, &self.udaf.fractions);
        Ok(ScalarValue::Struct(Arc::new(
            self.udaf.to_struct(vec![answers]),
        )))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.capacity() * size_of::<f64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = to_list(vec![std::mem::take(&mut self.values)]);
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for list in states[0].as_list::<i32>().iter().flatten() {
            let list = list.as_primitive::<Float64Type>();
            self.values.extend(list.iter().flatten());
        }
        Ok(())
    }
}

/// Rewrites an aggregate's `percentile_cont` calls over one value into one
/// `percentiles_cont` (see the module documentation).
#[derive(Debug, Default)]
pub struct MergePercentiles;

/// The value and effective fraction of a `percentile_cont` this rule may merge.
fn mergeable(expr: &Expr, input: &LogicalPlan) -> Option<(Expr, f64)> {
    // Common-subexpression elimination names the calls whose arguments it replaced.
    let expr = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return None;
    };
    if func.name() != "percentile_cont"
        || params.distinct
        || params.filter.is_some()
        || params.null_treatment.is_some()
        || params.order_by.len() > 1
    {
        return None;
    }
    let [value, Expr::Literal(ScalarValue::Float64(Some(p)), _)] = params.args.as_slice() else {
        return None;
    };
    if !(0.0..=1.0).contains(p) || value.get_type(input.schema()).ok()? != DataType::Float64 {
        return None;
    }
    let descending = params.order_by.first().is_some_and(|s| !s.asc);
    Some((value.clone(), if descending { 1.0 - p } else { *p }))
}

/// Where an aggregate's output column comes from after the rewrite.
enum Source {
    /// The same expression, at this index of the new aggregate list.
    Same(usize),
    /// Field `p<k>` of the merged call at this index.
    Field(usize, usize),
}

impl OptimizerRule for MergePercentiles {
    fn name(&self) -> &str {
        "merge_percentiles"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        let grouping_sets = aggregate
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)));
        // (value, [(index in aggr_expr, fraction)]) in order of first appearance.
        let mut by_value: Vec<(Expr, Vec<(usize, f64)>)> = Vec::new();
        for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
            let Some((value, p)) = mergeable(expr, &aggregate.input) else {
                continue;
            };
            match by_value.iter_mut().find(|(v, _)| *v == value) {
                Some((_, calls)) => calls.push((i, p)),
                None => by_value.push((value, vec![(i, p)])),
            }
        }
        by_value.retain(|(_, calls)| calls.len() > 1);
        if grouping_sets || by_value.is_empty() {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let mut aggr_expr = Vec::new();
        let mut sources = Vec::new();
        for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
            let merged = by_value.iter().find_map(|(value, calls)| {
                let k = calls.iter().position(|(j, _)| *j == i)?;
                Some((value, calls, k))
            });
            let Some((value, calls, k)) = merged else {
                sources.push(Source::Same(aggr_expr.len()));
                aggr_expr.push(expr.clone());
                continue;
            };
            if k > 0 {
                // The value's first call came earlier and holds the merged call.
                let Source::Field(at, _) = sources[calls[0].0] else {
                    unreachable!("the first call of a value is merged");
                };
                sources.push(Source::Field(at, k));
                continue;
            }
            let fractions = calls.iter().map(|(_, p)| *p).collect();
            let udaf = AggregateUDF::new_from_impl(PercentilesCont::new(fractions));
            sources.push(Source::Field(aggr_expr.len(), 0));
            aggr_expr.push(Expr::AggregateFunction(AggregateFunction::new_udf(
                Arc::new(udaf),
                vec![value.clone()],
                false,
                None,
                vec![],
                None,
            )));
        }
        let groups = aggregate.group_expr.len();
        let old_schema = Arc::clone(&aggregate.schema);
        let merged = Aggregate::try_new(
            Arc::clone(&aggregate.input),
            aggregate.group_expr.clone(),
            aggr_expr,
        )?;
        let new_schema = Arc::clone(&merged.schema);
        let column = |i: usize| Expr::Column(Column::from(new_schema.qualified_field(i)));
        let mut projection: Vec<Expr> = (0..groups).map(column).collect();
        for (i, source) in sources.iter().enumerate() {
            projection.push(match *source {
                Source::Same(at) => column(groups + at),
                Source::Field(at, k) => {
                    let (qualifier, field) = old_schema.qualified_field(groups + i);
                    get_field(column(groups + at), field_name(k))
                        .alias_qualified(qualifier.cloned(), field.name())
                }
            });
        }
        let plan = Projection::try_new(projection, Arc::new(LogicalPlan::Aggregate(merged)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(plan)))
    }
}

#[cfg(test)]
mod tests;
