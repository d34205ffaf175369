//! Shipping metrics (names in one place; the registry is passed in).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A `reason` label (flush reason, drop reason).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// Why records were dropped (each is a metric label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The spool limit was reached: the oldest spooled batches went.
    SpoolFull,
    /// The ingester rejected the batch as bad input (4xx): it is never retried.
    Rejected,
    /// The ingester rejected a loss batch as bad input: its rows (counted
    /// here in loss rows, not records) are lost; the ingester writes the
    /// refusal to the `losses` table itself (unit `loss_rows`).
    LossesRejected,
    /// A spool file failed its checksum on replay.
    Corrupt,
    /// The spool could not be written.
    SpoolError,
    /// The shipper was closed while records were being sent to it.
    Closed,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SpoolFull => "spool_full",
            DropReason::Rejected => "rejected",
            DropReason::LossesRejected => "losses_rejected",
            DropReason::Corrupt => "corrupt",
            DropReason::SpoolError => "spool_error",
            DropReason::Closed => "closed",
        }
    }
}

/// Counters of batching and shipping.
#[derive(Debug, Clone, Default)]
pub struct ShipMetrics {
    /// `flowlake_collector_batches_flushed_total{reason}`: batches built, by flush reason.
    pub batches_flushed: Family<Reason, Counter>,
    /// `flowlake_collector_batches_shipped_total`: batches the ingester acknowledged.
    pub batches_shipped: Counter,
    /// `flowlake_collector_records_shipped_total`.
    pub records_shipped: Counter,
    /// `flowlake_collector_batches_failed_total`: sends that failed (unreachable, 5xx, 503).
    pub batches_failed: Counter,
    /// `flowlake_collector_batches_spooled_total`: batches written to the spool.
    pub batches_spooled: Counter,
    /// `flowlake_collector_spool_bytes`: bytes in the spool now.
    pub spool_bytes: Gauge,
    /// `flowlake_collector_spool_batches`: batches in the spool now.
    pub spool_batches: Gauge,
    /// `flowlake_collector_records_dropped_total{reason}`.
    pub records_dropped: Family<Reason, Counter>,
}

impl ShipMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ShipMetrics::default();
        let r = registry.sub_registry_with_prefix("flowlake_collector");
        r.register(
            "batches_flushed",
            "Arrow batches built, by flush reason",
            m.batches_flushed.clone(),
        );
        r.register(
            "batches_shipped",
            "Batches acknowledged by the ingester",
            m.batches_shipped.clone(),
        );
        r.register(
            "records_shipped",
            "Records acknowledged by the ingester",
            m.records_shipped.clone(),
        );
        r.register(
            "batches_failed",
            "Batch sends that failed and will be retried",
            m.batches_failed.clone(),
        );
        r.register(
            "batches_spooled",
            "Batches written to the on-disk spool",
            m.batches_spooled.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes in the on-disk spool",
            m.spool_bytes.clone(),
        );
        r.register(
            "spool_batches",
            "Batches in the on-disk spool",
            m.spool_batches.clone(),
        );
        r.register(
            "records_dropped",
            "Records dropped, by reason",
            m.records_dropped.clone(),
        );
        m
    }

    /// Counts `records` dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, records: u64) {
        self.records_dropped
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .inc_by(records);
    }

    /// How many records were dropped for `reason` so far.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.records_dropped
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .get()
    }
}
