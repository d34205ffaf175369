//! Evicted map entries → `FlowRecord`s, and kernel boot time → wall-clock UTC.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flowlake_schemas::{
    DnsInfo, Endpoint, FlowRecord, ObservationPoint, Protocol, TcpHealth, Verdict,
};

use crate::abi::{self, DIR_INGRESS, DropKey, DropStats, FlowKey, FlowStats, TcpKey, TcpStats};
use crate::config::InterfaceRole;

/// The offset between CLOCK_BOOTTIME (what `bpf_ktime_get_boot_ns` reads) and
/// CLOCK_REALTIME, sampled at one instant; injected so tests need no clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootClock {
    /// Wall-clock nanoseconds since the epoch at boot time 0.
    pub realtime_at_boot_ns: i128,
}

impl BootClock {
    /// Samples both clocks now.
    pub fn now() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        BootClock {
            realtime_at_boot_ns: real - boot,
        }
    }

    /// The wall-clock time of a boot-time timestamp.
    pub fn to_utc(self, boot_ns: u64) -> DateTime<Utc> {
        let ns = self.realtime_at_boot_ns + i128::from(boot_ns);
        DateTime::from_timestamp_nanos(ns.clamp(0, i128::from(i64::MAX)) as i64)
    }

    /// Current boot time in nanoseconds.
    pub fn boot_now_ns() -> u64 {
        clock_ns(libc::CLOCK_BOOTTIME) as u64
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// An observed interface.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: Arc<str>,
    pub role: InterfaceRole,
}

/// Observation point of a tc hook on an interface of a role.
pub fn observation_point(role: InterfaceRole, direction: u32) -> ObservationPoint {
    match (role, direction == DIR_INGRESS) {
        (InterfaceRole::Pod, true) => ObservationPoint::FromPod,
        (InterfaceRole::Pod, false) => ObservationPoint::ToPod,
        (InterfaceRole::Node, true) => ObservationPoint::FromNetwork,
        (InterfaceRole::Node, false) => ObservationPoint::ToNetwork,
    }
}

/// Everything needed to turn entries of one eviction into records.
pub struct RecordContext<'a> {
    pub cluster: Arc<str>,
    pub node: Arc<str>,
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub ifaces: &'a HashMap<u32, Iface>,
    /// Network namespace inode of the observed namespace (drop attribution).
    pub netns: u32,
}

fn endpoints(k: &FlowKey, proto: Protocol) -> (Endpoint, Endpoint) {
    let ports = proto.has_ports();
    (
        Endpoint::new(
            abi::ip_from_key(&k.src_ip, k.ip_version),
            ports.then_some(k.src_port),
        ),
        Endpoint::new(
            abi::ip_from_key(&k.dst_ip, k.ip_version),
            ports.then_some(k.dst_port),
        ),
    )
}

impl RecordContext<'_> {
    fn base(&self, k: &FlowKey, point: ObservationPoint, iface: Option<&Iface>) -> FlowRecord {
        let protocol = Protocol::from_number(k.proto);
        let (src, dst) = endpoints(k, protocol);
        FlowRecord {
            interval_start: self.interval_start,
            interval_end: self.interval_end,
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            observation_point: point,
            interface: iface.map(|i| i.name.clone()),
            protocol,
            src,
            dst,
            icmp: matches!(protocol, Protocol::Icmp | Protocol::Icmpv6)
                .then_some((k.icmp_type, k.icmp_code)),
            packets: 0,
            bytes: 0,
            tcp_flags: (protocol == Protocol::Tcp).then_some(0),
            verdict: Verdict::Forwarded,
            drop_reason: None,
            tcp: None,
            dns: None,
        }
    }

    /// One flow entry. TCP health goes on the sending socket's row: `from_pod`
    /// (or `to_network` for a socket of the node itself); `health` entries used
    /// are removed. DNS infos: the first on this row, the others on extra
    /// zero-packet rows.
    pub fn flow(
        &self,
        k: &FlowKey,
        s: &FlowStats,
        health: &mut HashMap<TcpKey, TcpStats>,
        dns: Vec<DnsInfo>,
        out: &mut Vec<FlowRecord>,
    ) {
        let Some(iface) = self.ifaces.get(&k.ifindex) else {
            return;
        };
        let point = observation_point(iface.role, k.direction);
        let mut r = self.base(k, point, Some(iface));
        r.packets = s.packets;
        r.bytes = s.bytes;
        if r.protocol == Protocol::Tcp {
            r.tcp_flags = Some(s.tcp_flags as u16);
            if matches!(
                point,
                ObservationPoint::FromPod | ObservationPoint::ToNetwork
            ) {
                let h = health.remove(&abi::tcp_key_of(k));
                if h.is_some() || s.handshake_us > 0 {
                    let h = h.unwrap_or_default();
                    r.tcp = Some(TcpHealth {
                        retransmits: h.retransmits,
                        resets: h.resets,
                        srtt_us: (h.srtt_us > 0).then_some(u64::from(h.srtt_us)),
                        handshake_us: (s.handshake_us > 0).then_some(u64::from(s.handshake_us)),
                    });
                }
            }
        }
        let mut dns = dns.into_iter();
        r.dns = dns.next();
        for extra in dns {
            out.push(self.dns_only(k, extra));
        }
        out.push(r);
    }

    /// A zero-packet row carrying one DNS message (its packets are counted on
    /// the flow row of the same key).
    pub fn dns_only(&self, k: &FlowKey, info: DnsInfo) -> FlowRecord {
        let iface = self.ifaces.get(&k.ifindex);
        let point = iface.map_or(ObservationPoint::FromPod, |i| {
            observation_point(i.role, k.direction)
        });
        let mut r = self.base(k, point, iface);
        r.dns = Some(info);
        r
    }

    /// One drop entry. Observation point: a drop inside another namespace (a
    /// pod) is `to_pod` when the packet was received there, `from_pod` when the
    /// pod sent it; in the observed namespace, the role of the input interface.
    pub fn drop(&self, k: &DropKey, s: &DropStats, reason: Arc<str>) -> FlowRecord {
        let local = self
            .ifaces
            .get(&k.flow.ifindex)
            .filter(|_| k.netns == self.netns);
        let input = self.ifaces.get(&k.iif).filter(|_| k.netns == self.netns);
        let point = if k.netns != self.netns {
            if k.iif != 0 {
                ObservationPoint::ToPod
            } else {
                ObservationPoint::FromPod
            }
        } else {
            match input.map(|i| i.role) {
                Some(InterfaceRole::Node) => ObservationPoint::FromNetwork,
                Some(InterfaceRole::Pod) => ObservationPoint::FromPod,
                None => match local.map(|i| i.role) {
                    Some(InterfaceRole::Pod) => ObservationPoint::ToPod,
                    _ => ObservationPoint::ToNetwork,
                },
            }
        };
        let mut r = self.base(&k.flow, point, input.or(local));
        r.packets = s.packets;
        r.bytes = s.bytes;
        r.tcp_flags = None;
        r.verdict = Verdict::Dropped;
        r.drop_reason = Some(reason);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_converts_to_utc() {
        let c = BootClock {
            realtime_at_boot_ns: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
        };
        assert_eq!(
            c.to_utc(90_500_000_000).to_rfc3339(),
            "2026-01-01T00:01:30.500+00:00"
        );
        let live = BootClock::now();
        let diff = (live.to_utc(BootClock::boot_now_ns()) - Utc::now()).num_milliseconds();
        assert!(diff.abs() < 1000, "{diff}");
    }

    #[test]
    fn points_from_role_and_hook() {
        assert_eq!(
            observation_point(InterfaceRole::Pod, 0),
            ObservationPoint::FromPod
        );
        assert_eq!(
            observation_point(InterfaceRole::Pod, 1),
            ObservationPoint::ToPod
        );
        assert_eq!(
            observation_point(InterfaceRole::Node, 0),
            ObservationPoint::FromNetwork
        );
        assert_eq!(
            observation_point(InterfaceRole::Node, 1),
            ObservationPoint::ToNetwork
        );
    }
}
