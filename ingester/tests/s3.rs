//! The same write path against a real S3-protocol server (moto's server on
//! loopback, started by the test): two ingesters commit concurrently with
//! conditional puts, and the table reads back whole.

use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::Duration;

use flowlake_ingester::{Ingester, Table};
use reqwest::StatusCode;

use crate::common::*;
use flowlake_testkit::python_with;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_moto() -> Option<(Moto, String)> {
    let mut python = python_with("moto.server, flask")?;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = python
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if let Ok(r) = client().put(format!("{endpoint}/flowlake")).send().await
            && r.status().is_success()
        {
            return Some((moto, endpoint));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto server did not start on {endpoint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingesters_on_s3() {
    let Some((_moto, endpoint)) = start_moto().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];
    let mut a_cfg = config(&dir.path().join("a"));
    a_cfg.table.location = "s3://flowlake/flows".into();
    a_cfg.table.storage_options = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut b_cfg = config(&dir.path().join("b"));
    b_cfg.table = a_cfg.table.clone();
    let (a, b) = tokio::join!(
        Ingester::start(a_cfg.clone()),
        Ingester::start(b_cfg.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let batch = flows(6000, 2);
    let mut sends = Vec::new();
    for i in 0..12 {
        let part = batch.slice(i * 500, 500);
        let addr = if i % 2 == 0 { a.addr() } else { b.addr() };
        sends.push(tokio::spawn(
            async move { post(addr, ipc(&part), &[]).await },
        ));
        if i % 3 == 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for s in sends {
        let (status, _, text) = s.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let table = Table::open(&a_cfg.table).await.unwrap();
    let files = table.files().unwrap();
    assert_eq!(files.iter().map(|f| f.rows.unwrap()).sum::<usize>(), 6000);
    assert!(table.version().unwrap() >= 2, "both writers committed");
    // Compaction and checkpoints work on S3 too.
    let mut table = table;
    let s = flowlake_ingester::compact_once(
        &mut table,
        &flowlake_ingester::CompactConfig::default(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(s.partitions_compacted, 2, "{s:?}");
    assert_eq!(table.files().unwrap().len(), 2);
    assert_eq!(
        table
            .files()
            .unwrap()
            .iter()
            .map(|f| f.rows.unwrap())
            .sum::<usize>(),
        6000
    );
}
