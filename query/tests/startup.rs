//! The service started before its table exists (replicas start in any order): it
//! starts, answers over an empty `flows` with the table's schema, says so in
//! `/readyz`, and serves the table once it is committed, without a restart.

use std::time::{Duration, Instant};

use flowlake_query::QueryConfig;
use flowlake_query::table::TableStatus;

use crate::support::{append, gen_records, sql_json, start, url};

async fn readyz(running: &flowlake_query::RunningQuery) -> (u16, String) {
    let resp = reqwest::get(url(running, "/readyz")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_an_empty_table_until_the_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows");
    std::fs::create_dir_all(&path).unwrap();
    let mut config = QueryConfig::for_tests(path.to_str().unwrap());
    config.snapshot_max_age = Duration::from_millis(100);
    let running = start(config).await;
    let engine = &running.state().engine;

    let (status, body) = readyz(&running).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("does not exist yet"), "{body}");
    assert!(matches!(
        engine.table().status(),
        TableStatus::Waiting { .. }
    ));
    let (status, json) = sql_json(&running, "select count(*) as n from flows").await;
    assert_eq!((status, json), (200, serde_json::json!([{"n": 0}])));
    let empty = engine.plan("select * from flows").await.unwrap();
    let empty_schema = empty.schema().as_arrow().clone();

    let records = gen_records();
    append(&path, &records[..1000]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(&running).await;
        if status == 200 {
            assert_eq!(body, "ok");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        engine.table().status(),
        TableStatus::Ready { version: 0 }
    ));
    let (status, json) = sql_json(&running, "select count(*) as n from flows").await;
    assert_eq!((status, json), (200, serde_json::json!([{"n": 1000}])));
    // The empty table had the schema the table has: names, types and nullability.
    let loaded = engine.plan("select * from flows").await.unwrap();
    let loaded_schema = loaded.schema().as_arrow().clone();
    assert_eq!(
        empty_schema.fields().len(),
        flowlake_schemas::flow_schema().fields().len()
    );
    for (e, l) in empty_schema.fields().iter().zip(loaded_schema.fields()) {
        assert_eq!(
            (e.name(), e.data_type(), e.is_nullable()),
            (l.name(), l.data_type(), l.is_nullable())
        );
    }
    assert_eq!(empty_schema.fields().len(), loaded_schema.fields().len());
    running.stop().await.unwrap();
}
