//! `flowlake export --incremental` killed (SIGKILL, SIGTERM) at instants from
//! before its first file to after its last: readers of the destination
//! (pyarrow.dataset with Hive partitioning) still read it — staged files stay
//! under `_flowlake_staging`, which they skip — and the run after finishes the
//! job: every row of the table in the destination exactly once.

use std::path::Path;
use std::time::Duration;

use crate::ingester_faults::{Batch, Server, batches, by_batch, post_until_acked};

fn export(table: &Path, dest: &Path) -> std::process::Command {
    let mut c = crate::flowlake();
    c.args(["export", "--quiet", "--incremental", "--table"])
        .arg(table)
        .arg("--destination")
        .arg(dest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// Rows and sum of `bytes` per batch id (`cluster`) as pyarrow.dataset reads
/// the destination with Hive partitioning.
fn read_destination(dest: &Path) -> Option<std::collections::BTreeMap<String, (u64, u64)>> {
    let mut python = flowlake_testkit::python_with("pyarrow")?;
    let script = r#"
import sys, json, pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
out = {}
if "cluster" in d.schema.names:  # no data file yet: an empty dataset
    t = d.to_table(columns=["cluster", "bytes"])
    g = t.group_by("cluster").aggregate([("bytes", "count"), ("bytes", "sum")])
    out = {c: [n, s] for c, n, s in zip(g["cluster"].to_pylist(), g["bytes_count"].to_pylist(), g["bytes_sum"].to_pylist())}
print(json.dumps(out))
"#;
    let json = flowlake_testkit::json_output(python.args(["-c", script]).arg(dest));
    Some(by_batch(&json))
}

#[test]
fn an_export_killed_at_any_instant_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let dest = dir.path().join("dest");
    let all: Vec<Batch> = batches("export", 60, 400);
    let mut server = Server::start(dir.path(), table.to_str().unwrap(), &[]);
    for b in &all {
        post_until_acked(server.addr, b, Duration::from_secs(60));
    }
    let (status, _) = server.sigterm();
    assert!(status.success(), "{}", server.log_text());

    let late = batches("export-late", 5, 400);
    let expected: std::collections::BTreeMap<String, (u64, u64)> = all
        .iter()
        .chain(&late)
        .map(|b| (b.id.clone(), (b.rows, b.bytes)))
        .collect();
    // Interrupted runs: SIGKILL and SIGTERM alternately, ever later.
    let mut interrupted = 0;
    for (i, ms) in [0u64, 150, 300, 600, 900, 1300, 1800, 2500]
        .iter()
        .enumerate()
    {
        let mut child = export(&table, &dest).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(*ms));
        let signal = if i % 2 == 0 {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        interrupted += usize::from(!status.success());
        if dest.exists() {
            // Readable whatever the instant; possibly partial (Parquet has no
            // commit), never a row twice.
            let Some(seen) = read_destination(&dest) else {
                return;
            };
            for (id, (rows, _)) in &seen {
                assert!(
                    *rows <= expected[id].0,
                    "batch {id}: {rows} rows after run {i}"
                );
            }
        }
        if i == 3 {
            // Rows committed between interrupted runs are exported once too.
            let mut server = Server::start(dir.path(), table.to_str().unwrap(), &[]);
            for b in &late {
                post_until_acked(server.addr, b, Duration::from_secs(60));
            }
            let (status, _) = server.sigterm();
            assert!(status.success());
        }
    }
    let done = export(&table, &dest).status().unwrap();
    assert!(done.success());
    let Some(seen) = read_destination(&dest) else {
        return;
    };
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(id, v)| seen.get(*id) != Some(v))
        .collect();
    assert!(wrong.is_empty(), "batches missing or doubled: {wrong:?}");
    assert_eq!(seen.len(), 65);
    assert!(
        !walk_has(&dest.join("_flowlake_staging")),
        "staged files left after a complete run"
    );
    eprintln!("{interrupted} of 8 runs interrupted; destination holds each of 65 batches once");
}

/// Whether `dir` holds any file (below it).
fn walk_has(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| e.path().is_file() || walk_has(&e.path()))
}
