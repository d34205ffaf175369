//! Test fixtures: Delta tables written from `flowlake gen` records exactly as the
//! ingester writes them (partitioned by date/hour), and running services.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use deltalake_core::DeltaTable;
use deltalake_core::protocol::SaveMode;
use flowlake_gen::GenConfig;
use flowlake_query::{QueryConfig, QueryService, RunningQuery};
use flowlake_schemas::{FlowRecord, PARTITION_COLUMNS, records_to_batch};
use url::Url;

/// The fixed workload of the golden tests: `GenConfig::for_tests` (seed 42, 2 hours
/// from 2026-01-01T00:00Z, 36,000 rows).
pub fn gen_records() -> Vec<FlowRecord> {
    flowlake_gen::records(&GenConfig::for_tests(PathBuf::from("unused")))
}

/// Appends records to the Delta table at `dir` (created if needed) in one commit.
pub async fn append(dir: &Path, records: &[FlowRecord]) -> DeltaTable {
    std::fs::create_dir_all(dir).unwrap();
    let url = Url::from_directory_path(dir).unwrap();
    let table = DeltaTable::try_from_url(url).await.unwrap();
    table
        .write(vec![records_to_batch(records)])
        .with_partition_columns(PARTITION_COLUMNS)
        .with_save_mode(SaveMode::Append)
        .await
        .unwrap()
}

/// Writes the gen workload as a table with one commit per hour.
pub async fn write_gen_table(dir: &Path) {
    let records = gen_records();
    let hour1: chrono::DateTime<chrono::Utc> = "2026-01-01T01:00:00Z".parse().unwrap();
    let split = records.partition_point(|r| r.interval_start < hour1);
    append(dir, &records[..split]).await;
    append(dir, &records[split..]).await;
}

/// A table shared by all read-only tests of this process (written once).
pub fn shared_table() -> &'static Path {
    static TABLE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &TABLE
        .get_or_init(|| {
            std::thread::spawn(|| {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("flows");
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(write_gen_table(&path));
                (dir, path)
            })
            .join()
            .unwrap()
        })
        .1
}

pub async fn start(config: QueryConfig) -> RunningQuery {
    QueryService::start(config).await.unwrap()
}

/// A service over the shared table.
pub async fn start_shared() -> RunningQuery {
    start(QueryConfig::for_tests(shared_table().to_str().unwrap())).await
}

pub fn url(running: &RunningQuery, path: &str) -> String {
    format!("http://{}{path}", running.addr())
}

/// POST JSON, return status and body text.
pub async fn post_json(url: &str, body: &serde_json::Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

pub async fn sql_json(running: &RunningQuery, sql: &str) -> (u16, serde_json::Value) {
    let (status, text) = post_json(
        &url(running, "/api/v1/sql"),
        &serde_json::json!({"sql": sql}),
    )
    .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

/// Whether a python module can be imported; prints why a test is skipped otherwise
/// and fails when FLOWLAKE_REQUIRE_PRIVILEGED=1.
pub fn python_has(module: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let msg = format!("python3 module {module} not available");
        if std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{msg} and FLOWLAKE_REQUIRE_PRIVILEGED=1");
        }
        eprintln!("skipping: {msg}");
    }
    ok
}

/// Runs a python snippet, returning stdout (panics with stderr on failure). The
/// snippet leaves through `os._exit`: python deltalake's runtime threads can abort
/// an otherwise successful interpreter at shutdown.
pub fn python(code: &str) -> String {
    let code = flowlake_testkit::exiting_after(code);
    let out = std::process::Command::new("python3")
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A JSON request body (reqwest is built without its `json` feature).
pub trait JsonBody {
    fn json_body(self, v: &serde_json::Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

/// Files below `dir` (none if it does not exist).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A request to `base{path}`: `body` as JSON (POST), else `method` without one; with
/// `token` as bearer. Returns status and body text.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    body: &Option<serde_json::Value>,
    token: Option<&str>,
) -> (u16, String) {
    let client = reqwest::Client::new();
    let url = format!("{base}{path}");
    let mut req = match body {
        Some(b) => client.post(url).json_body(b),
        None if method == "GET" => client.get(url),
        None => client.post(url),
    };
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The flags of a child `flowlake query` over the shared table with exports below
/// `exports`, stopped within `grace` (`2s`); `extra` are appended.
pub fn query_child_args(exports: &Path, grace: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = serde_json::json!([
        "--table",
        shared_table(),
        "--timeout",
        "120s",
        "--shutdown-grace",
        grace,
        "--rollup-every",
        "0s",
        "--memory-limit",
        (256 << 20).to_string(),
        "--target-partitions",
        "2",
        "--export-root",
        exports,
    ]);
    let list = args.as_array_mut().expect("an array");
    list.extend(extra.iter().map(|a| serde_json::json!(a)));
    std::mem::take(list)
}

/// `flowlake query` with `args` in a child process (this test binary running
/// `sigterm::query_child`), so real signals and restarts are exercised; returns it
/// with its base URL once `/healthz` answers. `args` get `--listen` on a free port.
pub async fn spawn_query_child(args: &[serde_json::Value]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut all = vec![
        serde_json::json!("--listen"),
        serde_json::json!(format!("127.0.0.1:{port}")),
    ];
    all.extend(args.iter().cloned());
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sigterm::query_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(
            crate::sigterm::CHILD_ARGS,
            serde_json::Value::from(all).to_string(),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the child never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (child, base)
}
