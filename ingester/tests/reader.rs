//! The table as other engines see it: Python `deltalake` + pyarrow and DuckDB read
//! back exactly the rows and sums that were sent.

use flowlake_ingester::Ingester;
use flowlake_testkit::python_with;
use reqwest::StatusCode;

use crate::common::*;

const READ: &str = r#"
import sys, json, duckdb
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
t = dt.to_pyarrow_table()
files = dt.file_uris()
con = duckdb.connect()
n, s = con.execute("select count(*), sum(bytes) from read_parquet(?, hive_partitioning=true)", [files]).fetchone()
hours = sorted({(p["date"], p["hour"]) for p in dt.partitions()})
print(json.dumps({"rows": t.num_rows, "bytes": int(t.column("bytes").to_pylist() and sum(t.column("bytes").to_pylist())),
                  "duck_rows": n, "duck_bytes": int(s), "partitions": len(hours),
                  "columns": len(t.schema.names), "version": dt.version()}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_deltalake_and_duckdb_read_what_was_sent() {
    let Some(mut python) = python_with("deltalake, pyarrow, duckdb") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let batch = flows(5000, 3);
    for i in 0..5 {
        let (s, _, text) = post(ing.addr(), ipc(&batch.slice(i * 1000, 1000)), &[]).await;
        assert_eq!(s, StatusCode::OK, "{text}");
    }
    ing.shutdown().await.unwrap();
    let got = json_output(python.args([
        "-c",
        &format!("{READ}\nimport os, sys\nsys.stdout.flush()\nos._exit(0)"),
        &cfg.table.location,
    ]));
    let want_bytes = sum_bytes(&batch);
    assert_eq!(got["rows"], 5000, "{got}");
    assert_eq!(got["bytes"], want_bytes, "{got}");
    assert_eq!(got["duck_rows"], 5000, "{got}");
    assert_eq!(got["duck_bytes"], want_bytes, "{got}");
    assert_eq!(got["partitions"], 3, "{got}");
    assert_eq!(got["columns"], 48, "{got}");
}
