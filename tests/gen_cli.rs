//! `flowlake gen` as a user runs it: files that independent readers understand.

use std::ffi::OsStr;
use std::path::Path;

use flowlake_testkit::python_with;

use crate::flowlake_ok;

fn gen_into(dir: &Path, format: &str) {
    let mut args: Vec<&OsStr> = [
        "gen",
        "--seed",
        "3",
        "--start",
        "2026-02-01T10:00:00Z",
        "--duration",
        "90m",
        "--rows",
        "20000",
        "--format",
        format,
        "--out",
    ]
    .map(OsStr::new)
    .to_vec();
    args.push(dir.as_os_str());
    let stdout = flowlake_ok(args);
    assert!(stdout.contains("wrote 20000 rows in 2 files"), "{stdout}");
}

#[test]
fn pyarrow_and_duckdb_read_generated_files() {
    let Some(mut python) = python_with("pyarrow, duckdb") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    gen_into(&dir.path().join("pq"), "parquet");
    gen_into(&dir.path().join("ipc"), "arrow");
    let script = r#"
import sys, glob, pyarrow.parquet as pq, pyarrow.ipc as ipc, pyarrow as pa, duckdb
root = sys.argv[1]
# Files carry every column, the partition columns too, so no Hive discovery is needed.
t = pq.read_table(root + "/pq", partitioning=None)
assert t.num_rows == 20000, t.num_rows
assert t.schema.metadata[b"flowlake.schema_version"] == b"1"
assert str(t.schema.field("interval_start").type) == "timestamp[us, tz=UTC]"
assert str(t.schema.field("dst_port").type) == "int32"
tables = [ipc.open_file(f).read_all() for f in sorted(glob.glob(root + "/ipc/*/*/*.arrow"))]
assert sum(x.num_rows for x in tables) == 20000
con = duckdb.connect()
rows, bytes_, hours = con.execute(
    f"select count(*), sum(bytes), count(distinct hour) from read_parquet('{root}/pq/*/*/*.parquet', hive_partitioning=false)"
).fetchone()
assert rows == 20000 and hours == 2, (rows, hours)
assert bytes_ == pa.compute.sum(t["bytes"]).as_py()
drops = con.execute(
    f"select count(*) from read_parquet('{root}/pq/*/*/*.parquet') where verdict = 'dropped' and drop_reason is not null"
).fetchone()[0]
assert drops > 0
label = con.execute(
    f"select src_labels['app'] from read_parquet('{root}/pq/*/*/*.parquet') where src_pod is not null limit 1"
).fetchone()[0]
assert label, label
print("ok", rows, bytes_, drops)
"#;
    let out = python
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok 20000"));
}
