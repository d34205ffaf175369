//! The write path against a real S3-protocol server (moto's server on loopback,
//! started by the test): two ingesters commit concurrently with conditional puts,
//! and the table reads back whole.

use std::process::Stdio;
use std::time::Duration;

use crate::cloud::{Server, free_port, two_ingesters_commit_to};
use crate::common::*;
use flowlake_testkit::python_with;

async fn start_moto() -> Option<(Server, String)> {
    let mut python = python_with("moto.server, flask")?;
    let port = free_port();
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
    let moto = Server(child);
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
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];
    two_ingesters_commit_to("s3://flowlake/flows", &options).await;
}
