//! Helpers: test data from `flowlake gen`, an HTTP client, table totals.

use std::path::Path;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use flowlake_ingester::{IngestResponse, IngesterConfig, Table, routes};

/// `rows` generated flow records over `hours` hours from 2026-01-01T00:00Z.
pub fn flows(rows: u64, hours: i64) -> RecordBatch {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.duration = chrono::Duration::hours(hours);
    cfg.rate = rows as f64 / (hours * 3600) as f64;
    let records = flowlake_gen::records(&cfg);
    assert_eq!(records.len() as u64, rows);
    flowlake_schemas::records_to_batch(&records)
}

pub fn sum_bytes(batch: &RecordBatch) -> i64 {
    batch
        .column_by_name(flowlake_schemas::col::BYTES)
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .flatten()
        .sum()
}

pub fn ipc(batch: &RecordBatch) -> Vec<u8> {
    flowlake_ingester::encode_ipc(std::slice::from_ref(batch), None).unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn flows_url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}{}", routes::FLOWS)
}

/// Posts a body; returns the status and the parsed 200 answer if any.
pub async fn post(
    addr: std::net::SocketAddr,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (reqwest::StatusCode, Option<IngestResponse>, String) {
    let mut req = client().post(flows_url(addr)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let parsed = if status.is_success() {
        Some(serde_json::from_str(&text).unwrap())
    } else {
        None
    };
    let text = match retry_after {
        Some(r) => format!("retry-after={r} {text}"),
        None => text,
    };
    (status, parsed, text)
}

/// The token of the `admin` entry of every [`token_file`]; [`metrics`] presents it.
pub const ADMIN_TOKEN: &str = "admin-s3cret";

/// Writes (atomically, as a Secret update does) a token file in `dir` with an
/// `admin` entry and `(name, token, scopes)`; returns its path.
pub fn token_file(dir: &Path, entries: &[(&str, &str, &[&str])]) -> std::path::PathBuf {
    let mut tokens = vec![serde_json::json!({
        "name": "admin",
        "sha256": flowlake_service::hash_token(ADMIN_TOKEN),
        "scopes": ["admin"],
    })];
    for (name, token, scopes) in entries {
        tokens.push(serde_json::json!({
            "name": name,
            "sha256": flowlake_service::hash_token(token),
            "scopes": scopes,
        }));
    }
    let path = dir.join("tokens.json");
    let tmp = dir.join("tokens.json.tmp");
    std::fs::write(&tmp, serde_json::json!({ "tokens": tokens }).to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The ingester's `/metrics` text.
pub async fn metrics(addr: std::net::SocketAddr) -> String {
    client()
        .get(format!("http://{addr}{}", routes::METRICS))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Rows per the table's file statistics.
pub async fn table_rows(cfg: &IngesterConfig) -> usize {
    let table = Table::open(&cfg.table).await.unwrap();
    table.files().unwrap().iter().map(|f| f.rows.unwrap()).sum()
}

/// Sum of the `bytes` column over the whole table, read back from its files.
pub async fn sum_bytes_in_table(cfg: &IngesterConfig) -> i64 {
    let table = Table::open(&cfg.table).await.unwrap();
    let mut sum = 0;
    for f in table.files().unwrap() {
        let path = Path::new(&cfg.table.location).join(f.path.replace("%3D", "="));
        let file = std::fs::File::open(path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            sum += sum_bytes(&batch.unwrap());
        }
    }
    sum
}

/// Waits until the table holds `rows` rows (flushes are asynchronous).
pub async fn wait_for_rows(cfg: &IngesterConfig, rows: usize) {
    for _ in 0..200 {
        if Table::open(&cfg.table).await.is_ok() && table_rows(cfg).await == rows {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "table never reached {rows} rows (has {})",
        table_rows(cfg).await
    );
}

/// Runs `command` (a Python reader script) and parses the JSON it prints;
/// panics with its stderr when it fails.
pub use flowlake_testkit::json_output;

pub fn config(dir: &Path) -> IngesterConfig {
    init_logging();
    IngesterConfig::for_tests(dir)
}

/// Logs to the test output (`RUST_LOG`-style filter `warn` by default).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,flowlake_ingester=info",
        ))
        .with_test_writer()
        .try_init();
}
