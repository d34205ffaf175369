//! API server latency histograms (`adv_node_apiserver_latency`,
//! `adv_node_apiserver_tcp_handshake_latency`), in milliseconds like Retina's, with
//! Retina's buckets (1 ms wide, up to 63.5 ms).
//!
//! Latencies are whole durations: the datapath measures the handshake from full
//! monotonic timestamps, and [`ApiServerLatency::observe_exchange`] subtracts full
//! wall-clock timestamps. Retina subtracted only the sub-second parts (#1772), so an
//! exchange across a second boundary came out negative or near a second.
//!
//! The addresses come from discovery ([`crate::enrich::apiserver`]) or a hand-set
//! list. Like Retina, only node-level records count (`to_network`: what leaves the
//! node for the API server), so a pod's connection seen at its veth (to the cluster
//! IP) and at the node's interface (to the endpoint) is counted once.
//!
//! `adv_node_apiserver_no_response{no_response="no_response"}` (Retina's name and
//! label) counts packets to the API server that got no answer: Retina counts
//! packets whose TCP timestamp was not echoed within 500 ms; Flowlake's records
//! carry what that means per flow — connection attempts whose SYNs were never
//! answered (a record of SYNs only: its packets) and segments the sender had to
//! retransmit (no acknowledgement within the retransmission timeout).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use flowlake_schemas::{FlowRecord, ObservationPoint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, linear_buckets};
use prometheus_client::registry::Registry;

use super::names;
use crate::enrich::ApiServerAddresses;

/// TCP flag bits of `FlowRecord::tcp_flags`.
const SYN: u16 = 0x02;
const ACK: u16 = 0x10;

/// Retina's label of `adv_node_apiserver_no_response` (key and value `no_response`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoResponseLabel {
    pub no_response: &'static str,
}

const NO_RESPONSE: NoResponseLabel = NoResponseLabel {
    no_response: "no_response",
};

fn buckets() -> impl Iterator<Item = f64> {
    linear_buckets(0.5, 1.0, 64)
}

/// Milliseconds from `sent` to `received` using the full timestamps (seconds and
/// nanoseconds); `None` when `received` is before `sent`.
pub fn latency_ms(sent: DateTime<Utc>, received: DateTime<Utc>) -> Option<f64> {
    let d = received.signed_duration_since(sent);
    let ns = d.num_nanoseconds()?;
    (ns >= 0).then(|| ns as f64 / 1e6)
}

/// The two histograms, the no-response counter and the API server addresses they watch.
#[derive(Debug, Clone)]
pub struct ApiServerLatency {
    ips: ApiServerAddresses,
    pub latency: Histogram,
    pub handshake: Histogram,
    pub no_response: Family<NoResponseLabel, Counter>,
}

impl ApiServerLatency {
    pub fn register(registry: &mut Registry, ips: ApiServerAddresses) -> Self {
        let m = ApiServerLatency {
            ips,
            latency: Histogram::new(buckets()),
            handshake: Histogram::new(buckets()),
            no_response: Family::default(),
        };
        let r = registry.sub_registry_with_prefix(names::PREFIX);
        r.register(
            names::ADV_APISERVER_LATENCY,
            "Round-trip time to the API server in milliseconds",
            m.latency.clone(),
        );
        r.register(
            names::ADV_APISERVER_HANDSHAKE,
            "TCP handshake latency to the API server in milliseconds",
            m.handshake.clone(),
        );
        r.register(
            names::ADV_APISERVER_NO_RESPONSE,
            "Packets to the API server that got no response",
            m.no_response.clone(),
        );
        // Present (at zero) from the start, as Retina's.
        m.no_response.get_or_create(&NO_RESPONSE).inc_by(0);
        m
    }

    /// The addresses watched (shared: discovery updates them in place).
    pub fn addresses(&self) -> &ApiServerAddresses {
        &self.ips
    }

    /// Whether `ip` is the API server's.
    pub fn is_apiserver(&self, ip: IpAddr) -> bool {
        self.ips.contains(ip)
    }

    /// Observes a node-level record of a flow to the API server: its SYN → SYN-ACK
    /// time goes to the handshake histogram, its smoothed RTT to the latency
    /// histogram, its unanswered packets to the no-response counter.
    pub fn observe(&self, r: &FlowRecord) {
        if r.observation_point != ObservationPoint::ToNetwork || !self.is_apiserver(r.dst.ip) {
            return;
        }
        let flags = r.tcp_flags.unwrap_or(0);
        let unanswered = if flags & SYN != 0 && flags & ACK == 0 {
            r.packets
        } else {
            r.tcp.map_or(0, |t| u64::from(t.retransmits))
        };
        if unanswered > 0 {
            self.no_response
                .get_or_create(&NO_RESPONSE)
                .inc_by(unanswered);
        }
        let Some(tcp) = &r.tcp else {
            return;
        };
        if let Some(us) = tcp.handshake_us {
            self.handshake.observe(us as f64 / 1e3);
        }
        if let Some(us) = tcp.srtt_us {
            self.latency.observe(us as f64 / 1e3);
        }
    }

    /// Observes one request/response exchange timed by its full timestamps.
    pub fn observe_exchange(&self, sent: DateTime<Utc>, received: DateTime<Utc>) {
        if let Some(ms) = latency_ms(sent, received) {
            self.latency.observe(ms);
        }
    }
}
