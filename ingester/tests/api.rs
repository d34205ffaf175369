//! The HTTP API: acceptance, every refusal, idempotency, health and metrics.

use std::time::Duration;

use arrow::ipc::CompressionType;
use flowlake_ingester::{BATCH_ID_HEADER, Ingester, Table, routes};
use reqwest::StatusCode;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_every_encoding_and_commits_sorted_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let addr = ing.addr();
    let batch = flows(6000, 3);
    let parts = [
        batch.slice(0, 2000),
        batch.slice(2000, 2000),
        batch.slice(4000, 1500),
        batch.slice(5500, 500),
    ];
    let bodies = [
        (ipc(&parts[0]), None),
        (
            flowlake_ingester::encode_ipc(&[parts[1].clone()], Some(CompressionType::ZSTD))
                .unwrap(),
            None,
        ),
        (
            flowlake_ingester::encode_ipc(&[parts[2].clone()], Some(CompressionType::LZ4_FRAME))
                .unwrap(),
            None,
        ),
        (
            zstd::encode_all(&ipc(&parts[3])[..], 3).unwrap(),
            Some("zstd"),
        ),
    ];
    for ((body, enc), part) in bodies.into_iter().zip(&parts) {
        let headers: Vec<(&str, &str)> = enc.map(|e| ("content-encoding", e)).into_iter().collect();
        let (status, resp, text) = post(addr, body, &headers).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(resp.unwrap().rows, part.num_rows() as u64);
    }
    wait_for_rows(&cfg, 6000).await;
    let metrics = metrics(addr).await;
    for line in [
        "flowlake_ingester_rows_total 6000",
        "flowlake_ingester_batches_accepted_total 4",
        "flowlake_ingester_rows_committed_total 6000",
        "flowlake_ingester_flushes_total{reason=\"age\"}",
        "flowlake_ingester_commit_seconds_count",
    ] {
        assert!(metrics.contains(line), "{line} missing in {metrics}");
    }
    ing.shutdown().await.unwrap();
    let table = Table::open(&cfg.table).await.unwrap();
    let files = table.files().unwrap();
    let hours: std::collections::BTreeSet<_> = files
        .iter()
        .map(|f| (f.date.clone(), f.hour.clone()))
        .collect();
    assert_eq!(hours.len(), 3, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.path.starts_with("date=2026-01-01/hour=0"))
    );
    // WAL segments are gone once committed (only the open, empty one is left).
    assert!(flowlake_ingester::wal::Wal::disk_bytes(&cfg.wal_dir) == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_input_with_the_right_status_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.token_file = Some(crate::common::token_file(
        dir.path(),
        &[("collector", "s3cret", &["ingest"])],
    ));
    cfg.max_body_bytes = 200_000;
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let addr = ing.addr();
    let auth = ("authorization", "Bearer s3cret");
    let batch = flows(300, 1);

    let (s, _, _) = post(addr, ipc(&batch), &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = post(addr, ipc(&batch), &[("authorization", "Bearer nope")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, _, text) = post(addr, b"this is not arrow".to_vec(), &[auth]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");

    // Wrong type: the column is named.
    let wrong = {
        let schema = batch.schema();
        let idx = schema.index_of("dst_port").unwrap();
        let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[idx] =
            arrow::datatypes::Field::new("dst_port", arrow::datatypes::DataType::Int64, true);
        let mut cols = batch.columns().to_vec();
        cols[idx] = arrow::compute::cast(&cols[idx], &arrow::datatypes::DataType::Int64).unwrap();
        arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        )
        .unwrap()
    };
    let (s, _, text) = post(addr, ipc(&wrong), &[auth]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text.contains("dst_port"), "{text}");
    // Missing required column: named too.
    let missing = batch
        .project(&(1..batch.num_columns()).collect::<Vec<_>>())
        .unwrap();
    let (s, _, text) = post(addr, ipc(&missing), &[auth]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text.contains("interval_start"), "{text}");

    let big = flows(3000, 1);
    let (s, _, _) = post(addr, ipc(&big), &[auth]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, _) = post(
        addr,
        zstd::encode_all(&ipc(&big)[..], 19).unwrap(),
        &[auth, ("content-encoding", "zstd")],
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, _) = post(addr, ipc(&batch), &[auth, ("content-encoding", "br")]).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) = post(
        addr,
        ipc(&batch),
        &[auth, (BATCH_ID_HEADER, "bad id with spaces")],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A string that is not UTF-8 (the bytes of a Latin-1 "é"): refused, named.
    let invalid_utf8 = {
        let schema = batch.schema();
        let idx = schema
            .fields()
            .iter()
            .position(|f| f.data_type() == &arrow::datatypes::DataType::Utf8)
            .expect("a string column");
        let rows = batch.num_rows();
        let offsets = arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(1, rows));
        let values = arrow::buffer::Buffer::from(vec![0xE9u8; rows]);
        // SAFETY: deliberately invalid UTF-8, as a hostile client would send; the
        // array is only encoded to IPC, never read as strings here.
        let bad = unsafe { arrow::array::StringArray::new_unchecked(offsets, values, None) };
        let mut cols = batch.columns().to_vec();
        cols[idx] = std::sync::Arc::new(bad);
        arrow::array::RecordBatch::try_new(schema.clone(), cols).unwrap()
    };
    let (s, _, text) = post(addr, ipc(&invalid_utf8), &[auth]).await;
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
        "{s}: {text}"
    );
    assert!(text.to_lowercase().contains("utf"), "{text}");

    let metrics = metrics(addr).await;
    for reason in [
        "unauthorized",
        "not_arrow",
        "schema",
        "too_large",
        "encoding",
        "batch_id",
    ] {
        assert!(
            metrics.contains(&format!(
                "flowlake_ingester_batches_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    // Nothing was stored.
    let (s, resp, _) = post(addr, ipc(&batch), &[auth]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(resp.unwrap().rows, 300);
    wait_for_rows(&cfg, 300).await;
    ing.shutdown().await.unwrap();
}

/// The table refuses flushes (a file where a partition directory must go), so
/// the buffer cannot drain: once the budget is spent requests get 503 with
/// Retry-After; when the table works again everything acknowledged lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush.max_bytes = 128 << 10;
    cfg.max_body_bytes = 256 << 10;
    cfg.max_buffer_bytes = 512 << 10;
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let blocker = std::path::Path::new(&cfg.table.location).join("date=2026-01-01");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let batch = flows(500, 1);
    assert!(ipc(&batch).len() < cfg.max_body_bytes);
    let mut acked = 0;
    let text = loop {
        let (s, _, text) = post(ing.addr(), ipc(&batch), &[]).await;
        if s == StatusCode::SERVICE_UNAVAILABLE {
            break text;
        }
        assert_eq!(s, StatusCode::OK, "{text}");
        acked += 1;
        assert!(acked < 10, "the budget never ran out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.starts_with("retry-after=1 "), "{text}");
    assert!(text.contains("\"code\":\"busy\""), "{text}");
    std::fs::remove_file(&blocker).unwrap();
    wait_for_rows(&cfg, acked * 500).await;
    // The flush releases its memory right after the commit it waits for.
    let mut answers = Vec::new();
    for _ in 0..50 {
        let (s, _, text) = post(ing.addr(), ipc(&batch), &[]).await;
        if s == StatusCode::OK {
            break;
        }
        answers.push(text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answers.len() < 50,
        "the budget is released after the commit: {answers:?}"
    );
    ing.shutdown().await.unwrap();
    assert_eq!(table_rows(&cfg).await, (acked + 1) * 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_id_is_stored_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let batch = flows(400, 1);
    let id = [(BATCH_ID_HEADER, "collector-a/0001")];
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let health = client()
        .get(format!("http://{}{}", ing.addr(), routes::HEALTHZ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = client()
        .get(format!("http://{}{}", ing.addr(), routes::READYZ))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let (_, first, _) = post(ing.addr(), ipc(&batch), &id).await;
    let (_, again, _) = post(ing.addr(), ipc(&batch), &id).await;
    assert!(!first.unwrap().duplicate);
    let again = again.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.rows, 400);
    ing.shutdown().await.unwrap();

    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let (s, after, _) = post(ing.addr(), ipc(&batch), &id).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        after.unwrap().duplicate,
        "the dedup window survives a restart"
    );
    let metrics = metrics(ing.addr()).await;
    assert!(
        metrics.contains("flowlake_ingester_batches_duplicate_total 1"),
        "{metrics}"
    );
    ing.shutdown().await.unwrap();
    assert_eq!(table_rows(&cfg).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingesters_commit_to_one_table_concurrently() {
    let table = tempfile::tempdir().unwrap();
    crate::cloud::two_ingesters_commit_to(table.path().to_str().unwrap(), &[]).await;
}
