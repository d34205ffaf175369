//! API server latency histograms (`adv_node_apiserver_latency`,
//! `adv_node_apiserver_tcp_handshake_latency`), in milliseconds like Retina's, with
//! Retina's buckets (1 ms wide, up to 63.5 ms).
//!
//! Latencies are whole durations: the datapath measures the handshake from full
//! monotonic timestamps, and [`ApiServerLatency::observe_exchange`] subtracts full
//! wall-clock timestamps. Retina subtracted only the sub-second parts (#1772), so an
//! exchange across a second boundary came out negative or near a second.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use flowlake_schemas::FlowRecord;
use prometheus_client::metrics::histogram::{Histogram, linear_buckets};
use prometheus_client::registry::Registry;

use super::names;

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

/// The two histograms and the API server addresses they watch.
#[derive(Debug, Clone)]
pub struct ApiServerLatency {
    ips: Vec<IpAddr>,
    pub latency: Histogram,
    pub handshake: Histogram,
}

impl ApiServerLatency {
    pub fn register(registry: &mut Registry, ips: Vec<IpAddr>) -> Self {
        let m = ApiServerLatency {
            ips,
            latency: Histogram::new(buckets()),
            handshake: Histogram::new(buckets()),
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
        m
    }

    /// Whether `ip` is the API server's.
    pub fn is_apiserver(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip)
    }

    /// Observes a record of a flow to the API server: its SYN → SYN-ACK time goes to
    /// the handshake histogram, its smoothed RTT to the latency histogram.
    pub fn observe(&self, r: &FlowRecord) {
        if !self.is_apiserver(r.dst.ip) {
            return;
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
