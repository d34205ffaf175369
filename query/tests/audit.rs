//! The audit record carries the SQL of `/api/v1/sql`, of Grafana `sql` targets and of
//! export requests alike (here as text, `--audit-sql text`), read from the sink the
//! service writes its records to (the tracing line is the default sink).

use flowlake_query::QueryConfig;
use flowlake_service::{AuditSql, CollectingSink};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn grafana_and_export_sql_are_in_the_audit_line() {
    let sink = CollectingSink::leaked();
    let exports = tempfile::tempdir().unwrap();
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.audit_sql = AuditSql::Text;
    cfg.audit_sink = sink;
    cfg.export.roots = vec![exports.path().to_str().unwrap().to_string()];
    let svc = start(cfg).await;
    let base = format!("http://{}", svc.addr());
    let range = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"});
    let wanted = [
        (
            "/api/v1/sql",
            json!({"sql": "SELECT 41 AS via_sql"}),
            "SELECT 41 AS via_sql",
        ),
        (
            "/grafana/query",
            json!({"range": range, "targets": [
                {"refId": "A", "target": "sql", "payload": {"sql": "SELECT 42 AS via_grafana"}}]}),
            "SELECT 42 AS via_grafana",
        ),
        (
            "/api/v1/export",
            json!({"sql": "SELECT 43 AS via_export", "destination": exports.path().join("out")}),
            "SELECT 43 AS via_export",
        ),
    ];
    for (path, body, _) in &wanted {
        let (status, text) = post_json(&format!("{base}{path}"), body).await;
        assert!(status < 300, "{path}: {status} {text}");
    }
    let found = |path: &str, sql: &str| {
        sink.records()
            .iter()
            .any(|r| r.path == path && r.sql.as_deref() == Some(sql) && r.outcome == "ok")
    };
    // Each record is written when its response body ends, in the connection's task.
    for _ in 0..100 {
        if wanted.iter().all(|(p, _, sql)| found(p, sql)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (path, _, sql) in &wanted {
        assert!(
            found(path, sql),
            "no audit record of {path} {sql:?} in {:#?}",
            sink.records()
        );
    }
    svc.stop().await.unwrap();
}
