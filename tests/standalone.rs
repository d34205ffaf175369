//! `flowlake standalone`, the README's run command, as a newcomer runs it (with
//! synthetic traffic, so it needs no privileges): it prints its SQL endpoint, the
//! flows it is fed become queryable, and SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sql(base: &str, query: &str) -> Option<serde_json::Value> {
    let body = serde_json::json!({ "sql": query }).to_string();
    let out = Command::new("curl")
        .args(["-sf", "-H", "content-type: application/json", "-d", &body])
        .arg(format!("{base}/api/v1/sql"))
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn standalone_feeds_stores_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowlake"))
        .args(["standalone", "--source", "gen", "--listen", "127.0.0.1:0"])
        .args(["--gen-rate", "100", "--flush-age", "1s", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("standalone printed its endpoints")
            .unwrap();
        if let Some(rest) = line.trim().strip_prefix("SQL:") {
            let url = rest
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .unwrap();
            break url.trim_end_matches("/api/v1/sql").to_string();
        }
    };
    // One 10 s reporting interval of 100 records/s, then a 1 s flush.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let n = sql(&base, "select count(*) as n from flows")
            .and_then(|v| v[0]["n"].as_u64())
            .unwrap_or(0);
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        rows >= 1000 && rows % 1000 == 0,
        "whole intervals of 1000 rows: {rows}"
    );
    let named = sql(
        &base,
        "select count(*) as n from flows where src_pod is not null",
    )
    .unwrap();
    assert!(
        named[0]["n"].as_u64().unwrap() > 0,
        "synthetic flows carry pod names"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(dir.path().join("table/_delta_log").is_dir());
}
