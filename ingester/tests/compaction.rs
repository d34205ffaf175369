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

    // Two days later with one day of retention: everything from 2026-01-01 goes.
    let ccfg = CompactConfig {
        retention_days: Some(1),
        vacuum_after: Duration::ZERO,
        ..CompactConfig::default()
    };
    let s = compact_once(&mut table, &ccfg, at("2026-01-03T00:30:00Z"))
        .await
        .unwrap();
    assert_eq!(s.partitions_dropped, 3, "{s:?}");
    assert!(table.files().unwrap().is_empty());
    assert_eq!(parquet_files_on_disk(&dir.path().join("table")), 0);
}
