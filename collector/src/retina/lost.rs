//! `lost_events_counter{type, reason}`: the datapath's and the shipper's loss
//! counters, read at scrape time (one source of truth, no copies to keep in step).
//!
//! `type` says where the loss happened — `kernel` (an eBPF map or ring buffer was
//! full), `buffered_channel` (the userspace channel was full; Retina's name), `shipper`
//! (records dropped on the way to the ingester) — and `reason` names the cause.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use crate::metrics::{DatapathMetrics, LossKind};
use crate::ship::{DropReason, ShipMetrics};

use super::names;

const KINDS: [LossKind; 5] = [
    LossKind::FlowMapFull,
    LossKind::DnsRingbufFull,
    LossKind::DropMapFull,
    LossKind::TcpMapFull,
    LossKind::ChannelFull,
];

const SHIP_REASONS: [DropReason; 5] = [
    DropReason::SpoolFull,
    DropReason::Rejected,
    DropReason::Corrupt,
    DropReason::SpoolError,
    DropReason::Closed,
];

/// Where the loss counters come from (either may be absent).
#[derive(Clone, Default)]
pub struct LossSources {
    pub datapath: Option<DatapathMetrics>,
    pub ship: Option<ShipMetrics>,
}

impl std::fmt::Debug for LossSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossSources")
            .field("datapath", &self.datapath.is_some())
            .field("ship", &self.ship.is_some())
            .finish()
    }
}

impl LossSources {
    /// Every `(type, reason, count)` now.
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        if let Some(d) = &self.datapath {
            for kind in KINDS {
                let ty = match kind {
                    LossKind::ChannelFull => "buffered_channel",
                    _ => "kernel",
                };
                out.push((ty, kind.as_str(), d.lost_count(kind)));
            }
        }
        if let Some(s) = &self.ship {
            for reason in SHIP_REASONS {
                out.push(("shipper", reason.as_str(), s.dropped_count(reason)));
            }
        }
        out
    }
}

impl Collector for LossSources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            names::LOST_EVENTS_COUNTER,
            "Events lost before they were counted or stored, by where and why",
            None,
            MetricType::Counter,
        )?;
        for (ty, reason, n) in self.counts() {
            let labels = [(names::TYPE, ty), (names::REASON, reason)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
