//! No request takes the service down, and the limits hold: deeply nested and very long
//! SQL in every shape, sent as SQL, Grafana `sql` targets and export SQL, is answered
//! (200 or a 4xx) while `/healthz` keeps answering; the resource cases end with a limit
//! error within the timeout plus a small margin, with RSS bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flowlake_query::QueryConfig;
use flowlake_query::http::MAX_BODY_BYTES;

use crate::support::*;

/// Statement shapes that nest (or grow) with `n`.
fn shapes(n: usize) -> Vec<(&'static str, String)> {
    let nums = |sep: &str| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(sep);
    vec![
        ("arithmetic", format!("SELECT 1{}", "+1".repeat(n))),
        (
            "parentheses",
            format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "case",
            format!(
                "SELECT {}1{}",
                "CASE WHEN true THEN ".repeat(n),
                " END".repeat(n)
            ),
        ),
        (
            "subqueries",
            format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n)),
        ),
        (
            "in_list",
            format!(
                "SELECT count(*) AS n FROM flows WHERE bytes IN ({})",
                nums(",")
            ),
        ),
        (
            "or_chain",
            format!(
                "SELECT count(*) AS n FROM flows WHERE {}",
                (0..n)
                    .map(|i| format!("bytes = {i}"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            ),
        ),
        ("unions", vec!["SELECT 1 AS x"; n].join(" UNION ALL ")),
    ]
}

/// Sizes from 10 up to what fits in the body limit.
const SIZES: [usize; 6] = [10, 60, 300, 1_500, 20_000, 200_000];

/// Resident set size of this process (the service runs in it), in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Polls `/healthz` until stopped; returns (answers, failures, slowest answer).
fn watch_health(
    base: String,
) -> (
    Arc<AtomicBool>,
    tokio::task::JoinHandle<(usize, usize, Duration)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let (mut ok, mut failed, mut slowest) = (0, 0, Duration::ZERO);
        while !flag.load(Ordering::Relaxed) {
            let started = Instant::now();
            match client.get(format!("{base}/healthz")).send().await {
                Ok(r) if r.status() == 200 => ok += 1,
                _ => failed += 1,
            }
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (ok, failed, slowest)
    });
    (stop, task)
}

/// Name, request (URL and JSON body, or a GET), the statuses that may answer it.
type Case<'a> = (&'a str, (String, Option<serde_json::Value>), &'a [u16]);

fn limit_config() -> (QueryConfig, tempfile::TempDir) {
    let exports = tempfile::tempdir().unwrap();
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.limits.memory_bytes = 256 << 20;
    cfg.limits.timeout = Duration::from_secs(3);
    cfg.limits.max_concurrent = 2;
    cfg.export.roots = vec![exports.path().to_str().unwrap().to_string()];
    (cfg, exports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_sql_in_every_shape_is_answered() {
    let (mut cfg, exports) = limit_config();
    cfg.limits.timeout = Duration::from_secs(10);
    let memory = cfg.limits.memory_bytes as u64;
    let svc = start(cfg).await;
    let base = format!("http://{}", svc.addr());
    let (stop, health) = watch_health(base.clone());
    let client = reqwest::Client::new();
    let (mut answered, mut refused) = (0, 0);
    for n in SIZES {
        for (shape, sql) in shapes(n) {
            if sql.len() + 200 > MAX_BODY_BYTES {
                continue;
            }
            let range =
                serde_json::json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"});
            let requests = [
                ("sql", "/api/v1/sql", serde_json::json!({"sql": sql})),
                (
                    "grafana",
                    "/grafana/query",
                    serde_json::json!({"range": range, "targets": [
                        {"refId": "A", "target": "sql", "payload": {"sql": sql}}]}),
                ),
                (
                    "export",
                    "/api/v1/export",
                    serde_json::json!({"sql": sql,
                        "destination": exports.path().join(format!("{shape}-{n}"))}),
                ),
            ];
            for (path_name, path, body) in requests {
                let resp = client
                    .post(format!("{base}{path}"))
                    .json_body(&body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{shape} n={n} via {path_name}: {e}"));
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                // A timeout is an answer too (a 2-core machine running other tests).
                assert!(
                    status < 500 || status == 504,
                    "{shape} n={n} via {path_name}: {status} {}",
                    &text[..text.len().min(300)]
                );
                if status < 300 {
                    answered += 1;
                } else {
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{shape} n={n}: {e}: {text}"));
                    assert!(v["error"]["code"].is_string(), "{text}");
                    refused += 1;
                }
            }
            let health = client.get(format!("{base}/healthz")).send().await.unwrap();
            assert_eq!(health.status(), 200, "after {shape} n={n}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, slowest) = health.await.unwrap();
    eprintln!(
        "deep SQL: {answered} answered, {refused} refused; health {ok} ok, {failed} failed, slowest {slowest:?}; rss {} MiB",
        rss() >> 20
    );
    assert!(answered > 0 && refused > 0);
    assert_eq!(failed, 0);
    assert!(rss() < memory + (768 << 20), "rss {} MiB", rss() >> 20);
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_cases_end_with_limit_errors() {
    let (cfg, _exports) = limit_config();
    let timeout = cfg.limits.timeout;
    let memory = cfg.limits.memory_bytes as u64;
    let svc = start(cfg).await;
    let base = format!("http://{}", svc.addr());
    let (stop, health) = watch_health(base.clone());
    let margin = Duration::from_secs(2);
    let sql = |s: &'static str| {
        (
            format!("{base}/api/v1/sql"),
            Some(serde_json::json!({"sql": s})),
        )
    };
    let cases: Vec<Case> = vec![
        (
            "giant string",
            sql("SELECT length(repeat('x', 2000000000)) AS n"),
            &[413],
        ),
        (
            "giant string per row",
            sql("SELECT max(length(repeat(src_ip, 100000000))) AS n FROM flows"),
            &[413],
        ),
        (
            "giant array",
            sql("SELECT cardinality(array_repeat(1, 1000000000)) AS n"),
            &[413],
        ),
        (
            "giant range",
            sql("SELECT cardinality(range(1, 10000000000)) AS n"),
            &[413],
        ),
        (
            "padding",
            sql("SELECT length(lpad('x', 2000000000)) AS n"),
            &[413],
        ),
        (
            "self cross join",
            sql("SELECT count(*) AS n FROM flows a, flows b"),
            &[504, 413],
        ),
        (
            "endless series",
            sql("SELECT count(*) AS n FROM generate_series(1, 100000000000)"),
            &[504],
        ),
        (
            "sorted cross join",
            sql("SELECT a.src_ip FROM flows a, flows b ORDER BY a.bytes * b.bytes LIMIT 1"),
            &[504, 413],
        ),
        (
            "±200,000-year range",
            (
                format!(
                    "{base}/api/v1/pods/ns/pod/drops?from=-6311390400000000&to=6311390400000000"
                ),
                None,
            ),
            &[400],
        ),
        (
            "ten-century range",
            (
                format!(
                    "{base}/api/v1/questions/talkers?from=1000-01-01T00:00:00Z&to=9999-01-01T00:00:00Z"
                ),
                None,
            ),
            &[400],
        ),
    ];
    let client = reqwest::Client::new();
    let mut peak = 0u64;
    for (name, (url, body), expected) in &cases {
        let started = Instant::now();
        let req = match body {
            Some(b) => client.post(url).json_body(b),
            None => client.get(url),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let took = started.elapsed();
        peak = peak.max(rss());
        eprintln!("{name}: {status} in {took:?}");
        assert!(expected.contains(&status), "{name}: {status} {text}");
        assert!(took < timeout + margin, "{name} took {took:?}");
    }
    // Concurrent heavy queries: two run (the bound), the others wait for a slot; every
    // one ends with a limit error within the timeout plus the margin.
    let started = Instant::now();
    let heavy = (0..5).map(|_| {
        let client = client.clone();
        let url = format!("{base}/api/v1/sql");
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .json_body(
                    &serde_json::json!({"sql": "SELECT count(*) AS n FROM flows a, flows b"}),
                )
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), started.elapsed())
        })
    });
    for h in heavy.collect::<Vec<_>>() {
        let (status, took) = h.await.unwrap();
        assert!([503, 504].contains(&status), "concurrent: {status}");
        assert!(took < timeout + margin, "concurrent took {took:?}");
        peak = peak.max(rss());
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, slowest) = health.await.unwrap();
    eprintln!(
        "health {ok} ok, {failed} failed, slowest {slowest:?}; peak rss {} MiB",
        peak >> 20
    );
    assert_eq!(failed, 0, "health checks failed while queries ran");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest health check {slowest:?}"
    );
    assert!(peak < memory + (768 << 20), "rss {} MiB", peak >> 20);
    // The slots are free again.
    let (status, body) = sql_json(&svc, "SELECT 1 AS one").await;
    assert_eq!(status, 200, "{body}");
    svc.stop().await.unwrap();
}

/// A statement deeper than the service plans is refused the same way whether it comes
/// as SQL, as a Grafana `sql` target or as export SQL (one admission for all three),
/// and the service stays up.
#[tokio::test]
async fn grafana_and_export_sql_pass_the_admission_of_sql() {
    let (cfg, exports) = limit_config();
    let svc = start(cfg).await;
    let base = format!("http://{}", svc.addr());
    let depth = flowlake_query::admission::MAX_EXPR_DEPTH * 5;
    for sql in [
        format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth)),
        format!(
            "SELECT 1{}",
            "+1".repeat(flowlake_query::admission::MAX_OPERATORS * 2)
        ),
    ] {
        let range =
            serde_json::json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"});
        let mut answers = Vec::new();
        for (path, body) in [
            ("/api/v1/sql", serde_json::json!({"sql": sql})),
            (
                "/grafana/query",
                serde_json::json!({"range": range, "targets": [
                    {"refId": "A", "target": "sql", "payload": {"sql": sql}}]}),
            ),
            (
                "/api/v1/export",
                serde_json::json!({"sql": sql, "destination": exports.path().join("deep")}),
            ),
        ] {
            let (status, text) = post_json(&format!("{base}{path}"), &body).await;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            answers.push((status, v["error"]["code"].clone()));
            assert_eq!(
                reqwest::get(format!("{base}/healthz"))
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        assert_eq!(answers[0].0, 400, "{answers:?}");
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    }
    assert!(walk(&exports.path().join("deep")).is_empty());
    svc.stop().await.unwrap();
}
