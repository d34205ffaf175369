//! Grafana JSON datasource protocol, with request bodies as simpod-json-datasource
//! v0.6 sends them.

use serde_json::{Value, json};

use crate::support::*;

fn range() -> Value {
    json!({"from": "2026-01-01T00:00:00.000Z", "to": "2026-01-01T02:00:00.000Z", "raw": {"from": "now-6h", "to": "now"}})
}

fn query_body(targets: Value, filters: Value) -> Value {
    json!({
        "app": "dashboard", "requestId": "Q101", "timezone": "browser", "panelId": 2,
        "dashboardUID": "flowlake", "range": range(), "rangeRaw": {"from": "now-6h", "to": "now"},
        "interval": "1m", "intervalMs": 60000, "maxDataPoints": 1200,
        "targets": targets, "scopedVars": {"__interval": {"text": "1m", "value": "1m"}},
        "startTime": 1767225600000i64, "filters": filters
    })
}

/// A service over the shared table whose clock says 2026-01-01T12:00Z, so "the last
/// day" of payload options covers the fixture.
async fn start_at_fixture_time() -> String {
    let cfg = flowlake_query::QueryConfig::for_tests(shared_table().to_str().unwrap());
    let engine = flowlake_query::QueryEngine::open(
        &cfg.engine(),
        flowlake_query::metrics::QueryMetrics::unregistered(),
    )
    .await
    .unwrap();
    let mut state = flowlake_query::AppState::new(std::sync::Arc::new(engine), 4);
    let noon: chrono::DateTime<chrono::Utc> = "2026-01-01T12:00:00Z".parse().unwrap();
    state.clock = std::sync::Arc::new(move || noon);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, flowlake_query::router(state)).await });
    base
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let (status, text) = post_json(&format!("{base}/grafana{path}"), &body).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn grafana_protocol() {
    let svc = start_at_fixture_time().await;
    let root = reqwest::get(format!("{svc}/grafana/")).await.unwrap();
    assert_eq!(root.status(), 200);

    let metrics = post(&svc, "/metrics", json!({"metric": "", "payload": {}})).await;
    let names: Vec<&str> = metrics
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "drops",
            "latency",
            "talkers",
            "dns-errors",
            "retransmits",
            "sql"
        ]
    );
    assert_eq!(metrics[0]["payloads"][0]["name"], "namespace");
    assert_eq!(metrics[0]["payloads"][0]["reloadMetric"], true);

    let namespaces = post(
        &svc,
        "/metric-payload-options",
        json!({"metric": "drops", "payload": {}, "name": "namespace"}),
    )
    .await;
    let ns = namespaces[0]["value"].as_str().unwrap().to_string();
    assert!(namespaces.as_array().unwrap().len() >= 3, "{namespaces}");
    // Options are relative to the injected clock's last day: the fixture is in 2026-01-01,
    // so use /variable with an explicit range for pods.
    let pods = post(
        &svc,
        "/variable",
        json!({"payload": {"target": "pods", "namespace": ns}, "range": range()}),
    )
    .await;
    let pod = pods[0]["__value"].as_str().unwrap().to_string();
    assert_eq!(pods[0]["__text"], pods[0]["__value"]);

    // Time series of drops over all pods, one series per reason, in the dashboard range.
    let series = post(&svc, "/query", query_body(json!([{"refId": "A", "target": "drops", "payload": {}, "datasource": {"type": "simpod-json-datasource", "uid": "fl"}}]), json!([]))).await;
    let series = series.as_array().unwrap();
    assert!(!series.is_empty());
    assert!(series[0]["target"].as_str().unwrap().starts_with("drops "));
    let pts = series[0]["datapoints"].as_array().unwrap();
    let ts = pts[0][1].as_i64().unwrap();
    assert!((1_767_225_600_000..1_767_232_800_000).contains(&ts), "{ts}");
    assert_eq!(ts % 60_000, 0, "buckets follow intervalMs");

    // Table of one pod's talkers.
    let table = post(&svc, "/query", query_body(json!([{"refId": "B", "target": "talkers", "payload": {"namespace": ns, "pod": pod, "view": "table"}}]), json!([]))).await;
    assert_eq!(table[0]["type"], "table");
    let cols: Vec<&str> = table[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        ["direction", "peer_namespace", "peer", "bytes", "packets"]
    );
    assert_eq!(table[0]["columns"][3]["type"], "number");
    assert!(!table[0]["rows"].as_array().unwrap().is_empty());

    // Ad-hoc filter restricts the ranked table to one namespace.
    let ranked = post(
        &svc,
        "/query",
        query_body(
            json!([{"refId": "C", "target": "talkers", "payload": {"view": "table"}}]),
            json!([{"key": "namespace", "operator": "=", "value": ns}]),
        ),
    )
    .await;
    for row in ranked[0]["rows"].as_array().unwrap() {
        assert_eq!(row[0], ns.as_str());
    }
    // Dashboard range applies: a range before the data gives no series.
    let mut empty = query_body(
        json!([{"refId": "A", "target": "drops", "payload": {}}]),
        json!([]),
    );
    empty["range"] =
        json!({"from": "2025-01-01T00:00:00.000Z", "to": "2025-01-02T00:00:00.000Z", "raw": {}});
    assert_eq!(post(&svc, "/query", empty).await, json!([]));

    // Free SQL with $__timeFilter.
    let sql = post(&svc, "/query", query_body(json!([{"refId": "D", "target": "sql", "payload": {"sql": "SELECT count(*) AS n FROM flows WHERE $__timeFilter"}}]), json!([]))).await;
    assert_eq!(sql[0]["rows"][0][0], 36000);
    let (status, _) = post_json(
        &format!("{svc}/grafana/query"),
        &query_body(
            json!([{"refId": "E", "target": "sql", "payload": {"sql": "DROP TABLE flows"}}]),
            json!([]),
        ),
    )
    .await;
    assert_eq!(status, 400);

    let keys = post(&svc, "/tag-keys", json!({})).await;
    assert_eq!(keys[0], json!({"type": "string", "text": "namespace"}));
    let values = post(&svc, "/tag-values", json!({"key": "namespace"})).await;
    assert_eq!(
        values.as_array().unwrap().len(),
        namespaces.as_array().unwrap().len()
    );
}
