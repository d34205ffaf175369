//! A flow table written before a column existed keeps working: the ingester
//! adds the column (nullable) when it opens the table, older files read it as
//! null, and new rows carry it — as independent readers (Python `deltalake`,
//! DuckDB) see the table.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use deltalake_core::kernel::StructType;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::writer::{DeltaWriter, RecordBatchWriter};
use flowlake_ingester::Ingester;
use flowlake_schemas::{PARTITION_COLUMNS, col, flow_schema};
use flowlake_testkit::python_with;
use reqwest::StatusCode;

use crate::common::*;

const READ: &str = r#"
import sys, json, duckdb
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
t = dt.to_pyarrow_table()
c = t.column("wire_packets")
con = duckdb.connect()
n, nulls, s = con.execute(
    "select count(*), count(*) - count(wire_packets), sum(wire_packets) from read_parquet(?, hive_partitioning=true, union_by_name=true)",
    [dt.file_uris()]).fetchone()
print(json.dumps({"rows": t.num_rows, "nulls": c.null_count, "sum": sum(v for v in c.to_pylist() if v is not None),
                  "duck_rows": n, "duck_nulls": nulls, "duck_sum": int(s or 0)}))
"#;

/// Writes `batch` without `wire_packets` into a table created without it, as
/// a version before the column did.
async fn old_table(location: &str, batch: &RecordBatch) {
    let old = Schema::new(
        flow_schema()
            .fields()
            .iter()
            .filter(|f| f.name() != col::WIRE_PACKETS)
            .cloned()
            .collect::<Vec<_>>(),
    );
    let kernel: StructType = (&old).try_into_kernel().unwrap();
    let table = deltalake_core::DeltaTableBuilder::from_url(
        url::Url::from_directory_path(location).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .create()
    .with_columns(kernel.fields().cloned())
    .with_partition_columns(PARTITION_COLUMNS)
    .await
    .unwrap();
    let mut writer = RecordBatchWriter::for_table(&table).unwrap();
    let target = writer.arrow_schema();
    let columns = target
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).unwrap();
            arrow::compute::cast(c, f.data_type()).unwrap()
        })
        .collect();
    writer
        .write(RecordBatch::try_new(target, columns).unwrap())
        .await
        .unwrap();
    let mut table = table;
    writer.flush_and_commit(&mut table).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_new_column_gains_it_on_open() {
    let Some(mut python) = python_with("deltalake, pyarrow, duckdb") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(&cfg.table.location).unwrap();
    old_table(&cfg.table.location, &flows(300, 1)).await;
    assert_eq!(table_rows(&cfg).await, 300);

    // New rows with wire packets (as a collector counting GSO segments sends).
    let mut records = {
        let mut g = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
        g.duration = chrono::Duration::hours(1);
        g.rate = 200.0 / 3600.0;
        flowlake_gen::records(&g)
    };
    let mut want = 0i64;
    for r in &mut records {
        r.wire_packets = Some(r.packets * 3 + 1);
        want += (r.packets * 3 + 1) as i64;
    }
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let batch = flowlake_schemas::records_to_batch(&records);
    let (s, _, text) = post(ing.addr(), ipc(&batch), &[]).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    ing.shutdown().await.unwrap();

    let got = json_output(python.args([
        "-c",
        &flowlake_testkit::exiting_after(READ),
        &cfg.table.location,
    ]));
    let n = 300 + records.len() as i64;
    assert_eq!(got["rows"], n, "{got}");
    assert_eq!(got["nulls"], 300, "older files read as null: {got}");
    assert_eq!(got["sum"], want, "{got}");
    assert_eq!(got["duck_rows"], n, "{got}");
    assert_eq!(got["duck_nulls"], 300, "{got}");
    assert_eq!(got["duck_sum"], want, "{got}");
}
