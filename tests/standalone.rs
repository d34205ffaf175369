//! `flowlake standalone`, the README's run command, as a newcomer runs it (with
//! synthetic traffic, so it needs no privileges): it prints its SQL endpoint, the
//! flows it is fed become queryable, the shipped Grafana dashboards' queries are
//! answered, and SIGTERM stops it cleanly. With `--sinks jsonl,ipfix` the same flows go
//! to a JSON-lines flow log beside the table and to Debian's nfcapd (IPFIX over TCP,
//! through a front that hands each message to nfcapd as a datagram): DuckDB over the
//! log and over the table's files (python deltalake lists them) count the same rows
//! and bytes, and nfdump reports the table's flows one by one (addresses, packets,
//! bytes).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn post(url: &str, body: &serde_json::Value) -> Option<serde_json::Value> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
        ])
        .arg(url)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn sql(base: &str, query: &str) -> Option<serde_json::Value> {
    post(
        &format!("{base}/api/v1/sql"),
        &serde_json::json!({ "sql": query }),
    )
}

/// Every Flowlake panel of the shipped dashboards asks for a metric the datasource
/// offers, and the datasource answers it (variables filled with a real pod).
fn dashboards_work_against(base: &str) {
    let offered = post(&format!("{base}/grafana/metrics"), &serde_json::json!({})).unwrap();
    let offered: Vec<&str> = offered
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    let pod = sql(
        base,
        "select src_namespace as ns, src_pod as pod from flows where src_pod is not null limit 1",
    )
    .unwrap();
    let (ns, pod) = (
        pod[0]["ns"].as_str().unwrap(),
        pod[0]["pod"].as_str().unwrap(),
    );
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/flowlake/dashboards");
    let mut panels = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("$namespace", ns)
            .replace("$pod", pod);
        let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                if target["datasource"]["type"] != "simpod-json-datasource" {
                    continue;
                }
                let metric = target["target"].as_str().unwrap();
                assert!(
                    offered.contains(&metric),
                    "{}: {metric} not offered",
                    path.display()
                );
                let now = chrono::Utc::now();
                let request = serde_json::json!({
                    "range": {"from": (now - chrono::Duration::hours(1)).to_rfc3339(), "to": now.to_rfc3339()},
                    "interval": "30s", "intervalMs": 30000, "maxDataPoints": 500,
                    "targets": [{"refId": "A", "target": metric, "payload": target["payload"]}],
                    "adhocFilters": []
                });
                let answer = post(&format!("{base}/grafana/query"), &request);
                assert!(
                    answer.is_some_and(|a| a.is_array()),
                    "{}: {metric} failed",
                    path.display()
                );
                panels += 1;
            }
        }
    }
    assert!(panels >= 10, "{panels} Flowlake panels checked");
}

#[test]
fn standalone_feeds_stores_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let flow_log = dir.path().join("log/flows.jsonl");
    // IPFIX to nfcapd when nfdump is there; the rest of the test runs without it.
    let nfcapd = nfdump_tools().then(flowlake_testkit::nfcapd::Nfcapd::start);
    let mut command = crate::flowlake();
    command
        .args(["standalone", "--source", "gen", "--listen", "127.0.0.1:0"])
        .args(["--gen-rate", "100", "--flush-age", "1s", "--data-dir"])
        .arg(dir.path())
        .args(["--jsonl-path"])
        .arg(&flow_log);
    match &nfcapd {
        Some(n) => {
            let (front, _) = flowlake_testkit::nfcapd::tcp_front(n.addr);
            command
                .args(["--sinks", "jsonl,ipfix", "--ipfix-transport", "tcp"])
                // The TCP front passes each message to nfcapd as one datagram.
                .arg("--ipfix-max-message-bytes")
                .arg(flowlake_testkit::nfcapd::LARGEST_DATAGRAM.to_string())
                .arg("--ipfix-target")
                .arg(front.to_string())
        }
        None => command.args(["--sinks", "jsonl"]),
    };
    let mut child = command
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
    dashboards_work_against(&base);

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
    let table = dir.path().join("table");
    log_holds_the_table(&table, &flow_log, rows);
    if let Some(n) = nfcapd {
        nfdump_holds_the_table(&table, n.stop_and_dump());
    }
}

/// nfcapd and nfdump on the PATH; otherwise says why the IPFIX part is skipped (or
/// fails under FLOWLAKE_REQUIRE_PRIVILEGED=1).
fn nfdump_tools() -> bool {
    let found = ["nfcapd", "nfdump"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            !flowlake_testkit::required(),
            "nfcapd/nfdump required (scripts/test.sh installs nfdump)"
        );
        eprintln!("IPFIX part skipped: no nfcapd/nfdump (scripts/test.sh installs nfdump)");
    }
    found
}

/// nfdump's flows are the table's rows: (source, destination, packets, bytes) of
/// every flow, the table's read by DuckDB over its files.
fn nfdump_holds_the_table(table: &std::path::Path, nfdump: Vec<serde_json::Value>) {
    let Some(mut python) = flowlake_testkit::python_with("deltalake, duckdb") else {
        return;
    };
    let script = r#"
import sys, json, duckdb
from deltalake import DeltaTable
files = DeltaTable(sys.argv[1]).file_uris()
rows = duckdb.connect().execute(
    "select src_ip, dst_ip, packets, bytes from read_parquet(?) order by all", [files]).fetchall()
print(json.dumps([list(r) for r in rows]))
"#;
    let out = flowlake_testkit::json_output(
        python
            .args(["-c", &flowlake_testkit::exiting_after(script)])
            .arg(table),
    );
    let flow = |r: &serde_json::Value| {
        let ip = |v4: &str, v6: &str| r[v4].as_str().or(r[v6].as_str()).unwrap().to_string();
        (
            ip("src4_addr", "src6_addr"),
            ip("dst4_addr", "dst6_addr"),
            r["in_packets"].as_u64().unwrap(),
            r["in_bytes"].as_u64().unwrap(),
        )
    };
    let mut got: Vec<(String, String, u64, u64)> = nfdump.iter().map(flow).collect();
    got.sort();
    let want: Vec<(String, String, u64, u64)> = serde_json::from_value(out).unwrap();
    assert!(!want.is_empty());
    assert_eq!(got.len(), want.len(), "nfdump flows = table rows");
    assert_eq!(got, want, "nfdump: the table's flows");
}

/// The flow log and the table hold the same records after a clean stop: count, sum of
/// bytes and rows with a source pod, by DuckDB over both; at least `seen` rows.
fn log_holds_the_table(table: &std::path::Path, log: &std::path::Path, seen: u64) {
    let Some(mut python) = flowlake_testkit::python_with("deltalake, duckdb") else {
        return;
    };
    let script = r#"
import sys, json, duckdb
from deltalake import DeltaTable
files = DeltaTable(sys.argv[1]).file_uris()
q = "select count(*), sum(bytes), count(src_pod) from {}"
db = duckdb.connect()
table = db.execute(q.format("read_parquet(?)"), [files]).fetchone()
log = db.execute(q.format("read_json_auto(?, format='newline_delimited')"), [sys.argv[2]]).fetchone()
print(json.dumps({"table": list(table), "log": list(log)}))
"#;
    let out = flowlake_testkit::json_output(
        python
            .args(["-c", &flowlake_testkit::exiting_after(script)])
            .arg(table)
            .arg(log),
    );
    assert_eq!(out["log"], out["table"], "{out}");
    let n = out["table"][0].as_u64().unwrap();
    assert!(n >= seen && n.is_multiple_of(1000), "{out}");
    assert!(out["log"][2].as_u64().unwrap() > 0, "{out}");
}
