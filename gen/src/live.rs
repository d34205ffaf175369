//! A live feed: the synthetic cluster's traffic for "now", one reporting interval at a
//! time, for demos and for `flowlake standalone` without BPF.

use std::sync::Arc;

use chrono::{DateTime, DurationRound, Utc};
use flowlake_schemas::FlowRecord;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::GenConfig;
use crate::topology::Topology;
use crate::workload::{HourPlan, HourStream};

/// Generates the records of successive reporting intervals of one synthetic cluster.
pub struct LiveFeed {
    topo: Arc<Topology>,
    cfg: GenConfig,
}

impl LiveFeed {
    pub fn new(cfg: GenConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let topo = Arc::new(Topology::generate(&cfg.topology, &mut rng));
        LiveFeed { topo, cfg }
    }

    /// Start of the reporting interval that contains `now`.
    pub fn interval_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.duration_trunc(self.cfg.interval).unwrap_or(now)
    }

    /// The records of the interval starting at `start` (`rate × interval` rows). The
    /// same start always gives the same records.
    pub fn interval(&self, start: DateTime<Utc>) -> Vec<FlowRecord> {
        let plan = HourPlan {
            from: start,
            to: start + self.cfg.interval,
            interval: self.cfg.interval,
            rate: self.cfg.rate,
            offset_secs: 0.0,
            seed: self.cfg.seed ^ start.timestamp() as u64,
            drop_share: self.cfg.drop_share,
        };
        HourStream::new(Arc::clone(&self.topo), plan).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_sized_and_deterministic() {
        let mut cfg = GenConfig::for_tests(std::env::temp_dir());
        cfg.rate = 30.0;
        let feed = LiveFeed::new(cfg);
        let now = DateTime::parse_from_rfc3339("2026-11-25T08:00:07Z")
            .unwrap()
            .with_timezone(&Utc);
        let start = feed.interval_start(now);
        assert_eq!(start.to_rfc3339(), "2026-11-25T08:00:00+00:00");
        let a = feed.interval(start);
        assert_eq!(a.len(), 300);
        assert!(a.iter().all(|r| r.interval_start == start));
        assert_eq!(a, feed.interval(start));
        assert_ne!(a, feed.interval(start + chrono::Duration::seconds(10)));
    }
}
