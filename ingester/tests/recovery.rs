//! Recovery after faults, in process: a flush that cannot reach the table at
//! shutdown keeps the WAL; a WAL record the table can never take is quarantined
//! without blocking the rest; batch ids survive a crash between the WAL's sync
//! and the dedup journal's; settings that cannot work are refused at start.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use flowlake_ingester::wal::{BatchId, Wal, WalRecord, WalSeq};
use flowlake_ingester::{BATCH_ID_HEADER, BodyEncoding, IngestError, Ingester};
use reqwest::StatusCode;

use crate::common::*;

/// Writes records to the WAL directory as an ingester killed right after
/// acknowledging them would have left them.
fn write_wal(dir: &std::path::Path, records: &[WalRecord]) {
    let (mut wal, _) = Wal::open(dir, 1 << 20).unwrap();
    for r in records {
        let mut framed = Vec::new();
        r.encode(&mut framed);
        wal.append_durable(&framed).unwrap();
    }
}

fn record(seq: u64, id: Option<&str>, batch: &RecordBatch) -> WalRecord {
    WalRecord {
        seq: WalSeq(seq),
        batch_id: id.map(|i| BatchId::parse(i).unwrap()),
        encoding: BodyEncoding::Identity,
        body: ipc(batch).into(),
    }
}

/// `batch` with every `date` replaced by `value`.
fn with_date(batch: &RecordBatch, value: &str) -> RecordBatch {
    let i = batch.schema().index_of("date").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(StringArray::from(vec![value; batch.num_rows()])) as ArrayRef;
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// The table's store refuses every flush (a file where the partition directory
/// must go: refused even to root). Shutdown gives up within its grace, says the
/// rows stay in the WAL, and deletes no segment; once the store works again a
/// restart commits every acknowledged row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_failing_store_keeps_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shutdown_grace = Duration::from_secs(2);
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let blocker = std::path::Path::new(&cfg.table.location).join("date=2026-01-01");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let batch = flows(3000, 1);
    for part in 0..3 {
        let (s, _, text) = post(ing.addr(), ipc(&batch.slice(part * 1000, 1000)), &[]).await;
        assert_eq!(s, StatusCode::OK, "{text}");
    }
    // Age flushes fail and are retried meanwhile.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let started = std::time::Instant::now();
    let err = ing.shutdown().await.unwrap_err();
    assert!(
        started.elapsed() < cfg.shutdown_grace + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match &err {
        IngestError::Uncommitted { rows, .. } => assert_eq!(*rows, 3000),
        e => panic!("not Uncommitted: {e}"),
    }
    assert!(
        err.to_string().contains("stay in the write-ahead log"),
        "{err}"
    );
    assert!(Wal::disk_bytes(&cfg.wal_dir) > 0);
    assert_eq!(table_rows(&cfg).await, 0);

    std::fs::remove_file(&blocker).unwrap();
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    wait_for_rows(&cfg, 3000).await;
    ing.shutdown().await.unwrap();
    assert_eq!(table_rows(&cfg).await, 3000);
    assert_eq!(sum_bytes_in_table(&cfg).await, sum_bytes(&batch));
}

/// A WAL record whose partition value disagrees with its rows (acknowledged
/// unchecked by an older build) is quarantined at replay; the records around it
/// reach the table and requests are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_wal_record_is_quarantined_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let batch = flows(900, 1);
    let (a, b, c) = (
        batch.slice(0, 300),
        batch.slice(300, 300),
        batch.slice(600, 300),
    );
    write_wal(
        &cfg.wal_dir,
        &[
            record(1, Some("a"), &a),
            record(2, Some("poison"), &with_date(&b, "\"026-01-01")),
            record(3, None, &c),
        ],
    );
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    wait_for_rows(&cfg, 600).await;
    let (s, _, text) = post(ing.addr(), ipc(&b), &[]).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    wait_for_rows(&cfg, 900).await;
    let m = metrics(ing.addr()).await;
    assert!(
        m.contains("flowlake_ingester_quarantined_batches_total 1"),
        "{m}"
    );
    let quarantined: Vec<_> = std::fs::read_dir(cfg.wal_dir.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(quarantined, ["00000000000000000002.arrows"]);
    // The quarantined body is the record as written: it decodes to its rows.
    let body = std::fs::read(cfg.wal_dir.join("quarantine").join(&quarantined[0])).unwrap();
    let decoded = flowlake_ingester::decode_body(&body, BodyEncoding::Identity, 1 << 30).unwrap();
    assert_eq!(decoded.rows, 300);
    let date = decoded.batches[0].column_by_name("date").unwrap();
    let date = arrow::compute::cast(date, &DataType::Utf8).unwrap();
    assert_eq!(date.as_string::<i32>().value(0), "\"026-01-01");
    ing.shutdown().await.unwrap();
    assert_eq!(sum_bytes_in_table(&cfg).await, sum_bytes(&batch));
    // The losses table says which rows were written off: the poisoned
    // record's 300, per node of its rows.
    let Some(mut python) = flowlake_testkit::python_with("deltalake, pyarrow") else {
        return;
    };
    let losses = json_output(python.args([
        "-c",
        &flowlake_testkit::exiting_after(LOSSES),
        &format!("{}/_losses", cfg.table.location),
    ]));
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    let nodes = b.column_by_name("node").unwrap();
    let nodes = arrow::compute::cast(nodes, &DataType::Utf8).unwrap();
    for n in nodes.as_string::<i32>().iter().flatten() {
        *want.entry(n.to_string()).or_default() += 1;
    }
    let want: Vec<_> = want
        .into_iter()
        .map(|(node, n)| serde_json::json!([node, "ingester", "quarantined", "records", n]))
        .collect();
    assert_eq!(losses, serde_json::Value::Array(want));
}

/// Rows of a `losses` table as `[node, component, kind, unit, lost]`, sorted.
const LOSSES: &str = r#"
import sys, json
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1]).to_pyarrow_table().to_pylist()
print(json.dumps(sorted([r["node"], r["component"], r["kind"], r["unit"], r["lost"]] for r in t)))
"#;

/// An ingester killed after its WAL sync but before the dedup journal's: the id
/// is only in the WAL record. The retry with that id is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_id_only_in_the_wal_is_still_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let batch = flows(500, 1);
    write_wal(&cfg.wal_dir, &[record(1, Some("in-flight-7"), &batch)]);
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let (s, resp, text) = post(ing.addr(), ipc(&batch), &[(BATCH_ID_HEADER, "in-flight-7")]).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let resp = resp.unwrap();
    assert!(
        resp.duplicate,
        "the retry of a batch in the WAL is a duplicate"
    );
    assert_eq!(resp.rows, 500);
    wait_for_rows(&cfg, 500).await;
    ing.shutdown().await.unwrap();
    // Restarted after the commit removed the WAL segment: the journal has it.
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let (_, resp, _) = post(ing.addr(), ipc(&batch), &[(BATCH_ID_HEADER, "in-flight-7")]).await;
    assert!(resp.unwrap().duplicate);
    ing.shutdown().await.unwrap();
    assert_eq!(table_rows(&cfg).await, 500);
}

/// Settings under which the buffer fills before a flush by bytes can run are
/// refused at start, naming the flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_flush_and_buffer_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_buffer_bytes = 100 << 20;
    cfg.flush.max_bytes = 256 << 20;
    let err = Ingester::start(cfg.clone()).await.err().expect("refused");
    assert!(matches!(err, IngestError::Config(_)), "{err}");
    assert!(err.to_string().contains("--max-buffer-bytes"), "{err}");
    cfg.flush.max_bytes = 40 << 20;
    cfg.max_body_bytes = 32 << 20;
    assert!(Ingester::start(cfg.clone()).await.is_err());
    cfg.max_body_bytes = 16 << 20;
    cfg.flush.max_age = Duration::ZERO;
    assert!(Ingester::start(cfg.clone()).await.is_err());
    cfg.flush.max_age = Duration::from_secs(1);
    Ingester::start(cfg)
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}
