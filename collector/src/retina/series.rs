//! `adv_*` counters with a bound on their number of series and idle expiry.
//!
//! Every series has a last-update time. A new series beyond `max_series` is not
//! created: the update is counted in `flowlake_collector_retina_series_rejected_total
//! {metric}` instead, never dropped silently. [`AdvSeries::expire`] removes series
//! idle for longer than the TTL (Prometheus sees a counter reset if one comes back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::context::Labels;
use super::names;

/// The bounded `adv_*` counter families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdvMetric {
    ForwardCount,
    ForwardBytes,
    DropCount,
    DropBytes,
    TcpFlagsCount,
    TcpRetransCount,
    DnsRequestCount,
    DnsResponseCount,
}

impl AdvMetric {
    pub const ALL: [AdvMetric; 8] = [
        AdvMetric::ForwardCount,
        AdvMetric::ForwardBytes,
        AdvMetric::DropCount,
        AdvMetric::DropBytes,
        AdvMetric::TcpFlagsCount,
        AdvMetric::TcpRetransCount,
        AdvMetric::DnsRequestCount,
        AdvMetric::DnsResponseCount,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AdvMetric::ForwardCount => names::ADV_FORWARD_COUNT,
            AdvMetric::ForwardBytes => names::ADV_FORWARD_BYTES,
            AdvMetric::DropCount => names::ADV_DROP_COUNT,
            AdvMetric::DropBytes => names::ADV_DROP_BYTES,
            AdvMetric::TcpFlagsCount => names::ADV_TCPFLAGS_COUNT,
            AdvMetric::TcpRetransCount => names::ADV_TCPRETRANS_COUNT,
            AdvMetric::DnsRequestCount => names::ADV_DNS_REQUEST_COUNT,
            AdvMetric::DnsResponseCount => names::ADV_DNS_RESPONSE_COUNT,
        }
    }

    fn help(self) -> &'static str {
        match self {
            AdvMetric::ForwardCount => "Forwarded packets by pod context",
            AdvMetric::ForwardBytes => "Forwarded bytes by pod context",
            AdvMetric::DropCount => "Dropped packets by reason and pod context",
            AdvMetric::DropBytes => "Dropped bytes by reason and pod context",
            AdvMetric::TcpFlagsCount => "Flow records in which a TCP flag was seen, by pod context",
            AdvMetric::TcpRetransCount => "TCP retransmissions by pod context",
            AdvMetric::DnsRequestCount => "DNS requests by query and pod context",
            AdvMetric::DnsResponseCount => "DNS responses by query, return code and pod context",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: &'static str,
}

#[derive(Debug, Default)]
struct Table {
    last: HashMap<(AdvMetric, Labels), DateTime<Utc>>,
}

/// The `adv_*` families and their series table. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct AdvSeries {
    families: Arc<HashMap<AdvMetric, Family<Labels, Counter>>>,
    table: Arc<Mutex<Table>>,
    max_series: usize,
    ttl: chrono::Duration,
    rejected: Family<MetricLabel, Counter>,
    expired: Counter,
    series: Gauge,
}

impl AdvSeries {
    /// Registers the families (under `networkobservability_`) and the bound's own
    /// metrics (under `flowlake_collector_retina_`).
    pub fn register(registry: &mut Registry, max_series: usize, ttl: std::time::Duration) -> Self {
        let families: HashMap<_, _> = AdvMetric::ALL
            .iter()
            .map(|m| (*m, Family::<Labels, Counter>::default()))
            .collect();
        {
            let r = registry.sub_registry_with_prefix(names::PREFIX);
            for m in AdvMetric::ALL {
                r.register(m.name(), m.help(), families[&m].clone());
            }
        }
        let s = AdvSeries {
            families: Arc::new(families),
            table: Arc::default(),
            max_series,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            rejected: Family::default(),
            expired: Counter::default(),
            series: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix(names::SELF_PREFIX);
        r.register(
            "series_rejected",
            "adv_* updates not recorded because the series bound was reached, by metric",
            s.rejected.clone(),
        );
        r.register(
            "series_expired",
            "Idle adv_* series removed",
            s.expired.clone(),
        );
        r.register("series", "adv_* series now", s.series.clone());
        s
    }

    /// Adds `v` to the series `labels` of `metric` at `now`; `false` when the bound
    /// refused a new series (the update is counted as rejected).
    pub fn add(&self, metric: AdvMetric, labels: Labels, v: u64, now: DateTime<Utc>) -> bool {
        let mut table = self.table.lock().expect("series table lock");
        let family = &self.families[&metric];
        let key = (metric, labels);
        if let Some(last) = table.last.get_mut(&key) {
            *last = now;
        } else if table.last.len() >= self.max_series {
            drop(table);
            self.rejected
                .get_or_create(&MetricLabel {
                    metric: metric.name(),
                })
                .inc();
            return false;
        } else {
            family.get_or_create(&key.1).inc_by(v);
            table.last.insert(key, now);
            self.series.set(table.last.len() as i64);
            return true;
        }
        family.get_or_create(&key.1).inc_by(v);
        true
    }

    /// Removes series not updated since `now - ttl`; returns how many went.
    pub fn expire(&self, now: DateTime<Utc>) -> usize {
        let mut table = self.table.lock().expect("series table lock");
        let cutoff = now - self.ttl;
        let before = table.last.len();
        table.last.retain(|(metric, labels), last| {
            let keep = *last >= cutoff;
            if !keep {
                self.families[metric].remove(labels);
            }
            keep
        });
        let removed = before - table.last.len();
        self.series.set(table.last.len() as i64);
        self.expired.inc_by(removed as u64);
        removed
    }

    /// Current value of a series (tests).
    pub fn value(&self, metric: AdvMetric, labels: &Labels) -> Option<u64> {
        self.families[&metric].get(labels).map(|c| c.get())
    }

    /// Series of `metric` now.
    pub fn len(&self, metric: AdvMetric) -> usize {
        let table = self.table.lock().expect("series table lock");
        table.last.keys().filter(|(m, _)| *m == metric).count()
    }

    /// Every series now.
    pub fn total(&self) -> usize {
        self.table.lock().expect("series table lock").last.len()
    }

    /// Updates of `metric` refused by the bound so far.
    pub fn rejected(&self, metric: AdvMetric) -> u64 {
        self.rejected
            .get(&MetricLabel {
                metric: metric.name(),
            })
            .map_or(0, |c| c.get())
    }

    /// Series removed as idle so far.
    pub fn expired(&self) -> u64 {
        self.expired.get()
    }
}
