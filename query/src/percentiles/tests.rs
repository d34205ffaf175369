use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::{INTERPOLATION_PRECISION, percentiles};
use crate::coop::compare;

/// A deterministic stream of numbers (xorshift).
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `percentile_cont` by its definition: sort, rank `p · (n − 1)`, quantised interpolation.
fn by_sorting(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let index = p * (n - 1) as f64;
    let (lower, upper) = (index.floor() as usize, index.ceil() as usize);
    if lower == upper {
        return Some(sorted[lower]);
    }
    let weight = ((index - lower as f64) * INTERPOLATION_PRECISION) as usize as f64
        / INTERPOLATION_PRECISION;
    Some(sorted[lower] + (sorted[upper] - sorted[lower]) * weight)
}

#[test]
fn every_fraction_is_the_rank_of_the_sorted_values() {
    let mut numbers = Numbers(0x9e37_79b9_7f4a_7c15);
    let fractions = [0.99, 0.5, 0.0, 0.95, 1.0, 0.5, 1.0 / 3.0, 0.01];
    for n in [0, 1, 2, 3, 7, 100, 1_001, 20_000] {
        // Few distinct values in some runs (ties), many in others, negative and zero too.
        let spread = if n % 2 == 0 { 5 } else { 1_000_000 };
        let values: Vec<f64> = (0..n)
            .map(|_| (numbers.next() % spread) as f64 - 2.0)
            .collect();
        let expected: Vec<Option<f64>> =
            fractions.iter().map(|&p| by_sorting(&values, p)).collect();
        let got = percentiles(&mut values.clone(), &fractions);
        let bits = |v: &[Option<f64>]| v.iter().map(|x| x.map(f64::to_bits)).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&expected), "{n} values");
    }
}

fn table() -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("pod", DataType::Utf8, false),
        Field::new("rtt", DataType::Int64, true),
        Field::new("dns", DataType::Float64, true),
    ]));
    let mut numbers = Numbers(42);
    // Two partitions of several batches: partial and final aggregates both run.
    let partitions = (0..2)
        .map(|_| {
            (0..4)
                .map(|_| {
                    let rows = 5_000;
                    let mut pods = Vec::new();
                    let mut rtt = Vec::new();
                    let mut dns = Vec::new();
                    for _ in 0..rows {
                        let r = numbers.next();
                        pods.push(format!("pod-{}", r % 7));
                        // pod-6 has no rtt at all; a tenth of the others none either.
                        rtt.push(
                            (r % 7 != 6 && !r.is_multiple_of(10))
                                .then_some((r >> 8) as i64 % 90_000),
                        );
                        dns.push(r.is_multiple_of(3).then_some((r >> 20) as f64 / 7.0));
                    }
                    RecordBatch::try_new(
                        Arc::clone(&schema),
                        vec![
                            Arc::new(StringArray::from(pods)),
                            Arc::new(Int64Array::from(rtt)),
                            Arc::new(Float64Array::from(dns)),
                        ],
                    )
                    .unwrap()
                })
                .collect()
        })
        .collect();
    MemTable::try_new(schema, partitions).unwrap()
}

/// The result and the aggregate functions planned in a Flowlake session, and the
/// result in DataFusion's own.
async fn both(sql: &str) -> (String, String, Vec<String>) {
    let (flowlake, datafusion, ctx) = compare::answers(table, 2, sql).await;
    let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
    (flowlake, datafusion, aggregate_functions(&plan))
}

/// The names of the functions the plan's aggregate computes.
fn aggregate_functions(plan: &LogicalPlan) -> Vec<String> {
    let mut names = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::Aggregate(aggregate) = node {
            for expr in &aggregate.aggr_expr {
                let unaliased = match expr {
                    Expr::Alias(alias) => alias.expr.as_ref(),
                    other => other,
                };
                if let Expr::AggregateFunction(f) = unaliased {
                    names.push(f.func.name().to_string());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    names
}

#[tokio::test]
async fn merged_percentiles_answer_what_percentile_cont_answers() {
    let sql = "SELECT pod, count(rtt) AS n, \
        percentile_cont(0.5) WITHIN GROUP (ORDER BY rtt) AS rtt_p50, \
        percentile_cont(0.95) WITHIN GROUP (ORDER BY rtt) AS rtt_p95, \
        percentile_cont(0.99) WITHIN GROUP (ORDER BY rtt DESC) AS rtt_p01, \
        percentile_cont(0.99) WITHIN GROUP (ORDER BY rtt) AS rtt_p99, \
        percentile_cont(0.5) WITHIN GROUP (ORDER BY dns) AS dns_p50, \
        percentile_cont(0.9) WITHIN GROUP (ORDER BY dns) AS dns_p90, \
        percentile_cont(0.5) WITHIN GROUP (ORDER BY dns + 1) AS dns1_p50, \
        percentile_cont(DISTINCT 0.5) WITHIN GROUP (ORDER BY rtt) AS rtt_distinct_p50, \
        percentile_cont(0.5) WITHIN GROUP (ORDER BY rtt) FILTER (WHERE dns IS NULL) AS rtt_filtered \
        FROM t GROUP BY pod ORDER BY rtt_p99 DESC NULLS LAST, pod";
    let (flowlake, datafusion, plan) = both(sql).await;
    assert_eq!(flowlake, datafusion);
    // pod-6 has no rtt: NULLs there, as percentile_cont gives.
    assert!(flowlake.contains("| pod-6 | 0 "), "{flowlake}");
    // One merged call per value read by two or more plain calls: rtt (4) and dns (2);
    // the lone `dns + 1`, the DISTINCT and the FILTER stay percentile_cont.
    let expected = [
        "count",
        "percentiles_cont",
        "percentiles_cont",
        "percentile_cont",
        "percentile_cont",
        "percentile_cont",
    ];
    assert_eq!(plan, expected);
}

#[tokio::test]
async fn without_group_by_too() {
    let sql = "SELECT percentile_cont(0.25) WITHIN GROUP (ORDER BY rtt) AS a, \
        percentile_cont(0.75) WITHIN GROUP (ORDER BY rtt) AS b, count(*) AS n \
        FROM t WHERE pod = 'pod-3'";
    let (flowlake, datafusion, plan) = both(sql).await;
    assert_eq!(flowlake, datafusion);
    assert_eq!(plan, ["percentiles_cont", "count"]);
    let (empty, expected, _) = both(&sql.replace("pod-3", "no-such-pod")).await;
    assert_eq!(empty, expected);
}
