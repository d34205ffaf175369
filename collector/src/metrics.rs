//! The datapath's self-observability: every lost event, eviction and program
//! status, registered in a passed-in prometheus-client `Registry`. Each
//! plugin's state (reduced forms included) is `flowlake_collector_plugin_status`
//! (see `crate::plugins::status`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Why events were lost (the `kind` label of `flowlake_collector_lost_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Flow map full: the packet was not counted in any flow.
    FlowMapFull,
    /// DNS ring buffer full: the DNS message was not seen by userspace.
    DnsRingbufFull,
    /// Drop map full: the drop was not counted.
    DropMapFull,
    /// TCP health map full.
    TcpMapFull,
    /// Userspace channel full: a batch of records was discarded.
    ChannelFull,
    /// A DNS message on a client's row cut short (over the copy size, or an
    /// IP fragment of a larger datagram).
    DnsTruncated,
    /// Bytes on a client's DNS row that are not a DNS message.
    DnsUnparsed,
    /// A DNS-over-TCP stream with a segment not seen.
    DnsTcpGap,
}

impl From<crate::dns::DnsLoss> for LossKind {
    fn from(l: crate::dns::DnsLoss) -> Self {
        match l {
            crate::dns::DnsLoss::Truncated => LossKind::DnsTruncated,
            crate::dns::DnsLoss::Unparsed => LossKind::DnsUnparsed,
            crate::dns::DnsLoss::TcpGap => LossKind::DnsTcpGap,
        }
    }
}

impl LossKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::FlowMapFull => "flow_map_full",
            LossKind::DnsRingbufFull => "dns_ringbuf_full",
            LossKind::DropMapFull => "drop_map_full",
            LossKind::TcpMapFull => "tcp_map_full",
            LossKind::ChannelFull => "channel_full",
            LossKind::DnsTruncated => "dns_truncated",
            LossKind::DnsUnparsed => "dns_unparsed",
            LossKind::DnsTcpGap => "dns_tcp_gap",
        }
    }
}

/// Metrics of the collector datapath.
#[derive(Clone, Default)]
pub struct DatapathMetrics {
    /// `flowlake_collector_lost_events_total{kind}`: packets/events/records lost.
    pub lost: Family<Labels, Counter>,
    /// `flowlake_collector_lost_bytes_total{kind}`: bytes (from the IP
    /// header) of the packets lost, where known (`flow_map_full`).
    pub lost_bytes: Family<Labels, Counter>,
    /// `flowlake_collector_records_total`: flow records sent on the channel.
    pub records: Counter,
    /// `flowlake_collector_evictions_total{reason}`: map entries evicted.
    pub evicted: Family<Labels, Counter>,
    /// `flowlake_collector_program_loaded{program}`: 1 when running, 0 when it failed.
    pub program_loaded: Family<Labels, Gauge>,
    /// `flowlake_collector_attached_interfaces`.
    pub attached_interfaces: Gauge,
    /// `flowlake_collector_attach_errors_total`.
    pub attach_errors: Counter,
    /// `flowlake_collector_dns_parse_errors_total`.
    pub dns_parse_errors: Counter,
    /// `flowlake_collector_reattachments_total`: tc hooks where the flow
    /// program was attached again because another program took the first
    /// place or removed it.
    pub reattachments: Counter,
}

impl DatapathMetrics {
    /// Creates the metrics and registers them under `flowlake_collector_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = DatapathMetrics::default();
        let r = registry.sub_registry_with_prefix("flowlake_collector");
        r.register("lost_events", "Events lost, by cause", m.lost.clone());
        r.register(
            "lost_bytes",
            "Bytes of the packets lost, by cause (where known)",
            m.lost_bytes.clone(),
        );
        r.register("records", "Flow records sent downstream", m.records.clone());
        r.register(
            "evictions",
            "Map entries evicted, by reason",
            m.evicted.clone(),
        );
        r.register(
            "program_loaded",
            "eBPF program status (1 running, 0 failed to load or attach)",
            m.program_loaded.clone(),
        );
        r.register(
            "attached_interfaces",
            "Interfaces with the flow programs attached",
            m.attached_interfaces.clone(),
        );
        r.register(
            "attach_errors",
            "Failed tc attachments",
            m.attach_errors.clone(),
        );
        r.register(
            "reattachments",
            "Flow programs attached again ahead of a program that took the first place in a tc hook, or after their attachment was removed",
            m.reattachments.clone(),
        );
        r.register(
            "dns_parse_errors",
            "DNS messages that did not parse",
            m.dns_parse_errors.clone(),
        );
        m
    }

    pub fn lost(&self, kind: LossKind) -> Counter {
        self.lost
            .get_or_create(&vec![("kind", kind.as_str().to_string())])
            .clone()
    }

    pub fn lost_count(&self, kind: LossKind) -> u64 {
        self.lost(kind).get()
    }

    pub fn lost_bytes(&self, kind: LossKind) -> Counter {
        self.lost_bytes
            .get_or_create(&vec![("kind", kind.as_str().to_string())])
            .clone()
    }

    pub fn evicted(&self, reason: &str, n: u64) {
        self.evicted
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }

    pub fn evicted_count(&self, reason: &str) -> u64 {
        self.evicted
            .get_or_create(&vec![("reason", reason.to_string())])
            .get()
    }

    pub fn set_program(&self, program: &str, loaded: bool) {
        self.program_loaded
            .get_or_create(&vec![("program", program.to_string())])
            .set(i64::from(loaded));
    }

    pub fn program_status(&self, program: &str) -> i64 {
        self.program_loaded
            .get_or_create(&vec![("program", program.to_string())])
            .get()
    }
}
