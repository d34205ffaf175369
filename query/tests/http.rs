//! `/api/v1/sql` formats, limits, the per-pod endpoints and the OpenAPI document.

use std::time::Duration;

use flowlake_query::QueryConfig;

use crate::support::*;

const RANGE: &str = "from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z";

#[tokio::test]
async fn sql_in_every_format() {
    let svc = start_shared().await;
    let (status, body) = sql_json(&svc, "SELECT count(*) AS n FROM flows").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["n"], 36000);

    let sql = "SELECT observation_point, count(*) AS n FROM flows GROUP BY 1 ORDER BY 1";
    let expected = sql_json(&svc, sql).await.1;
    let rows = expected.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{expected}");
    let total: i64 = rows.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert_eq!(total, 36000);

    let client = reqwest::Client::new();
    let get = |format: &'static str| {
        let client = client.clone();
        let u = url(&svc, "/api/v1/sql");
        async move {
            let resp = client
                .post(u)
                .header("content-type", "application/json")
                .body(serde_json::json!({"sql": sql, "format": format}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
            (ct, resp.bytes().await.unwrap())
        }
    };
    let (ct, nd) = get("ndjson").await;
    assert_eq!(ct, "application/x-ndjson");
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&nd)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(serde_json::Value::Array(lines), expected);

    let (_, csv) = get("csv").await;
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    assert_eq!(csv.lines().next(), Some("observation_point,n"));
    assert_eq!(csv.lines().count(), 5);

    let (ct, arrow) = get("arrow").await;
    assert_eq!(ct, "application/vnd.apache.arrow.stream");
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.to_vec()), None)
            .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 4);

    let (_, pq) = get("parquet").await;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(pq.to_vec()),
    )
    .unwrap()
    .build()
    .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 4);

    // Bad body → 400.
    let (status, _) = post_json(
        &url(&svc, "/api/v1/sql"),
        &serde_json::json!({"query": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn limits_have_their_own_errors() {
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.limits.max_rows = 10;
    let svc = start(cfg).await;
    let (status, body) = sql_json(&svc, "SELECT src_ip FROM flows").await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "row_limit_exceeded");
    let (status, _) = sql_json(&svc, "SELECT src_ip FROM flows LIMIT 10").await;
    assert_eq!(status, 200);
    svc.stop().await.unwrap();

    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.limits.timeout = Duration::from_millis(1);
    let svc = start(cfg).await;
    let (status, body) = sql_json(&svc, "SELECT count(DISTINCT src_ip || dst_ip || CAST(random() AS VARCHAR)) FROM flows, generate_series(1, 20)").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "query_timeout");
    svc.stop().await.unwrap();

    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.limits.memory_bytes = 1 << 20;
    let svc = start(cfg).await;
    let (status, body) = sql_json(
        &svc,
        "SELECT src_ip, dst_ip, src_port, array_agg(bytes) FROM flows GROUP BY 1, 2, 3 ORDER BY 1",
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "memory_limit_exceeded");
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn time_range_prunes_partitions() {
    let svc = start_shared().await;
    let (status, body) = sql_json(
        &svc,
        "EXPLAIN SELECT count(*) FROM flows WHERE interval_start >= '2026-01-01T01:00:00Z' AND interval_start < '2026-01-01T01:30:00Z'",
    )
    .await;
    assert_eq!(status, 200);
    let plan = body.to_string();
    assert!(plan.contains("interval_start"), "{plan}");
    // Read by DataFusion's Parquet source directly (no deltalake transform layer), and
    // only the files of hour 01 are in the scan.
    assert!(!plan.contains("DeltaScan"), "{plan}");
    assert!(plan.contains("DataSourceExec"), "{plan}");
    assert!(plan.contains("hour=01/"), "{plan}");
    assert!(
        !plan.contains("hour=00/") && !plan.contains("hour=02/"),
        "{plan}"
    );
    let (_, one) = sql_json(&svc, "SELECT count(*) AS n FROM flows WHERE interval_start >= '2026-01-01T01:00:00Z' AND interval_start < '2026-01-01T01:30:00Z'").await;
    let (_, direct) = sql_json(&svc, "SELECT count(*) AS n FROM flows WHERE date = '2026-01-01' AND hour = '01' AND interval_start < '2026-01-01T01:30:00Z'").await;
    assert_eq!(one, direct);
    assert!(one[0]["n"].as_i64().unwrap() > 0);
    svc.stop().await.unwrap();
}

/// Time bounds are answered by the scan: not evaluated per row over whole hours, exact
/// on every side of a partial one (counts from the generator's own records).
#[tokio::test]
async fn time_bounds_are_exact_and_free_over_whole_hours() {
    let svc = start_shared().await;
    let (status, body) = sql_json(
        &svc,
        "EXPLAIN SELECT count(*) FROM flows WHERE interval_start >= '2026-01-01T00:00:00Z' AND interval_start < '2026-01-01T02:00:00Z'",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let physical = body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["plan_type"] == "physical_plan")
        .expect("a physical plan")["plan"]
        .to_string();
    assert!(!physical.contains("interval_start"), "{physical}");
    assert!(!physical.contains("FilterExec"), "{physical}");

    let records = gen_records();
    let t = records[records.len() / 3].interval_start;
    let u = records[records.len() * 2 / 3].interval_start;
    let text =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    type Keep = Box<dyn Fn(chrono::DateTime<chrono::Utc>) -> bool>;
    let cases: [(String, Keep); 5] = [
        (
            format!("interval_start > '{}'", text(t)),
            Box::new(move |x| x > t),
        ),
        (
            format!("interval_start >= '{}'", text(t)),
            Box::new(move |x| x >= t),
        ),
        (
            format!(
                "interval_start > '{}' AND interval_start <= '{}'",
                text(t),
                text(u)
            ),
            Box::new(move |x| x > t && x <= u),
        ),
        (
            format!("'{}' > interval_start", text(u)),
            Box::new(move |x| x < u),
        ),
        (
            "interval_start >= '2026-01-01T00:00:00Z' AND interval_start < '2026-01-01T02:00:00Z'"
                .to_string(),
            Box::new(|_| true),
        ),
    ];
    for (condition, keep) in cases {
        let expected = records.iter().filter(|r| keep(r.interval_start)).count();
        let (status, body) = sql_json(
            &svc,
            &format!("SELECT count(*) AS n FROM flows WHERE {condition}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body[0]["n"].as_u64(), Some(expected as u64), "{condition}");
        assert!(expected > 0 && expected <= records.len(), "{condition}");
    }
    // A limit with the bounds alone: the rows are still inside them.
    let (_, rows) = sql_json(
        &svc,
        &format!(
            "SELECT interval_start FROM flows WHERE interval_start > '{}' LIMIT 5",
            text(u)
        ),
    )
    .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        let at: chrono::DateTime<chrono::Utc> =
            row["interval_start"].as_str().unwrap().parse().unwrap();
        assert!(at > u, "{row}");
    }
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn snapshot_is_fresh_per_query() {
    let dir = tempfile::tempdir().unwrap();
    let records = gen_records();
    append(dir.path(), &records[..1000]).await;
    let svc = start(QueryConfig::for_tests(dir.path().to_str().unwrap())).await;
    assert_eq!(
        sql_json(&svc, "SELECT count(*) AS n FROM flows").await.1[0]["n"],
        1000
    );
    append(dir.path(), &records[1000..1500]).await;
    assert_eq!(
        sql_json(&svc, "SELECT count(*) AS n FROM flows").await.1[0]["n"],
        1500
    );
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn pod_endpoints_answer_the_questions() {
    let svc = start_shared().await;
    // Find the pod with the most drops, then ask about it.
    let (status, top) = sql_json(&svc, "SELECT namespace, pod, sum(packets) AS p FROM pod_drops GROUP BY 1, 2 ORDER BY p DESC, 1, 2 LIMIT 1").await;
    assert_eq!(status, 200, "{top}");
    let (ns, pod) = (
        top[0]["namespace"].as_str().unwrap(),
        top[0]["pod"].as_str().unwrap(),
    );
    let client = reqwest::Client::new();
    let fetch = |path: String| {
        let client = client.clone();
        async move {
            let resp = client.get(path).send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&resp.bytes().await.unwrap()).unwrap(),
            )
        }
    };
    let (status, drops) = fetch(url(&svc, &format!("/api/v1/pods/{ns}/{pod}/drops?{RANGE}"))).await;
    assert_eq!(status, 200, "{drops}");
    let sum: i64 = drops
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["packets"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, top[0]["p"].as_i64().unwrap());
    assert!(drops[0]["drop_reason"].is_string());

    for q in ["latency", "talkers", "dns-errors", "retransmits"] {
        let (status, body) =
            fetch(url(&svc, &format!("/api/v1/pods/{ns}/{pod}/{q}?{RANGE}"))).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert!(body.is_array(), "{q}: {body}");
    }
    let (_, lat) = fetch(url(
        &svc,
        &format!("/api/v1/pods/{ns}/{pod}/latency?{RANGE}"),
    ))
    .await;
    assert!(lat[0].get("rtt_p99_us").is_some(), "{lat}");
    let (status, ranked) = fetch(url(
        &svc,
        &format!("/api/v1/questions/talkers?{RANGE}&by=workload&limit=3"),
    ))
    .await;
    assert_eq!(status, 200, "{ranked}");
    assert_eq!(ranked.as_array().unwrap().len(), 3);
    assert!(ranked[0]["bytes"].as_i64() >= ranked[1]["bytes"].as_i64());
    let (status, _) = fetch(url(
        &svc,
        &format!("/api/v1/pods/{ns}/{pod}/nonsense?{RANGE}"),
    ))
    .await;
    assert_eq!(status, 404);
    let (status, _) = fetch(url(
        &svc,
        &format!("/api/v1/pods/{ns}/{pod}/drops?from=yesterday"),
    ))
    .await;
    assert_eq!(status, 400);
    let (status, doc) = fetch(url(&svc, "/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/v1/pods/{namespace}/{pod}/{question}"].is_object());
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn talkers_count_each_packet_once() {
    let svc = start_shared().await;
    // Sent bytes over all pods equal the from_pod forwarded bytes: one count per packet.
    let (_, a) = sql_json(
        &svc,
        "SELECT sum(bytes) AS b FROM pod_talkers WHERE direction = 'sent'",
    )
    .await;
    let (_, b) = sql_json(&svc, "SELECT sum(bytes) AS b FROM flows WHERE verdict = 'forwarded' AND observation_point = 'from_pod'").await;
    assert_eq!(a, b);
    let (_, all) = sql_json(
        &svc,
        "SELECT sum(bytes) AS b FROM flows WHERE verdict = 'forwarded'",
    )
    .await;
    assert!(
        all[0]["b"].as_i64() > a[0]["b"].as_i64(),
        "raw sums count packets several times"
    );
    svc.stop().await.unwrap();
}
