//! `flowlake query` stops on SIGTERM: it drains running requests and exports for at
//! most `--shutdown-grace` and exits 0. The service runs in a child process (this test
//! binary, running [`query_child`]) so the real signal handling is exercised.

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use crate::support::*;

pub const CHILD_ARGS: &str = "FLOWLAKE_QUERY_TEST_CHILD_ARGS";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: flowlake_query::QueryArgs,
}

/// `flowlake query` with the arguments in [`CHILD_ARGS`]; does nothing when run
/// without them.
#[test]
#[ignore = "started as a child process by sigterm_during_query_and_export_exits_zero"]
fn query_child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let cli = Cli::parse_from(std::iter::once("flowlake-query".to_string()).chain(args));
    flowlake_query::query_main(cli.args).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_query_and_export_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let exports = tmp.path().join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let grace = Duration::from_secs(2);
    let (mut child, base) = spawn_query_child(&query_child_args(&exports, "2s", &[])).await;
    let client = reqwest::Client::new();
    // A query and an export that would run for the whole timeout.
    let heavy = "SELECT a.src_ip, b.dst_ip FROM flows a, flows b";
    let query = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/api/v1/sql");
        async move {
            let resp = client
                .post(url)
                .json_body(&json!({"sql": "SELECT count(*) AS n FROM flows a, flows b"}))
                .send()
                .await;
            resp.map(|r| r.status().as_u16())
        }
    });
    let dest = exports.join("long");
    let (status, text) = post_json(
        &format!("{base}/api/v1/export"),
        &json!({"destination": dest, "sql": heavy}),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    tokio::time::sleep(Duration::from_millis(700)).await;

    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > grace + Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running {:?} after SIGTERM", signalled.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = signalled.elapsed();
    eprintln!("exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(took < grace + Duration::from_secs(3), "took {took:?}");
    // The query's connection was closed (an error or a cut response, never a hang).
    let _ = tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .unwrap();
    // The interrupted export left nothing where readers of the destination look.
    let visible: Vec<_> = walk(&dest)
        .into_iter()
        .filter(|p| {
            !p.strip_prefix(&dest)
                .unwrap()
                .starts_with(flowlake_query::export::STAGING_DIR)
        })
        .collect();
    assert!(visible.is_empty(), "{visible:?}");
}
