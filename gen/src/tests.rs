//! Tests of the generated workload's determinism, size and shape, and of the files.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use flowlake_schemas::{FlowRecord, ObservationPoint, Verdict, batch_to_records, flow_schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::*;

fn cfg() -> (tempfile::TempDir, GenConfig) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig::for_tests(dir.path().to_path_buf());
    (dir, cfg)
}

#[test]
fn same_seed_same_rows_other_seed_other_rows() {
    let (_d, cfg) = cfg();
    let a = records(&cfg);
    assert_eq!(a, records(&cfg));
    let mut other = cfg.clone();
    other.seed = 7;
    assert_ne!(a, records(&other));
}

#[test]
fn row_count_is_exact() {
    let (_d, mut cfg) = cfg();
    assert_eq!(records(&cfg).len() as u64, cfg.total_rows());
    assert_eq!(cfg.total_rows(), 36_000);
    cfg.rate = 0.37;
    cfg.duration = chrono::Duration::minutes(90);
    assert_eq!(records(&cfg).len() as u64, cfg.total_rows());
}

#[test]
fn workload_has_a_realistic_shape() {
    let (_d, cfg) = cfg();
    let rows = records(&cfg);
    let dropped: Vec<&FlowRecord> = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Dropped)
        .collect();
    assert!(
        !dropped.is_empty() && dropped.len() * 50 < rows.len(),
        "a small share of drops"
    );
    let reasons: HashSet<&str> = dropped
        .iter()
        .filter_map(|r| r.drop_reason.as_deref())
        .collect();
    assert!(
        reasons.contains("NETFILTER_DROP") && reasons.len() >= 4,
        "{reasons:?}"
    );

    let rcodes: HashSet<&str> = rows
        .iter()
        .filter_map(|r| r.dns.as_ref()?.rcode.as_deref())
        .collect();
    assert!(
        rcodes.contains("NOERROR") && rcodes.contains("NXDOMAIN") && rcodes.contains("SERVFAIL")
    );

    let points: HashSet<ObservationPoint> = rows.iter().map(|r| r.observation_point).collect();
    assert_eq!(points.len(), 4, "all four observation points appear");
    assert!(
        rows.iter()
            .any(|r| r.tcp.is_some_and(|t| t.retransmits > 0))
    );

    // Same-node and cross-node pod-to-pod conversations both occur.
    let same_node = rows.iter().any(|r| {
        r.observation_point == ObservationPoint::FromPod
            && r.src.identity.as_ref().and_then(|i| i.node.as_ref())
                == r.dst.identity.as_ref().and_then(|i| i.node.as_ref())
    });
    assert!(same_node);

    // Zipf talkers: the busiest source pod sends far more than the median one.
    let mut by_pod: HashMap<&str, u64> = HashMap::new();
    for r in rows
        .iter()
        .filter(|r| r.observation_point == ObservationPoint::FromPod)
    {
        if let Some(p) = r.src.identity.as_ref().and_then(|i| i.pod.as_deref()) {
            *by_pod.entry(p).or_default() += 1;
        }
    }
    let mut counts: Vec<u64> = by_pod.values().copied().collect();
    counts.sort_unstable();
    assert!(
        counts[counts.len() - 1] > 5 * counts[counts.len() / 2],
        "{counts:?}"
    );

    // RTT distributions differ per workload.
    let mut rtt: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in &rows {
        let srtt = r.tcp.and_then(|t| t.srtt_us);
        let workload = r
            .dst
            .identity
            .as_ref()
            .and_then(|id| id.workload.as_deref());
        if let (Some(srtt), Some(w)) = (srtt, workload) {
            rtt.entry(w).or_default().push(srtt);
        }
    }
    let medians: Vec<u64> = rtt
        .values_mut()
        .map(|v| {
            v.sort_unstable();
            v[v.len() / 2]
        })
        .collect();
    let (lo, hi) = (medians.iter().min().unwrap(), medians.iter().max().unwrap());
    assert!(*hi > 3 * *lo, "per-workload RTT medians {medians:?}");
}

#[test]
fn parquet_files_hold_the_same_records() {
    let (dir, cfg) = cfg();
    let summary = generate(&cfg).unwrap();
    assert_eq!(summary.rows, cfg.total_rows());
    assert_eq!(summary.files.len(), 2, "one file per hour");
    assert!(summary.files[0].starts_with(dir.path().join("date=2026-01-01/hour=00")));
    let mut back = Vec::new();
    for f in &summary.files {
        // The files hold every column but the partition columns (in the path only).
        let file = ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap()).unwrap();
        assert_eq!(file.schema().fields(), output::file_schema().fields());
        let names: Vec<_> = file
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| flowlake_schemas::PARTITION_COLUMNS.contains(&n.as_str()))
        );
        for batch in output::read_parquet(f).unwrap() {
            assert_eq!(batch.schema().fields(), flow_schema().fields());
            back.extend(batch_to_records(&batch).unwrap());
        }
    }
    assert_eq!(back, records(&cfg));
    assert!(matches!(
        output::read_parquet(&dir.path().join("x.parquet")),
        Err(GenError::NotGenerated(_))
    ));
}

#[test]
fn arrow_files_split_by_size() {
    let (_dir, mut cfg) = cfg();
    cfg.format = OutputFormat::Arrow;
    cfg.rows_per_file = 10_000;
    cfg.batch_rows = 5_000;
    let summary = generate(&cfg).unwrap();
    assert_eq!(summary.files.len(), 4);
    let mut rows = 0;
    for f in &summary.files {
        assert_eq!(f.extension().unwrap(), "arrow");
        let reader = arrow::ipc::reader::FileReader::try_new(File::open(f).unwrap(), None).unwrap();
        for batch in reader {
            rows += batch.unwrap().num_rows();
        }
    }
    assert_eq!(rows as u64, cfg.total_rows());
}

#[test]
fn bad_settings_are_refused() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        gen_args: GenArgs,
    }
    let now = chrono::Utc::now();
    let parse = |args: &[&str]| {
        let mut all = vec!["gen", "--out", "/tmp/x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().gen_args.into_config(now)
    };
    assert!(parse(&["--interval", "7s"]).is_err());
    assert!(parse(&["--drop-share", "2"]).is_err());
    let ok = parse(&["--rows", "1000", "--duration", "10m"]).unwrap();
    assert_eq!(ok.total_rows(), 1000);
    assert_eq!(ok.start + ok.duration, {
        use chrono::DurationRound;
        now.duration_trunc(chrono::Duration::hours(1)).unwrap()
    });
}
