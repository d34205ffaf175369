//! `/metrics`: the OpenMetrics text of the service's registry, and that queries and
//! errors move their counters.

use crate::support::*;

/// Value of the sample `name{labels}` in an OpenMetrics text (0 when absent).
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn scrape(svc: &flowlake_query::RunningQuery) -> String {
    let resp = reqwest::get(url(svc, "/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    resp.text().await.unwrap()
}

#[tokio::test]
async fn queries_and_errors_move_the_counters() {
    let svc = start_shared().await;
    let total = "flowlake_query_queries_total";
    let before = scrape(&svc).await;
    // Families without samples yet are not listed; the plain counter always is.
    assert!(
        before.contains("flowlake_query_export_rows_total 0"),
        "{before}"
    );

    let (status, _) = sql_json(&svc, "SELECT count(*) AS n FROM flows").await;
    assert_eq!(status, 200);
    let (status, _) = sql_json(&svc, "SELECT no_such_column FROM flows").await;
    assert_eq!(status, 400);
    let (status, _) = sql_json(&svc, "DROP TABLE flows").await;
    assert_eq!(status, 400);
    let resp = reqwest::get(url(
        &svc,
        "/api/v1/pods/a/b/drops?from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z",
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    let after = scrape(&svc).await;
    assert!(
        after.contains("# TYPE flowlake_query_queries counter"),
        "{after}"
    );
    let moved = |labels: &str| sample(&after, total, labels) - sample(&before, total, labels);
    assert_eq!(moved(r#"endpoint="sql",outcome="ok""#), 1.0, "{after}");
    assert_eq!(
        moved(r#"endpoint="sql",outcome="sql_error""#),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved(r#"endpoint="sql",outcome="statement_refused""#),
        1.0,
        "{after}"
    );
    assert_eq!(moved(r#"endpoint="drops",outcome="ok""#), 1.0, "{after}");
    let seconds = "flowlake_query_query_duration_seconds_count";
    assert_eq!(
        sample(&after, seconds, r#"endpoint="sql""#)
            - sample(&before, seconds, r#"endpoint="sql""#),
        3.0,
        "{after}"
    );
    svc.stop().await.unwrap();
}
