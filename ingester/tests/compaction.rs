//! Compaction merges small files of closed partitions without changing a row;
//! retention drops old partitions; vacuum deletes the files; the log checkpoints.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flowlake_ingester::{CompactConfig, Ingester, Table, compact_once};
use reqwest::StatusCode;

use crate::common::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn parquet_files_on_disk(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.file_name() == "_delta_log" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
}

/// A pass at 2026-01-01T03:30Z keeping two hours (vacuuming at once).
async fn two_hours_kept_at_0330(table: &mut Table) -> flowlake_ingester::CompactSummary {
    let ccfg = CompactConfig {
        retention_hours: Some(2),
        vacuum_after: Duration::ZERO,
        ..CompactConfig::default()
    };
    compact_once(table, &ccfg, at("2026-01-01T03:30:00Z"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_retention_vacuum_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush.max_age = Duration::from_millis(50);
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let batch = flows(6000, 3);
    // Six separate flushes, each with rows of all three hours: six small files in
    // each hour.
    for i in 0..6 {
        let parts: Vec<_> = (0..3)
            .map(|h| batch.slice(h * 2000 + i * 333, 333))
            .collect();
        let part = arrow::compute::concat_batches(&batch.schema(), &parts).unwrap();
        let (s, _, _) = post(ing.addr(), ipc(&part), &[]).await;
        assert_eq!(s, StatusCode::OK);
        wait_for_rows(&cfg, (i + 1) * 999).await;
    }
    ing.shutdown().await.unwrap();
    let mut table = Table::open(&cfg.table).await.unwrap();
    let before = table.files().unwrap();
    assert!(before.len() >= 12, "{} files", before.len());

    let ccfg = CompactConfig {
        vacuum_after: Duration::ZERO,
        ..CompactConfig::default()
    };
    // At 02:30 only hours 00 and 01 are closed (hour 02 is still being written).
    let s = compact_once(&mut table, &ccfg, at("2026-01-01T02:30:00Z"))
        .await
        .unwrap();
    assert_eq!(s.partitions_compacted, 2, "{s:?}");
    let after = table.files().unwrap();
    let in_hour = |h: &str| after.iter().filter(|f| f.hour == h).count();
    assert_eq!((in_hour("00"), in_hour("01")), (1, 1));
    assert!(in_hour("02") >= 6);
    assert_eq!(after.iter().map(|f| f.rows.unwrap()).sum::<usize>(), 5994);
    assert_eq!(s.files_vacuumed as u64, s.files_removed);
    assert_eq!(
        parquet_files_on_disk(&dir.path().join("table")),
        after.len()
    );
    assert!(
        dir.path()
            .join("table/_delta_log/_last_checkpoint")
            .exists()
    );

    // Retention by the hour: two hours kept at 03:30 drop hour 00 alone (it
    // ended at 01:00); hour 01 ended at 02:00, within the two hours.
    let s = two_hours_kept_at_0330(&mut table).await;
    assert_eq!((s.partitions_dropped, s.files_dropped), (1, 1), "{s:?}");
    let mut hours: Vec<String> = table
        .files()
        .unwrap()
        .iter()
        .map(|f| f.hour.clone())
        .collect();
    hours.sort();
    hours.dedup();
    assert_eq!(hours, ["01", "02"]);
    assert_eq!(
        parquet_files_on_disk(&dir.path().join("table")),
        table.files().unwrap().len()
    );

    // Two days later with one day of retention: everything from 2026-01-01 goes.
    let ccfg = CompactConfig {
        retention_days: Some(1),
        vacuum_after: Duration::ZERO,
        ..CompactConfig::default()
    };
    let s = compact_once(&mut table, &ccfg, at("2026-01-03T00:30:00Z"))
        .await
        .unwrap();
    assert_eq!(s.partitions_dropped, 2, "{s:?}");
    assert!(table.files().unwrap().is_empty());
    assert_eq!(parquet_files_on_disk(&dir.path().join("table")), 0);
}

/// One data file: its rows and, for a `src_pod` value, how many row groups and
/// pages a reader pruning by statistics and the page index would read.
struct FileRead {
    batch: arrow::record_batch::RecordBatch,
    row_groups: usize,
    pages: usize,
}

fn read_for_pod(path: &std::path::Path, pod: &str) -> FileRead {
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    use parquet::file::statistics::Statistics;
    let bytes = bytes::Bytes::from(std::fs::read(path).unwrap());
    let options = ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options).unwrap();
    let metadata = builder.metadata().clone();
    let schema = builder.schema().clone();
    let batches: Vec<_> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    let leaf = (0..metadata.file_metadata().schema_descr().num_columns())
        .find(|&l| {
            metadata
                .file_metadata()
                .schema_descr()
                .column(l)
                .path()
                .string()
                == "src_pod"
        })
        .unwrap();
    let pod = pod.as_bytes();
    let (mut row_groups, mut pages) = (0, 0);
    for (g, group) in metadata.row_groups().iter().enumerate() {
        let Some(Statistics::ByteArray(s)) = group.column(leaf).statistics() else {
            panic!("src_pod has no statistics");
        };
        let (min, max) = (s.min_opt().unwrap().data(), s.max_opt().unwrap().data());
        if min > pod || max < pod {
            continue;
        }
        row_groups += 1;
        let ColumnIndexMetaData::BYTE_ARRAY(index) = &metadata.column_index().unwrap()[g][leaf]
        else {
            panic!("src_pod has no column index");
        };
        let n = metadata.offset_index().unwrap()[g][leaf]
            .page_locations
            .len();
        pages += (0..n)
            .filter(|&p| {
                !index.is_null_page(p)
                    && index.min_value(p).unwrap() <= pod
                    && index.max_value(p).unwrap() >= pod
            })
            .count();
    }
    FileRead {
        batch: arrow::compute::concat_batches(&schema, &batches).unwrap(),
        row_groups,
        pages,
    }
}

/// A string column as plain `Utf8` (files may hold dictionaries).
fn strings(b: &arrow::record_batch::RecordBatch, name: &str) -> arrow::array::StringArray {
    use arrow::array::AsArray;
    let c = b.column_by_name(name).unwrap();
    arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
        .unwrap()
        .as_string::<i32>()
        .clone()
}

fn files_of_hour(table: &std::path::Path, hour: &str) -> Vec<std::path::PathBuf> {
    let dir = table.join("date=2026-01-01").join(format!("hour={hour}"));
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    out.sort();
    out
}

/// Compaction merges in the ingester's sort order: the merged file is sorted by
/// `src_namespace, src_pod, dst_namespace, dst_pod, interval_start` (read back), holds
/// every row, and a per-pod question over it reads no more row groups or pages
/// (by statistics and the page index) than over the files before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_sort_order() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMicrosecondType;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush.max_age = Duration::from_millis(50);
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let batch = flows(30_000, 1);
    for i in 0..6 {
        let (s, _, _) = post(ing.addr(), ipc(&batch.slice(i * 5000, 5000)), &[]).await;
        assert_eq!(s, StatusCode::OK);
        wait_for_rows(&cfg, (i + 1) * 5000).await;
    }
    ing.shutdown().await.unwrap();
    let root = dir.path().join("table");
    let before = files_of_hour(&root, "00");
    assert_eq!(before.len(), 6);
    let pod = {
        let b = read_for_pod(&before[0], "").batch;
        let pods = strings(&b, "src_pod");
        pods.value(pods.len() / 2).to_string()
    };
    let reads_before: Vec<FileRead> = before.iter().map(|p| read_for_pod(p, &pod)).collect();

    let mut table = Table::open(&cfg.table).await.unwrap();
    let s = compact_once(
        &mut table,
        &CompactConfig {
            vacuum_after: Duration::ZERO,
            ..CompactConfig::default()
        },
        at("2026-01-01T03:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!((s.files_removed, s.files_added), (6, 1), "{s:?}");
    let after = files_of_hour(&root, "00");
    assert_eq!(after.len(), 1);
    let merged = read_for_pod(&after[0], &pod);
    let b = &merged.batch;
    assert_eq!(b.num_rows(), 30_000);
    let sum = |b: &arrow::record_batch::RecordBatch| {
        let c = b.column_by_name("bytes").unwrap();
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).unwrap();
        c.as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .map(|v| v.unwrap_or(0))
            .sum::<i64>()
    };
    assert_eq!(
        sum(b),
        reads_before.iter().map(|r| sum(&r.batch)).sum::<i64>()
    );
    let (ns, pods, dst, dst_pods) = (
        strings(b, "src_namespace"),
        strings(b, "src_pod"),
        strings(b, "dst_namespace"),
        strings(b, "dst_pod"),
    );
    let t = b
        .column_by_name("interval_start")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let key = |i: usize| {
        let v = |a: &arrow::array::StringArray| a.is_valid(i).then(|| a.value(i).to_string());
        (v(&ns), v(&pods), v(&dst), v(&dst_pods), t.value(i))
    };
    for i in 1..b.num_rows() {
        assert!(
            key(i - 1) <= key(i),
            "row {i} out of order: {:?} > {:?}",
            key(i - 1),
            key(i)
        );
    }
    let groups_before: usize = reads_before.iter().map(|r| r.row_groups).sum();
    let pages_before: usize = reads_before.iter().map(|r| r.pages).sum();
    eprintln!(
        "src_pod = {pod}: row groups {groups_before} -> {}, pages {pages_before} -> {}",
        merged.row_groups, merged.pages
    );
    assert!(merged.row_groups >= 1 && merged.row_groups <= groups_before);
    assert!(merged.pages >= 1 && merged.pages <= pages_before);
}

/// The `losses` table keeps the flow table's retention: its hour partitions
/// that ended more than the retention ago go in the same pass, the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_hours_of_losses_too() {
    use flowlake_schemas::{LossRow, losses_to_batch};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let row = |start: &str, lost| LossRow {
        interval_start: at(start),
        interval_end: at(start) + chrono::Duration::seconds(10),
        cluster: Some("c1".into()),
        node: Some("n1".into()),
        component: "kernel".into(),
        kind: "flow_map_full".into(),
        unit: "packets".into(),
        lost,
        lost_bytes: Some(lost * 100),
        detail: None,
    };
    // Hours 00, 01 and 03 of 2026-01-01, one batch each.
    for (i, start) in [
        "2026-01-01T00:10:00Z",
        "2026-01-01T01:20:00Z",
        "2026-01-01T03:05:00Z",
    ]
    .into_iter()
    .enumerate()
    {
        let body =
            flowlake_ingester::encode_ipc(&[losses_to_batch(&[row(start, 7)]).unwrap()], None)
                .unwrap();
        let r = client()
            .post(format!(
                "http://{}{}",
                ing.addr(),
                flowlake_ingester::losses::LOSSES_ROUTE
            ))
            .header(flowlake_ingester::BATCH_ID_HEADER, format!("n1/{}", i + 1))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }
    ing.shutdown().await.unwrap();
    let losses_dir = dir.path().join("table/_losses");
    let hours = |t: &Table| {
        let mut h: Vec<String> = t.files().unwrap().iter().map(|f| f.hour.clone()).collect();
        h.sort();
        h
    };
    let losses_cfg = flowlake_ingester::TableConfig {
        location: losses_dir.to_string_lossy().into_owned(),
        storage_options: Default::default(),
    };
    assert_eq!(
        hours(&Table::open(&losses_cfg).await.unwrap()),
        ["00", "01", "03"]
    );

    // Two hours kept at 03:30: hour 00 (ended 01:00) goes, 01 (ended 02:00) stays.
    let mut table = Table::open(&cfg.table).await.unwrap();
    let s = two_hours_kept_at_0330(&mut table).await;
    assert_eq!(s.loss_partitions_dropped, 1, "{s:?}");
    let losses = Table::open(&losses_cfg).await.unwrap();
    assert_eq!(hours(&losses), ["01", "03"]);
    assert_eq!(
        parquet_files_on_disk(&losses_dir),
        2,
        "the dropped file is vacuumed"
    );
}
