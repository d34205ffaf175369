//! Node-level metrics of the flows (Retina's basic mode): forward, drop, TCP
//! retransmissions, DNS. All are counters.

use flowlake_schemas::{FlowRecord, ObservationPoint, Verdict};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::names;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
    pub direction: &'static str,
}

/// Drop reason label of a record without one.
pub const UNKNOWN_REASON: &str = "unknown";

/// The node-level families.
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    pub forward_count: Family<DirectionLabel, Counter>,
    pub forward_bytes: Family<DirectionLabel, Counter>,
    pub drop_count: Family<DropLabels, Counter>,
    pub drop_bytes: Family<DropLabels, Counter>,
    pub tcp_retransmission_count: Counter,
    pub dns_request_count: Counter,
    pub dns_response_count: Counter,
}

impl NodeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NodeMetrics::default();
        let r = registry.sub_registry_with_prefix(names::PREFIX);
        r.register(
            names::FORWARD_COUNT,
            "Packets forwarded through the node's interfaces, by direction",
            m.forward_count.clone(),
        );
        r.register(
            names::FORWARD_BYTES,
            "Bytes forwarded through the node's interfaces, by direction",
            m.forward_bytes.clone(),
        );
        r.register(
            names::DROP_COUNT,
            "Dropped packets by reason and direction",
            m.drop_count.clone(),
        );
        r.register(
            names::DROP_BYTES,
            "Dropped bytes by reason and direction",
            m.drop_bytes.clone(),
        );
        r.register(
            names::TCP_RETRANSMISSION_COUNT,
            "TCP retransmissions",
            m.tcp_retransmission_count.clone(),
        );
        r.register(
            names::DNS_REQUEST_COUNT,
            "DNS requests",
            m.dns_request_count.clone(),
        );
        r.register(
            names::DNS_RESPONSE_COUNT,
            "DNS responses",
            m.dns_response_count.clone(),
        );
        m
    }

    /// Counts one record. Forwarded traffic is counted where Retina's packetforward
    /// plugin sees it: on the node's own interfaces (`from_network`, `to_network`), so a
    /// packet crossing a pod veth and the node interface is counted once. Drops,
    /// retransmissions and DNS messages are counted wherever they are reported.
    pub fn observe(&self, r: &FlowRecord) {
        let direction = r.direction().as_str();
        match r.verdict {
            Verdict::Forwarded => {
                if matches!(
                    r.observation_point,
                    ObservationPoint::FromNetwork | ObservationPoint::ToNetwork
                ) {
                    let l = DirectionLabel { direction };
                    self.forward_count.get_or_create(&l).inc_by(r.packets);
                    self.forward_bytes.get_or_create(&l).inc_by(r.bytes);
                }
            }
            Verdict::Dropped => {
                let l = DropLabels {
                    reason: r
                        .drop_reason
                        .as_deref()
                        .unwrap_or(UNKNOWN_REASON)
                        .to_string(),
                    direction,
                };
                self.drop_count.get_or_create(&l).inc_by(r.packets);
                self.drop_bytes.get_or_create(&l).inc_by(r.bytes);
            }
        }
        if let Some(tcp) = &r.tcp {
            self.tcp_retransmission_count
                .inc_by(u64::from(tcp.retransmits));
        }
        if let Some(dns) = &r.dns {
            if dns.rcode.is_some() {
                self.dns_response_count.inc();
            } else {
                self.dns_request_count.inc();
            }
        }
    }
}
