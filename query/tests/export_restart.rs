//! Export job status survives a restart of the query service (a real process,
//! stopped by SIGTERM and by SIGKILL): a finished job keeps its status, rows and files;
//! a job running when the process stopped is `interrupted` after the restart — written
//! by the draining process on SIGTERM, concluded from its stale heartbeat after SIGKILL.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::export_scoped::finished_job;
use crate::support::*;

/// Never finishes within the test: it is stopped with the process.
/// Runs for minutes: a sum over a three-way cross join (a `count(*)` there may
/// be answered from statistics at once).
const ENDLESS: &str =
    "SELECT sum(a.bytes * b.packets + c.bytes) AS n FROM flows a, flows b, flows c";

async fn start_child(root: &Path) -> (std::process::Child, String) {
    let args = query_child_args(root, "1s", &["--export-job-heartbeat", "200ms"]);
    spawn_query_child(&args).await
}

async fn export(base: &str, body: Value) -> String {
    let (status, text) = post_json(&format!("{base}/api/v1/export"), &body).await;
    assert_eq!(status, 202, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn job(base: &str, id: &str) -> Value {
    let (status, text) = request(base, "GET", &format!("/api/v1/export/{id}"), &None, None).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("still running {within:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_status_survives_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("exports");
    std::fs::create_dir_all(&root).unwrap();

    let (mut child, base) = start_child(&root).await;
    let done = export(&base, json!({"destination": root.join("done")})).await;
    let before = finished_job(&base, None, &done).await;
    assert_eq!(before["state"], "succeeded", "{before}");
    assert!(before["files"].as_u64().unwrap() > 0, "{before}");
    let running = export(
        &base,
        json!({"destination": root.join("endless"), "sql": ENDLESS}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job(&base, &running).await["state"], "running");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());

    // Restarted: the finished job as it was, the running one interrupted by the drain.
    let (mut child, base) = start_child(&root).await;
    assert_eq!(job(&base, &done).await, before);
    let stopped = job(&base, &running).await;
    assert_eq!(stopped["state"], "interrupted", "{stopped}");
    assert!(
        stopped["error"].as_str().unwrap().contains("stopped"),
        "{stopped}"
    );

    // Killed: nothing drains; the record's heartbeat goes stale.
    let killed = export(
        &base,
        json!({"destination": root.join("killed"), "sql": ENDLESS}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let beating = job(&base, &killed).await;
    assert_eq!(beating["state"], "running");
    assert_ne!(beating["heartbeat"], beating["started"], "{beating}");
    signal(&child, "-KILL");
    wait_exit(&mut child, Duration::from_secs(15));
    let record: Value = serde_json::from_slice(
        &std::fs::read(
            root.join(flowlake_query::export::JOBS_DIR)
                .join(format!("{killed}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["state"], "running",
        "the killed process left {record}"
    );

    let (mut child, base) = start_child(&root).await;
    // Stale after 3 heartbeats (600 ms) since the last one.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = job(&base, &killed).await;
    assert_eq!(after["state"], "interrupted", "{after}");
    assert_eq!(job(&base, &done).await, before);
    // Unknown ids are 404, ids that are not job ids too (never a path).
    for id in [uuid::Uuid::new_v4().to_string(), "..%2F..%2Fetc".into()] {
        let (status, _) = request(&base, "GET", &format!("/api/v1/export/{id}"), &None, None).await;
        assert_eq!(status, 404, "{id}");
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}
