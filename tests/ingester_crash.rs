//! `flowlake ingester` killed with SIGKILL mid-stream and restarted: every
//! acknowledged row is in the table exactly once.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::ingester_faults::{free_addr, ready, request};

fn start(dir: &Path, addr: SocketAddr) -> Child {
    let mut child = crate::flowlake()
        .args(["ingester", "--listen", &addr.to_string()])
        .arg("--table")
        .arg(dir.join("table"))
        .arg("--wal-dir")
        .arg(dir.join("wal"))
        .args(["--flush-age", "300ms", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ready(addr) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ingester at {addr} never became ready");
}

fn post(addr: SocketAddr, id: &str, body: &[u8]) -> std::io::Result<u16> {
    request(
        addr,
        "POST",
        "/api/v1/flows",
        &[("Flowlake-Batch-Id", id)],
        body,
    )
    .map(|a| a.status)
}

fn table_rows(dir: &Path) -> usize {
    let table = dir.join("table");
    crate::ingester_faults::table_rows(&table.to_string_lossy(), &[]).unwrap() as usize
}

fn wait_rows(dir: &Path, rows: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = table_rows(dir);
        if seen == rows {
            // Stay equal: nothing arrives twice later.
            std::thread::sleep(Duration::from_millis(800));
            assert_eq!(table_rows(dir), rows, "rows changed after settling");
            return;
        }
        assert!(
            seen < rows,
            "table has {seen} rows, more than the {rows} acknowledged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("table has {seen} rows, expected {rows}");
}

#[test]
fn kill_9_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = flowlake_gen::GenConfig::for_tests(dir.path().join("gen"));
    cfg.rate = 20_000.0 / 7200.0;
    let records = flowlake_gen::records(&cfg);
    let batch = flowlake_schemas::records_to_batch(&records);
    let per = 250;
    let bodies: Vec<Vec<u8>> = (0..batch.num_rows() / per)
        .map(|i| flowlake_ingester::encode_ipc(&[batch.slice(i * per, per)], None).unwrap())
        .collect();
    assert_eq!(bodies.len(), 80);

    let addr = free_addr();
    let mut child = start(dir.path(), addr);
    // A client thread streams batches; the test kills the server under it.
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let streamed = {
        let bodies = bodies.clone();
        let count = std::sync::Arc::clone(&count);
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for (i, body) in bodies.iter().enumerate().take(70) {
                match post(addr, &format!("batch-{i}"), body) {
                    Ok(200) => acked.push(i),
                    Ok(s) => panic!("batch {i}: status {s}"),
                    Err(_) => break, // server gone
                }
                count.store(acked.len(), std::sync::atomic::Ordering::SeqCst);
            }
            acked
        })
    };
    while count.load(std::sync::atomic::Ordering::SeqCst) < 15 {
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = streamed.join().unwrap();
    assert!(
        acked.len() >= 15 && acked.len() < 70,
        "killed mid-stream: {} acked",
        acked.len()
    );
    assert_eq!(acked, (0..acked.len()).collect::<Vec<_>>());
    let rows_acked = acked.len() * per;
    eprintln!("{} batches acknowledged before kill -9", acked.len());

    // Restart: the WAL is replayed; the client retries what was not acknowledged
    // (same batch ids) and goes on.
    let mut child = start(dir.path(), addr);
    let next = acked.len();
    let mut acked_total = rows_acked;
    for (i, body) in bodies.iter().enumerate().take(70).skip(next) {
        assert_eq!(post(addr, &format!("batch-{i}"), body).unwrap(), 200);
        acked_total += per;
    }
    // Retries of acknowledged batches are stored once.
    for i in [0, next - 1] {
        assert_eq!(post(addr, &format!("batch-{i}"), &bodies[i]).unwrap(), 200);
    }
    wait_rows(dir.path(), acked_total);

    // A second kill right after more acks; replay must not double what the table has.
    for (i, body) in bodies.iter().enumerate().take(80).skip(70) {
        assert_eq!(post(addr, &format!("batch-{i}"), body).unwrap(), 200);
        acked_total += per;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = start(dir.path(), addr);
    wait_rows(dir.path(), acked_total);
    let metrics = request(addr, "GET", "/metrics", &[], &[]).unwrap().body;
    let replayed = metrics
        .lines()
        .find(|l| l.starts_with("flowlake_ingester_wal_replayed_rows_total"))
        .unwrap_or_else(|| panic!("no replay metric in {metrics}"));
    eprintln!("after the second kill: {replayed}");
    child.kill().unwrap();
    child.wait().unwrap();

    // `flowlake compact` merges the closed hours; an independent reader (Python
    // deltalake + DuckDB) sees exactly the acknowledged rows and their byte sum.
    let table = dir.path().join("table");
    let compact = [
        "compact",
        "--vacuum-after",
        "0s",
        "--log",
        "warn",
        "--table",
    ];
    let mut args: Vec<&std::ffi::OsStr> = compact.map(std::ffi::OsStr::new).to_vec();
    args.push(table.as_os_str());
    let summary = crate::flowlake_ok(args);
    assert!(!summary.contains("partitions_compacted: 0"), "{summary}");
    assert_eq!(table_rows(dir.path()), acked_total);
    let acked_batches = acked_total / per;
    let want_bytes: u64 = records[..acked_batches * per].iter().map(|r| r.bytes).sum();
    let Some(mut python) = flowlake_testkit::python_with("deltalake, duckdb") else {
        return;
    };
    let script = r#"
import sys, duckdb
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
n, b = duckdb.connect().execute("select count(*), sum(bytes) from read_parquet(?)", [dt.file_uris()]).fetchone()
print(n, b)
"#;
    let out = python
        .args(["-c", &flowlake_testkit::exiting_after(script)])
        .arg(dir.path().join("table"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{acked_total} {want_bytes}")
    );
}
