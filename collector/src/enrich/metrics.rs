//! Enrichment metrics (names in one place; the registry is passed in).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set naming a watched resource.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: String,
}

/// Counters of the enricher.
#[derive(Debug, Clone, Default)]
pub struct EnrichMetrics {
    /// `flowlake_collector_records_enriched_total`: records passed through the enricher.
    pub records_enriched: Counter,
    /// `flowlake_collector_endpoints_unnamed_total`: flow ends no identity was found for.
    pub endpoints_unnamed: Counter,
    /// `flowlake_collector_enrich_addresses`: addresses in the index.
    pub addresses: Gauge,
    /// `flowlake_collector_watch_events_total{resource}`.
    pub watch_events: Family<ResourceLabel, Counter>,
    /// `flowlake_collector_watch_errors_total{resource}`.
    pub watch_errors: Family<ResourceLabel, Counter>,
    /// `flowlake_collector_watch_lists_total{resource}`: initial lists and re-lists.
    pub relists: Family<ResourceLabel, Counter>,
}

impl EnrichMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = EnrichMetrics::default();
        let r = registry.sub_registry_with_prefix("flowlake_collector");
        r.register(
            "records_enriched",
            "Flow records passed through the enricher",
            m.records_enriched.clone(),
        );
        r.register(
            "endpoints_unnamed",
            "Flow ends without a known identity",
            m.endpoints_unnamed.clone(),
        );
        r.register(
            "enrich_addresses",
            "Addresses in the identity index",
            m.addresses.clone(),
        );
        r.register(
            "watch_events",
            "Kubernetes watch events by resource",
            m.watch_events.clone(),
        );
        r.register(
            "watch_errors",
            "Kubernetes watch errors by resource",
            m.watch_errors.clone(),
        );
        r.register(
            "watch_lists",
            "Kubernetes (re-)lists by resource",
            m.relists.clone(),
        );
        m
    }

    pub(crate) fn label(&self, resource: &str) -> ResourceLabel {
        ResourceLabel {
            resource: resource.to_string(),
        }
    }
}
