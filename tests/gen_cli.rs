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
fn pyarrow_duckdb_pandas_and_polars_read_generated_files() {
    let Some(mut python) = python_with("pyarrow, duckdb") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    gen_into(&dir.path().join("pq"), "parquet");
    gen_into(&dir.path().join("ipc"), "arrow");
    let script = r#"
import sys, glob, pyarrow.parquet as pq, pyarrow.ipc as ipc, pyarrow.dataset as ds, pyarrow as pa, duckdb
root = sys.argv[1]
# Hive-partitioned: date/hour are in the directories only, typed by the reader.
d = ds.dataset(root + "/pq", format="parquet", partitioning="hive")
t = d.to_table()
assert t.num_rows == 20000, t.num_rows
assert t.schema.metadata[b"flowlake.schema_version"] == b"1"
assert str(t.schema.field("interval_start").type) == "timestamp[us, tz=UTC]"
assert str(t.schema.field("dst_port").type) == "int32"
assert sorted(set(t["hour"].to_pylist())) == [10, 11], set(t["hour"].to_pylist())
assert set(t["date"].to_pylist()) == {"2026-02-01"}
assert t.num_columns == int(sys.argv[2]), t.num_columns
# pyarrow's own hive discovery (what pandas.read_parquet uses).
assert pq.read_table(root + "/pq").num_rows == 20000
# The Arrow IPC files the same way.
a = ds.dataset(root + "/ipc", format="ipc", partitioning="hive").to_table()
assert a.num_rows == 20000 and a.num_columns == int(sys.argv[2])
tables = [ipc.open_file(f).read_all() for f in sorted(glob.glob(root + "/ipc/*/*/*.arrow"))]
assert sum(x.num_rows for x in tables) == 20000
con = duckdb.connect()
rows, bytes_, hours = con.execute(
    f"select count(*), sum(bytes), count(distinct hour) from read_parquet('{root}/pq/*/*/*.parquet', hive_partitioning=true)"
).fetchone()
assert rows == 20000 and hours == 2, (rows, hours)
assert bytes_ == pa.compute.sum(t["bytes"]).as_py()
# Per hour, DuckDB and pyarrow agree on the partition values and the rows in them.
per_hour = dict(con.execute(
    f"select hour, count(*) from read_parquet('{root}/pq/*/*/*.parquet', hive_partitioning=true) group by 1"
).fetchall())
arrow_hours = t.group_by("hour").aggregate([("bytes", "count")])
assert per_hour == dict(zip(arrow_hours["hour"].to_pylist(), arrow_hours["bytes_count"].to_pylist())), per_hour
drops = con.execute(
    f"select count(*) from read_parquet('{root}/pq/*/*/*.parquet', hive_partitioning=true) where verdict = 'dropped' and drop_reason is not null"
).fetchone()[0]
assert drops > 0
label = con.execute(
    f"select src_labels['app'] from read_parquet('{root}/pq/*/*/*.parquet', hive_partitioning=true) where src_pod is not null limit 1"
).fetchone()[0]
assert label, label
print("ok", rows, bytes_, drops)
"#;
    let stdout = run_script(&mut python, script, dir.path());
    assert!(stdout.starts_with("ok 20000"), "{stdout}");
    let bytes = stdout.split_whitespace().nth(2).unwrap().to_string();

    // pandas (`read_parquet` on the directory) and polars (`scan_parquet` with
    // hive partitioning) read the same rows, with `hour` typed from the paths.
    let Some(mut python) = python_with("pandas, polars, pyarrow") else {
        return;
    };
    let script = r#"
import sys, pandas as pd, polars as pl, pyarrow.dataset as ds
root = sys.argv[1] + "/pq"
df = pd.read_parquet(root)
columns = ds.dataset(root, format="parquet", partitioning="hive").schema.names
assert len(df) == 20000 and list(df.columns) == columns, (df.shape, columns)
assert sorted(int(h) for h in df["hour"].unique()) == [10, 11], df["hour"].unique()
assert set(str(d) for d in df["date"].unique()) == {"2026-02-01"}
p = pl.scan_parquet(root + "/**/*.parquet", hive_partitioning=True)
r = p.select(pl.len(), pl.col("bytes").sum(), pl.col("hour").n_unique()).collect().row(0)
assert r[0] == 20000 and r[2] == 2, r
assert p.collect_schema()["hour"].is_integer(), p.collect_schema()["hour"]
assert int(df["bytes"].sum()) == r[1], (int(df["bytes"].sum()), r[1])
print("ok", r[0], r[1])
"#;
    let stdout = run_script(&mut python, script, dir.path());
    assert_eq!(
        stdout.trim(),
        format!("ok 20000 {bytes}"),
        "pandas and polars"
    );
}

/// Runs the Python `script` with the arguments `dir` and the flow schema's column
/// count; its standard output.
fn run_script(python: &mut std::process::Command, script: &str, dir: &Path) -> String {
    let columns = flowlake_schemas::flow_schema().fields().len().to_string();
    let out = python
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(columns)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
