//! Per-sink metrics (names in one place; the registry is passed in).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a sink lost records (each is a `reason` label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkLoss {
    /// The sink's queue was full: it was behind, the batch was not queued for it.
    QueueFull,
    /// The sink had stopped (its thread ended) when the batch came.
    Stopped,
    /// The network send failed (IPFIX: unreachable collector, refused, reset).
    SendError,
    /// Writing the file failed (JSON lines: disk full, permissions).
    WriteError,
    /// The record could not be encoded (a name too long for one IPFIX message).
    Encode,
    /// The ingester's shipper was closed.
    Closed,
}

impl SinkLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkLoss::QueueFull => "queue_full",
            SinkLoss::Stopped => "stopped",
            SinkLoss::SendError => "send_error",
            SinkLoss::WriteError => "write_error",
            SinkLoss::Encode => "encode",
            SinkLoss::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LossLabels {
    sink: &'static str,
    reason: &'static str,
}

/// Counters of every sink, labelled by `sink`.
#[derive(Debug, Clone, Default)]
pub struct SinkMetrics {
    /// `flowlake_collector_sink_enabled{sink}`: 1 for each running sink.
    enabled: Family<SinkLabel, Gauge>,
    /// `flowlake_collector_sink_records_received_total{sink}`: records handed to the sink.
    received: Family<SinkLabel, Counter>,
    /// `flowlake_collector_sink_records_written_total{sink}`: records the sink delivered
    /// (sent to the collector, written to the file, queued to the ingester's shipper).
    written: Family<SinkLabel, Counter>,
    /// `flowlake_collector_sink_records_dropped_total{sink, reason}`.
    dropped: Family<LossLabels, Counter>,
    /// `flowlake_collector_sink_queue_batches{sink}`: batches waiting in the sink's queue.
    queue: Family<SinkLabel, Gauge>,
}

impl SinkMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = SinkMetrics::default();
        let r = registry.sub_registry_with_prefix("flowlake_collector_sink");
        r.register("enabled", "1 for each running sink", m.enabled.clone());
        r.register(
            "records_received",
            "Records handed to the sink",
            m.received.clone(),
        );
        r.register(
            "records_written",
            "Records the sink delivered",
            m.written.clone(),
        );
        r.register(
            "records_dropped",
            "Records the sink lost, by reason",
            m.dropped.clone(),
        );
        r.register(
            "queue_batches",
            "Batches waiting in the sink's queue",
            m.queue.clone(),
        );
        m
    }

    pub(crate) fn set_enabled(&self, sink: &'static str) {
        self.enabled.get_or_create(&SinkLabel { sink }).set(1);
    }

    pub(crate) fn received(&self, sink: &'static str, n: u64) {
        self.received.get_or_create(&SinkLabel { sink }).inc_by(n);
    }

    pub(crate) fn written(&self, sink: &'static str, n: u64) {
        self.written.get_or_create(&SinkLabel { sink }).inc_by(n);
    }

    pub(crate) fn queued(&self, sink: &'static str, delta: i64) {
        self.queue.get_or_create(&SinkLabel { sink }).inc_by(delta);
    }

    /// Counts `n` records lost by `sink` for `reason`.
    pub fn lost(&self, sink: &'static str, reason: SinkLoss, n: u64) {
        self.dropped
            .get_or_create(&LossLabels {
                sink,
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// Records `sink` lost for `reason` so far.
    pub fn dropped_count(&self, sink: &'static str, reason: SinkLoss) -> u64 {
        self.dropped
            .get_or_create(&LossLabels {
                sink,
                reason: reason.as_str(),
            })
            .get()
    }

    /// Records handed to `sink` so far.
    pub fn received_count(&self, sink: &'static str) -> u64 {
        self.received.get_or_create(&SinkLabel { sink }).get()
    }

    /// Records `sink` delivered so far.
    pub fn written_count(&self, sink: &'static str) -> u64 {
        self.written.get_or_create(&SinkLabel { sink }).get()
    }
}
