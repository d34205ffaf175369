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
import pyarrow as pa, pyarrow.compute as pc
strings, maps = {}, {}
for f in t.schema:
    if f.name in ("date", "hour"):
        continue
    c = t.column(f.name).combine_chunks()
    if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
        strings[f.name] = [c.null_count, int(pc.sum(pc.binary_length(c)).as_py() or 0),
                           pc.count_distinct(c).as_py()]
    elif pa.types.is_map(f.type):
        maps[f.name] = [c.null_count, len(c.keys), int(pc.sum(pc.binary_length(c.keys)).as_py() or 0),
                        int(pc.sum(pc.binary_length(c.items)).as_py() or 0)]
duck = {}
for name in strings:
    nn, ln = con.execute(f"select count({name}), sum(length({name})) from read_parquet(?, hive_partitioning=true)", [files]).fetchone()
    duck[name] = [n - nn, int(ln or 0)]
for name in maps:
    e, = con.execute(f"select sum(cardinality({name})) from read_parquet(?, hive_partitioning=true)", [files]).fetchone()
    duck[name] = [int(e or 0)]
print(json.dumps({"rows": t.num_rows, "bytes": int(t.column("bytes").to_pylist() and sum(t.column("bytes").to_pylist())),
                  "duck_rows": n, "duck_bytes": int(s), "partitions": len(hours),
                  "columns": len(t.schema.names), "version": dt.version(),
                  "strings": strings, "maps": maps, "duck": duck}))
"#;

/// What the readers report of every string and map column, from the rows sent:
/// `strings[c] = [nulls, total length, distinct values]`,
/// `maps[c] = [nulls, entries, total key length, total value length]`.
fn string_digests(
    batch: &arrow::record_batch::RecordBatch,
) -> (serde_json::Value, serde_json::Value) {
    use arrow::array::{Array, AsArray};
    let (mut strings, mut maps) = (serde_json::Map::new(), serde_json::Map::new());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if flowlake_schemas::PARTITION_COLUMNS.contains(&f.name().as_str()) {
            continue;
        }
        let total = |a: &arrow::array::StringArray| a.iter().flatten().map(str::len).sum::<usize>();
        if let Some(a) = c.as_string_opt::<i32>() {
            let distinct: std::collections::HashSet<&str> = a.iter().flatten().collect();
            strings.insert(
                f.name().clone(),
                serde_json::json!([a.null_count(), total(a), distinct.len()]),
            );
        } else if let Some(m) = c.as_map_opt() {
            let (k, v) = (m.keys().as_string::<i32>(), m.values().as_string::<i32>());
            let live = m.value_offsets()[m.len()] as usize - m.value_offsets()[0] as usize;
            maps.insert(
                f.name().clone(),
                serde_json::json!([m.null_count(), live, total(k), total(v)]),
            );
        }
    }
    (strings.into(), maps.into())
}

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
        &flowlake_testkit::exiting_after(READ),
        &cfg.table.location,
    ]));
    let want_bytes = sum_bytes(&batch);
    assert_eq!(got["rows"], 5000, "{got}");
    assert_eq!(got["bytes"], want_bytes, "{got}");
    assert_eq!(got["duck_rows"], 5000, "{got}");
    assert_eq!(got["duck_bytes"], want_bytes, "{got}");
    assert_eq!(got["partitions"], 3, "{got}");
    assert_eq!(got["columns"], 49, "{got}");
    // String and map columns, written from dictionaries, read back the same.
    let (strings, maps) = string_digests(&batch);
    assert_eq!(got["strings"], strings);
    assert_eq!(got["maps"], maps);
    let want_duck: serde_json::Map<String, serde_json::Value> = strings
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!([v[0], v[1]])))
        .chain(
            maps.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!([v[1]]))),
        )
        .collect();
    assert_eq!(got["duck"], serde_json::Value::Object(want_duck));
    assert!(strings.as_object().unwrap().len() >= 25, "{strings}");
}
