//! Export to Parquet and Delta, read back by an independent reader (python pyarrow /
//! deltalake), including incremental exports that neither duplicate nor miss rows.

use flowlake_query::export::{ExportConfig, ExportFormat, run_export};
use flowlake_query::{QueryConfig, TableLocation};

use serde_json::json;

use crate::support::*;

fn cfg(source: &std::path::Path, dest: &std::path::Path, format: ExportFormat) -> ExportConfig {
    ExportConfig {
        source: TableLocation {
            location: source.to_str().unwrap().into(),
            storage_options: Default::default(),
        },
        destination: dest.to_str().unwrap().into(),
        format,
        incremental: true,
        ..Default::default()
    }
}

fn pyarrow_rows(dir: &std::path::Path) -> u64 {
    python(&format!(
        "import pyarrow.dataset as ds; print(ds.dataset('{}', format='parquet', partitioning='hive', exclude_invalid_files=True, ignore_prefixes=['_','.']).count_rows())",
        dir.display()
    ))
    .trim()
    .parse()
    .unwrap()
}

#[tokio::test]
async fn incremental_parquet_and_delta_exports() {
    let records = gen_records();
    let tmp = tempfile::tempdir().unwrap();
    let (src, pq, delta) = (
        tmp.path().join("src"),
        tmp.path().join("pq"),
        tmp.path().join("delta"),
    );
    append(&src, &records[..5000]).await;

    let s = run_export(&cfg(&src, &pq, ExportFormat::Parquet), None)
        .await
        .unwrap();
    assert_eq!((s.rows, s.from_version), (5000, None));
    let d = run_export(&cfg(&src, &delta, ExportFormat::Delta), None)
        .await
        .unwrap();
    assert_eq!(d.rows, 5000);
    // Nothing new: nothing exported.
    assert_eq!(
        run_export(&cfg(&src, &pq, ExportFormat::Parquet), None)
            .await
            .unwrap()
            .rows,
        0
    );

    append(&src, &records[5000..12000]).await;
    let s2 = run_export(&cfg(&src, &pq, ExportFormat::Parquet), None)
        .await
        .unwrap();
    assert_eq!((s2.rows, s2.from_version), (7000, Some(s.to_version)));
    let d2 = run_export(&cfg(&src, &delta, ExportFormat::Delta), None)
        .await
        .unwrap();
    assert_eq!(d2.rows, 7000);

    // Hive layout on disk.
    assert!(pq.join("date=2026-01-01").is_dir(), "hive partitions");
    if python_has("pyarrow") {
        assert_eq!(pyarrow_rows(&pq), 12000);
    }
    if python_has("deltalake") {
        let out = python(&format!(
            "from deltalake import DeltaTable; t = DeltaTable('{}'); print(t.to_pyarrow_table().num_rows, sorted(t.metadata().partition_columns))",
            delta.display()
        ));
        assert_eq!(out.trim(), "12000 ['date', 'hour']");
    }
}

#[tokio::test]
async fn sql_export_over_http_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.export.roots = vec![tmp.path().to_str().unwrap().to_string()];
    let svc = start(cfg).await;
    let dest = tmp.path().join("drops");
    let body = serde_json::json!({
        "destination": dest.to_str().unwrap(),
        "sql": "SELECT namespace, pod, drop_reason, packets, interval_start FROM pod_drops",
        "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z", "format": "parquet"
    });
    let (status, text) = post_json(&url(&svc, "/api/v1/export"), &body).await;
    assert_eq!(status, 202, "{text}");
    let job: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let mut state = job;
    for _ in 0..200 {
        if state["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let state_bytes = reqwest::get(url(&svc, &format!("/api/v1/export/{id}")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        state = serde_json::from_slice(&state_bytes).unwrap();
    }
    assert_eq!(state["state"], "succeeded", "{state}");
    let (_, expected) = sql_json(&svc, "SELECT count(*) AS n FROM pod_drops WHERE interval_start >= '2026-01-01T00:00:00Z' AND interval_start < '2026-01-01T01:00:00Z'").await;
    assert_eq!(state["rows"], expected[0]["n"]);
    if python_has("pyarrow") {
        assert_eq!(pyarrow_rows(&dest), expected[0]["n"].as_u64().unwrap());
    }
    // Files were written below the staging directory, then moved into place.
    let staged: Vec<_> = walk(&dest.join(flowlake_query::export::STAGING_DIR));
    assert!(staged.is_empty(), "left in staging: {staged:?}");
    assert!(!walk(&dest).is_empty());
    let (status, _) = post_json(
        &url(&svc, "/api/v1/export"),
        &serde_json::json!({"destination": tmp.path().join("x"), "sql": "DELETE FROM flows"}),
    )
    .await;
    assert_eq!(status, 400);
    let missing = reqwest::get(url(&svc, "/api/v1/export/nope"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    svc.stop().await.unwrap();
    let _ = QueryConfig::default();
}

/// Exports outside the operator's roots, through `..` or a symlink, to another scheme,
/// into the live table, to a relative path or with request-supplied credentials are
/// refused, and nothing is written anywhere.
#[tokio::test]
async fn export_refusals_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("exports");
    let outside = tmp.path().join("outside");
    let table = tmp.path().join("flows");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    append(&table, &gen_records()[..500]).await;
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(&table, root.join("live")).unwrap();
    let mut cfg = QueryConfig::for_tests(table.to_str().unwrap());
    cfg.export.roots = vec![root.to_str().unwrap().to_string()];
    let svc = start(cfg).await;
    let before = (walk(tmp.path()), walk(&table).len());
    let at = |p: &str| format!("{}/{p}", root.display());
    let refused = [
        json!({"destination": outside.join("x")}),
        json!({"destination": at("../outside/x")}),
        json!({"destination": at("escape/x")}),
        json!({"destination": at("live/x")}),
        json!({"destination": table.join("x")}),
        json!({"destination": "exports/relative"}),
        json!({"destination": "s3://bucket/exports/x"}),
        json!({"destination": "http://169.254.169.254/latest/"}),
        json!({"destination": at("ok"), "storage_options": {"aws_endpoint": "http://127.0.0.1:1"}}),
        json!({"destination": at("ok"), "sql": "COPY (SELECT 1) TO '/tmp/x.csv'"}),
    ];
    for body in refused {
        let (status, text) = post_json(&url(&svc, "/api/v1/export"), &body).await;
        assert!(status == 403 || status == 400, "{body}: {status} {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["code"].is_string(), "{text}");
    }
    // Give a wrongly started job the time to write something.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!((walk(tmp.path()), walk(&table).len()), before);
    svc.stop().await.unwrap();
}

/// An export job runs under the service's memory pool: a Delta export larger than the
/// pool fails with the memory limit and commits nothing.
#[tokio::test]
async fn export_jobs_run_under_the_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.limits.memory_bytes = 2 << 20;
    cfg.export.roots = vec![tmp.path().to_str().unwrap().to_string()];
    let svc = start(cfg).await;
    let dest = tmp.path().join("all");
    let (status, text) = post_json(
        &url(&svc, "/api/v1/export"),
        &json!({"destination": dest, "format": "delta"}),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut job = serde_json::Value::Null;
    for _ in 0..300 {
        let bytes = reqwest::get(url(&svc, &format!("/api/v1/export/{id}")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        job = serde_json::from_slice(&bytes).unwrap();
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("memory"), "{job}");
    assert!(!dest.join("_delta_log").exists() || walk(&dest.join("_delta_log")).is_empty());
    svc.stop().await.unwrap();
}

/// Count, sum of `bytes` and sum of `packets` of `records`.
fn checksum(records: &[flowlake_schemas::FlowRecord]) -> (u64, u64, u64) {
    (
        records.len() as u64,
        records.iter().map(|r| r.bytes).sum(),
        records.iter().map(|r| r.packets).sum(),
    )
}

/// Incremental exports before and after compaction (whose rewrites carry
/// `dataChange = false`), vacuum and a retention pass: every row in the
/// destination exactly once (count and sums), read back by pyarrow and DuckDB
/// (Parquet) and by Python deltalake (Delta).
#[tokio::test]
async fn incremental_export_across_compaction_vacuum_and_retention() {
    let records = gen_records();
    let records = &records[..12000];
    let tmp = tempfile::tempdir().unwrap();
    let (src, pq, delta) = (
        tmp.path().join("src"),
        tmp.path().join("pq"),
        tmp.path().join("delta"),
    );
    let compact = |dir: std::path::PathBuf| async move {
        let url = url::Url::from_directory_path(&dir).unwrap();
        let table = deltalake_core::DeltaTable::try_from_url(url).await.unwrap();
        let (table, m) = table.optimize().await.unwrap();
        assert!(m.num_files_removed >= 2, "{m:?}");
        table
    };
    let export = |format| {
        let dest = if format == ExportFormat::Delta {
            &delta
        } else {
            &pq
        };
        let c = cfg(&src, dest, format);
        async move { run_export(&c, None).await }
    };

    for chunk in records[..6000].chunks(2000) {
        append(&src, chunk).await;
    }
    assert_eq!(export(ExportFormat::Parquet).await.unwrap().rows, 6000);
    assert_eq!(export(ExportFormat::Delta).await.unwrap().rows, 6000);
    // Exported files compacted and vacuumed away.
    let table = compact(src.clone()).await;
    let (_, vacuumed) = table
        .vacuum()
        .with_retention_period(chrono::Duration::zero())
        .with_enforce_retention_duration(false)
        .await
        .unwrap();
    assert!(!vacuumed.files_deleted.is_empty());
    // New rows, compacted with the old ones, then a retention pass removes
    // the first hour's files (rows exported and rows not yet exported).
    for chunk in records[6000..].chunks(2000) {
        append(&src, chunk).await;
    }
    let table = compact(src.clone()).await;
    let (_, deleted) = table.delete().with_predicate("hour = '00'").await.unwrap();
    assert!(deleted.num_removed_files > 0, "{deleted:?}");

    let s = export(ExportFormat::Parquet).await.unwrap();
    assert_eq!(
        s.rows, 6000,
        "rows added since the first export, once: {s:?}"
    );
    assert_eq!(export(ExportFormat::Delta).await.unwrap().rows, 6000);
    assert_eq!(export(ExportFormat::Parquet).await.unwrap().rows, 0);

    let (n, bytes, packets) = checksum(records);
    let want = format!("{n} {bytes} {packets}");
    if python_has("pyarrow") {
        let out = python(&format!(
            "import pyarrow.dataset as ds, pyarrow.compute as pc\n\
             t = ds.dataset('{}', format='parquet', partitioning='hive').to_table(columns=['bytes', 'packets'])\n\
             print(t.num_rows, pc.sum(t['bytes']).as_py(), pc.sum(t['packets']).as_py())",
            pq.display()
        ));
        assert_eq!(out.trim(), want, "pyarrow on the Parquet destination");
    }
    if python_has("duckdb") {
        let out = python(&format!(
            "import duckdb\n\
             r = duckdb.connect().execute(\"select count(*), sum(bytes), sum(packets) from read_parquet('{}/**/*.parquet', hive_partitioning=true)\").fetchone()\n\
             print(*r)",
            pq.display()
        ));
        assert_eq!(out.trim(), want, "DuckDB on the Parquet destination");
    }
    if python_has("deltalake") {
        let out = python(&format!(
            "from deltalake import DeltaTable\nimport pyarrow.compute as pc\n\
             t = DeltaTable('{}').to_pyarrow_table(columns=['bytes', 'packets'])\n\
             print(t.num_rows, pc.sum(t['bytes']).as_py(), pc.sum(t['packets']).as_py())",
            delta.display()
        ));
        assert_eq!(
            out.trim(),
            want,
            "Python deltalake on the Delta destination"
        );
    }
}
