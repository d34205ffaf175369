//! The node's own traffic: drops of the node's sockets stay node-level
//! observations (never `to_pod`).

use std::net::{IpAddr, SocketAddr, UdpSocket};

use flowlake_collector::btf::kernel_has_drop_reasons;
use flowlake_schemas::{FlowRecord, ObservationPoint, Protocol, Verdict};

use super::harness::*;

/// UDP datagrams of `size` bytes from the node's namespace to `to`.
fn node_udp(t: &Topology, to: SocketAddr, size: usize, count: usize) {
    in_netns(t.node_ns_path(), move || {
        let s = UdpSocket::bind((to.ip(), 0).into_bind()).unwrap();
        for _ in 0..count {
            let _ = s.send_to(&vec![5u8; size], to);
        }
    })
    .join()
    .unwrap();
}

trait IntoBind {
    fn into_bind(self) -> SocketAddr;
}

impl IntoBind for (IpAddr, u16) {
    /// The unspecified address of the destination's family.
    fn into_bind(self) -> SocketAddr {
        let any: IpAddr = if self.0.is_ipv4() { "0.0.0.0" } else { "::" }
            .parse()
            .unwrap();
        SocketAddr::new(any, self.1)
    }
}

fn dropped(records: &[FlowRecord], port: u16) -> Vec<&FlowRecord> {
    records
        .iter()
        .filter(|r| {
            r.verdict == Verdict::Dropped && r.protocol == Protocol::Udp && r.dst.port == Some(port)
        })
        .collect()
}

#[test]
fn node_socket_drops_are_node_level() {
    if !privileged() {
        return;
    }
    let t = Topology::new(25, 1);
    t.node(&["ip", "addr", "add", "10.77.25.1/24", "dev", "br0"]);
    t.node(&["nft", "add", "table", "inet", "flk"]);
    let chain = "{ type filter hook output priority 0; }";
    t.node(&["nft", "add", "chain", "inet", "flk", "out", chain]);
    t.node(&[
        "nft", "add", "rule", "inet", "flk", "out", "udp", "dport", "9998", "drop",
    ]);
    let (dp, rx, _m) = t.collector();
    // Dropped on output before the packet has a device (the socket's namespace).
    node_udp(&t, SocketAddr::new(t.pods[0].v4, 9998), 100, 5);
    // Received on loopback with no socket listening.
    node_udp(&t, "127.0.0.1:9997".parse().unwrap(), 50, 3);
    let records = finish(dp, rx);

    let out = dropped(&records, 9998);
    let want = if kernel_has_drop_reasons() {
        "NETFILTER_DROP"
    } else {
        "UNKNOWN"
    };
    assert_eq!(out.iter().map(|r| r.packets).sum::<u64>(), 5, "{out:#?}");
    assert_eq!(out.iter().map(|r| r.bytes).sum::<u64>(), 5 * 128);
    for r in &out {
        assert_eq!(r.observation_point, ObservationPoint::ToNetwork, "{r:#?}");
        assert_eq!(r.drop_reason.as_deref(), Some(want));
    }
    let lo = dropped(&records, 9997);
    assert_eq!(lo.iter().map(|r| r.packets).sum::<u64>(), 3, "{lo:#?}");
    assert!(
        lo.iter()
            .all(|r| r.observation_point == ObservationPoint::FromNetwork),
        "{lo:#?}"
    );
}
