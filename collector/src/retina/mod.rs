//! Retina-compatible Prometheus metrics (`networkobservability_*`), so dashboards and
//! alerts written for Retina keep working.
//!
//! [`RetinaMetrics`] is fed enriched [`FlowRecord`]s ([`RetinaMetrics::observe`]) and
//! produces Retina's node-level metrics ([`node`]), the pod-level `adv_*` metrics with
//! configurable context labels, a namespace filter, a series bound and idle expiry
//! ([`context`], [`series`]), the API server latency histograms ([`apiserver`]),
//! `lost_events_counter` from the datapath's and shipper's loss counters ([`lost`]) and
//! linuxutil's proc statistics read at scrape time ([`procfs`]), and, through
//! [`crate::plugins::status::PluginsCollector`], the scrape-time sources of the
//! enabled plugins (`interface_stats`, `conntrack`, `tcp_connection_remote`)
//! and every plugin's status. [`http::router`] serves the registry at `/metrics`.
//!
//! Totals are counters (Retina exposes them as gauges) and keep Retina's names.

pub mod apiserver;
pub mod config;
pub mod context;
pub mod http;
pub mod lost;
pub mod names;
pub mod node;
pub mod procfs;
pub mod series;

use std::time::Duration;

use flowlake_schemas::{FlowRecord, ObservationPoint, Verdict};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::enrich::{ApiServerAddresses, Clock};

pub use apiserver::{ApiServerLatency, latency_ms};
pub use config::{ContextLabel, MetricsMode, RetinaArgs, RetinaConfig};
pub use context::{Context, Labels};
pub use http::{METRICS_PATH, encode, router, serve};
pub use lost::LossSources;
pub use node::NodeMetrics;
pub use procfs::ProcStats;
pub use series::{AdvMetric, AdvSeries};

/// TCP flag bits of `FlowRecord::tcp_flags` and Retina's names for them.
pub const TCP_FLAGS: [(u16, &str); 9] = [
    (0x01, "FIN"),
    (0x02, "SYN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x10, "ACK"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
    (0x100, "NS"),
];

/// The Retina-compatible metrics. Cheap to clone; clones share every series.
#[derive(Clone)]
pub struct RetinaMetrics {
    pub node: NodeMetrics,
    pub adv: AdvSeries,
    /// None without the `apiserver` plugin.
    pub apiserver: Option<ApiServerLatency>,
    context: Context,
    ttl: Duration,
    clock: Clock,
}

impl RetinaMetrics {
    /// Registers every metric in `registry`: the flow metrics, the API server
    /// histograms (with the `apiserver` plugin), and scrape-time collectors for
    /// `lost_events_counter` (over `losses`), the proc statistics (under
    /// `cfg.proc_root`), the enabled plugins' sources and every plugin's status
    /// (`cfg.plugins`). `clock` stamps series for idle expiry.
    pub fn register(
        registry: &mut Registry,
        cfg: &RetinaConfig,
        losses: LossSources,
        clock: Clock,
    ) -> Self {
        let node = NodeMetrics::register(registry);
        let adv = AdvSeries::register(registry, cfg.max_series, cfg.series_ttl);
        let apiserver = cfg.plugins.enabled("apiserver").then(|| {
            ApiServerLatency::register(
                registry,
                ApiServerAddresses::fixed(cfg.apiserver_ips.iter().copied()),
            )
        });
        let r = registry.sub_registry_with_prefix(names::PREFIX);
        r.register_collector(Box::new(losses));
        // At the root: the collector writes full names, its read errors included.
        registry.register_collector(Box::new(procfs::ProcCollector::new(
            cfg.proc_root.clone(),
            Counter::default(),
        )));
        // The plugins' scrape-time sources and every plugin's status.
        let roots = crate::plugins::Roots {
            proc: cfg.proc_root.clone(),
            sys: cfg.sys_root.clone(),
        };
        registry.register_collector(Box::new(crate::plugins::status::PluginsCollector::new(
            &cfg.plugins,
            &roots,
        )));
        RetinaMetrics {
            node,
            adv,
            apiserver,
            context: Context::new(cfg),
            ttl: cfg.series_ttl,
            clock,
        }
    }

    /// Counts enriched records.
    pub fn observe(&self, records: &[FlowRecord]) {
        let now = (self.clock)();
        for r in records {
            self.node.observe(r);
            if let Some(a) = &self.apiserver {
                a.observe(r);
            }
            if self.context.enabled() {
                self.observe_pod(r, now);
            }
        }
    }

    fn observe_pod(&self, r: &FlowRecord, now: chrono::DateTime<chrono::Utc>) {
        let Some(ctx) = self.context.labels(r) else {
            return;
        };
        let with = |head: Vec<(&'static str, String)>| -> Labels {
            let mut l = head;
            l.extend(ctx.iter().cloned());
            l
        };
        let direction = || (names::DIRECTION, r.direction().as_str().to_string());
        let at_pod = matches!(
            r.observation_point,
            ObservationPoint::FromPod | ObservationPoint::ToPod
        );
        match r.verdict {
            Verdict::Forwarded if at_pod => {
                let l = with(vec![direction()]);
                self.adv
                    .add(AdvMetric::ForwardCount, l.clone(), r.packets, now);
                self.adv.add(AdvMetric::ForwardBytes, l, r.bytes, now);
                for (bit, flag) in TCP_FLAGS {
                    if r.tcp_flags.is_some_and(|f| f & bit != 0) {
                        let l = with(vec![(names::FLAG, flag.to_string())]);
                        self.adv.add(AdvMetric::TcpFlagsCount, l, 1, now);
                    }
                }
            }
            Verdict::Forwarded => {}
            Verdict::Dropped => {
                let reason = r.drop_reason.as_deref().unwrap_or(node::UNKNOWN_REASON);
                let l = with(vec![(names::REASON, reason.to_string()), direction()]);
                self.adv
                    .add(AdvMetric::DropCount, l.clone(), r.packets, now);
                self.adv.add(AdvMetric::DropBytes, l, r.bytes, now);
            }
        }
        if let Some(tcp) = r.tcp.filter(|t| t.retransmits > 0) {
            let l = with(Vec::new());
            self.adv.add(
                AdvMetric::TcpRetransCount,
                l,
                u64::from(tcp.retransmits),
                now,
            );
        }
        if let Some(dns) = &r.dns {
            // Retina's label sets: requests {query_type, query}; responses
            // {return_code, query_type, query, response, num_response}.
            let query = (names::QUERY, dns.query.clone().unwrap_or_default());
            let qtype = (names::QUERY_TYPE, dns.qtype.clone().unwrap_or_default());
            let (metric, l) = match &dns.rcode {
                None => (AdvMetric::DnsRequestCount, with(vec![qtype, query])),
                Some(rcode) => (
                    AdvMetric::DnsResponseCount,
                    with(vec![
                        (names::RETURN_CODE, rcode.clone()),
                        qtype,
                        query,
                        (names::RESPONSE, dns.answers.join(",")),
                        (names::NUM_RESPONSE, dns.answers.len().to_string()),
                    ]),
                ),
            };
            self.adv.add(metric, l, 1, now);
        }
    }

    /// Removes `adv_*` series idle for longer than the TTL; returns how many went.
    pub fn expire_idle(&self) -> usize {
        self.adv.expire((self.clock)())
    }

    /// Expires idle series every quarter TTL (at least every second) until `shutdown`.
    pub async fn run_expiry(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval((self.ttl / 4).max(Duration::from_secs(1)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let removed = self.expire_idle();
                    if removed > 0 {
                        tracing::debug!(removed, series = self.adv.total(), "idle adv series expired");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
