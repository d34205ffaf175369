use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use super::*;
use crate::enrich::system_clock;

/// Counts what it is given; the first write waits at a barrier (a stuck sink).
struct Probe {
    name: &'static str,
    seen: Arc<AtomicU64>,
    gate: Option<Arc<Barrier>>,
}

impl Sink for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn write(&mut self, records: &[FlowRecord], _now: DateTime<Utc>) -> Vec<(SinkLoss, u64)> {
        if let Some(g) = self.gate.take() {
            g.wait();
        }
        self.seen.fetch_add(records.len() as u64, Ordering::SeqCst);
        Vec::new()
    }
}

fn batch(n: usize) -> Vec<FlowRecord> {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.rate = 50.0;
    let mut all = flowlake_gen::records(&cfg);
    all.truncate(n);
    assert_eq!(all.len(), n);
    all
}

#[test]
fn a_stuck_sink_loses_only_its_own_batches_and_counts_them() {
    let gate = Arc::new(Barrier::new(2));
    let (fast, slow) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let metrics = SinkMetrics::default();
    let set = SinkSet::start(
        vec![
            Box::new(Probe {
                name: "fast",
                seen: fast.clone(),
                gate: None,
            }),
            Box::new(Probe {
                name: "slow",
                seen: slow.clone(),
                gate: Some(gate.clone()),
            }),
        ],
        2,
        metrics.clone(),
        system_clock(),
    )
    .unwrap();
    let b = batch(10);
    // The slow sink takes the first batch and blocks in it; two more fill its
    // queue; the other seven go nowhere for it. `send` never waits.
    for _ in 0..10 {
        set.send(b.clone());
        // Let the fast sink catch up (it must not lose any).
        let t = std::time::Instant::now();
        while metrics.written_count("fast") < metrics.received_count("fast")
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    gate.wait();
    set.close();
    assert_eq!(fast.load(Ordering::SeqCst), 100);
    assert_eq!(metrics.written_count("fast"), 100);
    assert_eq!(metrics.dropped_count("fast", SinkLoss::QueueFull), 0);
    let slow_seen = slow.load(Ordering::SeqCst);
    let slow_lost = metrics.dropped_count("slow", SinkLoss::QueueFull);
    assert_eq!(
        slow_seen + slow_lost,
        100,
        "every record written or counted"
    );
    assert!(slow_lost >= 60, "the stuck sink lost {slow_lost}");
    assert_eq!(metrics.received_count("slow"), 100);
}

#[test]
fn open_refuses_ipfix_without_a_target_and_ingester_without_a_shipper() {
    let mut cfg = SinkConfig {
        sinks: vec![SinkKind::Ipfix],
        ..SinkConfig::default()
    };
    assert!(open(&cfg, None).is_err());
    cfg.sinks = vec![SinkKind::Ingester];
    assert!(open(&cfg, None).is_err());
}
