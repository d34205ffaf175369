use std::sync::Arc;

use datafusion::arrow::array::{DictionaryArray, Int64Array, RecordBatch, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use datafusion::datasource::MemTable;

use crate::coop::compare;

fn table() -> MemTable {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let schema = Arc::new(Schema::new(vec![
        Field::new("pod", dictionary.clone(), true),
        Field::new("service", dictionary, true),
        Field::new("ip", DataType::Utf8View, true),
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Int64, true),
    ]));
    let pods: DictionaryArray<Int32Type> = vec![Some("web"), None, None, Some("db"), None, None]
        .into_iter()
        .collect();
    let services: DictionaryArray<Int32Type> =
        vec![None, Some("shop"), None, Some("x"), None, Some("y")]
            .into_iter()
            .collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(pods),
            Arc::new(services),
            Arc::new(StringViewArray::from(vec![
                Some("10.0.0.1"),
                Some("10.0.0.2"),
                Some("10.0.0.3"),
                None,
                None,
                Some("10.0.0.6"),
            ])),
            Arc::new(Int64Array::from(vec![
                Some(1),
                None,
                Some(3),
                None,
                Some(5),
                None,
            ])),
            Arc::new(Int64Array::from(vec![
                Some(0),
                Some(2),
                Some(0),
                None,
                Some(7),
                Some(1),
            ])),
        ],
    )
    .unwrap();
    MemTable::try_new(schema, vec![vec![batch]]).unwrap()
}

/// The answer and physical plan in a Flowlake session, and the answer in DataFusion's own.
async fn both(sql: &str) -> (String, String, String) {
    let (flowlake, datafusion, ctx) = compare::answers(table, 1, sql).await;
    let plan = compare::physical_plan(&ctx, sql).await;
    (flowlake, datafusion, plan)
}

#[tokio::test]
async fn answers_as_datafusion_and_stays_a_function_where_nothing_can_fail() {
    for sql in [
        // Names as the flow table has them: dictionaries cast to the addresses' Utf8View.
        "SELECT coalesce(pod, service, ip) AS peer, count(*) AS n FROM t GROUP BY 1 ORDER BY 1",
        "SELECT coalesce(ip, 'none') AS ip, coalesce(a, b, 0) AS n FROM t ORDER BY 1, 2",
        "SELECT coalesce(NULL, ip) AS ip, coalesce(a, b) AS n FROM t ORDER BY 1, 2",
    ] {
        let (flowlake, datafusion, plan) = both(sql).await;
        assert_eq!(flowlake, datafusion, "{sql}");
        assert!(!plan.contains("CASE"), "{sql}\n{plan}");
        assert!(plan.contains("coalesce("), "{sql}\n{plan}");
    }
}

#[tokio::test]
async fn arguments_that_may_fail_keep_the_short_circuit() {
    // `10 / b` fails where b = 0, on rows where `a` is not NULL: never evaluated there.
    let sql = "SELECT coalesce(a, 10 / b) AS n FROM t ORDER BY 1";
    let (flowlake, datafusion, plan) = both(sql).await;
    assert_eq!(flowlake, datafusion);
    assert!(plan.contains("CASE"), "{plan}");
    // Dictionaries only: left to the CASE as well.
    let sql = "SELECT coalesce(pod, service) AS name FROM t ORDER BY 1";
    let (flowlake, datafusion, _) = both(sql).await;
    assert_eq!(flowlake, datafusion);
}
