use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionConfig;

use crate::coop;

async fn filter_line(sql: &str) -> (String, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("verdict", DataType::Utf8, true),
        Field::new("dst_namespace", DataType::Utf8, true),
        Field::new("dst_pod", DataType::Utf8, true),
        Field::new("interval_start", DataType::Int64, false),
        Field::new("x", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec!["forwarded", "dropped", "forwarded"])),
            Arc::new(StringArray::from(vec!["shop", "shop", "db"])),
            Arc::new(StringArray::from(vec![Some("web"), Some("web"), None])),
            Arc::new(Int64Array::from(vec![10, 20, 30])),
            Arc::new(Int64Array::from(vec![0, 2, 1])),
        ],
    )
    .unwrap();
    let ctx = coop::session(SessionConfig::new(), Arc::new(RuntimeEnv::default()));
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let text = displayable(plan.as_ref()).indent(false).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("FilterExec"))
        .expect("a FilterExec")
        .trim()
        .to_string();
    (line, df.collect().await.unwrap())
}

#[tokio::test]
async fn the_pod_equality_runs_first_and_guards_keep_their_place() {
    let (line, rows) = filter_line(
        "SELECT * FROM t WHERE verdict = 'forwarded' AND dst_pod IS NOT NULL \
         AND interval_start >= 5 AND x <> 0 AND 10 / x > 1 \
         AND dst_namespace = 'shop' AND dst_pod = 'web'",
    )
    .await;
    let order: Vec<usize> = [
        "dst_pod@2 = web",
        "dst_namespace@1 = shop",
        "verdict@0 = forwarded",
        "interval_start@3 >= 5",
        "x@4 != 0",
        "dst_pod@2 IS NOT NULL",
        "10 / x@4 > 1",
    ]
    .iter()
    .map(|c| line.find(c).unwrap_or_else(|| panic!("{c} in {line}")))
    .collect();
    assert!(order.is_sorted(), "{line}");
    // No row passes them all (the x = 0 row fails its guard).
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
}

#[tokio::test]
async fn a_rare_verdict_ranks_with_the_point_lookups() {
    let (line, rows) = filter_line(
        "SELECT * FROM t WHERE interval_start < 100 AND dst_namespace = 'shop' \
         AND verdict = 'dropped'",
    )
    .await;
    let at = |c: &str| line.find(c).unwrap_or_else(|| panic!("{c} in {line}"));
    assert!(
        at("verdict@0 = dropped") < at("dst_namespace@1 = shop"),
        "{line}"
    );
    assert!(
        at("dst_namespace@1 = shop") < at("interval_start@3 < 100"),
        "{line}"
    );
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
}
