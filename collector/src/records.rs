//! Evicted map entries → `FlowRecord`s, and kernel boot time → wall-clock UTC.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

/// The addresses of the calling thread's network namespace (the node's
/// own: its sockets' local ends), read with getifaddrs(3).
pub fn local_addresses() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: an AF_INET address is a sockaddr_in.
                    let a = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                    out.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
                }
                libc::AF_INET6 => {
                    // SAFETY: an AF_INET6 address is a sockaddr_in6.
                    let a = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                    out.insert(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
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
    /// Addresses of the observed namespace: a socket with one of them as
    /// its local end is the node's own (see [`RecordContext::sending`]).
    pub local: &'a HashSet<IpAddr>,
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
            wire_packets: None,
            tcp_flags: (protocol == Protocol::Tcp).then_some(0),
            verdict: Verdict::Forwarded,
            drop_reason: None,
            tcp: None,
            dns: None,
        }
    }

    /// Whether a row at `point` with source `src` is its sending socket's
    /// row, the one TCP health, resets and the handshake go on: a pod's
    /// `from_pod` (its packets leave the pod there), or for a socket of the
    /// node itself (source a node address) `to_network`. The rule needs no
    /// knowledge of the CNI: a pod address routed out of a node interface
    /// (native routing) is seen at `to_network` too, but is no node address.
    pub fn sending(&self, point: ObservationPoint, src: IpAddr) -> bool {
        match point {
            ObservationPoint::FromPod => true,
            ObservationPoint::ToNetwork => self.local.contains(&src),
            _ => false,
        }
    }

    /// Whether the row of flow key `k` is a sending row ([`Self::sending`]).
    pub fn sends(&self, k: &FlowKey) -> bool {
        self.ifaces.get(&k.ifindex).is_some_and(|i| {
            let src = abi::ip_from_key(&k.src_ip, k.ip_version);
            self.sending(observation_point(i.role, k.direction), src)
        })
    }

    /// One flow entry. TCP health, resets and the handshake go on the
    /// sending socket's row only ([`Self::sending`]); `health` entries used
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
        r.wire_packets = Some(s.wire_packets);
        if r.protocol == Protocol::Tcp {
            r.tcp_flags = Some(s.tcp_flags as u16);
            if self.sending(point, r.src.ip) {
                let h = health.remove(&abi::tcp_key_of(k));
                if h.is_some() || s.handshake_us > 0 || s.resets > 0 {
                    let h = h.unwrap_or_default();
                    r.tcp = Some(TcpHealth {
                        retransmits: h.retransmits,
                        resets: s.resets,
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

    /// A zero-packet row for TCP health whose flow had no packets in the
    /// interval at this node's sending row (retransmits are never dropped):
    /// on the row the rule names, without an interface.
    pub fn health_only(&self, k: &TcpKey, h: &TcpStats) -> FlowRecord {
        let key = FlowKey {
            src_ip: k.src_ip,
            dst_ip: k.dst_ip,
            src_port: k.src_port,
            dst_port: k.dst_port,
            proto: 6,
            ip_version: k.ip_version,
            ..FlowKey::default()
        };
        let src = abi::ip_from_key(&k.src_ip, k.ip_version);
        let point = if self.local.contains(&src) {
            ObservationPoint::ToNetwork
        } else {
            ObservationPoint::FromPod
        };
        let mut r = self.base(&key, point, None);
        r.tcp = Some(TcpHealth {
            retransmits: h.retransmits,
            resets: 0,
            srtt_us: (h.srtt_us > 0).then_some(u64::from(h.srtt_us)),
            handshake_us: None,
        });
        r
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
    /// pod sent it. In the observed (node) namespace, or with no namespace
    /// known: the role of the input interface; a packet received on an
    /// interface not observed (loopback) is `from_network`; one the node
    /// sent, the role of its device (`to_network` without one). The node's
    /// own drops so stay node-level.
    pub fn drop(&self, k: &DropKey, s: &DropStats, reason: Arc<str>) -> FlowRecord {
        let own = k.netns == self.netns || k.netns == 0;
        let local = self.ifaces.get(&k.flow.ifindex).filter(|_| own);
        let input = self.ifaces.get(&k.iif).filter(|_| own);
        let point = if !own {
            if k.iif != 0 {
                ObservationPoint::ToPod
            } else {
                ObservationPoint::FromPod
            }
        } else {
            match input.map(|i| i.role) {
                Some(InterfaceRole::Node) => ObservationPoint::FromNetwork,
                Some(InterfaceRole::Pod) => ObservationPoint::FromPod,
                None if k.iif != 0 => ObservationPoint::FromNetwork,
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

    #[test]
    fn node_drops_stay_node_level_and_health_goes_to_the_sending_row() {
        let ifaces = HashMap::from([
            (
                7,
                Iface {
                    name: "veth7".into(),
                    role: InterfaceRole::Pod,
                },
            ),
            (
                2,
                Iface {
                    name: "eth0".into(),
                    role: InterfaceRole::Node,
                },
            ),
        ]);
        let local: HashSet<IpAddr> = ["192.168.1.10".parse().unwrap()].into();
        let ctx = RecordContext {
            cluster: "c".into(),
            node: "n".into(),
            interval_start: DateTime::UNIX_EPOCH,
            interval_end: DateTime::UNIX_EPOCH,
            ifaces: &ifaces,
            netns: 100,
            local: &local,
        };
        let drop = |netns, iif, ifindex| {
            let k = DropKey {
                flow: FlowKey {
                    ifindex,
                    ip_version: 4,
                    proto: 17,
                    ..FlowKey::default()
                },
                netns,
                iif,
                ..DropKey::default()
            };
            ctx.drop(&k, &DropStats::default(), "X".into())
                .observation_point
        };
        // The node's own packets: no device (netns from the socket, or none).
        assert_eq!(drop(100, 0, 0), ObservationPoint::ToNetwork);
        assert_eq!(drop(0, 0, 0), ObservationPoint::ToNetwork);
        // Received on loopback (not observed) in the node's namespace.
        assert_eq!(drop(100, 1, 1), ObservationPoint::FromNetwork);
        assert_eq!(drop(100, 2, 2), ObservationPoint::FromNetwork);
        assert_eq!(drop(100, 7, 2), ObservationPoint::FromPod);
        // Inside a pod.
        assert_eq!(drop(555, 3, 3), ObservationPoint::ToPod);
        assert_eq!(drop(555, 0, 3), ObservationPoint::FromPod);

        let node: IpAddr = "192.168.1.10".parse().unwrap();
        let pod: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(ctx.sending(ObservationPoint::FromPod, pod));
        assert!(!ctx.sending(ObservationPoint::ToNetwork, pod));
        assert!(ctx.sending(ObservationPoint::ToNetwork, node));
        assert!(!ctx.sending(ObservationPoint::ToPod, pod));
        assert!(!ctx.sending(ObservationPoint::FromNetwork, node));
        // Retransmits without a row: at the rule's point, no interface.
        let mut src_ip = [0u8; 16];
        src_ip[10..].copy_from_slice(&[0xff, 0xff, 192, 168, 1, 10]);
        let k = abi::tcp_key_of(&FlowKey {
            src_ip,
            ip_version: 4,
            ..FlowKey::default()
        });
        let r = ctx.health_only(
            &k,
            &TcpStats {
                retransmits: 3,
                ..TcpStats::default()
            },
        );
        assert_eq!(r.observation_point, ObservationPoint::ToNetwork);
        assert_eq!((r.packets, r.interface.clone()), (0, None));
        assert_eq!(r.tcp.map(|h| h.retransmits), Some(3));
    }
}
