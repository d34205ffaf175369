//! A node's capture file sent by the collector's uploader to the ingester's
//! capture routes: an ingester away at the start (the file waits in the
//! spool and is sent once it is up), a resumption from where a previous run
//! stopped, the stored file equal to the node's, its description recorded.

use std::time::Duration;

use flowlake_collector::capture::upload::{self, FileDescription, UploadConfig};
use flowlake_ingester::capture::{self, CaptureStore};
use tokio_util::sync::CancellationToken;

async fn serve(
    store: CaptureStore,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, capture::router(store)).await;
    })
}

fn description(size: u64, crc32c: u32) -> FileDescription {
    FileDescription {
        size,
        crc32c,
        filter: "tcp port 5432".into(),
        requested_by: "alice".into(),
        stop_reason: "duration".into(),
        interfaces: Vec::new(),
        object_path: String::new(),
    }
}

#[tokio::test]
async fn an_upload_waits_for_the_ingester_then_resumes_and_completes() {
    let spool = tempfile::tempdir().unwrap();
    let table = tempfile::tempdir().unwrap();
    let file = spool.path().join("node-a.pcapng");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let (size, crc) = upload::file_crc32c(&file).await.unwrap();
    assert_eq!(size, 50_000);

    // The ingester's address is reserved, but nothing answers yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = UploadConfig {
        ingester: format!("http://{addr}"),
        client: reqwest::Client::new(),
        token: None,
        chunk_bytes: 8192,
        retry_every: Duration::from_millis(100),
    };
    let cancel = CancellationToken::new();
    let sending = {
        let (config, file, cancel) = (config.clone(), file.clone(), cancel.clone());
        tokio::spawn(async move {
            let d = description(size, crc);
            upload::upload(&config, "cap-1", "node-a", &file, &d, &cancel).await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !sending.is_finished(),
        "the upload waits while the ingester is away"
    );
    // A previous ingester run had stored the first chunk already: the store
    // is all the state, and the uploader resumes from it.
    let store = CaptureStore::local(table.path()).unwrap();
    let part = spool.path().join("first-chunk");
    std::fs::write(&part, &data[..8192]).unwrap();
    let (_, first_crc) = upload::file_crc32c(&part).await.unwrap();
    let first = axum::body::Bytes::copy_from_slice(&data[..8192]);
    store
        .put_chunk("cap-1", "node-a", 0, first_crc, first)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = serve(store.clone(), listener).await;
    let done = tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("the upload completes once the ingester is up")
        .unwrap()
        .unwrap();
    assert_eq!(done.object_path, "_captures/cap-1/node-a.pcapng");
    let stored = std::fs::read(table.path().join("_captures/cap-1/node-a.pcapng")).unwrap();
    assert_eq!(stored, data, "the stored file is the node's, byte for byte");
    let recorded = store.description("cap-1", "node-a").await.unwrap();
    assert_eq!(recorded.requested_by, "alice");
    assert_eq!(recorded.filter, "tcp port 5432");
    // Sending again is answered as complete.
    let again = upload::upload(
        &config,
        "cap-1",
        "node-a",
        &file,
        &description(size, crc),
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(again.object_path, done.object_path);
    server.abort();
}

/// An upload of `file` as (`id`, node `n`) that must fail.
async fn failed(
    config: &UploadConfig,
    id: &str,
    file: &std::path::Path,
    d: FileDescription,
    cancel: &CancellationToken,
) -> upload::UploadError {
    upload::upload(config, id, "n", file, &d, cancel)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_refused_upload_is_final_and_a_cancelled_one_stops() {
    let spool = tempfile::tempdir().unwrap();
    let table = tempfile::tempdir().unwrap();
    let file = spool.path().join("f.pcapng");
    std::fs::write(&file, b"0123456789").unwrap();
    let (size, crc) = upload::file_crc32c(&file).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(CaptureStore::local(table.path()).unwrap(), listener).await;
    let config = UploadConfig {
        ingester: format!("http://{addr}"),
        client: reqwest::Client::new(),
        token: None,
        chunk_bytes: 4,
        retry_every: Duration::from_millis(50),
    };
    let cancel = CancellationToken::new();
    // A bad id is a 4xx: refused at once, not retried.
    let e = failed(&config, "Bad_Id", &file, description(size, crc), &cancel).await;
    assert!(matches!(e, upload::UploadError::Refused(_)), "{e}");
    // A description whose checksum disagrees with the file is refused at completion.
    let e = failed(&config, "cap-2", &file, description(size, crc ^ 1), &cancel).await;
    assert!(
        matches!(&e, upload::UploadError::Refused(m) if m.contains("checksum")),
        "{e}"
    );
    assert!(!table.path().join("_captures/cap-2/n.pcapng").exists());
    server.abort();
    // With the ingester gone, cancelling ends the wait.
    cancel.cancel();
    let e = failed(&config, "cap-3", &file, description(size, crc), &cancel).await;
    assert!(matches!(e, upload::UploadError::Cancelled), "{e}");
}

mod control;
mod lab;
mod two_nodes;
