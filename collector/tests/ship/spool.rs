//! Shipping through outages: exactly-once delivery after 503s, replay of a spool left
//! by a previous run, the spool limit dropping (and counting) the oldest data, and
//! rejected batches not retried.

use std::net::SocketAddr;
use std::time::Duration;

use flowlake_collector::enrich::{EnrichMetrics, Enricher, system_clock};
use flowlake_collector::ship::{DropReason, ShipConfig, ShipMetrics, Shipper};
use flowlake_schemas::FlowRecord;

use super::fake_ingester::{FakeIngester, Mode};

/// `n` generated records, each with a unique `bytes` value `0..n`.
fn records(n: usize) -> Vec<FlowRecord> {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.rate = 50.0;
    let mut all = flowlake_gen::records(&cfg);
    assert!(all.len() >= n, "workload too small");
    all.truncate(n);
    for (i, r) in all.iter_mut().enumerate() {
        r.bytes = i as u64;
    }
    all
}

fn start(
    url: String,
    spool: &std::path::Path,
    tweak: impl FnOnce(&mut ShipConfig),
) -> (Shipper, ShipMetrics) {
    let mut cfg = ShipConfig::for_tests(url, spool.to_path_buf());
    tweak(&mut cfg);
    let metrics = ShipMetrics::default();
    let s = Shipper::start(
        &cfg,
        Enricher::disabled(EnrichMetrics::default()),
        metrics.clone(),
        system_clock(),
    )
    .unwrap();
    (s, metrics)
}

async fn feed(s: &Shipper, recs: &[FlowRecord]) {
    for chunk in recs.chunks(250) {
        s.send(chunk.to_vec()).await.unwrap();
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address nothing listens on (yet).
async fn free_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn spool_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "batch")
        })
        .count()
}

#[tokio::test]
async fn ingester_busy_then_back_every_record_arrives_once() {
    let ing = FakeIngester::new(Mode::Busy);
    let addr = ing.serve("127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let (shipper, m) = start(format!("http://{addr}"), dir.path(), |_| {});
    let recs = records(5000);
    feed(&shipper, &recs).await;
    wait_for("batches spooled while the ingester answers 503", || {
        m.batches_spooled.get() >= 5
    })
    .await;
    assert_eq!(ing.rows(), 0);
    assert!(m.batches_failed.get() > 0);
    ing.set_mode(Mode::Up);
    wait_for("all records delivered", || ing.rows() >= 5000).await;
    wait_for("spool drained", || shipper.pending() == 0).await;
    assert_eq!(ing.sorted_bytes(), (0..5000).collect::<Vec<i64>>());
    assert_eq!(m.records_shipped.get(), 5000);
    assert_eq!(m.spool_bytes.get(), 0);
    shipper.shutdown().await;
    assert_eq!(spool_files(dir.path()), 0);
}

#[tokio::test]
async fn spool_left_by_a_stopped_collector_is_replayed_on_start() {
    let addr = free_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let (first, m1) = start(format!("http://{addr}"), dir.path(), |c| {
        c.drain_timeout = Duration::from_millis(50)
    });
    let recs = records(2000);
    feed(&first, &recs).await;
    first.shutdown().await;
    assert!(spool_files(dir.path()) >= 4, "unsent batches are on disk");
    assert_eq!(m1.records_shipped.get(), 0);

    let ing = FakeIngester::new(Mode::Up);
    ing.serve(addr).await;
    let (second, m2) = start(format!("http://{addr}"), dir.path(), |_| {});
    wait_for("replayed records", || ing.rows() >= 2000).await;
    wait_for("spool drained", || second.pending() == 0).await;
    assert_eq!(ing.sorted_bytes(), (0..2000).collect::<Vec<i64>>());
    assert_eq!(m2.records_shipped.get(), 2000);
    second.shutdown().await;
}

#[tokio::test]
async fn spool_limit_drops_the_oldest_and_counts_them() {
    let addr = free_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let limit = 60_000;
    let (first, m) = start(format!("http://{addr}"), dir.path(), |c| {
        c.spool_max_bytes = limit;
        c.drain_timeout = Duration::from_millis(50);
    });
    let recs = records(5000);
    feed(&first, &recs).await;
    first.shutdown().await;
    let dropped = m.dropped_count(DropReason::SpoolFull);
    assert!(dropped > 0, "the limit was reached");
    assert!(m.spool_bytes.get() as u64 <= limit);

    let ing = FakeIngester::new(Mode::Up);
    ing.serve(addr).await;
    let (second, _) = start(format!("http://{addr}"), dir.path(), |_| {});
    wait_for("spool drained", || second.pending() == 0).await;
    second.shutdown().await;
    let got = ing.sorted_bytes();
    assert_eq!(
        got.len() as u64 + dropped,
        5000,
        "every record is delivered or counted as dropped"
    );
    // No duplicates, and the newest records survived (the oldest went).
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(got.last(), Some(&4999));
    assert!(!got.is_empty());
}

#[tokio::test]
async fn rejected_batches_are_counted_and_not_retried() {
    let ing = FakeIngester::new(Mode::Reject);
    let addr = ing.serve("127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let (shipper, m) = start(format!("http://{addr}"), dir.path(), |_| {});
    feed(&shipper, &records(1000)).await;
    wait_for("rejections counted", || {
        m.dropped_count(DropReason::Rejected) == 1000
    })
    .await;
    assert_eq!(m.batches_spooled.get(), 0);
    assert_eq!(m.batches_failed.get(), 0);
    shipper.shutdown().await;
    assert_eq!(spool_files(dir.path()), 0);
}

/// An ingester from before dictionary-encoded strings answers 422 to the
/// collector's bodies: each batch goes again with plain strings, and every
/// record arrives once; nothing is dropped.
#[tokio::test]
async fn older_ingester_gets_plain_strings() {
    let ing = FakeIngester::new(Mode::PlainOnly);
    let addr = ing.serve("127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let (shipper, m) = start(format!("http://{addr}"), dir.path(), |_| {});
    let recs = records(1000);
    feed(&shipper, &recs).await;
    wait_for("every record stored", || ing.rows() == 1000).await;
    assert!(ing.inner.lock().unwrap().dictionary_refused > 0);
    assert_eq!(m.dropped_count(DropReason::Rejected), 0);
    assert_eq!(ing.inner.lock().unwrap().duplicates, 0);
    shipper.shutdown().await;
}
