//! The batch `txn`s of collectors that are gone expire, also on a table created
//! before the table carried a `txn` retention: a compaction pass sets it, and the
//! latest checkpoint (read by pyarrow) then holds the `txn`s of recent producers
//! only.

use std::time::Duration;

use deltalake_core::DeltaTable;
use deltalake_core::kernel::StructType;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use flowlake_ingester::exactly_once::{SequencedId, TXN_RETENTION_KEY, plan};
use flowlake_ingester::{BatchId, CompactConfig, Table, TableConfig, compact_once};
use flowlake_schemas::{PARTITION_COLUMNS, flow_schema};

use crate::common::*;

/// Commits every slot of the producers `producers` (no data; as flushes of their
/// batches would record them).
async fn commit_slots(table: &mut Table, producers: std::ops::Range<u64>) {
    let ids: Vec<_> = producers
        .flat_map(|p| (0..8).map(move |slot| format!("{p:016x}/{}", slot * 32)))
        .map(|s| SequencedId::parse(&BatchId::parse(&s).unwrap()))
        .collect();
    table.refresh().await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let p = plan(&ids, &Default::default(), now);
    assert_eq!(p.txns.len(), ids.len());
    table.commit_adds_with(Vec::new(), p.txns).await.unwrap();
}

/// Batch `txn`s in the table's latest checkpoint, as pyarrow reads it.
fn checkpoint_txns(table: &std::path::Path) -> Option<(u64, u64)> {
    let mut python = flowlake_testkit::python_with("pyarrow")?;
    let script = r#"
import json, sys, glob, pyarrow.parquet as pq
log = sys.argv[1] + "/_delta_log"
version = json.load(open(log + "/_last_checkpoint"))["version"]
parts = sorted(glob.glob(f"{log}/{version:020}.checkpoint*.parquet"))
assert parts, version
txns = 0
for p in parts:
    for t in pq.read_table(p, columns=["txn"]).column("txn").to_pylist():
        if t is not None and t["appId"].startswith("flowlake-batches/"):
            txns += 1
print(json.dumps({"version": version, "txns": txns}))
"#;
    python.arg("-c").arg(script).arg(table);
    let out = json_output(&mut python);
    Some((out["version"].as_u64()?, out["txns"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txns_of_gone_producers_leave_the_checkpoints_of_an_old_table() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    std::fs::create_dir_all(&path).unwrap();
    // A table as created before it carried a `txn` retention.
    let schema: StructType = flow_schema().as_ref().try_into_kernel().unwrap();
    let url = url::Url::from_directory_path(&path).unwrap();
    DeltaTable::try_from_url(url)
        .await
        .unwrap()
        .create()
        .with_columns(schema.fields().cloned())
        .with_partition_columns(PARTITION_COLUMNS)
        .await
        .unwrap();
    let cfg = TableConfig {
        location: path.to_str().unwrap().into(),
        storage_options: Default::default(),
    };
    let mut table = Table::open(&cfg).await.unwrap();
    let property = |t: &Table| {
        let snapshot = t.delta().snapshot().unwrap();
        snapshot
            .metadata()
            .configuration()
            .get(TXN_RETENTION_KEY)
            .cloned()
    };
    assert_eq!(property(&table), None);

    // 50 producers, then a compaction pass with a 20 s retention: the property is
    // set and the checkpoint holds their 400 slots.
    let committed = std::time::Instant::now();
    commit_slots(&mut table, 0..50).await;
    let ccfg = CompactConfig {
        txn_retention: Duration::from_secs(20),
        ..CompactConfig::default()
    };
    compact_once(&mut table, &ccfg, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(property(&table).as_deref(), Some("interval 20 seconds"));
    let Some((v1, first)) = checkpoint_txns(&path) else {
        return;
    };
    assert_eq!(first, 400, "checkpoint {v1}");
    let gone = "flowlake-batches/0000000000000000/0";
    assert!(
        table.app_version(gone).await.unwrap().is_some(),
        "{:?} after the commit",
        committed.elapsed()
    );

    // Those producers go; 10 others come: the checkpoint holds the slots of the
    // producers seen within the retention only.
    tokio::time::sleep(Duration::from_millis(20_500)).await;
    commit_slots(&mut table, 50..60).await;
    compact_once(&mut table, &ccfg, chrono::Utc::now())
        .await
        .unwrap();
    let (v2, txns) = checkpoint_txns(&path).unwrap();
    assert!(v2 > v1);
    assert_eq!(txns, 80, "checkpoint {v2}");
    // Readers ignore the expired ones too; the same pass does not set the
    // property again.
    assert_eq!(table.app_version(gone).await.unwrap(), None);
    let version = table.version();
    compact_once(&mut table, &ccfg, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(table.version(), version, "nothing committed");
}
